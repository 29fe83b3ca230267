"""Load timm (PyTorch) checkpoints of the SENet family into se_flax models.

    module, variables = from_timm_file('seresnext50_32x4d', 'model.safetensors')
    logits = module.apply(variables, images_nhwc, train=False)  # == timm's eval-mode model(x_nchw)

The mapping is generated from the flax variable tree, so every se_flax variable has exactly one
timm key and nothing is silently left at its initial value. Three timm layouts:

  timm (`resnet.py`): conv1.* / bn1.* (deep stem: conv1.{0,1,3,4,6}.*, bn1.*),
    layer1.0.{conv,bn}{1,2,3}.*, layer1.0.se.fc{1,2}.*, layer1.0.downsample.{0,1}.* (ResNet-D
    avg-down: downsample.{1,2}.*, index 0 is the parameter-free pool), fc.*.
  legacy (`senet.py`, names `legacy_*`): layer0.{conv,bn}{1,2,3}.*, layer1.0.se_module.fc{1,2}.*,
    layer1.0.downsample.{0,1}.*, last_linear.*.
  SK (`sknet.py`): the timm ResNet names, but block convs are ConvNormAct (layer1.0.conv1.conv.*,
    layer1.0.conv1.bn.*) and the selective-kernel conv holds layer1.0.conv2.paths.{i}.{conv,bn}.* and
    layer1.0.conv2.attn.{fc_reduce,bn,fc_select}.* (basic blocks: conv1).

Other families: vgg16_bn (`_vgg_layout`: features.{i}.*, pre_logits.fc{1,2}.*, head.fc.*),
mobilenetv1_100 (`_mobilenet_layout`: conv_stem.*, bn1.*, blocks.{S}.{B}.*, classifier.*), and
Inception (`inception_v3`, `inception_resnet_v2`: timm; `bninception`: the Caffe port of the
`pretrainedmodels` package 0.7.4, not a timm model, converted from its state dict alike): see
`_inception_v3_layout`, `_inception_resnet_v2_layout`, `_bninception_layout`.

Layout changes: conv OIHW -> HWIO (grouped: (O, I/g, H, W) -> (H, W, I/g, O)), 1D conv OIW -> WIO
(ECA); Linear (out, in)
-> Dense (in, out); SE fc 1x1 conv (out, in, 1, 1) -> Dense (in, out). BatchNorm weight -> scale,
running_mean/var -> batch_stats mean/var; `num_batches_tracked` is accepted and ignored.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Callable, Mapping, NamedTuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util

from se_flax import models
from se_flax.models import facts
from se_flax import trees

TIMM_NAMES = facts.TIMM_NAMES  # registry names that timm 1.0.31 also has

# (collection, flax leaf) -> timm leaf.
_LEAVES = {
    ('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var',
}
_MAX_LISTED = 20  # problems listed per kind in a ValueError; the rest are counted


class Target(NamedTuple):
  """Where one timm tensor goes: flax collection and path, the timm shape it must have, the layout change."""

  collection: str
  path: tuple[str, ...]
  timm_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]


def _check_name(timm_name: str) -> None:
  if timm_name not in TIMM_NAMES:
    raise ValueError(f'timm model {timm_name!r} has no se_flax converter; supported: {", ".join(TIMM_NAMES)}')


class Layout(NamedTuple):
  """How one torch family names its modules: the rest of the mapping is generic.

  rename: flax module path (without the leaf) -> torch module path.
  head: torch key of the classifier weight (its first dimension gives num_classes).
  dense_is_conv: whether the Dense at this flax module path is a 1x1 convolution in torch
    (timm's SE fcs), whose (out, in, 1, 1) weight becomes a Dense (in, out) kernel.
  ignore: state-dict keys of parts se_flax does not build (e.g. torchvision's auxiliary
    classifier in timm's inception_v3.tv_in1k file), accepted and dropped like num_batches_tracked.
  """

  rename: Callable[[tuple[str, ...]], list[str]]
  head: str
  dense_is_conv: Callable[[tuple[str, ...]], bool] = lambda modules: 'se' in modules
  ignore: Callable[[str], bool] = lambda key: False  # checkpoint keys accepted and dropped


def _resnet_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's resnet.py and senet.py (`legacy_*`) names for se_flax's ResNet."""
  if timm_name.startswith('legacy_'):
    names = {f'stem_{kind}{i}': f'layer0.{kind}{i}' for kind in ('conv', 'bn') for i in (1, 2, 3)}
    names = {**names, 'se': 'se_module', 'downsample_conv': 'downsample.0',
             'downsample_bn': 'downsample.1', 'fc': 'last_linear'}
    head = 'last_linear.weight'
  else:
    if module.stem in ('deep', 'tiered'):  # nn.Sequential(conv, bn, relu, conv, bn, relu, conv), then bn1
      names = {'stem_conv1': 'conv1.0', 'stem_bn1': 'conv1.1', 'stem_conv2': 'conv1.3',
               'stem_bn2': 'conv1.4', 'stem_conv3': 'conv1.6', 'stem_bn3': 'bn1'}
    else:
      names = {'stem_conv1': 'conv1', 'stem_bn1': 'bn1'}
    down = 1 if module.downsample == 'avg' else 0  # avg-down: index 0 is the pool (or nn.Identity)
    names = {**names, 'se': 'se', 'downsample_conv': f'downsample.{down}',
             'downsample_bn': f'downsample.{down + 1}', 'fc': 'fc'}
    head = 'fc.weight'

  def rename(modules: tuple[str, ...]) -> list[str]:
    return [names.get(m, re.sub(r'^layer(\d+)_(\d+)$', r'layer\1.\2', m)) for m in modules]

  return Layout(rename, head)


def _sk_resnet_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's sknet.py: the ResNet names, with ConvNormAct block convs and SelectiveKernel modules."""
  resnet = _resnet_layout(timm_name, module)

  def rename(modules: tuple[str, ...]) -> list[str]:
    names = resnet.rename(modules)
    if len(modules) == 2 and modules[0].startswith('layer'):  # a block's own conv or BN
      names[1] = re.sub(r'^(conv|bn)(\d)$', lambda m: f'conv{m[2]}.{m[1]}', names[1])
    return [re.sub(r'^paths_(\d+)_(conv|bn)$', r'paths.\1.\2', n) for n in names]

  return Layout(rename, resnet.head, dense_is_conv=lambda modules: 'se' in modules or 'attn' in modules)


def _vgg_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's vgg.py: `features.{i}` numbers conv, BN, ReLU of every conv and a max-pool after every
  stage in one nn.Sequential; fc6/fc7 are `pre_logits.fc{1,2}` (ConvMlp), the classifier `head.fc`."""
  del timm_name
  names, index = {}, 0
  for stage, num_convs in enumerate(module.stage_sizes):
    for j in range(num_convs):
      block = f'conv{stage + 1}_{j + 1}'
      names[block, 'conv'], names[block, 'bn'] = f'features.{index}', f'features.{index + 1}'
      index += 3  # conv, bn, relu
    index += 1  # max-pool
  names.update({('fc6',): 'pre_logits.fc1', ('fc7',): 'pre_logits.fc2', ('fc',): 'head.fc'})

  def rename(modules: tuple[str, ...]) -> list[str]:
    for size in (2, 1):
      if tuple(modules[:size]) in names:
        return [names[tuple(modules[:size])], *modules[size:]]
    return list(modules)

  return Layout(rename, 'head.fc.weight')


def _mobilenet_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's efficientnet.py (MobileNet v1): conv_stem, bn1, blocks.{S}.{B}.{conv_dw,bn1,conv_pw,bn2},
  classifier: the se_flax names with blocks_S_B -> blocks.S.B and fc -> classifier."""
  del timm_name, module

  def rename(modules: tuple[str, ...]) -> list[str]:
    return ['classifier' if m == 'fc' else re.sub(r'^blocks_(\d+)_(\d+)$', r'blocks.\1.\2', m) for m in modules]

  return Layout(rename, 'classifier.weight')


def _inception_v3_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's inception_v3: the flax names are timm's (`Mixed_5b/branch1x1/conv`). torchvision's
  checkpoint (inception_v3.tv_in1k) also holds the auxiliary classifier, which timm drops too."""
  return Layout(list, 'fc.weight', ignore=lambda key: key.startswith('AuxLogits.'))


_IRV2_BLOCKS = {'block35': 'repeat', 'block17': 'repeat_1', 'block8': 'repeat_2'}


def _inception_resnet_v2_layout(timm_name: str, module: nn.Module) -> Layout:
  """timm's inception_resnet_v2: `block35_{i}` -> `repeat.{i}`, `block17_{i}` -> `repeat_1.{i}`,
  `block8_{i}` -> `repeat_2.{i}` (the last `block8` stays), `branch1_0` -> `branch1.0`, fc -> classif."""

  def rename(modules: tuple[str, ...]) -> list[str]:
    out = []
    for m in modules:
      block = re.fullmatch(r'(block35|block17|block8)_(\d+)', m)
      if block:
        m = f'{_IRV2_BLOCKS[block[1]]}.{block[2]}'
      out.append({'fc': 'classif'}.get(m, re.sub(r'^(branch\d)_(\d)$', r'\1.\2', m)))
    return out

  return Layout(rename, 'classif.weight')


def _bninception_layout(timm_name: str, module: nn.Module) -> Layout:
  """The pretrainedmodels BN-Inception port: flat names, `inception_3a/1x1/conv` -> `inception_3a_1x1`,
  `.../bn` -> `inception_3a_1x1_bn`, stem `conv1_7x7_s2/{conv,bn}` alike, fc -> last_linear."""

  def rename(modules: tuple[str, ...]) -> list[str]:
    if modules == ('fc',):
      return ['last_linear']
    *path, unit = modules
    return ['_'.join(path) + ('_bn' if unit == 'bn' else '')]

  return Layout(rename, 'last_linear.weight')


# timm name -> Layout builder (timm_name, module) -> Layout. Every name in TIMM_NAMES has one.
LAYOUTS: dict[str, Callable[[str, nn.Module], Layout]] = {
    name: _resnet_layout for name in TIMM_NAMES
}
LAYOUTS.update({name: _sk_resnet_layout for name in ('skresnet18', 'skresnet34', 'skresnext50_32x4d')})
LAYOUTS.update({'vgg16_bn': _vgg_layout, 'mobilenetv1_100': _mobilenet_layout})
LAYOUTS.update({'inception_v3': _inception_v3_layout, 'inception_resnet_v2': _inception_resnet_v2_layout,
                'bninception': _bninception_layout})


def layout(timm_name: str, module: nn.Module | None = None) -> Layout:
  """The torch naming of `timm_name` (module: the se_flax module built for it)."""
  _check_name(timm_name)
  if module is None:
    module = models.create(timm_name)
  return LAYOUTS[timm_name](timm_name, module)


def _kernel_transform(shape: tuple[int, ...], in_se: bool) -> tuple[tuple[int, ...], Callable]:
  """timm shape and timm -> flax function for a flax kernel of `shape`."""
  if len(shape) == 4:  # conv: torch (O, I/g, H, W), flax (H, W, I/g, O)
    return (shape[3], shape[2], shape[0], shape[1]), lambda w: w.transpose(2, 3, 1, 0)
  if len(shape) == 3:  # 1D conv (ECA): torch (O, I/g, W), flax (W, I/g, O)
    return (shape[2], shape[1], shape[0]), lambda w: w.transpose(2, 1, 0)
  if in_se:  # timm's SE fcs are 1x1 convs (out, in, 1, 1); se_flax's are Dense (in, out)
    return (shape[1], shape[0], 1, 1), lambda w: w.reshape(w.shape[:2]).T
  return (shape[1], shape[0]), lambda w: w.T  # Linear (out, in)


def key_map(variables: Mapping[str, Any], rename: Callable[[tuple[str, ...]], list[str]],
            dense_is_conv: Callable[[tuple[str, ...]], bool]) -> dict[str, Target]:
  """torch state-dict key -> Target for every leaf of `variables` (arrays or jax.ShapeDtypeStruct),
  with the generic leaf names and layout changes; `rename` and `dense_is_conv` as in `Layout`.

  Works for any module whose flax names follow its torch names: a network through its `Layout`,
  or one attention module alone (`rename=list`, `dense_is_conv=lambda m: True` for timm's
  attention modules, whose FCs are 1x1 convolutions).
  """
  result = {}
  for (collection, *modules, leaf), value in traverse_util.flatten_dict(dict(variables)).items():
    if (collection, leaf) not in _LEAVES:
      raise ValueError(f'no timm equivalent for {collection}/{"/".join(modules)}/{leaf}; '
                       f'known leaves: {", ".join(f"{c}/{n}" for c, n in _LEAVES)}')
    shape = tuple(value.shape)
    timm_shape, to_flax = shape, np.asarray
    if leaf == 'kernel':
      timm_shape, to_flax = _kernel_transform(shape, in_se=dense_is_conv(tuple(modules)))
    key = '.'.join([*rename(tuple(modules)), _LEAVES[collection, leaf]])
    result[key] = Target(collection, (*modules, leaf), timm_shape, to_flax)
  return result


def timm_key_map(timm_name: str, module: nn.Module, variables: Mapping[str, Any]) -> dict[str, Target]:
  """timm state-dict key -> Target for every leaf of `variables` (arrays or jax.ShapeDtypeStruct).

  Keys come out in flax tree order; `num_batches_tracked` buffers are not listed.
  """
  torch_names = layout(timm_name, module)
  return key_map(variables, torch_names.rename, torch_names.dense_is_conv)


def load(targets: Mapping[str, Target], arrays: Mapping[str, np.ndarray]) -> dict:
  """flax variables from torch arrays through a key map (shapes checked by the caller)."""
  flat = {}
  for k, t in targets.items():
    array = np.asarray(arrays[k])
    flat[(t.collection, *t.path)] = jnp.asarray(t.to_flax(array), dtype=_flax_dtype(array.dtype))
  return traverse_util.unflatten_dict(flat)


def _listing(kind: str, items: list[str]) -> str:
  shown = '; '.join(items[:_MAX_LISTED])
  more = f'; ... and {len(items) - _MAX_LISTED} more' if len(items) > _MAX_LISTED else ''
  return f'\n  {len(items)} {kind}: {shown}{more}'


def _check_fit(timm_name: str, key_map: Mapping[str, Target], arrays: Mapping[str, np.ndarray]) -> None:
  """Raise one ValueError listing every missing key, unexpected key and shape mismatch."""
  optional = {k[:-len('running_mean')] + 'num_batches_tracked' for k in key_map if k.endswith('.running_mean')}
  ignore = layout(timm_name).ignore
  missing = [k for k in key_map if k not in arrays]
  unexpected = [k for k in arrays if k not in key_map and k not in optional and not ignore(k)]
  mismatched = [f'{k} {tuple(arrays[k].shape)} (expected {t.timm_shape})'
                for k, t in key_map.items() if k in arrays and tuple(arrays[k].shape) != t.timm_shape]
  if missing or unexpected or mismatched:
    problems = [(kind, items) for kind, items in (('missing keys', missing), ('unexpected keys', unexpected),
                                                  ('shape mismatches', mismatched)) if items]
    raise ValueError(f'state dict does not fit timm model {timm_name!r}:'
                     + ''.join(_listing(kind, items) for kind, items in problems))


def _flax_dtype(dtype: np.dtype) -> Any:
  """Keep float32/16 and bfloat16 checkpoints as they are; anything else (float64) becomes float32."""
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize <= 4:
    return dtype
  return jnp.float32


def from_timm(timm_name: str, state_dict: Mapping[str, Any], **overrides) -> tuple[nn.Module, dict]:
  """se_flax module and variables equal to timm's `timm_name` with `state_dict` loaded, in eval mode.

  `state_dict` values may be numpy arrays or anything with `__array__` (e.g. `tensor.numpy()`).
  num_classes comes from the classifier weight unless given in `overrides`; other overrides
  (dtype, axis_name, ...) go to `se_flax.models.create`. An attention kind timm also has converts
  the same way: timm's `create_model('resnet50', block_args=dict(attn_layer='eca'))` state dict
  loads with `from_timm('resnet50', state_dict, attn='eca')` (eca, ese, gc, cbam; timm's 'se' in a
  plain ResNet rounds to multiples of 8: `se=dict(rounding='divisible8')`).
  """
  _check_name(timm_name)
  arrays = {k: np.asarray(v) for k, v in state_dict.items()}
  head = layout(timm_name).head
  if head in arrays and 'num_classes' not in overrides:
    overrides['num_classes'] = int(arrays[head].shape[0])
  module = models.create(timm_name, **overrides)
  shapes = _variable_shapes(timm_name, module)
  targets = timm_key_map(timm_name, module, shapes)
  _check_fit(timm_name, targets, arrays)
  return module, load(targets, arrays)


def _variable_shapes(timm_name: str, module: nn.Module):
  """The variables' shapes (nothing computed), traced at the model's natural input size: the shapes
  do not depend on it, but some nets take no small input (Inception-v3: 75 px at least)."""
  size = models.spec(timm_name).input_size
  init = functools.partial(module.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def timm_shapes(timm_name: str, shapes: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat flax shapes ('params/fc/kernel') that `from_timm` gives for a state dict with these
  `shapes` (anything with `.shape`, e.g. a safetensors header), fit-checked as there; no arrays."""
  _check_name(timm_name)
  head = layout(timm_name).head
  overrides = {'num_classes': int(shapes[head].shape[0])} if head in shapes else {}
  module = models.create(timm_name, **overrides)
  variables = _variable_shapes(timm_name, module)
  _check_fit(timm_name, timm_key_map(timm_name, module, variables), shapes)
  return trees.flatten(variables)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A .safetensors checkpoint as numpy arrays (no torch needed)."""
  return safetensors.numpy.load_file(os.fspath(path))


def from_timm_file(timm_name: str, path: str | os.PathLike, **overrides) -> tuple[nn.Module, dict]:
  """`from_timm` on a timm .safetensors checkpoint (e.g. a Hugging Face hub `model.safetensors`)."""
  return from_timm(timm_name, load_safetensors(path), **overrides)


def load_pretrained(pretrained: Any, name: str | None = None, *, num_classes: int | None = None,
                    rng: jax.Array | None = None, cache_dir: str | None = None,
                    **overrides) -> tuple[nn.Module, dict]:
  """Module and variables of pretrained timm weights named by `pretrained`.

  `pretrained`: True (timm's default tag of `name`), a tag ('seresnet50.ra2_in1k', or 'ra2_in1k'
  with `name`), 'hf-hub:<repo id>', or a local .safetensors file (with `name`); see
  `se_flax.weights.pretrained`. Hub files come from huggingface_hub's cache, downloaded if needed.
  `num_classes` other than the checkpoint's replaces the classifier `fc` with a fresh one
  (initialised from `rng`, default key 0), logged in one line. Other overrides go to
  `se_flax.models.create` (dtype, axis_name, ...).
  """
  from se_flax.weights import pretrained as pretrained_lib  # pylint: disable=import-outside-toplevel  (pretrained imports convert)
  source = pretrained_lib.resolve(pretrained, name)
  module, variables = from_timm(source.name, pretrained_lib.load_state_dict(source, cache_dir), **overrides)
  if num_classes is not None and num_classes != module.num_classes:
    module, variables = replace_head(module, variables, num_classes, rng, source=source.describe())
  return module, variables


def replace_head(module: nn.Module, variables: Mapping[str, Any], num_classes: int,
                 rng: jax.Array | None = None, source: str = 'checkpoint') -> tuple[nn.Module, dict]:
  """`module` with `num_classes` outputs: a freshly initialised classifier `fc`, all else kept."""
  old = variables['params']['fc']['kernel']
  new_module = module.clone(num_classes=num_classes)
  # The network's own classifier definition (ResNet: nn.Dense named 'fc'), initialised alone.
  fc = nn.Dense(num_classes, dtype=new_module.dtype, param_dtype=new_module.param_dtype)
  fresh = fc.init(jax.random.key(0) if rng is None else rng, jnp.zeros((1, old.shape[0]), new_module.dtype))
  params = {**variables['params'], 'fc': fresh['params']}
  logging.info('%s: head fc replaced, %d -> %d classes, freshly initialised', source, old.shape[1], num_classes)
  return new_module, {**variables, 'params': params}
