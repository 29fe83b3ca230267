"""timm's channel-attention ResNets (ECA-ResNet-D/-T, SK-ResNet/-ResNeXt, SE-ResNeXt-26-T): parameter and
multiply-add counts equal timm's, the converter fits timm's key lists, the selective-kernel convolution
equals its formula, the tiered stem, and a short training run of a tiny SK net through train.py.

Figures: docs/reference.md, 'Channel-attention ResNets' (timm 1.0.31; multiply-adds as torch's
FlopCounterMode / 2 counts timm's convolutions and linear layers at 224 px, batch 1). Logit parity with
timm for ecaresnet50d, seresnext26t_32x4d, skresnet18 and skresnext50_32x4d is tests/test_convert.py's
(tests/golden).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax import models
from se_flax.models import selective_kernel
from se_flax.weights import convert

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / 'tests' / 'golden'
_KEY = jax.random.key(0)

# name -> (parameters, multiply-adds at 224 px), timm 1.0.31, 1000 classes.
TIMM_FIGURES = {
    'ecaresnet26t': (16_011_916, 2_550_332_928),
    'ecaresnet50d': (25_576_350, 4_328_912_640),
    'ecaresnet50t': (25_573_814, 4_297_301_760),
    'ecaresnet101d': (44_568_563, 8_041_220_864),
    'ecaresnetlight': (30_162_046, 4_089_287_424),
    'seresnext26t_32x4d': (16_806_976, 2_680_129_536),
    'skresnet18': (11_958_056, 1_814_337_536),
    'skresnet34': (22_282_376, 3_664_237_568),
    'skresnext50_32x4d': (27_479_784, 4_462_710_784),
}


def _abstract_variables(model, size=64):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), _KEY, x)


# ----------------------------------------------------------------------------------------------
# Counts and converter fit.

@pytest.mark.parametrize('name', sorted(TIMM_FIGURES))
def test_params_and_macs_equal_timm(name):
  model = models.create(name)
  params, macs = TIMM_FIGURES[name]
  assert models.count_params(_abstract_variables(model)['params']) == params
  assert models.count_macs(model, 224) == macs


@pytest.mark.parametrize('name', sorted(TIMM_FIGURES))
def test_converter_fits_timms_key_list(name):
  """Every timm key has one flax variable of the right shape and none is left over (timm_shapes raises
  otherwise); the trainable ones add up to timm's parameter count."""
  keys = json.loads((GOLDEN / 'keys' / f'{name}.json').read_text())
  shapes = {k: jax.ShapeDtypeStruct(tuple(s), jnp.float32) for k, s in keys}
  flat = convert.timm_shapes(name, shapes)
  buffers = ('running_mean', 'running_var', 'num_batches_tracked')
  assert sum(int(np.prod(s)) for k, s in keys if not k.endswith(buffers)) == TIMM_FIGURES[name][0]
  assert sum(int(np.prod(v.shape)) for k, v in flat.items() if k.startswith('params/')) == TIMM_FIGURES[name][0]


def test_sk_nets_follow_timms_settings():
  """skresnet18/34 split the input across the branches with attention width make_divisible(C / 8, 16);
  skresnext50_32x4d (SKNet-50) gives every branch all channels, grouped, width make_divisible(C / 16, 32)."""
  for name in ('skresnet18', 'skresnet34'):
    model = models.create(name)
    assert model.selective_kernel == models.SKConfig(reduction=8, divisor=16, split_input=True)
    assert (model.block, model.zero_init_last_bn) == ('basic', False)
  model = models.create('skresnext50_32x4d')
  assert model.selective_kernel == models.SKConfig(reduction=16, divisor=32, split_input=False)
  assert (model.cardinality, model.base_width, model.zero_init_last_bn) == (32, 4, False)
  params = _abstract_variables(model)['params']['layer2_0']['conv2']
  assert params['paths_0_conv']['kernel'].shape == (3, 3, 8, 256)  # 256 channels in 32 groups
  assert params['attn']['fc_reduce']['kernel'].shape == (256, 32)
  assert params['attn']['fc_select']['kernel'].shape == (32, 512)  # 2 branches x 256 channels


@pytest.mark.parametrize('channels, reduction, divisor, width', [
    (64, 8, 16, 16), (512, 8, 16, 64), (128, 16, 32, 32), (1024, 16, 32, 64),
    (40, 1, 32, 64),  # rounding down to 32 would lose 20%: one divisor more
    (100, 16, 8, 8), (200, 2, 16, 96), (72, 1, 16, 80),
])
def test_attention_width_is_timms_make_divisible(channels, reduction, divisor, width):
  """Values of timm 1.0.31 `make_divisible(channels / reduction, divisor)`."""
  assert selective_kernel.attention_width(channels, reduction, divisor) == width


# ----------------------------------------------------------------------------------------------
# The selective-kernel convolution equals its formula (SKNet, arXiv 1903.06586, Section 3.1).

_EPS = 1e-5


def _conv_np(x, w, stride, dilation, pad, groups):
  """Zero-padded, strided, dilated, grouped convolution; x (N, H, W, Cin), w (k, k, Cin / g, Cout)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k, cin_g, cout = w.shape[0], w.shape[2], w.shape[3]
  cout_g = cout // groups
  span = dilation * (k - 1) + 1
  ho, wo = (x.shape[1] - span) // stride + 1, (x.shape[2] - span) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, cout))
  for g in range(groups):
    for i in range(k):
      for j in range(k):
        patch = x[:, i * dilation:i * dilation + stride * (ho - 1) + 1:stride,
                  j * dilation:j * dilation + stride * (wo - 1) + 1:stride, g * cin_g:(g + 1) * cin_g]
        out[..., g * cout_g:(g + 1) * cout_g] += patch @ w[i, j, :, g * cout_g:(g + 1) * cout_g]
  return out


def _bn_np(y, p, s):
  return (y - s['mean']) / np.sqrt(s['var'] + _EPS) * p['scale'] + p['bias']


def _sk_np(x, params, stats, config, strides, groups):
  """Branches (3x3, dilation (k-1)/2, padding = dilation) -> BN -> ReLU; their sum -> global average
  pool -> fc -> BN -> ReLU -> fc -> softmax over branches per channel -> weighted sum of the branches."""
  paths = len(config.kernel_sizes)
  inputs = np.split(x, paths, axis=-1) if config.split_input else [x] * paths
  outs = []
  for i, k in enumerate(config.kernel_sizes):
    dilation = (k - 1) // 2
    y = _conv_np(inputs[i], params[f'paths_{i}_conv']['kernel'], strides, dilation, dilation, groups)
    outs.append(np.maximum(_bn_np(y, params[f'paths_{i}_bn'], stats[f'paths_{i}_bn']), 0))
  s = sum(outs).mean(axis=(1, 2))
  attn, attn_stats = params['attn'], stats['attn']
  z = np.maximum(_bn_np(s @ attn['fc_reduce']['kernel'], attn['bn'], attn_stats['bn']), 0)
  logits = (z @ attn['fc_select']['kernel']).reshape(x.shape[0], paths, -1)
  weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return sum(out * weights[:, i, None, None, :] for i, out in enumerate(outs))


def _fill(abstract, seed):
  """Random float64-representable float32 values: kernels ~ N(0, 2 / fan_in), BN affine and statistics
  away from the identity."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:
      value = rng.normal(0.0, 0.3, leaf.shape)
    return np.asarray(value, np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize('config, strides, groups, size', [
    (models.SKConfig(reduction=2, divisor=4), 1, 1, 7),  # split input (timm SK-ResNets)
    (models.SKConfig(reduction=4, divisor=4, split_input=False), 2, 4, 8),  # SKNet: grouped, stride 2, even map
    (models.SKConfig(kernel_sizes=(3, 5, 7), reduction=2, divisor=4, split_input=False), 2, 1, 9),
])
def test_selective_kernel_equals_its_formula(config, strides, groups, size):
  module = selective_kernel.SelectiveKernel(
      features=16, config=config, strides=strides, groups=groups,
      conv=functools.partial(nn.Conv, use_bias=False),
      norm=functools.partial(nn.BatchNorm, use_running_average=True, epsilon=_EPS))
  channels = 12 if len(config.kernel_sizes) == 3 else 8
  x = np.random.default_rng(1).normal(size=(2, size, size, channels)).astype(np.float32)
  variables = _fill(jax.eval_shape(module.init, _KEY, x), seed=2)
  with jax.default_matmul_precision('highest'):
    got = np.asarray(jax.jit(module.apply)(variables, x))
  expected = _sk_np(x.astype(np.float64), jax.tree.map(np.float64, variables['params']),
                    jax.tree.map(np.float64, variables['batch_stats']), config, strides, groups)
  assert got.shape == expected.shape == (2, -(-size // strides), -(-size // strides), 16)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_selective_kernel_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match=r'kernel_sizes=\(3,\) needs two or more odd sizes >= 3'):
    models.SKConfig(kernel_sizes=(3,))
  with pytest.raises(ValueError, match=r'kernel_sizes=\(3, 4\)'):
    models.SKConfig(kernel_sizes=(3, 4))
  with pytest.raises(ValueError, match='selective kernel reduction=0 must be a positive integer'):
    models.SKConfig(reduction=0)
  with pytest.raises(ValueError, match="selective_kernel needs block basic or bottleneck, not 'preact_basic'"):
    models.create('skresnet_tiny_cifar', block='preact_basic')
  with pytest.raises(ValueError, match='3 input channels do not split into 2 branches'):
    _abstract_variables(models.create('skresnet_tiny_cifar', stem_channels=3), size=8)


# ----------------------------------------------------------------------------------------------
# The tiered stem (timm stem_type='deep_tiered').

def test_tiered_stem_widths_and_shapes():
  """24-32-64 channels for stem_width 32, stride 2 then the padded max-pool: 204 -> 102 -> 51."""
  model = models.create('seresnext26t_32x4d')
  assert (model.stem, model.stem_width, model.stem_channels, model.downsample) == ('tiered', 32, 64, 'avg')
  x = jax.ShapeDtypeStruct((1, 204, 204, 3), jnp.float32)
  _, state = jax.eval_shape(functools.partial(model.init_with_output, capture_intermediates=True), _KEY, x)
  params, inter = state['params'], state['intermediates']
  kernels = [params[f'stem_conv{i}']['kernel'].shape for i in (1, 2, 3)]
  assert kernels == [(3, 3, 3, 24), (3, 3, 24, 32), (3, 3, 32, 64)]
  assert inter['stem_bn1']['__call__'][0].shape == (1, 102, 102, 24)
  assert inter['stem_bn3']['__call__'][0].shape == (1, 102, 102, 64)
  assert inter['layer1_0']['__call__'][0].shape == (1, 51, 51, 256)
  # Only the first two convs (and the first BN) are narrower than the deep stem's 32-32-64:
  # 27 * (32 - 24) + 2 * (32 - 24) + 9 * 32 * (32 - 24) = 2,536 (timm: 16,809,512 - 16,806,976).
  deep = models.count_params(_abstract_variables(models.create('seresnext26d_32x4d'))['params'])
  assert deep - TIMM_FIGURES['seresnext26t_32x4d'][0] == 27 * 8 + 2 * 8 + 9 * 32 * 8 == 2_536
  assert models.create('seresnext26t_32x4d', stem_width=64).stem_width == 64
  wide = _abstract_variables(models.create('seresnext26t_32x4d', stem_width=64))['params']
  assert wide['stem_conv1']['kernel'].shape == (3, 3, 3, 48)  # 3 * (64 // 4)


# ----------------------------------------------------------------------------------------------
# A tiny SK net trains through train.py.

def test_tiny_sk_net_trains_through_train_py(digits_dir, tmp_path):
  """6 steps of the digits recipe (one device): the SK convolution's branches and attention are in the
  checkpoint with the shapes the config implies, and training changes them (gradients reach them)."""
  workdir = tmp_path / 'work'
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/digits.py:skresnet_tiny_cifar', f'--workdir={workdir}',
       f'--config.data.data_dir={digits_dir}', '--config.train.global_batch_size=32',
       '--config.train.num_steps=6', '--config.train.checkpoint_every_steps=3', '--config.train.log_every_steps=3'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['step'] == 6 and result['num_examples'] == 360 and np.isfinite(result['loss'])
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  first, last = (ocp.StandardCheckpointer().restore(str(workdir / 'checkpoints' / step / 'state'))
                 for step in ('3', '6'))
  sk = last['params']['layer2_0']['conv1']  # the selective-kernel conv of a stride-2 basic block
  assert sk['paths_1_conv']['kernel'].shape == (3, 3, 4, 16)  # half of the 8 input channels
  assert sk['attn']['fc_select']['kernel'].shape == (8, 32)  # width make_divisible(16 / 2, 4) = 8
  assert last['batch_stats']['layer2_0']['conv1']['attn']['bn']['var'].shape == (8,)
  before = first['params']['layer2_0']['conv1']
  for path in (('paths_0_conv', 'kernel'), ('paths_1_conv', 'kernel'), ('attn', 'fc_reduce', 'kernel'),
               ('attn', 'fc_select', 'kernel')):
    a, b = functools.reduce(lambda t, k: t[k], path, before), functools.reduce(lambda t, k: t[k], path, sk)
    assert not np.array_equal(a, b), path
