"""The Inception networks: BN-Inception, Inception-v3, Inception-ResNet-v2 and their SE versions.

Exact parameter and multiply-add counts against the reference ports (docs/reference.md, section 8:
pretrainedmodels 0.7.4's BN-Inception, timm 1.0.31's inception_v3 and inception_resnet_v2), SE's
cost from its formula, every SE knob as a graph change, the stage grouping, PyTorch's pooling
conventions, the converter's key names, starting an SE net from its baseline's weights
(init_from), and training on the digits through the training entry point. The logit parity of
converted weights is tests/test_convert.py's (golden files, GOLDEN_SIZES).

Full-size nets are only traced (jax.eval_shape); real computation uses the _tiny variants.
"""

from __future__ import annotations

import functools
import importlib.util
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
import safetensors.numpy

from se_flax import models
from se_flax.models import attention, inception_parts
from se_flax.models import se as se_settings
from se_flax.models.se import make_divisible
from se_flax.weights import convert, init_from, pretrained

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / 'tests' / 'golden'
_spec = importlib.util.spec_from_file_location('golden_weights', GOLDEN / 'weights.py')
weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weights)

# docs/reference.md, section 8: parameters and multiply-adds (convolutions and linear layers,
# FlopCounterMode / 2) of the reference ports at their natural size.
REFERENCE = {
    'bninception': (11_295_240, 2_032_600_064, 224),  # pretrainedmodels 0.7.4
    'inception_v3': (23_834_568, 5_713_216_096, 299),  # timm 1.0.31
    'inception_resnet_v2': (55_843_464, 13_155_794_016, 299),  # timm 1.0.31
}
# Channels of the map each SE unit recalibrates, in order (module concats; Inception-ResNet-v2:
# the residual branches).
SE_CHANNELS = {
    'bninception': (256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024),
    'inception_v3': (256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048),
    'inception_resnet_v2': (320,) * 10 + (1088,) * 20 + (2080,) * 10,
}
# Modules by SE stage (the resolution of their output): the documented grouping.
STAGES = {
    'bninception': (('inception_3a', 'inception_3b'),
                    ('inception_3c', 'inception_4a', 'inception_4b', 'inception_4c', 'inception_4d'),
                    ('inception_4e', 'inception_5a', 'inception_5b')),
    'inception_v3': (('Mixed_5b', 'Mixed_5c', 'Mixed_5d'), ('Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'),
                     ('Mixed_7a', 'Mixed_7b', 'Mixed_7c')),
    'inception_resnet_v2': (tuple(f'block35_{i}' for i in range(10)), tuple(f'block17_{i}' for i in range(20)),
                            tuple(f'block8_{i}' for i in range(9)) + ('block8',)),
}
TINY = {'bninception': 'se_bninception_tiny', 'inception_v3': 'se_inception_v3_tiny',
        'inception_resnet_v2': 'se_inception_resnet_v2_tiny'}


@functools.lru_cache(maxsize=None)
def _variables(name: str, se: str | None = 'registered', **fields):
  """Abstract variables at the natural size (`se`: a JSON SE override, None = SE off), traced once."""
  overrides = dict(fields) if se == 'registered' else {**fields, 'se': None if se is None else json.loads(se)}
  model, size = models.create(name, **overrides), models.spec(name).input_size
  return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def _params(name: str, se: str | None = 'registered', **fields):
  return _variables(name, se, **fields)['params']


def _se_modules(params) -> list[str]:
  """Top-level modules that hold an SE unit, in tree order."""
  return [k for k, v in params.items() if isinstance(v, dict) and 'se' in v]


# ----------------------------------------------------------------------------------------------
# Counts.


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_baseline_counts_equal_the_reference_ports(name):
  params, macs, size = REFERENCE[name]
  assert models.count_params(_params(name)) == params
  assert models.count_macs(models.create(name), size) == macs


# se_flax's counts of the SE versions (docs/reference.md, section 8).
SE_COUNTS = {'bninception': (11_941_638, 2_033_239_424), 'inception_v3': (25_496_188, 5_714_867_040),
             'inception_resnet_v2': (64_387_444, 13_164_289_376)}


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_se_cost_is_its_formula(name):
  """SE adds 2 C (C // 16) + C // 16 + C parameters and 2 C (C // 16) multiply-adds per unit
  (paper Section 4; fc biases as the SE-BN-Inception prototxt), nothing else."""
  channels = SE_CHANNELS[name]
  base_params, base_macs, size = REFERENCE[name]
  se_params = models.count_params(_params(f'se_{name}'))
  se_macs = models.count_macs(models.create(f'se_{name}'), size)
  assert se_params - base_params == sum(2 * c * (c // 16) + c // 16 + c for c in channels)
  assert se_macs - base_macs == sum(2 * c * (c // 16) for c in channels)
  assert (se_params, se_macs) == SE_COUNTS[name]
  units = [_params(f'se_{name}')[m]['se'] for m in _se_modules(_params(f'se_{name}'))]
  assert sorted(u['fc2']['kernel'].shape[1] for u in units) == sorted(channels)


def test_se_bninception_without_conv_biases_is_the_prototxt():
  """The SE-BN-Inception prototxt's convs have no biases (bias_term: false): 10,016 parameters fewer."""
  assert models.count_params(_params('se_bninception', conv_bias=False)) == SE_COUNTS['bninception'][0] - 10_016


# ----------------------------------------------------------------------------------------------
# SE knobs and stages.


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_stage_mask_follows_the_documented_grouping(name):
  # Inception-ResNet-v2 groups by block kind whatever the depths: traced with fewer blocks.
  fields = {'depths': (2, 2, 2)} if name == 'inception_resnet_v2' else {}
  stages = STAGES[name]
  if fields:
    stages = tuple(tuple(m for m in stage if m == 'block8' or int(m.rsplit('_', 1)[1]) < 2) for stage in stages)
  params = _params(f'se_{name}', json.dumps({'stages': [True, False, True]}), **fields)
  assert sorted(_se_modules(params)) == sorted([*stages[0], *stages[2]])
  assert sorted(_se_modules(_params(f'se_{name}', **fields))) == sorted(m for stage in stages for m in stage)
  with pytest.raises(ValueError, match=r'SE stages=\(True, False\) needs 3 entries, one per stage'):
    models.create(f'se_{name}', se=dict(stages=(True, False)))
  assert models.spec(f'se_{name}').num_stages == 3


def test_se_on_a_baseline_name_and_off_on_an_se_name():
  assert sorted(_se_modules(_params('bninception', json.dumps({})))) == sorted(m for s in STAGES['bninception'] for m in s)
  for name in TINY.values():
    assert _se_modules(_params(name, None)) == [] and _se_modules(_params(name))
  assert models.create('inception_v3').se is None
  se = models.create('se_bninception').se
  assert (se.reduction, se.rounding, se.gate, se.use_bias, se.squeeze) == (16, 'floor', 'sigmoid', True, 'avg')


def _se_units(name: str, **overrides) -> list[tuple[str, models.SEConfig, tuple[int, ...]]]:
  """(module path, config, input shape) of every attention unit the net calls, from a trace alone."""
  units = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.name == 'se':
      units.append(('/'.join(context.module.path), context.module.config, tuple(args[0].shape)))
    return next_fun(*args, **kwargs)

  model, size = models.create(name, **overrides), models.spec(name).input_size
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return units


@pytest.mark.parametrize('name', sorted(TINY.values()))
def test_every_se_knob_reaches_every_unit(name):
  """reduction, rounding, squeeze, gate and bias as given, in every unit (what each does inside
  the unit: tests/test_se.py)."""
  se = dict(reduction=3, rounding='divisible8', squeeze='max', gate='tanh', use_bias=False)
  units = _se_units(name, se=se)
  assert len(units) == len(_se_modules(_params(name))) > 0
  for _, config, _ in units:
    assert {k: getattr(config, k) for k in se} == se
  params = _params(name, json.dumps(se))
  for module in _se_modules(params):
    unit = params[module]['se']
    channels = unit['fc2']['kernel'].shape[1]
    assert unit['fc1']['kernel'].shape == (channels, make_divisible(channels / 3, 8))
    assert set(unit['fc1']) == set(unit['fc2']) == {'kernel'}


class _Doubling(nn.Module):
  """A kind of attention that doubles its input, without parameters."""

  config: models.SEConfig
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32
  norm: object = None  # the slot hands every kind but 'se' the network's BatchNorm factory

  @nn.compact
  def __call__(self, x):
    return 2 * x


@pytest.mark.parametrize('name', sorted(TINY.values()))
def test_kind_fills_every_slot(name, monkeypatch):
  monkeypatch.setitem(attention.MODULES, 'doubling', _Doubling)
  monkeypatch.setitem(se_settings.KIND_DEFAULTS, 'doubling', {})  # a kind with no settings of its own
  assert [(p, c.kind) for p, c, _ in _se_units(name, se=dict(kind='doubling'))] == \
      [(p, 'doubling') for p, _, _ in _se_units(name)]
  assert _se_modules(_params(name, json.dumps({'kind': 'doubling'}))) == []  # the SE parameters are gone
  size = models.spec(name).input_size
  with pytest.raises(ValueError, match="attention kind='nope' is not one of se"):
    jax.eval_shape(models.create(name, se=dict(kind='nope')).init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def test_se_sits_on_the_module_output():
  """Inception: SE sees each module's concat (its full width); Inception-ResNet-v2: the residual
  branch after the projection, at the block's width."""
  # 1/8 widths. BN-Inception 3a: 8 + 8 + 12 + 4; 3c: 20 + 12 + the 32 pooled; 5b: 44 + 40 + 28 + 16.
  # Inception-ResNet-v2: Mixed_5b 12 + 8 + 12 + 8; Mixed_6a 48 + 48 + 40; Mixed_7a 48 + 36 + 40 + 136.
  for name, widths in (('se_bninception_tiny', (32, 64, 128)), ('se_inception_resnet_v2_tiny', (40, 136, 260))):
    assert [shape[-1] for _, _, shape in _se_units(name)] == list(widths)


@pytest.mark.parametrize('placement, expected', [
    ('standard', lambda x, y: jax.nn.relu(2 * y * 0.5 + x)),
    ('pre', lambda x, y: jax.nn.relu(y * 0.5 + x)),  # y is then computed from 2 x, below
    ('identity', lambda x, y: jax.nn.relu(y * 0.5 + 2 * x)),
    ('post', lambda x, y: 2 * jax.nn.relu(y * 0.5 + x)),
])
def test_residual_placements_are_where_the_paper_puts_them(placement, expected):
  """One Inception-ResNet block with a doubling attention unit: where it doubles, exactly."""
  from se_flax.models import inception_resnet
  net = models.create('inception_resnet_v2')
  conv_bn, conv = net._conv_bn(train=False), net._conv_factory()
  branches = ((inception_parts.Conv('branch0', 3),), (inception_parts.Conv('branch1_0', 2, 3, 1, 1),))
  attn = lambda name: _Doubling(models.SEConfig(), name=name)
  block = inception_resnet.InceptionResidual(branches, conv_bn, conv, 0.5, attn=attn, placement=placement)
  plain = inception_resnet.InceptionResidual(branches, conv_bn, conv, 0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 4)), jnp.float32)
  variables = plain.init(jax.random.key(0), x)
  # The residual branch y (after the projection), with the same parameters: scale 1, no ReLU, minus x.
  unscaled = inception_resnet.InceptionResidual(branches, conv_bn, conv, 1.0, activate=False)
  inp = 2 * x if placement == 'pre' else x
  y = unscaled.apply(variables, inp) - inp
  np.testing.assert_allclose(block.apply(variables, x), expected(x, y), rtol=1e-5, atol=1e-5)


def test_placements_without_a_meaning_are_refused():
  for name in ('se_bninception_tiny', 'se_inception_v3_tiny'):
    with pytest.raises(ValueError) as info:
      models.create(name, se=dict(placement='post'))
    assert str(info.value) == (f"SE placement='post' has no meaning in {type(models.create(name)).__name__}; "
                               'allowed: standard')
  with pytest.raises(ValueError, match="placement='after_3x3' has no meaning in InceptionResNetV2; allowed: "
                                       'standard, pre, post, identity'):
    models.create('se_inception_resnet_v2_tiny', se=dict(placement='after_3x3'))


@pytest.mark.parametrize('field, value, message', [
    ('modules', ('3a', '9z'), "modules entry='9z' is not one of 3a, 3b, 3c"),
    ('width', 0.0, 'width=0.0 must be positive'),
])
def test_bad_fields_are_one_line_errors(field, value, message):
  with pytest.raises(ValueError) as info:
    models.create('se_bninception_tiny', **{field: value})
  assert message in str(info.value) and '\n' not in str(info.value)
  with pytest.raises(ValueError, match=r'depths=\(1, 1\) must be three integers'):
    models.create('inception_resnet_v2', depths=(1, 1))


def test_bninception_input_size_error_is_one_line():
  model = models.create('bninception')
  with pytest.raises(ValueError) as info:
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  assert str(info.value).startswith('BN-Inception needs an even map into inception_3c, got 37x37') and \
      '\n' not in str(info.value)


def test_tiny_nets_take_their_natural_size():
  for name, size in (('se_bninception_tiny', 32), ('se_inception_v3_tiny', 75), ('se_inception_resnet_v2_tiny', 75)):
    assert models.spec(name).input_size == size
    assert models.count_params(_params(name)) < 500_000


# ----------------------------------------------------------------------------------------------
# PyTorch's pooling conventions (the golden parity tests cover them inside the nets).


def _torch_pool_reference(x: np.ndarray, spec: inception_parts.Pool) -> np.ndarray:
  """torch's MaxPool2d / AvgPool2d on one 2-D map, window by window (its documented arithmetic)."""
  n, k, s, p = x.shape[0], spec.window, spec.stride, spec.padding
  span = n + 2 * p - k
  out = (-(-span // s) if spec.ceil_mode else span // s) + 1
  if spec.ceil_mode and (out - 1) * s >= n + p:
    out -= 1
  result = np.zeros((out, out))
  for i in range(out):
    for j in range(out):
      r0, c0 = i * s - p, j * s - p
      r1, c1 = min(r0 + k, n + p), min(c0 + k, n + p)  # the window within input + padding
      cells = x[max(r0, 0):min(r1, n), max(c0, 0):min(c1, n)]
      if spec.kind == 'max':
        result[i, j] = cells.max()
      else:
        divisor = (r1 - r0) * (c1 - c0) if spec.count_include_pad else cells.size
        result[i, j] = cells.sum() / divisor
  return result


@pytest.mark.parametrize('spec', [
    inception_parts.Pool('max', 3, 2, 0, ceil_mode=True),  # Caffe's stem and reduction pools
    inception_parts.Pool('max', 3, 2, 0),  # timm's Inception-v3 / Inception-ResNet-v2
    inception_parts.Pool('max', 3, 1, 1, ceil_mode=True),  # BN-Inception 5b
    inception_parts.Pool('avg', 3, 1, 1, ceil_mode=True, count_include_pad=True),  # BN-Inception, Inception-v3
    inception_parts.Pool('avg', 3, 1, 1, count_include_pad=False),  # Inception-ResNet-v2 Mixed_5b
    inception_parts.Pool('avg', 3, 2, 1, ceil_mode=True, count_include_pad=True),  # an overhanging window
], ids=lambda s: f'{s.kind}{s.window}s{s.stride}p{s.padding}{"c" if s.ceil_mode else ""}'
                 f'{"" if s.count_include_pad else "x"}')
@pytest.mark.parametrize('size', [6, 7])
def test_pool_equals_torchs_arithmetic(spec, size):
  x = np.random.default_rng(size).normal(size=(size, size)).astype(np.float32)
  got = np.asarray(inception_parts.pool(jnp.asarray(x)[None, :, :, None], spec))[0, :, :, 0]
  np.testing.assert_allclose(got, _torch_pool_reference(x, spec), rtol=1e-6, atol=1e-6)


def test_ceil_mode_keeps_one_more_row_where_documented():
  ceil, floor = inception_parts.Pool('max', 3, 2, 0, ceil_mode=True), inception_parts.Pool('max', 3, 2, 0)
  x = jnp.zeros((1, 112, 112, 1))
  assert inception_parts.pool(x, ceil).shape[1] == 56 and inception_parts.pool(x, floor).shape[1] == 55


# ----------------------------------------------------------------------------------------------
# Converter names (the logits: test_convert.py's golden files).


def _golden_keys(name: str) -> list[tuple[str, list[int]]]:
  return json.loads((GOLDEN / 'keys' / f'{name}.json').read_text())


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_key_map_is_the_reference_state_dict(name):
  key_map = convert.timm_key_map(name, models.create(name), _variables(name))
  reference = {k: tuple(s) for k, s in _golden_keys(name) if not k.endswith('num_batches_tracked')}
  assert {k: t.timm_shape for k, t in key_map.items()} == reference
  examples = {
      'bninception': {'conv1_7x7_s2.bias': ('conv1_7x7_s2', 'conv', 'bias'),
                      'inception_3a_double_3x3_2_bn.running_var': ('inception_3a', 'double_3x3_2', 'bn', 'var'),
                      'last_linear.weight': ('fc', 'kernel')},
      'inception_v3': {'Mixed_7b.branch3x3_2a.conv.weight': ('Mixed_7b', 'branch3x3_2a', 'conv', 'kernel')},
      'inception_resnet_v2': {'repeat_1.19.branch1.2.conv.weight': ('block17_19', 'branch1_2', 'conv', 'kernel'),
                              'block8.conv2d.bias': ('block8', 'conv2d', 'bias'),
                              'mixed_5b.branch3.1.bn.weight': ('mixed_5b', 'branch3_1', 'bn', 'scale'),
                              'classif.weight': ('fc', 'kernel')},
  }[name]
  for key, path in examples.items():
    assert key_map[key].path == path


def test_torchvision_aux_classifier_keys_are_dropped():
  """inception_v3.tv_in1k holds torchvision's auxiliary classifier (timm loads it non-strictly);
  its keys are accepted and dropped, any other extra key is still an error."""
  shapes = {k: jax.ShapeDtypeStruct(tuple(s), np.float32) for k, s in _golden_keys('inception_v3')}
  aux = {'AuxLogits.conv0.conv.weight': (128, 768, 1, 1), 'AuxLogits.fc.weight': (1000, 768)}
  flat = convert.timm_shapes('inception_v3', {**shapes, **{k: jax.ShapeDtypeStruct(s, np.float32)
                                                          for k, s in aux.items()}})
  assert not any('Aux' in k for k in flat) and flat['params/fc/kernel'].shape == (2048, 1000)
  with pytest.raises(ValueError, match='1 unexpected keys: Mixed_8a.branch1x1.conv.weight'):
    convert.timm_shapes('inception_v3', {**shapes, 'Mixed_8a.branch1x1.conv.weight': shapes['fc.weight']})


# ----------------------------------------------------------------------------------------------
# An SE net from its baseline's weights: one config field (init_from), SE left fresh.


def _init_from_config(model_name: str, source: str):
  from configs import imagenet
  config = imagenet.get_config(model_name)
  config.init_from = source
  return config


def test_se_net_from_a_baseline_weights_file(tmp_path):
  """A pretrainedmodels-layout BN-Inception file for se_bninception (read as bninception's):
  validated from its header before any work, every baseline variable loaded, the 40 SE arrays
  (10 units x fc1/fc2 x kernel/bias) reported freshly initialised."""
  path = str(tmp_path / 'bn_inception.safetensors')
  state_dict = weights.make_state_dict(_golden_keys('bninception'), seed=5)
  safetensors.numpy.save_file(state_dict, path)
  assert models.spec('se_bninception').facts.baseline == 'bninception'
  config = _init_from_config('se_bninception', path)
  model = models.create('se_bninception')
  init_from.validate(config, model, (224, 224, 3))  # shapes from the safetensors header

  source, description = init_from.load_source(path, 'se_bninception')
  assert description == f'timm bninception weights {path}'
  target = init_from.variable_shapes(model, (224, 224, 3))
  merged, report = init_from.merge(target, source)
  assert sorted(report['initialised']) == sorted(k for k in target if '/se/' in k) and len(report['initialised']) == 40
  assert sorted(report['loaded']) == sorted(source) and report['unused'] == [] and report['head'] == []
  np.testing.assert_array_equal(merged['params/inception_4e/3x3/conv/kernel'],
                                state_dict['inception_4e_3x3.weight'].transpose(2, 3, 1, 0))
  table = init_from.report_table(report, target, source)
  assert 'freshly initialised     40 arrays' in table and 'inception_3a, inception_3b, inception_3c' in table


def test_se_net_from_a_baseline_tag(tmp_path, monkeypatch):
  """init_from='inception_v3.tv_in1k' on se_inception_v3 (the tag's file placed in the local
  pretrained dir, with torchvision's auxiliary classifier as the real one has): the baseline loads,
  SE is fresh, and the run takes the tag's preprocessing."""
  monkeypatch.setenv(pretrained.LOCAL_DIR_ENV, str(tmp_path))
  keys = _golden_keys('inception_v3') + [['AuxLogits.fc.weight', [1000, 768]], ['AuxLogits.fc.bias', [1000]]]
  state_dict = {k: v.astype(np.float16) if v.dtype == np.float32 else v
                for k, v in weights.make_state_dict(keys, seed=6).items()}
  safetensors.numpy.save_file(state_dict, str(tmp_path / 'inception_v3.tv_in1k.safetensors'))
  config = _init_from_config('se_inception_v3', 'inception_v3.tv_in1k')
  source, description = init_from.load_source(config.init_from, config.model.name)
  assert description == 'timm inception_v3 weights inception_v3.tv_in1k'
  target = init_from.variable_shapes(models.create('se_inception_v3'), (299, 299, 3))
  _, report = init_from.merge(target, source)
  assert sorted(report['initialised']) == sorted(k for k in target if '/se/' in k) and len(report['initialised']) == 44
  assert len(report['loaded']) == len(source) and report['unused'] == []
  from se_flax.data import datasets
  data = {**config.data.to_dict(), **init_from.tag_data_fields(config, datasets.default_data_config('imagenet2012'))}
  assert (data['image_size'], data['eval_resize'], data['eval_interpolation']) == (299, 341, 'bicubic')
  assert tuple(data['mean']) == tuple(data['std']) == (127.5,) * 3


def test_excitation_tool_orders_inception_units():
  """se_flax.tools.excitations sorts units by name with numbers as numbers; Inception-ResNet-v2's
  'block8' beside 'block8_0' once compared a number with a text."""
  from se_flax.tools import excitations
  names = ['block8/se', 'block8_0/se', 'block35_10/se', 'block35_9/se', 'inception_4a/se', 'inception_3b/se']
  assert sorted(names, key=excitations._block_order) == ['block8_0/se', 'block8/se', 'block35_9/se', 'block35_10/se',
                                                         'inception_3b/se', 'inception_4a/se']


# ----------------------------------------------------------------------------------------------
# Recipes (configs/imagenet.py).


def test_inception_v3_recipe_is_its_papers():
  """RMSProp (decay 0.9, eps 1.0), lr 0.045 times 0.94 every two epochs, label smoothing 0.1, 299 px."""
  from configs import imagenet
  from se_flax import optim
  for name in ('inception_v3', 'se_inception_v3'):
    c = imagenet.get_config(name)
    assert (c.optim.name, c.optim.rmsprop_decay, c.optim.rmsprop_eps, c.optim.label_smoothing) == ('rmsprop', 0.9, 1.0, 0.1)
    assert (c.data.image_size, c.data.eval_resize, c.train.num_epochs) == (299, 341, 100.0)
    lr = optim.create_learning_rate_fn(c, steps_per_epoch=10, total_steps=1000)
    got = [float(lr(s)) for s in (0, 19, 20, 39, 40, 999)]
    np.testing.assert_allclose(got, [0.045, 0.045, 0.045 * 0.94, 0.045 * 0.94, 0.045 * 0.94 ** 2, 0.045 * 0.94 ** 49],
                               rtol=1e-5)
  for name, size in (('se_inception_resnet_v2', 299), ('se_bninception', 224)):  # the SE paper's recipe
    c = imagenet.get_config(name)
    assert (c.optim.name, c.optim.lr, c.data.image_size, c.schedule.decay_epochs) == ('sgd', 0.6, size, (30, 60, 90))


# ----------------------------------------------------------------------------------------------
# Training on the digits (8x8, upscaled to each tiny net's size) through train.py.


@pytest.mark.parametrize('name, stages, with_se', [
    ('se_bninception_tiny', '(False,True,True)', ['inception_3c', 'inception_5b']),
    ('se_inception_v3_tiny', '(True,True,True)', ['Mixed_5b', 'Mixed_6a', 'Mixed_7b']),
    ('se_inception_resnet_v2_tiny', '(True,False,True)', ['block35_0', 'block8']),
])
def test_train_py_trains_each_family_on_digits(name, stages, with_se, digits_dir, tmp_path):
  """Two steps and an evaluation of 64 test digits; SE's stage mask from the command line. XLA's
  backend optimisation is off: compiling, not computing, is what these runs spend their time on."""
  workdir = tmp_path / 'work'
  size = models.spec(name).input_size
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0'}
  args = [sys.executable, 'train.py', f'--config=configs/digits.py:{name}', f'--workdir={workdir}',
          f'--config.data.data_dir={digits_dir}', f'--config.data.image_size={size}',
          f'--config.data.eval_resize={size}', '--config.data.eval_split=test[:64]', '--config.train.num_steps=2',
          '--config.train.global_batch_size=16', '--config.eval.global_batch_size=64',
          f'--config.model.se.stages={stages}']
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['step'] == 2 and result['num_examples'] == 64 and np.isfinite(result['loss'])
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(workdir / 'checkpoints' / '2' / 'state')
  assert sorted(_se_modules(state['params'])) == sorted(with_se)
  assert state['params']['fc']['kernel'].shape[-1] == 10
