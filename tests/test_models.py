"""Tests for the model zoo (`se_flax.models`): every registered name, parity of parameter and
multiply-add counts with timm and the paper, the SE ablation knobs as graph changes, the
registry, differentiation, mixed precision, synchronised BatchNorm and the stem pools.

Figures are copied from `docs/reference.md` (section 1: timm 1.0.31; section 3:
the paper, Hu et al. arXiv 1709.01507 v4).

Speed notes (2 shared CPU cores): a real `model.init` took 5-30 s even for tiny nets
(measured; RNG for every parameter compiles slowly on XLA:CPU), so tests build variables with `jax.eval_shape(model.init)` and fill
them with NumPy (`_random_variables`). Forward passes are jitted with XLA's backend optimisation
level 0, which halves compile time (compile time, not compute, dominates here).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from se_flax import models
from se_flax.models import layers, registry
from se_flax.models.se import SEConfig

# ----------------------------------------------------------------------------------------------
# Helpers (shared fixtures live here, not in conftest.py, which other suites own).

_KEY = jax.random.key(0)


def _fast_jit(fun, **kwargs):
  return jax.jit(fun, compiler_options={'xla_backend_optimization_level': 0}, **kwargs)


def _abstract_variables(model, size=32, batch=1):
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, _KEY, x)


def _params_of(name, **overrides):
  """Abstract params of a registered model (shapes only; param shapes do not depend on the input
  size, so a small input keeps tracing cheap)."""
  return _abstract_variables(models.create(name, **overrides))['params']


def _n_params(name, **overrides) -> int:
  return models.count_params(_params_of(name, **overrides))


def _random_variables(abstract, seed=0):
  """NumPy-filled variables for an abstract tree: He-normal kernels, random BN affine and
  running statistics (non-zero, so zero-init-last-BN does not switch residual branches off)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape, dtype = leaf.shape, leaf.dtype
    if name == 'kernel':
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0.0, 0.1, shape)
    else:
      raise AssertionError(f'unexpected variable {jax.tree_util.keystr(path)}')
    return jnp.asarray(value, dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def _rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------
# Every registered model.

# Deep nets only get the abstract (eval_shape) pass: compiling them on 2 CPU cores costs 5-15 s
# each. CIFAR depths 44/56 are skipped too: same blocks as 20/32, only more of them (~3.5 s each).
# Measured with this rule: the whole parametrised test takes ~75 s single-process on 2 cores
# shared with other suites (load average ~3), 35 forwards included.
# VGG-16 (138M parameters, 17 s at 64 px) is checked by its golden logits and se_vgg_tiny instead.
_BIG_DEPTHS = ('44', '56', '101', '110', '152', '154', '164', '16_bn')


def _is_big(name: str) -> bool:
  # The full Inception nets compile as slowly (and take no input under 75 px, but BN-Inception);
  # their real forwards are the golden parity tests of test_convert.py.
  return any(d in name for d in _BIG_DEPTHS) or ('inception' in name and not name.endswith('_tiny'))


@functools.lru_cache(maxsize=None)
def _abstract_at_natural_size(name):
  """(logits, variables) of `name` at its natural input size, batch 2, from shapes only."""
  model, size = models.create(name), models.spec(name).input_size
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init_with_output(_KEY, x), x)


@pytest.mark.parametrize('name', models.names())
def test_every_model(name):
  model, model_spec = models.create(name), models.spec(name)
  assert model_spec.input_size in (32, 75, 224, 299)
  logits, variables = _abstract_at_natural_size(name)
  assert logits.shape == (2, model.num_classes) and logits.dtype == jnp.float32
  assert set(variables) == {'params', 'batch_stats'}
  assert models.count_params(variables['params']) > 0
  if _is_big(name):
    return
  # A real forward on a small input: 64 px for ImageNet nets (stride 32 leaves 2x2), else the
  # natural size (32 for CIFAR and most tiny nets, 75 for the tiny Inception-v3s).
  size = 64 if model_spec.input_size == 224 else model_spec.input_size
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 3)), jnp.float32)
  out = _fast_jit(model.apply)(_random_variables(variables), x)
  assert out.shape == (2, model.num_classes) and out.dtype == jnp.float32
  out = np.asarray(out)
  assert np.isfinite(out).all()
  assert not np.allclose(out[0], out[1])  # depends on the input


def test_names_are_unique_and_cover_the_reference_table():
  all_names = models.names()
  assert len(all_names) == len(set(all_names)) and all_names == sorted(all_names)
  assert set(TIMM_TABLE) <= set(all_names)
  assert {'seresnet_tiny', 'seresnet_tiny_cifar', 'seresnet20_cifar'} <= set(all_names)


# ----------------------------------------------------------------------------------------------
# Parity with timm: parameters and multiply-adds.
# docs/reference.md, section 1 (timm 1.0.31, 1000 classes): name -> (params, GMACs@224).
TIMM_TABLE = {
    'resnet18': (11_689_512, 1.814),
    'resnet34': (21_797_672, 3.664),
    'resnet50': (25_557_032, 4.089),
    'resnet101': (44_549_160, 7.801),
    'resnet152': (60_192_808, 11.514),
    'seresnet18': (11_779_624, 1.814),
    'seresnet34': (21_960_416, 3.664),
    'seresnet50': (28_088_024, 4.092),
    'seresnet101': (49_326_872, 7.806),
    'seresnet152': (66_821_848, 11.520),
    'legacy_seresnet18': (11_778_592, 1.814),
    'legacy_seresnet34': (21_958_868, 3.664),
    'legacy_seresnet50': (28_088_024, 3.860),
    'legacy_seresnet101': (49_326_872, 7.575),
    'legacy_seresnet152': (66_821_848, 11.289),
    'resnext50_32x4d': (25_028_904, 4.230),
    'resnext101_32x4d': (44_177_704, 7.970),
    'resnet26d': (16_014_408, 2.582),
    'seresnext26d_32x4d': (16_809_512, 2.712),
    'seresnext50_32x4d': (27_559_896, 4.233),
    'seresnext101_32x4d': (48_955_416, 7.975),
    'legacy_seresnext26_32x4d': (16_790_280, 2.472),
    'legacy_seresnext50_32x4d': (27_559_896, 4.233),
    'legacy_seresnext101_32x4d': (48_955_416, 7.975),
    'senet154': (115_088_984, 20.688),
    'legacy_senet154': (115_088_984, 20.688),
}


@pytest.mark.parametrize('name', sorted(TIMM_TABLE))
def test_param_count_equals_timm(name):
  _, variables = _abstract_at_natural_size(name)
  assert models.count_params(variables['params']) == TIMM_TABLE[name][0]


@pytest.mark.parametrize('name', sorted(TIMM_TABLE))
def test_macs_match_timm_table(name):
  gmacs = models.count_macs(models.create(name), 224) / 1e9
  want = TIMM_TABLE[name][1]
  assert abs(gmacs - want) / want < 5e-4, f'{name}: {gmacs:.4f} GMACs vs timm {want}'


def test_macs_match_paper_and_timm_headline_figures():
  # Paper Table 2: SE-ResNet-50 3.87 G (Caffe layout = legacy); timm's CSV: seresnet50 4.11 G.
  legacy = models.count_macs(models.create('legacy_seresnet50')) / 1e9
  timm = models.count_macs(models.create('seresnet50')) / 1e9
  assert abs(legacy - 3.87) / 3.87 < 0.01, legacy
  assert abs(timm - 4.11) / 4.11 < 0.01, timm
  # SE costs little: the paper's +0.26% (3.86 -> 3.87) for the Caffe layout.
  base = models.count_macs(models.create('legacy_seresnet50', se=None)) / 1e9
  assert 0 < legacy - base < 0.01 * base
  # Convolution MACs scale with the image area (at 448 every feature map is exactly 2x wider);
  # the classifier (512 x 1000) does not.
  fc = 512 * 1000
  m224, m448 = (models.count_macs(models.create('resnet18'), s) for s in (224, 448))
  assert m448 - fc == 4 * (m224 - fc)
  assert models.count_macs(models.create('resnet18', num_classes=10), 224) == m224 - fc + 5120


# ----------------------------------------------------------------------------------------------
# The paper's parameter arithmetic (Section 4, Eq. 5; Tables 10, 13, 15).

_C_S = (256, 512, 1024, 2048)  # SE-ResNet-50 stage output channels
_N_S = (3, 4, 6, 3)            # blocks per stage
_RESNET50 = 25_557_032         # docs/reference.md section 1


def _paper_se(**changes):
  """The paper's ablation setting: SE-ResNet-50 (Caffe layout), C // r, no FC biases."""
  return {**dict(reduction=16, rounding='floor', use_bias=False), **changes}


@pytest.mark.parametrize('use_bias', [False, True])
@pytest.mark.parametrize('r', [2, 4, 8, 16, 32])
def test_eq5_extra_parameters(r, use_bias):
  baseline = _n_params('legacy_seresnet50', se=None)
  assert baseline == _RESNET50
  with_se = _n_params('legacy_seresnet50', se=dict(_paper_se(reduction=r), use_bias=use_bias))
  want = (2 * sum(n * c * c for n, c in zip(_N_S, _C_S))) // r  # (2/r) sum_s N_s C_s^2, exact
  if use_bias:  # b1 (C/r) + b2 (C) per block
    want += sum(n * (c // r + c) for n, c in zip(_N_S, _C_S))
  assert with_se - baseline == want


# Paper Table 10 (docs/reference.md section 3): SE-ResNet-50 params by reduction ratio.
# Exact counts (no biases): 45.68M, 35.62M, 30.59M, 28.07M, 26.81M. The paper's r=8 figure is
# 0.113M above the exact count (r=4: 0.083M, r=32: 0.086M), so the tolerance is 0.12M, not 0.1M.
@pytest.mark.parametrize('r,paper_m', [(2, 45.7), (4, 35.7), (8, 30.7), (16, 28.1), (32, 26.9)])
def test_table10_param_counts(r, paper_m):
  n = _n_params('legacy_seresnet50', se=_paper_se(reduction=r))
  assert abs(n / 1e6 - paper_m) < 0.12, n


def test_se_params_are_about_ten_percent():
  # Section 4: SE adds ~2.5M parameters to ResNet-50 (~10%).
  extra = _n_params('legacy_seresnet50', se=_paper_se()) - _RESNET50
  assert abs(extra / 1e6 - 2.5) < 0.05 and 0.09 < extra / _RESNET50 < 0.11


# ----------------------------------------------------------------------------------------------
# SE off = the baseline; SE on from a plain name.


@pytest.mark.parametrize('se_name,base_name', [('seresnet50', 'resnet50'),
                                                ('seresnext50_32x4d', 'resnext50_32x4d')])
def test_se_off_is_the_baseline(se_name, base_name):
  off = _abstract_variables(models.create(se_name, se=None))
  base = _abstract_variables(models.create(base_name))
  assert _shapes(off) == _shapes(base)
  on = _params_of(se_name)
  assert _shapes(on) != _shapes(off['params'])
  assert 'se' in on['layer1_0'] and 'se' not in off['params']['layer1_0']
  # `enabled=False` in a mapping is the same as se=None.
  assert _shapes(_params_of(se_name, se=dict(enabled=False))) == _shapes(base['params'])


# Small versions of the nets (same block types and layout knobs), so the forwards compile fast.
_SMALL = dict(stage_sizes=(1, 1, 1, 1), widths=(8, 8, 8, 8), stem_channels=8, num_classes=10)


@pytest.mark.parametrize('se_name,base_name,layout', [
    ('seresnet50', 'resnet50', {}),
    ('legacy_seresnet18', 'resnet18', dict(stem_pool='ceil')),  # the pre-SE ReLU goes with SE
])
def test_se_off_computes_the_baseline_function(se_name, base_name, layout):
  off = models.create(se_name, se=None, drop_rate=0.0, **_SMALL)
  base = models.create(base_name, **layout, **_SMALL)
  variables = _random_variables(_abstract_variables(base, batch=2), seed=5)
  assert _shapes(_abstract_variables(off)) == _shapes(variables)
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 32, 32, 3)), jnp.float32)
  np.testing.assert_allclose(np.asarray(_fast_jit(off.apply)(variables, x)),
                             np.asarray(_fast_jit(base.apply)(variables, x)), rtol=1e-5, atol=1e-5)


def test_se_on_from_plain_resnet():
  params = _params_of('resnet50', se=dict(reduction=16))
  assert params['layer1_0']['se']['fc1']['kernel'].shape == (256, 16)
  assert params['layer4_2']['se']['fc2']['kernel'].shape == (128, 2048)
  # Defaults of a plain net turned SE: the paper's C // r, with biases.
  assert models.count_params(params) == TIMM_TABLE['legacy_seresnet50'][0]


# ----------------------------------------------------------------------------------------------
# Placements (paper Tables 14-15).


def _bottleneck_se_widths(stage_sizes, widths, stem_channels, expansion=4):
  """Per block, the channel count SE sees for each placement, from the architecture alone."""
  out = {}
  in_ch = stem_channels
  for s, (n, planes) in enumerate(zip(stage_sizes, widths)):
    for b in range(n):
      c_out = planes * expansion
      out[f'layer{s + 1}_{b}'] = {'standard': c_out, 'post': c_out, 'identity': c_out,
                                  'pre': in_ch, 'after_3x3': planes}
      in_ch = c_out
  return out


_BOTTLENECK_NETS = {
    'seresnet_tiny': ((1, 1, 1, 1), (8, 16, 32, 64), 16),
    'seresnet50': ((3, 4, 6, 3), (64, 128, 256, 512), 64),
}


@pytest.mark.parametrize('name', sorted(_BOTTLENECK_NETS))
@pytest.mark.parametrize('placement', ['standard', 'post', 'identity', 'pre', 'after_3x3'])
def test_placement_se_input_width(name, placement):
  expected = _bottleneck_se_widths(*_BOTTLENECK_NETS[name])
  params = _params_of(name, se=dict(placement=placement))
  blocks = {k: v for k, v in params.items() if k.startswith('layer')}
  assert set(blocks) == set(expected)
  base = models.spec(name).kwargs['se']
  for block, p in blocks.items():
    c = expected[block][placement]
    hidden = models.SEBlock(SEConfig(reduction=base.reduction, rounding=base.rounding))
    want_hidden = jax.eval_shape(hidden.init, _KEY, jax.ShapeDtypeStruct((1, 1, 1, c), jnp.float32))
    assert p['se']['fc1']['kernel'].shape == (c, want_hidden['params']['fc1']['kernel'].shape[1]), block
    assert p['se']['fc2']['kernel'].shape[1] == c, block


def test_table15_se_on_3x3_params():
  # Paper Table 15: SE-ResNet-50 with SE on the 3x3 conv, 25.8M params (exact: 25.71M).
  n = _n_params('legacy_seresnet50', se=_paper_se(placement='after_3x3'))
  assert abs(n / 1e6 - 25.8) < 0.1, n
  # Table 14's integrations all cost the standard 28.1M except SE-PRE (SE over the block input).
  for placement in ('standard', 'post', 'identity'):
    assert abs(_n_params('legacy_seresnet50', se=_paper_se(placement=placement)) / 1e6 - 28.1) < 0.1


@pytest.fixture(scope='module')
def tiny_variables():
  return _random_variables(_abstract_variables(models.create('seresnet_tiny'), batch=2))


def test_placements_with_shared_weights_differ(tiny_variables):
  """'standard', 'post' and 'identity' share one parameter tree but not one function."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 32, 32, 3)), jnp.float32)
  outs = {}
  for placement in ('standard', 'post', 'identity'):
    model = models.create('seresnet_tiny', se=dict(placement=placement))
    assert _shapes(_abstract_variables(model)) == _shapes(tiny_variables)
    outs[placement] = np.asarray(_fast_jit(model.apply)(tiny_variables, x))
    assert np.isfinite(outs[placement]).all()
  for a, b in (('standard', 'post'), ('standard', 'identity'), ('post', 'identity')):
    assert _rel_l2(outs[a], outs[b]) > 1e-2, (a, b)


@pytest.mark.parametrize('block_name,filters', [('PreActBasicBlock', 8), ('PreActBottleneck', 2)])
def test_pre_placement_leaves_identity_shortcut_alone(block_name, filters):
  """SE-PRE on a pre-activation block with an identity shortcut (8 -> 8 channels). With a gate of
  zero the residual branch sees zeros, so the block must compute branch(0) + x = block(0) + x."""
  import flax.linen as nn
  from se_flax.models import resnet
  conv = functools.partial(nn.Conv, use_bias=False)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  attn = functools.partial(models.SEBlock, config=SEConfig(reduction=2, gate='relu'))
  block = getattr(resnet, block_name)(filters=filters, conv=conv, norm=norm, attn=attn, placement='pre')
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 8)), jnp.float32)
  variables = _random_variables(jax.eval_shape(block.init, _KEY, x))
  # relu gate, fc2 weights and bias zero: gate == 0, so SE(x) == 0.
  variables['params']['se']['fc2'] = jax.tree_util.tree_map(jnp.zeros_like, variables['params']['se']['fc2'])
  out = np.asarray(block.apply(variables, x))
  branch_of_zeros = np.asarray(block.apply(variables, jnp.zeros_like(x)))
  np.testing.assert_allclose(out, branch_of_zeros + np.asarray(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Stage mask (paper Table 13).


def test_stage_mask_puts_se_only_in_masked_stages():
  params = _params_of('seresnet50', se=dict(stages=(False, False, True, False)))
  with_se = sorted(k for k, v in params.items() if k.startswith('layer') and 'se' in v)
  assert with_se == [f'layer3_{i}' for i in range(6)]
  params = _params_of('seresnet_tiny', se=dict(stages=[True, False, False, True]))
  assert sorted(k for k, v in params.items() if k.startswith('layer') and 'se' in v) == ['layer1_0', 'layer4_0']


# Paper Table 13: SE in stage 2 (conv2_x = our layer1) only 25.6M, stage 3 25.7M, stage 4 26.4M,
# all 28.1M. Exact counts without FC biases: 25.58M, 25.69M, 26.34M, 28.07M; with biases each is
# at most 0.016M higher, and both match within 0.1M. The paper's ablations ran without biases
# (docs/reference.md section 3), so that is what is checked.
@pytest.mark.parametrize('mask,paper_m', [
    ((True, False, False, False), 25.6),
    ((False, True, False, False), 25.7),
    ((False, False, True, False), 26.4),
    ((True, True, True, True), 28.1),
])
def test_table13_stage_param_counts(mask, paper_m):
  n = _n_params('legacy_seresnet50', se=_paper_se(stages=mask))
  assert abs(n / 1e6 - paper_m) < 0.1, n
  expected = _RESNET50 + sum(2 * nb * c * c // 16 for nb, c, on in zip(_N_S, _C_S, mask) if on)
  assert n == expected


@pytest.mark.parametrize('mask', [(True, False), (True,) * 5, ()])
def test_stage_mask_of_wrong_length_raises(mask):
  with pytest.raises(ValueError, match='stages'):
    models.create('seresnet50', se=dict(stages=mask))
  with pytest.raises(ValueError, match='stages'):
    models.create('seresnet20_cifar', se=SEConfig(stages=(True,) * 4))


# ----------------------------------------------------------------------------------------------
# Registry.


def test_unknown_name_suggests_close_matches():
  with pytest.raises(ValueError) as e:
    models.create('seresnet5')
  assert "'seresnet5'" in str(e.value) and 'seresnet50' in str(e.value)
  with pytest.raises(ValueError, match='unknown model'):
    models.spec('definitely_not_a_model_zzz')


def test_unknown_override_field_is_named():
  with pytest.raises(ValueError) as e:
    models.create('seresnet50', bogus_width=3)
  assert 'bogus_width' in str(e.value) and 'num_classes' in str(e.value)
  with pytest.raises(ValueError, match='bogus_se_field'):
    models.create('seresnet50', se=dict(bogus_se_field=1))
  with pytest.raises(ValueError, match='se='):
    models.create('seresnet50', se=16)


def test_overrides_reach_the_model():
  model = models.create('seresnet20_cifar', num_classes=10, axis_name='batch', dtype=jnp.bfloat16)
  assert (model.num_classes, model.axis_name, model.dtype) == (10, 'batch', jnp.bfloat16)
  assert _params_of('seresnet20_cifar', num_classes=10)['fc']['kernel'].shape == (64, 10)
  # `se=dict(...)` changes the registered config, keeping the rest of it.
  se = models.create('seresnet50', se=dict(gate='tanh')).se
  assert (se.gate, se.rounding, se.reduction) == ('tanh', 'divisible8', 16)
  # The registry's own spec is not mutated by overrides.
  assert models.spec('seresnet50').kwargs['se'].gate == 'sigmoid'


def test_names_filter():
  sx = models.names('*seresnext*')
  assert sx == sorted(sx) and len(sx) >= 6
  assert all('seresnext' in n for n in sx)
  assert {'seresnext50_32x4d', 'legacy_seresnext26_32x4d', 'seresnext26d_32x4d'} <= set(sx)
  assert set(sx) == {n for n in models.names() if 'seresnext' in n}
  assert models.names('*_cifar') == [n for n in models.names() if n.endswith('_cifar')]
  assert models.names('no_such_*') == []


def test_duplicate_registration_raises():
  before = models.spec('seresnet50')
  n_before = len(models.names())
  with pytest.raises(ValueError, match='seresnet50'):
    registry.register('seresnet50', input_size=32, description='duplicate', stage_sizes=(1, 1, 1, 1))
  assert models.spec('seresnet50') is before and len(models.names()) == n_before


# ----------------------------------------------------------------------------------------------
# jit and grad, train mode.


def _xent(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


@pytest.mark.parametrize('name', ['seresnet_tiny', 'seresnet20_cifar'])
def test_jit_and_grad(name):
  model = models.create(name, num_classes=10)
  variables = _random_variables(_abstract_variables(model, batch=4), seed=1)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray([0, 3, 7, 9])

  def loss_fn(params, batch_stats):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                  mutable=['batch_stats'])
    return _xent(logits, labels), (logits, updates['batch_stats'])

  grad_fn = _fast_jit(jax.grad(loss_fn, has_aux=True))
  grads, (logits, new_stats) = grad_fn(variables['params'], variables['batch_stats'])
  assert logits.shape == (4, 10)
  assert _shapes(grads) == _shapes(variables['params'])
  se_nonzero = []
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g, key = np.asarray(g), jax.tree_util.keystr(path)
    assert np.isfinite(g).all(), key
    if "['se']" in key:
      se_nonzero.append(bool(np.abs(g).max() > 0))
    else:  # every non-SE parameter gets a gradient: none is disconnected
      assert np.abs(g).max() > 0, key
  # SE parameters get gradients too, except where the excitation's ReLU is dead for the whole
  # batch (seresnet20_cifar's first stage has 16 // 16 = 1 hidden unit), which is legitimate.
  assert len(se_nonzero) >= 4 * 3 and np.mean(se_nonzero) > 0.75, se_nonzero
  # Train mode updated the running statistics.
  old = variables['batch_stats']['stem_bn1']['mean']
  assert not np.allclose(np.asarray(new_stats['stem_bn1']['mean']), np.asarray(old))
  # The jitted eval forward is deterministic and uses the running statistics (differs from train).
  eval_logits = _fast_jit(functools.partial(model.apply, train=False))(variables, x)
  assert np.isfinite(np.asarray(eval_logits)).all()
  assert not np.allclose(np.asarray(eval_logits), np.asarray(logits))


def test_real_init_of_tiny_model():
  """One real `init` (the other tests fill abstract trees with NumPy to save compile time)."""
  model = models.create('seresnet_tiny_cifar', num_classes=10)
  variables = _fast_jit(model.init)(_KEY, jnp.zeros((1, 32, 32, 3)))
  assert _shapes(variables) == _shapes(_abstract_variables(model))
  leaves = jax.tree_util.tree_leaves_with_path(variables['params'])
  assert all(np.isfinite(np.asarray(v)).all() for _, v in leaves)
  # zero-init-last-BN: the last BN of every residual branch starts at scale 0 ...
  assert not np.asarray(variables['params']['layer1_0']['bn2']['scale']).any()
  # ... and the option turns it off.
  plain = _fast_jit(models.create('seresnet_tiny_cifar', num_classes=10, zero_init_last_bn=False).init)(
      _KEY, jnp.zeros((1, 32, 32, 3)))
  assert np.asarray(plain['params']['layer1_0']['bn2']['scale']).min() == 1.0


# ----------------------------------------------------------------------------------------------
# bf16 compute with f32 params.

# Relative L2 of bf16 vs f32 logits (same f32 params, eval mode), measured with the variables
# below: seresnet20_cifar 0.0151, seresnet_tiny 0.0123; over other seeds 0.003-0.014. bf16 has an
# 8-bit mantissa (0.4% per rounding), so ~1% after 20 layers is expected; 4e-2 leaves margin.
_BF16_TOL = 4e-2


@pytest.mark.parametrize('name', ['seresnet20_cifar', 'seresnet_tiny'])
def test_bf16_forward_matches_f32(name):
  f32 = models.create(name, num_classes=10)
  bf16 = models.create(name, num_classes=10, dtype=jnp.bfloat16)
  variables = _random_variables(_abstract_variables(f32, batch=4), seed=2)
  abstract_bf16 = _abstract_variables(bf16, batch=4)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(abstract_bf16))  # params stay f32
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 32, 32, 3)), jnp.float32)
  want = _fast_jit(f32.apply)(variables, x)
  got, state = _fast_jit(functools.partial(bf16.apply, mutable=['intermediates']))(variables, x)
  assert got.dtype == jnp.float32  # logits are returned in f32
  assert state['intermediates']['pre_logits'][0].dtype == jnp.bfloat16  # computed in bf16
  err = _rel_l2(got, want)
  assert err < _BF16_TOL, err
  assert err > 0  # bf16 really was used


# ----------------------------------------------------------------------------------------------
# Synchronised BatchNorm through axis_name.


def test_axis_name_synchronises_batch_stats():
  full = models.create('seresnet_tiny', num_classes=10)
  synced = models.create('seresnet_tiny', num_classes=10, axis_name='batch')
  variables = _random_variables(_abstract_variables(full, batch=8), seed=4)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 32, 32, 3)), jnp.float32)
  groups = x.reshape(4, 2, 32, 32, 3)

  def train_apply(model, x):
    return model.apply(variables, x, train=True, mutable=['batch_stats'])

  want_logits, want = _fast_jit(functools.partial(train_apply, full))(x)
  vmapped = lambda model: _fast_jit(jax.vmap(functools.partial(train_apply, model), axis_name='batch'))
  got_logits, got = vmapped(synced)(groups)
  np.testing.assert_allclose(np.asarray(got_logits).reshape(8, 10), np.asarray(want_logits),
                             rtol=1e-3, atol=1e-3)
  for path, w in jax.tree_util.tree_leaves_with_path(want['batch_stats']):
    g = functools.reduce(lambda t, k: t[k.key], path, got['batch_stats'])
    assert g.shape == (4,) + w.shape
    for i in range(4):
      np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w), rtol=1e-3, atol=1e-4,
                                 err_msg=jax.tree_util.keystr(path))
  # Control: without axis_name each group of 2 keeps its own statistics.
  _, unsynced = vmapped(full)(groups)
  stem_mean = np.asarray(unsynced['batch_stats']['stem_bn1']['mean'])
  assert not np.allclose(stem_mean[0], np.asarray(want['batch_stats']['stem_bn1']['mean']), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Stem pools: PyTorch's ceil mode and count_include_pad=False.


def _torch_pool_out(size, k, s, p, ceil):
  """PyTorch's pooling output size (torch/nn/functional + aten pooling_shape.h)."""
  num = size + 2 * p - k
  out = (-(-num // s) if ceil else num // s) + 1
  if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input (or left pad)
    out -= 1
  return out


def _np_pool(x, k, s, p, ceil, op):
  """Reference 2-D pooling over NHWC with windows clipped to the (unpadded) input: max, or mean
  over the valid elements (count_include_pad=False)."""
  n, h, w, c = x.shape
  oh, ow = _torch_pool_out(h, k, s, p, ceil), _torch_pool_out(w, k, s, p, ceil)
  out = np.zeros((n, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      r0, c0 = i * s - p, j * s - p
      win = x[:, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w), :]
      out[:, i, j, :] = win.max(axis=(1, 2)) if op == 'max' else win.mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('h,w', [(7, 7), (8, 9), (112, 113), (5, 6), (3, 4)])
def test_max_pool_stem_matches_pytorch(h, w):
  x = np.random.default_rng(h * 100 + w).normal(size=(2, h, w, 3)).astype(np.float32)
  for mode, p, ceil in (('ceil', 0, True), ('pad', 1, False)):
    got = np.asarray(layers.max_pool_stem(jnp.asarray(x), mode))
    want = _np_pool(x, 3, 2, p, ceil, 'max')
    assert got.shape == want.shape, (mode, got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


def test_stem_pool_modes_differ():
  # The stem conv maps 224 -> 112 (same size after both pools, 56) and 226 -> 113, where the
  # padded pool gives 57 and the ceil-mode pool 56 (PyTorch: floor((113+2-3)/2)+1 vs ceil((113-3)/2)+1).
  assert _torch_pool_out(112, 3, 2, 1, False) == _torch_pool_out(112, 3, 2, 0, True) == 56
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 113, 113, 2)), jnp.float32)
  assert layers.max_pool_stem(x, 'pad').shape == (1, 57, 57, 2)
  assert layers.max_pool_stem(x, 'ceil').shape == (1, 56, 56, 2)
  # At even size the shapes agree but the windows are offset by one pixel.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 112, 112, 2)), jnp.float32)
  pad, ceil = layers.max_pool_stem(x, 'pad'), layers.max_pool_stem(x, 'ceil')
  assert pad.shape == ceil.shape == (1, 56, 56, 2)
  assert not np.allclose(np.asarray(pad), np.asarray(ceil))
  with pytest.raises(ValueError, match='bogus'):
    layers.max_pool_stem(x, 'bogus')


def test_legacy_and_timm_layouts_see_different_stem_sizes():
  """Whole nets at 226 px: the Caffe (ceil) stem pool gives 56x56, timm's padded pool 57x57."""
  sizes = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name == 'layer1_0' and context.method_name == '__call__':
      sizes[context.module.parent.stem_pool] = args[0].shape[1:3]
    return out

  import flax.linen as nn
  x = jax.ShapeDtypeStruct((1, 226, 226, 3), jnp.float32)
  with nn.intercept_methods(record):
    for name in ('legacy_seresnet50', 'seresnet50'):
      jax.eval_shape(models.create(name).init, _KEY, x)
  assert sizes == {'ceil': (56, 56), 'pad': (57, 57)}


@pytest.mark.parametrize('h,w,window', [(7, 7, 2), (5, 8, 2), (9, 3, 2), (1, 1, 2), (7, 5, 3)])
def test_avg_pool_ceil_matches_pytorch(h, w, window):
  x = np.random.default_rng(h * 10 + w).normal(size=(2, h, w, 3)).astype(np.float32)
  got = np.asarray(layers.avg_pool_ceil(jnp.asarray(x), window))
  want = _np_pool(x, window, window, 0, True, 'avg')
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Defaults per family, as the network each name reproduces.

_LEGACY_SE = [n for n in models.names('legacy_se*')]


@pytest.mark.parametrize('name', _LEGACY_SE + ['legacy_senet154', 'senet154', 'seresnet50', 'resnet50',
                                               'seresnext50_32x4d', 'seresnext26d_32x4d'])
def test_imagenet_family_defaults(name):
  """Caffe SE-ResNet/SE-ResNeXt (timm legacy_*): no dropout, every BN scale at 1 (timm senet.py);
  SENet-154 dropout 0.2 in both layouts (the paper); timm's ResNet layout zero-inits the last BN of
  each residual branch (timm ResNet zero_init_last=True)."""
  model = models.create(name)
  assert model.drop_rate == (0.2 if name.endswith('senet154') else 0.0)
  assert model.zero_init_last_bn == (not name.startswith('legacy_'))


# He et al. 2016 (ResNet-20..110, option A: no projection parameters) and its pre-activation
# variants; ResNet-164 (Identity Mappings) and WRN-16-8: bare 1x1 projection convs. Papers: ResNet-110
# 1.7M, ResNet-164 1.7M, WRN-16-8 11.0M parameters. With projections / with option A for contrast.
_CIFAR_PARAMS = {  # name: (default, other shortcut), 10 classes
    'resnet20_cifar': ('pad', 269_722, 272_474), 'resnet110_cifar': ('pad', 1_727_962, 1_730_714),
    'seresnet110_cifar': ('pad', 1_742_200, 1_744_952), 'preactresnet110_cifar': ('pad', 1_727_962, 1_730_522),
    'resnet164_cifar': ('conv', 1_703_258, 1_661_274), 'seresnet164_cifar': ('conv', 1_905_362, 1_863_378),
    'wrn16_8_cifar': ('conv', 10_961_370, 10_795_482), 'sewrn16_8_cifar': ('conv', 11_049_290, 10_883_402),
}


@pytest.mark.parametrize('name', sorted(_CIFAR_PARAMS))
def test_cifar_family_defaults_and_parameter_counts(name):
  shortcut, default_params, other_params = _CIFAR_PARAMS[name]
  model = models.create(name)
  assert (model.downsample, model.zero_init_last_bn, model.drop_rate) == (shortcut, False, 0.0)
  assert _n_params(name) == default_params
  assert _n_params(name, downsample='conv' if shortcut == 'pad' else 'pad') == other_params
  params = _params_of(name)
  if shortcut == 'pad':
    assert not any(k.startswith('downsample') for block in params.values() for k in block)
  else:  # pre-activation projections: the conv on the pre-activated input, no BatchNorm after it
    assert set(params['layer2_0']) >= {'downsample_conv'} and 'downsample_bn' not in params['layer2_0']


def _model_section(**changes):
  from configs import default
  cfg = default.get_config().model
  cfg.name = 'seresnet_tiny_cifar'
  cfg.update(changes)
  return cfg


def test_from_config_maps_the_model_section():
  """None fields keep the registered model's settings; set ones become `create` overrides."""
  plain = models.from_config(_model_section(), 7)
  assert plain == models.create('seresnet_tiny_cifar', num_classes=7, axis_name=None)
  cfg = _model_section(dtype='bfloat16', drop_rate=0.5, zero_init_last_bn=True, downsample='conv',
                       freeze_bn_stats=True)
  cfg.se.reduction, cfg.se.gate = 2, 'tanh'
  model = models.from_config(cfg, 3, axis_name='data')
  assert (model.num_classes, model.dtype, model.drop_rate, model.zero_init_last_bn, model.downsample,
          model.frozen_batch_norm, model.axis_name) == (3, jnp.bfloat16, 0.5, True, 'conv', True, 'data')
  assert (model.se.reduction, model.se.gate, model.se.rounding) == (2, 'tanh', plain.se.rounding)
  with pytest.raises(ValueError, match='never trains'):
    models.check_gate_init(model)
  cfg.sync_batch_norm = False
  assert models.from_config(cfg, 3, axis_name='data').axis_name is None


def test_from_config_se_enabled_and_bad_values():
  cfg = _model_section()
  cfg.se.enabled, cfg.se.reduction = False, 0  # off: the other SE fields do not matter
  assert models.from_config(cfg, 10).se is None
  with pytest.raises(ValueError, match=r"model.dtype='float16' is not one of float32, bfloat16"):
    models.from_config(_model_section(dtype='float16'), 10)
  with pytest.raises(ValueError, match=r"model.freeze_bn_stats=1 must be True or False"):
    models.from_config(ml_collections.ConfigDict(dict(_model_section().to_dict(), freeze_bn_stats=1)), 10)
