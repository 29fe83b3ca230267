"""Tests for the attention slot's kinds (`se_flax.models.attention`, `attention_kinds`): each kind
against a NumPy reference written from its paper's equations (float64, exact up to float32
rounding), parameter counts in ResNet-50 against timm 1.0.31 or the paper's formula, the
`attn=` override and the kind settings' validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax import models
from se_flax.models import attention
from se_flax.models import attention_kinds
from se_flax.models.se import KIND_DEFAULTS, KINDS, SEConfig

# timm 1.0.31: timm.create_model('resnet50', block_args=dict(attn_layer=KIND)), parameters.
TIMM_RESNET50_PARAMS = {None: 25_557_032, 'se': 28_088_024, 'eca': 25_557_118}

# ResNet-50's slot inputs: (channels, blocks) per stage.
_R50_SLOTS = ((256, 3), (512, 4), (1024, 6), (2048, 3))


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _params(name, **overrides):
  model = models.create(name, **overrides)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 64, 64, 3)))
  return models.count_params(shapes['params'])


def _apply(kind_config, x, seed=0):
  module = attention.build(kind_config)()
  variables = module.init(jax.random.key(seed), x)
  out, state = module.apply(variables, x, mutable=['intermediates'])
  return variables, np.asarray(out, np.float64), state['intermediates']


# ----------------------------------------------------------------------------------------------
# ECA

@pytest.mark.parametrize('channels, k', [(16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5),
                                         (2048, 7), (8192, 7), (2 ** 15, 9)])
def test_eca_kernel_size_from_channels(channels, k):
  # Eq. 12 by hand: |log2(C)/2 + 1/2| rounded to odd (truncate, then +1 if even), at least 3.
  t = int((math.log2(channels) + 1) / 2)
  assert k == max(t if t % 2 else t + 1, 3)
  assert attention_kinds.eca_kernel_size(channels) == k


def _np_eca(x, kernel):
  """omega = sigmoid(C1D_k(GAP(x))), zero padding (k-1)/2, out = x * omega (float64)."""
  x = np.asarray(x, np.float64)
  y = x.mean(axis=(1, 2))
  k = kernel.shape[0]
  padded = np.pad(y, ((0, 0), (k // 2, k // 2)))
  z = np.stack([padded[:, c:c + k] @ kernel for c in range(y.shape[1])], axis=1)
  s = _sigmoid(z)
  return x * s[:, None, None, :], s


def test_eca_matches_numpy_formula():
  x = jax.random.normal(jax.random.key(1), (2, 5, 3, 128))
  variables, out, inter = _apply(SEConfig(kind='eca'), x)
  kernel = np.asarray(variables['params']['conv']['kernel'], np.float64)
  assert kernel.shape == (5, 1, 1)  # k(128) = 5, no bias
  assert set(variables['params']['conv']) == {'kernel'}
  ref, gate = _np_eca(x, kernel[:, 0, 0])
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(inter['gate'][0]), gate, rtol=1e-5, atol=1e-6)
  assert inter['gate'][0].shape == (2, 128)


def test_eca_gamma_beta_change_the_kernel():
  x = jnp.zeros((1, 2, 2, 256))
  variables, _, _ = _apply(SEConfig(kind='eca', eca_gamma=1, eca_beta=1), x)
  assert variables['params']['conv']['kernel'].shape == (attention_kinds.eca_kernel_size(256, 1, 1), 1, 1) == (9, 1, 1)


# ----------------------------------------------------------------------------------------------
# Parameter counts in ResNet-50.

@pytest.mark.parametrize('kind', [k for k in TIMM_RESNET50_PARAMS if k is not None])
def test_resnet50_params_equal_timm(kind):
  assert _params('resnet50', attn=kind) == TIMM_RESNET50_PARAMS[kind]


def test_resnet50_eca_params_from_eq12():
  added = sum(blocks * attention_kinds.eca_kernel_size(c) for c, blocks in _R50_SLOTS)
  assert added == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7 == 86
  assert _params('resnet50', attn='eca') - TIMM_RESNET50_PARAMS[None] == added


# ----------------------------------------------------------------------------------------------
# The `attn=` override and the kind settings.

def test_attn_override_keeps_placement_and_stages():
  base = models.create('seresnet50', se=dict(placement='pre', stages=(False, True, True, True)))
  assert base.se.kind == 'se'
  model = models.create('seresnet50', attn='eca', se=dict(placement='pre', stages=(False, True, True, True)))
  assert model.se == SEConfig(kind='eca', placement='pre', stages=(False, True, True, True))
  assert models.create('seresnet50', attn='se').se == models.create('seresnet50').se
  assert models.create('seresnet50', attn=None).se is None
  assert models.create('resnet50', attn='se').se == SEConfig()


def test_attn_kind_starts_from_its_defaults_and_takes_settings():
  model = models.create('seresnet50', attn='eca', se=dict(eca_gamma=1))
  assert (model.se.eca_gamma, model.se.eca_beta, model.se.reduction) == (1, KIND_DEFAULTS['eca']['eca_beta'], None)
  assert models.create('seresnet50', se=dict(kind='eca')).se == SEConfig(kind='eca')


def test_unknown_kind_is_one_line_naming_the_allowed():
  for call in (lambda: models.create('resnet50', attn='sse'), lambda: SEConfig(kind='sse'),
               lambda: models.create('resnet50', se=dict(kind='sse'))):
    with pytest.raises(ValueError) as e:
      call()
    assert str(e.value) == f"attention kind='sse' is not one of {', '.join(KINDS)}"


def test_setting_a_kind_does_not_use_is_one_line():
  with pytest.raises(ValueError, match=r"^attention kind 'eca' has no setting reduction=8; its settings: "
                                       r"eca_gamma, eca_beta, gate, placement, stages$"):
    models.create('resnet50', attn='eca', se=dict(reduction=8))
  with pytest.raises(ValueError, match=r"^attention kind 'se' has no setting eca_gamma=3"):
    SEConfig(eca_gamma=3)


def test_attn_none_with_settings_is_an_error():
  with pytest.raises(ValueError, match='turns the attention slot off'):
    models.create('seresnet50', attn=None, se=dict(reduction=8))


def test_every_kind_has_a_module_and_defaults():
  assert tuple(attention.MODULES) == KINDS == tuple(KIND_DEFAULTS)
