"""se_flax.weights.convert: parity with timm's eval-mode logits (golden files, no torch needed) and load errors.

The golden logits come from tests/golden/make_golden.py (timm 1.0.31, torch 2.14.1); weights and
inputs are rebuilt here from the stored key lists and seeds by tests/golden/weights.py.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
import safetensors.numpy

from se_flax import models
from se_flax.weights import convert

GOLDEN = pathlib.Path(__file__).resolve().parent / 'golden'
_spec = importlib.util.spec_from_file_location('golden_weights', GOLDEN / 'weights.py')
weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weights)

TOLERANCE = 1e-5  # relative L2 error of float32 logits; measured 4e-7 .. 1e-6


def _keys(name: str) -> list[tuple[str, list[int]]]:
  return json.loads((GOLDEN / 'keys' / f'{name}.json').read_text())


@functools.lru_cache(maxsize=1)
def _state_dict(name: str) -> dict[str, np.ndarray]:
  """The golden synthetic state dict (cached: several tests start from legacy_seresnet18's)."""
  return weights.make_state_dict(_keys(name), weights.WEIGHT_SEED, **weights.draw_options(name))


@functools.partial(jax.jit, static_argnums=0)
def _logits(module, variables, images):
  return module.apply(variables, images, train=False)


def _golden_logits(name: str, module, variables) -> tuple[np.ndarray, np.ndarray]:
  """(se_flax logits, timm logits) on the golden inputs, transposed NCHW -> NHWC."""
  images = weights.make_inputs(weights.INPUT_SEED, weights.GOLDEN_SIZES[name]).transpose(0, 2, 3, 1)
  # Full float32 products: GPUs default to TF32 (legacy_senet154 then errs by 9e-4 on an H100).
  with jax.default_matmul_precision('highest'):
    logits = _logits(module, variables, images)
  return np.asarray(logits), np.load(GOLDEN / 'logits' / f'{name}.npy')


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize('name', sorted(weights.GOLDEN_SIZES))
def test_from_timm_matches_timm_logits(name, record_property):
  module, variables = convert.from_timm(name, _state_dict(name))
  logits, golden = _golden_logits(name, module, variables)
  error = _rel_l2(logits, golden)
  record_property('rel_l2', error)
  print(f'{name}: relative L2 error {error:.2e}')
  assert logits.shape == golden.shape and logits.dtype == np.float32
  assert error < TOLERANCE


def test_misfit_state_dict_lists_every_problem():
  state_dict = dict(_state_dict('legacy_seresnet18'))
  del state_dict['layer1.0.conv1.weight']
  state_dict['layer5.0.conv1.weight'] = np.zeros((8, 8, 3, 3), np.float32)
  state_dict['layer2.0.bn1.running_var'] = np.ones(3, np.float32)
  with pytest.raises(ValueError) as info:
    convert.from_timm('legacy_seresnet18', state_dict)
  message = str(info.value)
  assert '1 missing keys: layer1.0.conv1.weight' in message
  assert '1 unexpected keys: layer5.0.conv1.weight' in message
  assert 'layer2.0.bn1.running_var (3,) (expected (128,))' in message


def test_misfit_listing_is_truncated():
  with pytest.raises(ValueError, match=r'missing keys: .*\.\.\. and \d+ more') as info:
    convert.from_timm('seresnet50', _state_dict('legacy_seresnet18'))
  assert len(str(info.value)) < 10_000


def test_safetensors_round_trip(tmp_path):
  path = tmp_path / 'model.safetensors'
  safetensors.numpy.save_file(_state_dict('legacy_seresnet18'), path)
  module, variables = convert.from_timm_file('legacy_seresnet18', path)
  expected = convert.from_timm('legacy_seresnet18', _state_dict('legacy_seresnet18'))
  np.testing.assert_array_equal(_golden_logits('legacy_seresnet18', module, variables)[0],
                                _golden_logits('legacy_seresnet18', *expected)[0])


def test_num_classes_from_checkpoint():
  state_dict = dict(_state_dict('legacy_seresnet18'))
  state_dict['last_linear.weight'] = state_dict['last_linear.weight'][:10]
  state_dict['last_linear.bias'] = state_dict['last_linear.bias'][:10]
  module, variables = convert.from_timm('legacy_seresnet18', state_dict)
  logits, golden = _golden_logits('legacy_seresnet18', module, variables)
  assert module.num_classes == 10 and logits.shape == (2, 10)
  assert _rel_l2(logits, golden[:, :10]) < TOLERANCE


class _ArrayLike:
  """Stands in for a torch tensor: only `__array__`."""

  def __init__(self, array: np.ndarray):
    self.array = array

  def __array__(self, dtype=None, copy=None):
    return self.array


def test_array_likes_and_dtypes():
  """Objects with __array__ are accepted; float16 stays float16, float64 becomes float32."""
  state_dict = {k: _ArrayLike(v.astype(np.float16) if k.startswith('layer1.') else
                              v.astype(np.float64) if v.dtype == np.float32 else v)
                for k, v in _state_dict('legacy_seresnet18').items()}
  _, variables = convert.from_timm('legacy_seresnet18', state_dict)
  assert variables['params']['layer1_0']['conv1']['kernel'].dtype == np.float16
  assert variables['batch_stats']['layer2_0']['bn1']['var'].dtype == np.float32
  assert variables['params']['fc']['kernel'].dtype == np.float32


@pytest.mark.parametrize('name', ['seresnet_tiny', 'seresnet200'])
def test_unknown_timm_name(name):
  with pytest.raises(ValueError, match=rf"'{name}' has no se_flax converter; supported: .*legacy_senet154"):
    convert.from_timm(name, {})


def test_timm_names_are_registered():
  assert set(convert.TIMM_NAMES) <= set(models.names())


@pytest.mark.parametrize('name', convert.TIMM_NAMES)
def test_key_map_covers_every_variable(name):
  """Every flax leaf gets its own timm key (a collision would silently drop a variable)."""
  module, size = models.create(name), models.spec(name).input_size
  shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                          jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
  key_map = convert.timm_key_map(name, module, shapes)
  assert len(key_map) == len(jax.tree.leaves(shapes))
