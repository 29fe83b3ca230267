"""Tests for the attention slot's kinds (`se_flax.models.attention`, `attention_kinds`).

- Each kind against a NumPy reference written from its paper's equations (float64, independent of
  the code under test; equal up to float32 rounding).
- Parameter counts in ResNet-50: timm 1.0.31's where timm has the kind, else the paper's formula.
- Parity with timm's modules and with timm's resnet18 built with `attn_layer=KIND`, loaded through
  `se_flax.weights.convert`'s generic names (golden files, tests/golden/make_attention_golden.py).
- The `attn=` override, the per-kind settings and their errors, every placement, BatchNorm modes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax import models
from se_flax.models import attention
from se_flax.models import attention_kinds as kinds
from se_flax.models.se import KIND_DEFAULTS, KINDS, PLACEMENTS, SEConfig
from se_flax.weights import convert

GOLDEN = pathlib.Path(__file__).resolve().parent / 'golden'
_spec = importlib.util.spec_from_file_location('golden_weights', GOLDEN / 'weights.py')
weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weights)

# timm 1.0.31: timm.create_model('resnet50', block_args=dict(attn_layer=KIND)), parameters.
TIMM_RESNET50_PARAMS = {None: 25_557_032, 'se': 28_088_024, 'eca': 25_557_118, 'gc': 30_622_808,
                        'cbam': 28_073_576, 'ese': 45_691_688}
# ResNet-50's slot inputs at 224 px: (channels, blocks, map side) per stage.
_R50_SLOTS = ((256, 3, 56), (512, 4, 28), (1024, 6, 14), (2048, 3, 7))
# se_flax settings equal to timm's `get_attn(KIND)` defaults (timm's SE rounds C / 16 to multiples of 8).
TIMM_SETTINGS = {'se': dict(rounding='divisible8')}
TOLERANCE = 1e-5  # relative L2, float32

_NP_GATES = {'sigmoid': lambda z: 1.0 / (1.0 + np.exp(-z)), 'hard_sigmoid': lambda z: np.clip(z + 3.0, 0.0, 6.0) / 6.0}
_sigmoid = _NP_GATES['sigmoid']


def _params(name, size=64, **overrides):
  model = models.create(name, **overrides)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, size, size, 3)))
  return models.count_params(shapes['params'])


def _random_variables(module, x, seed=0):
  """Variables with every leaf random (BatchNorm variances positive), so each one matters."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
  leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(seed)
  values = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    v = rng.normal(0.0, 0.5, leaf.shape)
    if name.endswith("['var']"):
      v = rng.uniform(0.5, 1.5, leaf.shape)
    values.append(v.astype(np.float32))
  return jax.tree_util.tree_unflatten(tree, values)


def _run(config, x, seed=0):
  """(variables as float64 numpy, output, sown gate or None) of the kind's module in eval mode."""
  module = attention.build(config)()
  variables = _random_variables(module, x, seed)
  out, state = module.apply(variables, x, mutable=['intermediates'])
  gate = state.get('intermediates', {}).get('gate', (None,))[0]
  np_vars = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), variables)
  return np_vars, np.asarray(out, np.float64), gate


def _close(a, b):
  np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def _np_bn(z, bn, stats, eps=1e-5):
  return (z - stats['mean']) / np.sqrt(stats['var'] + eps) * bn['scale'] + bn['bias']


def _np_conv(x, kernel, stride=1, pad=0, groups=1):
  """NHWC convolution, kernel HWIO, symmetric zero padding, loops (reference only)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, cin_g, cout = kernel.shape
  oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], oh, ow, cout))
  per_group = cout // groups
  for o in range(cout):
    g = o // per_group
    xs = x[..., g * cin_g:(g + 1) * cin_g]
    for i in range(oh):
      for j in range(ow):
        patch = xs[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
        out[:, i, j, o] = np.einsum('nhwc,hwc->n', patch, kernel[..., o])
  return out


def _x(shape, seed=1):
  return jax.random.normal(jax.random.key(seed), shape)


# ----------------------------------------------------------------------------------------------
# ECA: omega = sigmoid(C1D_k(GAP(x))), k = |log2(C)/gamma + b/gamma|_odd

@pytest.mark.parametrize('channels, k', [(16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5),
                                         (2048, 7), (8192, 7), (2 ** 15, 9)])
def test_eca_kernel_size_from_channels(channels, k):
  # psi(C) by hand: |log2(C)/2 + 1/2| rounded to odd (truncate, then +1 if even), at least 3.
  t = int((math.log2(channels) + 1) / 2)
  assert k == max(t if t % 2 else t + 1, 3)
  assert kinds.eca_kernel_size(channels) == k


def test_eca_matches_numpy_formula():
  x = _x((2, 5, 3, 128))
  v, out, gate = _run(SEConfig(kind='eca'), x)
  kernel = v['params']['conv']['kernel']
  assert kernel.shape == (5, 1, 1) and set(v['params']['conv']) == {'kernel'}  # k(128) = 5, no bias
  y = np.asarray(x, np.float64).mean(axis=(1, 2))
  padded = np.pad(y, ((0, 0), (2, 2)))
  z = np.stack([padded[:, c:c + 5] @ kernel[:, 0, 0] for c in range(128)], axis=1)
  _close(out, np.asarray(x, np.float64) * _sigmoid(z)[:, None, None, :])
  _close(np.asarray(gate), _sigmoid(z))


def test_eca_gamma_beta_change_the_kernel():
  v, _, _ = _run(SEConfig(kind='eca', eca_gamma=1, eca_beta=1), jnp.zeros((1, 2, 2, 256)))
  assert v['params']['conv']['kernel'].shape == (kinds.eca_kernel_size(256, 1, 1), 1, 1) == (9, 1, 1)


# ----------------------------------------------------------------------------------------------
# ESE: x * hard_sigmoid(W GAP(x) + b)

def test_ese_matches_numpy_formula():
  x = _x((2, 4, 3, 16))
  v, out, gate = _run(SEConfig(kind='ese'), x)
  xn = np.asarray(x, np.float64)
  z = xn.mean(axis=(1, 2)) @ v['params']['fc']['kernel'] + v['params']['fc']['bias']
  s = _NP_GATES['hard_sigmoid'](z)
  assert (s > 0).any() and (s < 1).any() and ((s > 0) & (s < 1)).any()
  _close(out, xn * s[:, None, None, :])
  _close(np.asarray(gate), s)


# ----------------------------------------------------------------------------------------------
# GC: attention pooling, LayerNorm bottleneck transform, scale / add fusion

def _np_gc_transform(ctx, p):
  h = ctx @ p['fc1']['kernel'] + p['fc1']['bias']
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6) * p['norm']['scale'] + p['norm']['bias']
  return np.maximum(h, 0.0) @ p['fc2']['kernel'] + p['fc2']['bias']


@pytest.mark.parametrize('fuse', ['scale', 'add', 'both'])
def test_gc_matches_numpy_formula(fuse):
  x = _x((2, 3, 5, 16))
  v, out, gate = _run(SEConfig(kind='gc', gc_fuse=fuse), x)
  p = v['params']
  xn = np.asarray(x, np.float64).reshape(2, 15, 16)
  logits = xn @ p['conv_attn']['kernel'][:, 0] + p['conv_attn']['bias'][0]
  alpha = np.exp(logits - logits.max(1, keepdims=True))
  alpha /= alpha.sum(1, keepdims=True)
  ctx = np.einsum('nk,nkc->nc', alpha, xn)
  ref = xn
  if fuse != 'add':
    s = _sigmoid(_np_gc_transform(ctx, p['mlp_scale']))
    _close(np.asarray(gate), s)
    ref = ref * s[:, None, :]
  else:
    assert gate is None and 'mlp_scale' not in p  # 'add' has no per-channel gate
  if fuse != 'scale':
    ref = ref + _np_gc_transform(ctx, p['mlp_add'])[:, None, :]
  assert p['mlp_scale' if fuse != 'add' else 'mlp_add']['fc1']['kernel'].shape == (16, 2)  # C / 8
  _close(out, ref.reshape(2, 3, 5, 16))


def test_gc_add_starts_as_identity():
  x = _x((2, 4, 4, 16))
  module = attention.build(SEConfig(kind='gc', gc_fuse='add'))()
  variables = module.init(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(module.apply(variables, x)), np.asarray(x))


# ----------------------------------------------------------------------------------------------
# CBAM (Eq. 1-3)

def test_cbam_matches_numpy_formula():
  x = _x((2, 5, 6, 32))
  v, out, gate = _run(SEConfig(kind='cbam'), x)
  p, stats = v['params'], v['batch_stats']
  xn = np.asarray(x, np.float64)
  assert set(p['channel']['fc1']) == {'kernel'} and p['channel']['fc1']['kernel'].shape == (32, 2)  # r 16, no bias
  mlp = lambda d: np.maximum(d @ p['channel']['fc1']['kernel'], 0.0) @ p['channel']['fc2']['kernel']
  mc = _sigmoid(mlp(xn.mean(axis=(1, 2))) + mlp(xn.max(axis=(1, 2))))
  _close(np.asarray(gate), mc)
  f1 = xn * mc[:, None, None, :]
  desc = np.concatenate([f1.mean(-1, keepdims=True), f1.max(-1, keepdims=True)], axis=-1)
  z = _np_conv(desc, p['spatial']['conv']['conv']['kernel'], pad=3)
  ms = _sigmoid(_np_bn(z, p['spatial']['conv']['bn'], stats['spatial']['conv']['bn']))
  _close(out, f1 * ms)


# ----------------------------------------------------------------------------------------------
# SRM: style pooling (mean, std), channel-wise FC, BatchNorm, sigmoid

def test_srm_matches_numpy_formula():
  x = _x((2, 4, 5, 8))
  v, out, gate = _run(SEConfig(kind='srm'), x)
  p, stats = v['params'], v['batch_stats']
  xn = np.asarray(x, np.float64)
  mu = xn.mean(axis=(1, 2))
  sigma = np.sqrt(((xn - mu[:, None, None, :]) ** 2).mean(axis=(1, 2)) + 1e-5)  # 1/HW variance
  z = mu * p['cfc'][:, 0] + sigma * p['cfc'][:, 1]
  g = _sigmoid(_np_bn(z, p['bn'], stats['bn']))
  _close(np.asarray(gate), g)
  _close(out, xn * g[:, None, None, :])


def test_srm_starts_with_zero_style_weights():
  variables = attention.build(SEConfig(kind='srm'))().init(jax.random.key(0), _x((2, 3, 3, 8)))
  np.testing.assert_array_equal(variables['params']['cfc'], np.zeros((8, 2)))


# ----------------------------------------------------------------------------------------------
# FcaNet: multi-spectral DCT squeeze, SE excitation

def _np_dct_weights(h, w, channels, freqs):
  """Channel group i: B^{u_i, v_i}_{h, w}, the orthonormal 2D DCT-II basis (FcaNet's basis, normalised),
  the 7x7 frequency scaled to the grid, straight from the formula."""
  out = np.zeros((h, w, channels))
  group = channels // len(freqs)
  for i, (u, v) in enumerate(freqs):
    u, v = u * (h // 7), v * (w // 7)
    for a in range(h):
      for b in range(w):
        bu = math.cos(math.pi * u * (a + 0.5) / h) * math.sqrt((1 if u == 0 else 2) / h)
        bv = math.cos(math.pi * v * (b + 0.5) / w) * math.sqrt((1 if v == 0 else 2) / w)
        out[a, b, i * group:(i + 1) * group] = bu * bv
  return out


def _np_adaptive_avg_pool(x, out):
  """PyTorch adaptive_avg_pool2d on NHWC, windows floor(i*H/out) .. ceil((i+1)*H/out)."""
  n, h, w, c = x.shape
  res = np.zeros((n, out, out, c))
  for i in range(out):
    for j in range(out):
      r0, r1 = (i * h) // out, -(-(i + 1) * h // out)
      c0, c1 = (j * w) // out, -(-(j + 1) * w // out)
      res[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return res


def test_fca_top16_is_the_papers_selection():
  top16 = kinds.fca_frequencies('top16')
  assert top16[:5] == [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2)] and len(top16) == len(set(top16)) == 16
  assert kinds.fca_frequencies('low4') == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_dct_basis_is_orthonormal_and_dc_is_scaled_gap():
  basis = np.stack([np.outer(kinds.dct_basis(np.arange(7), u, 7), kinds.dct_basis(np.arange(7), v, 7)).ravel()
                    for u in range(7) for v in range(7)])
  np.testing.assert_allclose(basis @ basis.T, np.eye(49), atol=1e-12)
  x = np.random.default_rng(0).normal(size=(14, 14, 16))
  dc = np.einsum('hwc,hwc->c', x, kinds.fca_filter(14, 14, 16, 'top1'))
  np.testing.assert_allclose(dc, x.mean(axis=(0, 1)) * 14, atol=1e-12)  # GAP * sqrt(HW)


@pytest.mark.parametrize('side', [14, 5, 9])  # on the DCT grid (multiple of 7); averaged to 7x7 first
def test_fca_matches_numpy_formula(side):
  x = _x((2, side, side, 32))
  v, out, gate = _run(SEConfig(kind='fca'), x)
  p = v['params']
  xn = np.asarray(x, np.float64)
  pooled = xn if side % 7 == 0 else _np_adaptive_avg_pool(xn, 7)
  g = side if side % 7 == 0 else 7
  freq = np.einsum('nhwc,hwc->nc', pooled, _np_dct_weights(g, g, 32, kinds.fca_frequencies('top16')))
  assert set(p['fc1']) == {'kernel'} and p['fc1']['kernel'].shape == (32, 2)  # r 16, no bias
  s = _sigmoid(np.maximum(freq @ p['fc1']['kernel'], 0.0) @ p['fc2']['kernel'])
  _close(np.asarray(gate), s)
  _close(out, xn * s[:, None, None, :])


def test_fca_channels_must_split_into_the_frequencies():
  with pytest.raises(ValueError, match=r"^fca_freq='top16' splits the channels into 16 groups; 24 channels"):
    attention.build(SEConfig(kind='fca'))().init(jax.random.key(0), jnp.zeros((1, 7, 7, 24)))


# ----------------------------------------------------------------------------------------------
# Gather-Excite (Section 3)

def _np_nearest(g, h, w):
  rows = [i * g.shape[1] // h for i in range(h)]
  cols = [j * g.shape[2] // w for j in range(w)]
  return g[:, rows][:, :, cols]


def _np_avg_pool_excluding_pad(x, e):
  """Window 2e-1, stride e, padding e-1, average over the window's inputs only."""
  n, h, w, c = x.shape
  k, pad = 2 * e - 1, e - 1
  oh, ow = -(-h // e), -(-w // e)
  out = np.zeros((n, oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      r0, c0 = max(i * e - pad, 0), max(j * e - pad, 0)
      out[:, i, j] = x[:, r0:i * e - pad + k, c0:j * e - pad + k].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('variant, extent', [('theta_minus', 0), ('theta_minus', 2), ('theta_minus', 4),
                                             ('theta', 0), ('theta', 4), ('theta_plus', 0), ('theta_plus', 2)])
def test_ge_matches_numpy_formula(variant, extent):
  h, w, c = 7, 6, 16
  x = _x((2, h, w, c))
  v, out, gate = _run(SEConfig(kind='ge', ge_variant=variant, ge_extent=extent), x)
  xn = np.asarray(x, np.float64)
  p, stats = v.get('params', {}), v.get('batch_stats', {})
  if variant == 'theta_minus':
    assert not p  # parameter-free
    g = xn.mean(axis=(1, 2), keepdims=True) if extent == 0 else _np_avg_pool_excluding_pad(xn, extent)
  elif extent == 0:  # one depthwise conv over the whole map, then BatchNorm
    assert p['gather_conv1']['kernel'].shape == (h, w, 1, c)
    g = _np_bn(_np_conv(xn, p['gather_conv1']['kernel'], groups=c), p['gather_bn1'], stats['gather_bn1'])
  else:  # log2(e) depthwise 3x3 / 2 convs with BatchNorm, ReLU between
    g = xn
    steps = int(math.log2(extent))
    for i in range(1, steps + 1):
      g = _np_bn(_np_conv(g, p[f'gather_conv{i}']['kernel'], stride=2, pad=1, groups=c),
                 p[f'gather_bn{i}'], stats[f'gather_bn{i}'])
      g = np.maximum(g, 0.0) if i < steps else g
    assert f'gather_conv{steps + 1}' not in p
  if variant == 'theta_plus':
    hidden = np.maximum(g @ p['fc1']['kernel'] + p['fc1']['bias'], 0.0)
    assert p['fc1']['kernel'].shape == (c, c // 16)
    g = hidden @ p['fc2']['kernel'] + p['fc2']['bias']
  assert g.shape[1:3] == ((1, 1) if extent == 0 else (-(-h // extent), -(-w // extent)))
  s = _sigmoid(g)
  _close(out, xn * _np_nearest(s, h, w))
  if extent == 0:
    _close(np.asarray(gate), s[:, 0, 0])
  else:
    assert gate is None  # the gates vary over space: no per-channel gate to sow


def test_nearest_resize_matches_torch_rule():
  g = jnp.arange(3 * 2, dtype=jnp.float32).reshape(1, 3, 2, 1)
  out = np.asarray(kinds.nearest_resize(g, (7, 5)))[0, :, :, 0]
  np.testing.assert_array_equal(out, np.asarray(g)[0, [0, 0, 0, 1, 1, 2, 2]][:, [0, 0, 0, 1, 1], 0])


# ----------------------------------------------------------------------------------------------
# Parameter counts in ResNet-50.

@pytest.mark.parametrize('kind', [k for k in TIMM_RESNET50_PARAMS if k is not None])
def test_resnet50_params_equal_timm(kind):
  assert _params('resnet50', attn=kind) == TIMM_RESNET50_PARAMS[kind]


def test_resnet50_added_params_follow_the_formulas():
  base = TIMM_RESNET50_PARAMS[None]
  eca = sum(n * kinds.eca_kernel_size(c) for c, n, _ in _R50_SLOTS)
  assert eca == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7 == 86
  # SRM: cfc (C x 2) and BatchNorm scale and bias: 4C a block.
  srm = sum(n * 4 * c for c, n, _ in _R50_SLOTS)
  # FcaNet: SE's two FCs without biases, 2 C^2 / r; the DCT weights are constants.
  fca = sum(n * 2 * c * (c // 16) for c, n, _ in _R50_SLOTS)
  # GE-theta-minus: none. GE-theta, global: a depthwise H x W conv and BatchNorm, C (HW + 2); extent 8:
  # three depthwise 3x3 convs with BatchNorm, 3 C (9 + 2). GE-theta-plus adds SE's biased MLP.
  ge_global = sum(n * c * (side * side + 2) for c, n, side in _R50_SLOTS)
  ge_e8 = sum(n * 3 * c * 11 for c, n, _ in _R50_SLOTS)
  mlp = sum(n * (2 * c * (c // 16) + c // 16 + c) for c, n, _ in _R50_SLOTS)
  expected = {('eca', None): eca, ('srm', None): srm, ('fca', None): fca,
              ('ge', None): 0, ('ge', ('theta_minus', 8)): 0, ('ge', ('theta', 0)): ge_global,
              ('ge', ('theta', 8)): ge_e8, ('ge', ('theta_plus', 0)): ge_global + mlp}
  assert (srm, fca, ge_global, ge_e8, mlp) == (60_416, 2_514_944, 5_549_568, 498_432, 2_530_992)
  for (kind, ge), added in expected.items():
    settings = {'se': dict(ge_variant=ge[0], ge_extent=ge[1])} if ge else {}
    size = 224 if ge and ge[1] == 0 and ge[0] != 'theta_minus' else 64  # only a global conv gather sees the size
    assert _params('resnet50', size=size, attn=kind, **settings) - base == added, (kind, ge)


def test_ge_global_gather_fixes_the_input_size():
  module = attention.build(SEConfig(kind='ge', ge_variant='theta'))()
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8))))
  with pytest.raises(Exception, match='gather_conv1'):
    jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, 5, 5, 8))), variables)


# ----------------------------------------------------------------------------------------------
# Parity with timm 1.0.31 through the converter's names (golden files).

def _golden(kind):
  return json.loads((GOLDEN / 'attention' / f'{kind}.json').read_text())


@pytest.mark.parametrize('kind', ['se', 'ese', 'eca', 'gc', 'cbam'])
def test_module_matches_timm(kind):
  keys = _golden(kind)['module_keys']
  state = weights.make_state_dict(keys, weights.WEIGHT_SEED)
  x = weights.make_module_input().transpose(0, 2, 3, 1)
  module = attention.build(SEConfig(kind=kind, **TIMM_SETTINGS.get(kind, {})))()
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
  targets = convert.key_map(shapes, rename=list, dense_is_conv=lambda modules: True)
  assert sorted(targets) == sorted(k for k, _ in keys if not k.endswith('num_batches_tracked'))
  assert all(tuple(state[k].shape) == t.timm_shape for k, t in targets.items())
  out = np.asarray(module.apply(convert.load(targets, state), x))
  expected = np.load(GOLDEN / 'attention' / f'{kind}_module.npy').transpose(0, 2, 3, 1)
  error = float(np.linalg.norm(out - expected) / np.linalg.norm(expected))
  print(f'{kind} module: relative L2 error {error:.2e}')
  assert error < TOLERANCE


@functools.partial(jax.jit, static_argnums=0)
def _logits(module, variables, images):
  return module.apply(variables, images, train=False)


@pytest.mark.parametrize('kind', ['se', 'ese', 'eca', 'gc', 'cbam'])
def test_resnet18_with_timm_attn_layer_converts(kind):
  state = weights.make_state_dict(_golden(kind)['resnet18_keys'], weights.WEIGHT_SEED)
  module, variables = convert.from_timm('resnet18', state, attn=kind,
                                        **({'se': TIMM_SETTINGS[kind]} if kind in TIMM_SETTINGS else {}))
  assert module.se.kind == kind and module.num_classes == 10
  images = weights.make_inputs(weights.INPUT_SEED, 68).transpose(0, 2, 3, 1)
  with jax.default_matmul_precision('highest'):
    logits = np.asarray(_logits(module, variables, images))
  expected = np.load(GOLDEN / 'attention' / f'{kind}_resnet18.npy')
  error = float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))
  print(f'resnet18 with {kind}: relative L2 error {error:.2e}')
  assert error < TOLERANCE


# ----------------------------------------------------------------------------------------------
# The slot in the network: every kind, every placement, stages, BatchNorm modes.

_EVERY_KIND = [('se', {}), ('ese', {}), ('eca', {}), ('ge', {}), ('ge', dict(ge_variant='theta_plus', ge_extent=2)),
               ('gc', {}), ('cbam', {}), ('srm', {}), ('fca', dict(fca_freq='top8'))]  # top16 needs 16 | C; 'after_3x3' sees 8


@pytest.mark.parametrize('kind, settings', _EVERY_KIND)
def test_every_kind_in_every_placement(kind, settings):
  """Shapes only (traced, not compiled): test_bf16_every_kind runs each kind for real."""
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  registered = models.create('seresnet_tiny').se
  for placement in PLACEMENTS:
    # The tiny bottleneck net: widths 8..64 (x4 = 32..256 channels, fca's 16 groups divide them).
    model = models.create('seresnet_tiny', attn=kind, se=dict(settings, placement=placement))
    expected = registered if kind == 'se' else SEConfig(kind=kind, **settings)  # 'se': the registered SE
    assert model.se == expected.replace(placement=placement)
    logits, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=True), x)
    assert logits.shape == (2, 1000)
    parameter_free = kind == 'ge' and model.se.ge_variant == 'theta_minus'
    assert parameter_free or all('se' in variables['params'][f'layer{s}_0'] for s in (1, 2, 3, 4)), placement


def test_stage_mask_reaches_every_kind():
  for kind in KINDS:
    extra = dict(ge_variant='theta_plus') if kind == 'ge' else {}  # a GE with parameters to see
    model = models.create('seresnet_tiny', attn=kind, se=dict(stages=(False, True, False, True), **extra))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    with_slot = [name for name, block in shapes['params'].items() if name.startswith('layer') and 'se' in block]
    assert sorted(with_slot) == ['layer2_0', 'layer4_0'], kind


_NETWORKS_AT = {'seresnet_tiny': 32, 'se_vgg_tiny': 32, 'se_mobilenet_tiny': 32, 'se_shufflenet_tiny': 32,
                'se_bninception_tiny': 32, 'se_inception_v3_tiny': 75, 'se_inception_resnet_v2_tiny': 75}


@pytest.mark.parametrize('kind, settings', [('srm', {}), ('cbam', {}), ('ge', dict(ge_variant='theta', ge_extent=2))])
@pytest.mark.parametrize('network', list(_NETWORKS_AT))
def test_batch_norm_in_the_slot_is_the_networks(network, kind, settings):
  """In every network the slot's BatchNorm is the network's own: train/eval mode, frozen statistics,
  the mesh axis, momentum and epsilon (recorded from every BatchNorm call, shapes only)."""
  size = _NETWORKS_AT[network]
  def seen(train, **overrides):
    calls = []
    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
        m = context.module
        if 'se' in m.scope.path:
          calls.append((m.use_running_average, m.axis_name, m.momentum, m.epsilon))
      return next_fun(*args, **kwargs)
    model = models.create(network, attn=kind, **({'se': settings} if settings else {}), **overrides)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    with nn.intercept_methods(record):
      jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=train), x)
    assert calls, kind
    return set(calls)
  default = models.create(network)
  momentum, eps = default.bn_momentum, default.bn_epsilon  # the network's own defaults
  assert seen(True, bn_momentum=0.8, bn_epsilon=2e-3) == {(False, None, 0.8, 2e-3)}
  assert seen(False) == {(True, None, momentum, eps)}
  assert seen(True, frozen_batch_norm=True) == {(True, None, momentum, eps)}
  assert seen(True, axis_name='batch') == {(False, 'batch', momentum, eps)}


def test_batch_norm_alone_follows_mutability():
  """Without a network's norm factory, the slot's BatchNorm uses batch statistics exactly when
  batch_stats is mutable (a training step) and running statistics otherwise."""
  module = attention.build(SEConfig(kind='srm'))()
  y = _x((4, 3, 3, 8))
  variables = module.init(jax.random.key(0), y)
  _, state = module.apply(variables, y, mutable=['batch_stats'])
  assert not np.array_equal(np.asarray(state['batch_stats']['bn']['var']), np.ones(8))  # batch statistics used
  eval_out = module.apply(variables, y)  # not mutable: running statistics (0, 1); cfc starts at 0
  np.testing.assert_allclose(np.asarray(eval_out), np.asarray(y) * 0.5, atol=1e-6)


@pytest.mark.parametrize('kind, settings', _EVERY_KIND)
def test_bf16_module_matches_float32(kind, settings):
  x = _x((2, 7, 7, 16))
  cfg = SEConfig(kind=kind, **settings)
  f32 = attention.build(cfg)()
  bf16 = attention.build(cfg, dtype=jnp.bfloat16)()
  variables = _random_variables(f32, x)
  expected = np.asarray(f32.apply(variables, x))
  out = bf16.apply(variables, x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  error = np.linalg.norm(np.asarray(out, np.float32) - expected) / np.linalg.norm(expected)
  assert error < 2e-2, error


def test_macs_added_to_resnet50():
  base = models.count_macs(models.create('resnet50'), 224)
  eca = models.count_macs(models.create('resnet50', attn='eca'), 224) - base
  # the 1D conv: k MACs per channel per block; timm's count (torch FlopCounterMode) agrees.
  assert eca == sum(n * kinds.eca_kernel_size(c) * c for c, n, _ in _R50_SLOTS) == 87_808
  srm = models.count_macs(models.create('resnet50', attn='srm'), 224) - base
  assert srm == 0  # no convolution or dense layer: pooling, a per-channel weighting, BatchNorm


# ----------------------------------------------------------------------------------------------
# The `attn=` override and the kind settings.

def test_attn_override_keeps_placement_and_stages():
  model = models.create('seresnet50', attn='eca', se=dict(placement='pre', stages=(False, True, True, True)))
  assert model.se == SEConfig(kind='eca', placement='pre', stages=(False, True, True, True))
  assert models.create('seresnet50', attn='se').se == models.create('seresnet50').se
  assert models.create('seresnet50', attn=None).se is None
  assert models.create('resnet50', attn='se').se == SEConfig()
  legacy = models.create('legacy_seresnet18', attn='cbam')
  assert legacy.se.kind == 'cbam' and legacy.act_before_attn  # the network's own options stay


def test_attn_kind_starts_from_its_defaults_and_takes_settings():
  model = models.create('seresnet50', attn='gc', se=dict(reduction=4))
  assert model.se == SEConfig(kind='gc', reduction=4) and model.se.gc_fuse == 'scale'
  assert models.create('seresnet50', se=dict(kind='eca')).se == SEConfig(kind='eca')
  assert models.create('seresnet50', attn='gc').se.reduction == 8  # GC's own default, not SE's 16
  for kind in KINDS:
    cfg = SEConfig(kind=kind)
    assert {f: getattr(cfg, f) for f in KIND_DEFAULTS[kind]} == KIND_DEFAULTS[kind]


def test_unknown_kind_is_one_line_naming_the_allowed():
  for call in (lambda: models.create('resnet50', attn='sse'), lambda: SEConfig(kind='sse'),
               lambda: models.create('resnet50', se=dict(kind='sse'))):
    with pytest.raises(ValueError) as e:
      call()
    assert str(e.value) == f"attention kind='sse' is not one of {', '.join(KINDS)}"


@pytest.mark.parametrize('kind, setting', [('eca', dict(reduction=8)), ('se', dict(eca_gamma=3)),
                                           ('srm', dict(reduction=16)), ('gc', dict(squeeze='max')),
                                           ('ese', dict(reduction=4)), ('fca', dict(use_bias=True)),
                                           ('cbam', dict(ge_extent=2)), ('ge', dict(gc_fuse='add'))])
def test_setting_a_kind_does_not_use_is_one_line(kind, setting):
  (field, value), = setting.items()
  with pytest.raises(ValueError) as e:
    models.create('resnet50', attn=kind, se=setting)
  assert str(e.value) == (f'attention kind {kind!r} has no setting {field}={value!r}; its settings: '
                          f'{", ".join(KIND_DEFAULTS[kind])}, placement, stages')


@pytest.mark.parametrize('setting, message', [
    (dict(kind='ge', ge_extent=3), 'ge_extent=3 must be 0 (global) or a power of two'),
    (dict(kind='ge', ge_variant='theta_star'), "ge_variant='theta_star' is not one of theta_minus, theta, theta_plus"),
    (dict(kind='gc', gc_fuse='mul'), "gc_fuse='mul' is not one of scale, add, both"),
    (dict(kind='cbam', cbam_kernel_size=4), 'cbam_kernel_size=4 must be a positive odd integer'),
    (dict(kind='fca', fca_freq='top3'), "fca_freq='top3' is not one of top1, top2"),
    (dict(kind='eca', eca_gamma=0), 'eca_gamma=0 must be a positive number'),
    (dict(kind='ese', gate='softmax'), "gate='softmax' is not one of"),
])
def test_bad_kind_setting_values(setting, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    SEConfig(**setting)


def test_attn_none_with_settings_and_bad_attn_values():
  with pytest.raises(ValueError, match=r"^attn=None turns the attention slot off; se=\{'reduction': 8\}"):
    models.create('seresnet50', attn=None, se=dict(reduction=8))
  with pytest.raises(ValueError, match=r'^attn=3 must be None or an attention kind: se, ese'):
    models.create('seresnet50', attn=3)


def test_nearest_rounding_is_timms_divisor_one():
  from se_flax.models.se import reduced_channels
  # timm make_divisible(v, 1) = max(1, int(v + 0.5)): 20 / 8 = 2.5 -> 3 (floor: 2), 4 / 16 -> 1.
  assert [reduced_channels(c, r, 'nearest') for c, r in ((20, 8), (20, 16), (4, 16), (256, 8))] == [3, 1, 1, 32]
  assert reduced_channels(20, 8, 'floor') == 2


def test_every_kind_has_a_module_and_defaults():
  assert tuple(attention.MODULES) == KINDS == tuple(KIND_DEFAULTS)
  for kind, cls in attention.MODULES.items():
    assert issubclass(cls, nn.Module) and cls.__doc__ and 'arXiv' in cls.__doc__ or kind == 'se'


def test_from_config_reaches_the_kind():
  from configs import default
  config = default.get_config()
  config.model.name = 'seresnet50'
  config.model.se.kind = 'gc'
  config.model.se.gc_fuse = 'add'
  model = models.from_config(config.model, num_classes=10)
  assert model.se == SEConfig(kind='gc', gc_fuse='add')
  config.model.se.kind = 'eca'
  with pytest.raises(ValueError, match="attention kind 'eca' has no setting gc_fuse='add'"):
    models.from_config(config.model, num_classes=10)


# ----------------------------------------------------------------------------------------------
# Excitation analysis and training with other kinds.

@pytest.mark.parametrize('kind, settings, has_gates', [
    ('ese', {}, True), ('eca', {}, True), ('ge', {}, True), ('ge', dict(ge_extent=2), False),
    ('gc', {}, True), ('gc', dict(gc_fuse='add'), False), ('cbam', {}, True), ('srm', {}, True),
    ('fca', dict(fca_freq='top8'), True)])
def test_excitations_capture_per_channel_gates(kind, settings, has_gates):
  from se_flax.tools import excitations
  model = models.create('seresnet_tiny_cifar', attn=kind, **({'se': settings} if settings else {}))
  x = jax.ShapeDtypeStruct((3, 16, 16, 1), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  _, gates = jax.eval_shape(lambda v, x: excitations.capture(model, v, x), variables, x)
  expected = {'layer1_0/se': (3, 8), 'layer2_0/se': (3, 16), 'layer3_0/se': (3, 32)} if has_gates else {}
  assert {k: g.shape for k, g in gates.items()} == expected


def test_train_py_with_cbam_on_digits(digits_dir, tmp_path):
  """train.py trains the tiny CIFAR net with CBAM in the SE slot (BatchNorm inside the slot, a
  spatial gate after the channel gate); the excitation tool refuses a kind without per-channel
  gates in one line, before reading the checkpoint."""
  from test_train import final_state, run_cli, tiny_digits
  from se_flax.tools import excitations
  workdir = str(tmp_path / 'work')
  run = run_cli(['train.py', '--config=configs/digits.py:seresnet_tiny_cifar', f'--workdir={workdir}',
                 f'--config.data.data_dir={digits_dir}', '--config.train.global_batch_size=32',
                 '--config.train.num_steps=3', '--config.model.se.kind=cbam', '--config.model.se.reduction=4'])
  assert run.returncode == 0, run.stderr[-3000:]
  assert json.loads(run.stdout.strip().splitlines()[-1])['step'] == 3
  state = final_state(workdir)
  se = state['params']['layer1_0']['se']
  assert se['channel']['fc1']['kernel'].shape == (8, 2) and se['spatial']['conv']['conv']['kernel'].shape == (7, 7, 2, 1)
  stats = state['batch_stats']['layer1_0']['se']['spatial']['conv']['bn']
  assert not np.allclose(stats['var'], 1.0)  # the slot's BatchNorm trained with the network
  config = tiny_digits(digits_dir)
  config.model.se.kind = 'gc'
  config.model.se.gc_fuse = 'add'
  with pytest.raises(ValueError, match='has no SE block or other per-channel attention gate'):
    excitations.run(config, workdir)
