"""Tests for `se_flax.models.se`: the SE block against a numpy reference, its widths, its
validation, mixed precision and the sown gate.

The reference implementation below is written from the paper's equations (Hu et al., Eq. 2-4):
    z = squeeze(x);  s = gate(W2 relu(W1 z + b1) + b2);  out = x * s
with NumPy in float64, independently of the code under test.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax import models
from se_flax.models import se as se_lib
from se_flax.models.se import SEBlock, SEConfig

# ----------------------------------------------------------------------------------------------
# NumPy reference.

_NP_GATES = {
    'sigmoid': lambda z: 1.0 / (1.0 + np.exp(-z)),
    'hard_sigmoid': lambda z: np.clip(z + 3.0, 0.0, 6.0) / 6.0,  # relu6(x + 3) / 6
    'tanh': np.tanh,
    'relu': lambda z: np.maximum(z, 0.0),
}


def _np_se(x, params, squeeze, gate):
  """Returns (output, gate values, gate pre-activations) in float64."""
  x = np.asarray(x, np.float64)
  z = x.mean(axis=(1, 2)) if squeeze == 'avg' else x.max(axis=(1, 2))
  fc1, fc2 = params['fc1'], params['fc2']
  h = z @ np.asarray(fc1['kernel'], np.float64)
  if 'bias' in fc1:
    h = h + np.asarray(fc1['bias'], np.float64)
  h = np.maximum(h, 0.0)
  pre = h @ np.asarray(fc2['kernel'], np.float64)
  if 'bias' in fc2:
    pre = pre + np.asarray(fc2['bias'], np.float64)
  s = _NP_GATES[gate](pre)
  return x * s[:, None, None, :], s, pre


def _timm_make_divisible(v, divisor=8, min_value=None, round_limit=0.0):
  """timm.layers.helpers.make_divisible, copied (docs/reference.md section 2) as an oracle."""
  min_value = min_value or divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < round_limit * v:
    new_v += divisor
  return new_v


_N, _H, _W, _C, _R = 2, 3, 4, 8, 2  # hidden width 8 // 2 = 4


def _hand_params(use_bias: bool):
  """Small fixed weights; fc2's biases spread the gate inputs over (-inf, -3), [-3, 3], (3, inf)
  so that every piece of hard_sigmoid / relu is exercised."""
  rng = np.random.default_rng(1234)
  params = {
      'fc1': {'kernel': rng.normal(0.0, 0.5, (_C, _C // _R)).astype(np.float32)},
      'fc2': {'kernel': rng.normal(0.0, 0.5, (_C // _R, _C)).astype(np.float32)},
  }
  if use_bias:
    params['fc1']['bias'] = np.array([0.3, -0.2, 0.1, 0.5], np.float32)
    params['fc2']['bias'] = np.array([-6.0, -4.0, -1.5, -0.5, 0.5, 1.5, 4.0, 6.0], np.float32)
  return params


def _hand_input():
  rng = np.random.default_rng(99)
  return rng.normal(0.0, 1.0, (_N, _H, _W, _C)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The block's function.


@pytest.mark.parametrize('gate', ['sigmoid', 'hard_sigmoid', 'tanh', 'relu'])
@pytest.mark.parametrize('squeeze', ['avg', 'max'])
def test_se_block_matches_numpy_reference(squeeze, gate):
  x = _hand_input()
  params = _hand_params(use_bias=True)
  block = SEBlock(SEConfig(reduction=_R, rounding='floor', squeeze=squeeze, gate=gate))
  out, state = block.apply({'params': params}, x, mutable=['intermediates'])
  want, want_gate, pre = _np_se(x, params, squeeze, gate)

  # The weights really exercise the gate's pieces (else hard_sigmoid / relu would be untested).
  assert (pre < -3).any() and (pre > 3).any() and ((pre > -3) & (pre < 3)).any()
  assert (pre < 0).any() and (pre > 0).any()

  assert out.shape == x.shape == (_N, _H, _W, _C)  # NHWC in, NHWC out
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
  # The gate is sown as intermediates/gate with shape (N, C).
  (gate_values,) = state['intermediates']['gate']
  assert gate_values.shape == (_N, _C)
  np.testing.assert_allclose(np.asarray(gate_values), want_gate, rtol=1e-5, atol=1e-6)


def test_se_block_squeeze_operators_differ():
  """avg and max squeeze give different outputs on the same weights (guards against one
  silently ignoring the `squeeze` field)."""
  x, params = _hand_input(), _hand_params(True)
  avg = SEBlock(SEConfig(reduction=_R, squeeze='avg')).apply({'params': params}, x)
  mx = SEBlock(SEConfig(reduction=_R, squeeze='max')).apply({'params': params}, x)
  assert not np.allclose(np.asarray(avg), np.asarray(mx), atol=1e-3)


def test_se_block_without_bias_has_no_bias_params_and_matches_reference():
  x = _hand_input()
  block = SEBlock(SEConfig(reduction=_R, use_bias=False))
  shapes = jax.eval_shape(block.init, jax.random.key(0), x)['params']
  assert jax.tree_util.tree_map(lambda a: a.shape, shapes) == {
      'fc1': {'kernel': (_C, _C // _R)}, 'fc2': {'kernel': (_C // _R, _C)}}
  params = _hand_params(use_bias=False)
  out = block.apply({'params': params}, x)
  np.testing.assert_allclose(np.asarray(out), _np_se(x, params, 'avg', 'sigmoid')[0], rtol=1e-5, atol=1e-6)
  # With biases, the tree has them, with the right shapes.
  with_bias = jax.eval_shape(SEBlock(SEConfig(reduction=_R)).init, jax.random.key(0), x)['params']
  assert with_bias['fc1']['bias'].shape == (_C // _R,) and with_bias['fc2']['bias'].shape == (_C,)


def test_se_block_real_init_and_shapes():
  """A real (non-abstract) init: params are f32, the output keeps the NHWC shape."""
  x = jnp.asarray(_hand_input())
  block = SEBlock(SEConfig(reduction=4))
  variables = block.init(jax.random.key(0), x)
  assert set(variables) == {'params'}  # the sown gate is not kept by init unless asked
  out = block.apply(variables, x)
  assert out.shape == x.shape
  assert np.isfinite(np.asarray(out)).all()
  # Non-trivial: the block changes its input (sigmoid gate is strictly inside (0, 1)).
  assert not np.allclose(np.asarray(out), np.asarray(x))


# ----------------------------------------------------------------------------------------------
# Reduced width.


def _fc1_width(channels, reduction, rounding):
  x = jax.ShapeDtypeStruct((1, 2, 2, channels), jnp.float32)
  block = SEBlock(SEConfig(reduction=reduction, rounding=rounding))
  params = jax.eval_shape(block.init, jax.random.key(0), x)['params']
  assert params['fc1']['kernel'].shape[0] == channels
  assert params['fc2']['kernel'].shape == (params['fc1']['kernel'].shape[1], channels)
  return params['fc1']['kernel'].shape[1]


@pytest.mark.parametrize('channels,reduction,floor,div8', [
    (64, 16, 4, 8),     # docs/reference.md section 2: the only case where timm and legacy differ in SE-ResNet-18/34
    (256, 16, 16, 16),  # equal for C >= 128
    (2048, 16, 128, 128),
])
def test_reduced_width_examples(channels, reduction, floor, div8):
  assert _fc1_width(channels, reduction, 'floor') == floor
  assert _fc1_width(channels, reduction, 'divisible8') == div8


@pytest.mark.parametrize('channels', [16, 24, 72, 200, 336, 1000])
@pytest.mark.parametrize('reduction', [4, 16])
def test_reduced_width_matches_formulas(channels, reduction):
  assert _fc1_width(channels, reduction, 'floor') == channels // reduction
  assert _fc1_width(channels, reduction, 'divisible8') == _timm_make_divisible(channels / reduction, 8)
  assert se_lib.reduced_channels(channels, reduction, 'floor') == channels // reduction
  assert se_lib.make_divisible(channels / reduction, 8) == _timm_make_divisible(channels / reduction, 8)


# ----------------------------------------------------------------------------------------------
# Validation: bad values raise ValueError naming the value and the allowed ones.


def _assert_names(excinfo, *words):
  msg = str(excinfo.value)
  for w in words:
    assert w in msg, f'{w!r} not in error message {msg!r}'


@pytest.mark.parametrize('reduction', [0, -1])
def test_bad_reduction_raises(reduction):
  for make in (lambda: SEConfig(reduction=reduction),
               lambda: models.create('seresnet50', se=dict(reduction=reduction))):
    with pytest.raises(ValueError) as e:
      make()
    _assert_names(e, 'reduction', str(reduction), 'positive')


_BAD_CHOICES = [
    ('rounding', 'ceil', 'floor'),
    ('squeeze', 'median', 'avg'),
    ('gate', 'bogus', 'sigmoid'),
    ('placement', 'middle', 'standard'),
]


@pytest.mark.parametrize('field,bad,allowed', _BAD_CHOICES)
def test_bad_choice_raises_via_seconfig_and_create(field, bad, allowed):
  with pytest.raises(ValueError) as e:
    SEConfig(**{field: bad})
  _assert_names(e, field, repr(bad), allowed)
  with pytest.raises(ValueError) as e:
    models.create('seresnet50', se={field: bad})
  _assert_names(e, field, repr(bad), allowed)
  with pytest.raises(ValueError) as e:
    SEConfig().replace(**{field: bad})
  _assert_names(e, bad, allowed)


def test_all_allowed_choices_are_accepted():
  for rounding in se_lib.ROUNDINGS:
    for squeeze in se_lib.SQUEEZES:
      for gate in se_lib.GATES:
        for placement in se_lib.PLACEMENTS:
          SEConfig(rounding=rounding, squeeze=squeeze, gate=gate, placement=placement)
  assert set(se_lib.GATES) == set(_NP_GATES)
  assert set(se_lib.SQUEEZES) == {'avg', 'max'}


def test_seconfig_replace_rejects_unknown_field():
  with pytest.raises(ValueError, match='bogus_field'):
    SEConfig().replace(bogus_field=1)
  assert SEConfig().replace(reduction=8).reduction == 8


def test_seconfig_stages_mask():
  cfg = SEConfig(stages=[0, 1, True, False])
  assert cfg.stages == (False, True, True, False)
  assert [cfg.in_stage(i) for i in range(4)] == [False, True, True, False]
  assert all(SEConfig().in_stage(i) for i in range(6))
  with pytest.raises(ValueError, match=re.escape('stage 4')):
    cfg.in_stage(4)


# ----------------------------------------------------------------------------------------------
# Mixed precision.


@pytest.mark.parametrize('squeeze', ['avg', 'max'])
def test_bf16_compute_with_f32_params(squeeze):
  x = jnp.asarray(_hand_input(), jnp.bfloat16)
  block = SEBlock(SEConfig(reduction=_R, squeeze=squeeze), dtype=jnp.bfloat16, param_dtype=jnp.float32)
  abstract = jax.eval_shape(block.init, jax.random.key(0), x)['params']
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(abstract))
  params = _hand_params(use_bias=True)
  out, state = block.apply({'params': params}, x, mutable=['intermediates'])
  assert out.dtype == jnp.bfloat16
  assert out.shape == x.shape
  (gate_values,) = state['intermediates']['gate']
  assert gate_values.shape == (_N, _C)
  # Agrees with the float64 reference at bf16 precision (8 bits of mantissa: ~0.4% per rounding).
  want = _np_se(np.asarray(x, np.float32), params, squeeze, 'sigmoid')[0]
  got = np.asarray(out, np.float64)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2
