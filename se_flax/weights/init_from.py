"""Start a run from other weights: `config.init_from`, `config.init_skip`, and the load report.

A fresh train state (random init from config.seed) is overwritten, parameter by parameter, with
what the source holds under the same flax path. The source is a pretrained tag, a hub id or a
timm .safetensors file (converted by `se_flax.weights.convert`), or another se_flax workdir's checkpoint.
An SE net that timm lacks (`se_inception_v3`) starts from its baseline's tag or file
(`inception_v3.tv_in1k`): everything but SE loads, and SE is reported freshly initialised.
Every model variable ends up in exactly one group, logged as a short table:

  loaded                 the source's value (params and BatchNorm statistics);
  freshly initialised    absent from the source, or the head (`config.finetune.head`) when the
                         class count differs: said in one line;
  skipped                matched by a `config.init_skip` glob: kept at its fresh init.

A shape mismatch anywhere else is an error that lists the keys; source variables the model
does not have are counted as unused. Called only when no checkpoint was restored, so a resumed
run never reloads init_from.

A run from a pretrained tag also takes the tag's preprocessing (`tag_data_fields`), as timm's
train.py does for a fine-tuning run: its resolution, crop, interpolation and mean/std, for
training and evaluation, and timm's own eval transform (PIL) for evaluation.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging
import flax
import jax
import numpy as np

from se_flax import checkpointing
from se_flax.models import facts
from se_flax.trees import flatten, matches  # noqa: F401 (matches: the init_skip/head globs)
from se_flax.weights import convert
from se_flax.weights import pretrained

_LISTED = 8  # keys listed in an error


class InitFromMismatchError(checkpointing.CheckpointMismatchError):
  """init_from holds shapes that do not fit the configured model outside init_skip."""


def _path(key: str) -> str:
  """'params/layer1_0/conv1/kernel' -> 'layer1_0/conv1/kernel' (what globs are written against)."""
  return key.split('/', 1)[1]


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, 'checkpoints')) or (
      os.path.isdir(os.path.join(path, 'state')) and os.path.basename(os.path.normpath(path)).isdigit())


def _checkpoint_dir(path: str) -> str:
  """A workdir -> its newest checkpoints/<step>; a checkpoints/<step> directory stays."""
  ckpts = os.path.join(path, 'checkpoints')
  if not os.path.isdir(ckpts):
    return path
  steps = sorted((int(d) for d in os.listdir(ckpts) if d.isdigit()), reverse=True)
  if not steps:
    raise FileNotFoundError(f'init_from workdir {path!r} has no checkpoint in {ckpts}')
  return os.path.join(ckpts, str(steps[0]))


def _checkpoint_metadata(path: str):
  """(checkpointer, state item directory, metadata tree) of a workdir's newest checkpoint."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  item = os.path.join(os.path.abspath(_checkpoint_dir(path)), 'state')
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(item)
  tree = getattr(metadata, 'item_metadata', metadata)
  return checkpointer, item, getattr(tree, 'tree', tree)


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """params and batch_stats of a workdir's newest checkpoint (or of checkpoints/<step>), flat,
  as host numpy arrays: independent of the device layout that saved them."""
  checkpointer, item, tree = _checkpoint_metadata(path)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree,
                                  is_leaf=lambda m: hasattr(m, 'shape'))
  state = checkpointer.restore(item, target)
  keep = {k: state[k] for k in ('params', 'batch_stats') if k in state}
  return {k: np.asarray(v) for k, v in flatten(keep).items()}


def load_source(init_from: str, model_name: str, cache_dir: str | None = None) -> tuple[dict[str, np.ndarray], str]:
  """(flat variables, description) of an init_from value (see configs/default.py)."""
  if os.path.isdir(init_from):
    if not is_workdir(init_from):
      raise FileNotFoundError(f'init_from={init_from!r} is a directory without checkpoints/ '
                              '(an se_flax workdir or one of its checkpoints/<step> directories)')
    return read_checkpoint(init_from), f'se_flax checkpoint {_checkpoint_dir(init_from)}'
  source = pretrained.resolve(init_from, _name_for(init_from, model_name))
  _, variables = convert.from_timm(source.name, pretrained.load_state_dict(source, cache_dir))
  return {k: np.asarray(v) for k, v in flatten(variables).items()}, f'timm {source.name} weights {source.describe()}'


def source_shapes(init_from: str, model_name: str, cache_dir: str | None = None) -> dict[str, Any] | None:
  """Flat {key: ShapeDtypeStruct} of what `load_source` would give, reading no array (orbax
  metadata, safetensors header); None when the weights are not on this machine (a download)."""
  if os.path.isdir(init_from):
    _, _, tree = _checkpoint_metadata(init_from)
    keep = {k: tree[k] for k in ('params', 'batch_stats') if k in tree}
    return {k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for k, v in flatten(keep).items()}
  source = pretrained.resolve(init_from, _name_for(init_from, model_name))
  path = pretrained.local_path(source, cache_dir)
  if path is None:
    return None
  import safetensors  # pylint: disable=import-outside-toplevel
  with safetensors.safe_open(path, framework='numpy') as f:
    header = {k: jax.ShapeDtypeStruct(tuple(f.get_slice(k).get_shape()), np.float32) for k in f.keys()}
  return convert.timm_shapes(source.name, header)


def _is_file(init_from: str) -> bool:
  return init_from.endswith('.safetensors') or os.path.isfile(init_from)


def _name_for(init_from: str, model_name: str) -> str | None:
  """The model name `pretrained.resolve` is given: a file, or a hub id outside the tag table whose
  repo name is no timm model name, holds model.name's weights (an SE net without a converter of
  its own: its baseline's, `facts.baseline_of`); a tag names its own model."""
  weights_name = facts.baseline_of(model_name) or model_name
  if _is_file(init_from):
    return weights_name
  if init_from.startswith(pretrained.HUB_PREFIX):
    tag = init_from[len(pretrained.HUB_PREFIX):].split('/', 1)[-1]
    if tag not in pretrained.TAGS and tag.split('.', 1)[0] not in convert.TIMM_NAMES:
      return weights_name
  return None


TAG_DATA_FIELDS = ('image_size', 'eval_resize', 'eval_interpolation', 'eval_antialias', 'eval_backend', 'mean',
                   'std')


def tag_data_fields(config, dataset_defaults: Mapping[str, Any]) -> dict[str, Any]:
  """`config.data` fields to take from init_from's pretrained tag: {} unless init_from is a tag of
  the table (or hf-hub:timm/<tag>). The tag's preprocessing is timm's data config for fine-tuning
  (timm train.py: `resolve_data_config(vars(args), model=model)`, the train resolution
  `input_size` and `crop_pct`, also for its evaluation), as `pretrained.data_fields` gives it.
  Each of TAG_DATA_FIELDS that the config leaves at `dataset_defaults` (what
  `input_pipeline.default_data_config` gives the dataset) takes the tag's value; a field the
  config sets otherwise is kept (an image_size of its own also sets eval_resize = floor(size / crop_pct)).
  """
  init_from = config.init_from
  if not init_from or os.path.isdir(init_from) or _is_file(init_from):
    return {}
  try:
    source = pretrained.resolve(init_from, _name_for(init_from, config.model.name))
  except (ValueError, FileNotFoundError):
    return {}  # validate() reports it in one line
  if source.tag is None:
    return {}

  def unset(field: str) -> bool:
    value, default = config.data.get(field), dataset_defaults.get(field)
    return tuple(value) == tuple(default) if isinstance(default, (tuple, list)) else value == default

  prep = pretrained.train_preprocessing(source.tag)
  if not unset('image_size'):
    prep = prep._replace(image_size=config.data.image_size)
  fields = pretrained.data_fields(prep)
  return {k: fields[k] for k in TAG_DATA_FIELDS if unset(k) and fields[k] != config.data.get(k)}


def merge(target: Mapping[str, Any], source: Mapping[str, Any], skip=(), head=('fc/*',)) -> tuple[dict, dict]:
  """Overwrite `target` (flat fresh variables) with `source` where paths and shapes agree.

  Returns (merged, report) with report lists 'loaded', 'initialised', 'skipped', 'unused' and
  'head' (head keys replaced for a class-count change). Raises InitFromMismatchError for shape
  mismatches outside `skip` and the head, or when nothing at all would be loaded.
  """
  merged, report = dict(target), {k: [] for k in ('loaded', 'initialised', 'skipped', 'unused', 'head')}
  mismatched = []
  for key, fresh in target.items():
    if matches(key, skip):
      report['skipped'].append(key)
    elif key not in source:
      report['initialised'].append(key)
    elif tuple(np.shape(source[key])) == tuple(np.shape(fresh)):
      merged[key] = source[key]
      report['loaded'].append(key)
    elif matches(key, head):
      report['initialised'].append(key)
      report['head'].append(key)
    else:
      mismatched.append(f'{_path(key)} {tuple(np.shape(source[key]))} vs {tuple(np.shape(fresh))}')
  report['unused'] = [k for k in source if k not in target and not matches(k, skip)]
  if mismatched:
    listed = '; '.join(mismatched[:_LISTED]) + (f'; ... and {len(mismatched) - _LISTED} more'
                                                if len(mismatched) > _LISTED else '')
    raise InitFromMismatchError(f'{len(mismatched)} shape mismatches outside config.init_skip (checkpoint vs '
                                f'model): {listed}; add globs for them to config.init_skip to initialise them freshly')
  if not report['loaded']:
    raise InitFromMismatchError('the checkpoint shares no variable (path and shape) with the model: '
                                f'{len(source)} source variables, e.g. {", ".join(list(source)[:4])}; '
                                f'model variables, e.g. {", ".join(list(target)[:4])}')
  return merged, report


def _modules(keys: list[str]) -> str:
  """Top-level module names of `keys`, in order, abbreviated: 'stem_conv1, stem_bn1, layer1_0 .. layer4_2'."""
  names = list(dict.fromkeys(_path(k).split('/')[0] for k in keys))
  return ', '.join(names) if len(names) <= 6 else f'{", ".join(names[:3])} .. {", ".join(names[-2:])}'


def report_table(report: dict, target: Mapping[str, Any], source: Mapping[str, Any]) -> str:
  """The short table of what was loaded, freshly initialised, skipped and left unused."""
  rows = []
  for label, kind, pool in (('loaded', 'loaded', target), ('freshly initialised', 'initialised', target),
                            ('skipped (init_skip)', 'skipped', target), ('unused from source', 'unused', source)):
    keys = report[kind]
    size = sum(int(np.prod(np.shape(pool[k]))) for k in keys)
    rows.append(f'  {label:<20} {len(keys):>5} arrays {size:>12,} values   {_modules(keys) if keys else ""}')
  return '\n'.join(rows)


def head_line(report: dict, target: Mapping[str, Any], source: Mapping[str, Any]) -> str | None:
  """One line saying the head was replaced, with the class counts, or None."""
  kernels = [k for k in report['head'] if k.endswith('kernel')] or report['head']
  if not kernels:
    return None
  key = kernels[0]
  return (f'head replaced: {", ".join(sorted({_path(k).rsplit("/", 1)[0] for k in report["head"]}))} has '
          f'{np.shape(source[key])[-1]} outputs in the checkpoint and {np.shape(target[key])[-1]} in the model: '
          'freshly initialised')


def initialise(config, state, cache_dir: str | None = None):
  """(`state` with params and batch_stats loaded from config.init_from, the merge report).

  The loaded arrays take the dtype and sharding of the fresh ones they replace.
  """
  source, description = load_source(config.init_from, config.model.name, cache_dir)
  fresh = {'params': state.params, 'batch_stats': state.batch_stats}
  target = flatten(fresh)
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in target.items()}
  merged, report = merge(shapes, source, tuple(config.init_skip), tuple(config.finetune.head))
  logging.info('init_from %s -> %s:\n%s', description, config.model.name, report_table(report, shapes, source))
  line = head_line(report, shapes, source)
  if line:
    logging.info('%s', line)

  loaded = set(report['loaded'])
  new = {k: (jax.device_put(np.asarray(merged[k]).astype(v.dtype), v.sharding) if k in loaded else v)
         for k, v in target.items()}
  variables = flax.traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in new.items()})
  return state.replace(params=variables['params'], batch_stats=variables.get('batch_stats', {})), report


def variable_shapes(model, image_shape) -> dict[str, Any]:
  """Flat {'params/fc/kernel': ShapeDtypeStruct} of `model` on images of `image_shape` (no compute)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  init = lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return flatten(jax.eval_shape(init))


def validate(config, model=None, image_shape=None, *, resuming: bool = False) -> None:
  """One-line errors for init_from / init_skip / finetune fields, before the workdir is touched.

  init_from: a tag's syntax, a file's or workdir checkpoint's existence, a PyTorch-only tag's
  converted file. With `model` and `image_shape`, also that every init_skip and head glob names a
  variable and, where the source is on this machine (a workdir, a file, a cached or converted
  tag: shapes read from orbax metadata or the safetensors header, no arrays), that it loads into
  the model (`merge`'s shape check); a tag still to be downloaded is checked when it is loaded.
  A run `resuming` from its own checkpoint never reads init_from, so its source is not checked
  (it may be gone).
  """
  init_from, skip, ft = config.init_from, config.init_skip, config.finetune
  if not isinstance(init_from, str):
    raise ValueError(f'init_from={init_from!r} must be a string')
  for field, patterns in (('init_skip', skip), ('finetune.head', ft.head)):
    if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) and p for p in patterns):
      raise ValueError(f'{field}={patterns!r} must be a tuple of non-empty glob strings, e.g. ("fc/*",)')
  if not ft.head:
    raise ValueError('finetune.head=() must name the head, e.g. ("fc/*",)')
  if skip and not init_from:
    raise ValueError(f'init_skip={tuple(skip)} has no effect without init_from')
  if not ft.backbone_lr_multiplier >= 0:
    raise ValueError(f'finetune.backbone_lr_multiplier={ft.backbone_lr_multiplier} must be >= 0')
  if not (isinstance(ft.freeze_backbone_steps, int) and ft.freeze_backbone_steps >= 0):
    raise ValueError(f'finetune.freeze_backbone_steps={ft.freeze_backbone_steps!r} must be an integer >= 0')
  if init_from and not resuming:
    _validate_source(init_from, config.model.name)
  if model is not None and (init_from or ft.backbone_lr_multiplier != 1 or ft.freeze_backbone_steps):
    target = variable_shapes(model, image_shape)
    keys = list(target)
    for field, patterns in (('init_skip', skip), ('finetune.head', ft.head)):
      for p in patterns:
        if not any(matches(k, (p,)) for k in keys):
          raise ValueError(f'{field} glob {p!r} matches no variable of {config.model.name} (paths look like '
                           f'{_path(keys[0])}, {_path(keys[-1])})')
    if init_from and not resuming:  # the shape check of the load itself, on shapes only, before the workdir is touched
      try:
        shapes = source_shapes(init_from, config.model.name)
      except (ValueError, FileNotFoundError) as e:
        raise ValueError(f'init_from={init_from!r}: {" ".join(str(e).split())}') from None
      if shapes is not None:
        try:
          merge(target, shapes, tuple(skip), tuple(ft.head))
        except InitFromMismatchError as e:
          raise InitFromMismatchError(f'init_from={init_from!r}: {e}') from None


def _validate_source(init_from: str, model_name: str) -> None:
  if os.path.isdir(init_from):
    if not is_workdir(init_from):
      raise ValueError(f'init_from={init_from!r} is a directory without checkpoints/ (an se_flax workdir or '
                       'one of its checkpoints/<step> directories)')
    _checkpoint_dir(init_from)
    return
  if os.sep in init_from and not init_from.startswith(pretrained.HUB_PREFIX) and not os.path.exists(init_from):
    raise ValueError(f'init_from={init_from!r}: no such workdir or file')
  name = _name_for(init_from, model_name)
  if name is not None and name not in convert.TIMM_NAMES:
    raise ValueError(f'init_from={init_from!r} is read as timm weights of model.name={model_name!r}, which '
                     f'has no timm converter; timm names: {", ".join(convert.TIMM_NAMES)}')
  try:
    source = pretrained.resolve(init_from, name)
    if source.hub_id is None and source.path is None:  # a PyTorch-only tag must be converted by hand
      pretrained.fetch(source)
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f'init_from={init_from!r}: {e}') from None
