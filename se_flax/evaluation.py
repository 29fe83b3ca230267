"""Evaluation entry points behind eval.py: a training checkpoint, or pretrained timm weights."""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from se_flax import checkpointing
from se_flax import launch
from se_flax import models
from se_flax import steps
from se_flax import train_lib
from se_flax.data import input_pipeline


def trained_experiment(config: ml_collections.ConfigDict, workdir: str) -> train_lib.Experiment:
  """The experiment of a trained `workdir` (validated; nothing restored yet)."""
  if not (checkpointing.workdir_path(workdir) / 'checkpoints').is_dir():  # a path or a gs:// URL
    raise FileNotFoundError(f'no checkpoints in workdir {workdir!r}')
  return train_lib.build_experiment(config, workdir)  # its checkpoint, not init_from, is read


def restore_checkpoint(config: ml_collections.ConfigDict, workdir: str, exp: train_lib.Experiment, *,
                       step: int | None = None) -> steps.TrainState:
  """Checkpoint `step` (default: latest) of `workdir`, read-only, into `exp`'s state."""
  manager = checkpointing.create_manager(workdir, config, read_only=True)
  state, _ = checkpointing.restore(manager, exp.state, step=step)
  return state


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None,
                        split: str | None = None) -> dict[str, Any]:
  """Restore `step` (default: latest) of `workdir` and evaluate it on every example of `split`."""
  exp = trained_experiment(config, workdir)
  state = restore_checkpoint(config, workdir, exp, step=step)
  split = split or config.data.eval_split
  metrics = train_lib.evaluate(
      steps.make_eval_step(exp.model, exp.spec.num_classes, exp.mesh),
      {'params': state.params, 'batch_stats': state.batch_stats}, data_config=config.data, split=split,
      global_batch_size=config.eval.global_batch_size, mesh=exp.mesh)
  return {**metrics, 'step': int(state.step), 'split': split,
          'source': str(checkpointing.workdir_path(workdir) / 'checkpoints' / str(int(state.step)))}


def evaluate_timm(config: ml_collections.ConfigDict, timm_model: str, weights: str, *,
                  split: str | None = None) -> dict[str, Any]:
  """Evaluate a timm state dict (.safetensors) converted by `se_flax.weights.convert`."""
  if not os.path.isfile(weights):
    raise FileNotFoundError(f'--timm_weights file {weights!r} does not exist')
  return evaluate_pretrained(config, weights, name=timm_model, split=split, tag_preprocessing=False)


def evaluate_pretrained(config: ml_collections.ConfigDict, pretrained: Any, *, name: str | None = None,
                        split: str | None = None, tag_preprocessing: bool = True) -> dict[str, Any]:
  """Evaluate pretrained timm weights (a tag, 'hf-hub:...' id or .safetensors file with `name`).

  For a tag of the table (and tag_preprocessing), config.data takes the tag's evaluation
  preprocessing (resolution, crop_pct, interpolation, mean/std) and the result carries the
  reference top-1 ('reference_top1', %) beside the measured one.
  """
  from se_flax.weights import convert
  from se_flax.weights import pretrained as pretrained_lib
  launch.initialize(config)
  source = pretrained_lib.resolve(pretrained, name)
  extra = {}
  if source.tag and tag_preprocessing:
    fields = pretrained_lib.data_fields(pretrained_lib.eval_preprocessing(source.tag))
    with config.unlocked():
      config.data.update(fields)
    extra = {'tag': source.tag, 'reference_top1': pretrained_lib.get(source.tag).top1,
             'reference': pretrained_lib.reference_line(source.tag), 'preprocessing': fields}
  if config.model.dtype not in models.DTYPES:
    raise ValueError(f'model.dtype={config.model.dtype!r} is not one of {", ".join(models.DTYPES)}')
  module, variables = convert.load_pretrained(pretrained, name, dtype=models.DTYPES[config.model.dtype])
  classes = input_pipeline.num_classes(config.data)
  if module.num_classes != classes:
    raise ValueError(f'weights {source.describe()!r} predict {module.num_classes} classes but dataset '
                     f'{config.data.name!r} has {classes}: evaluate them on a dataset with their classes '
                     '(e.g. --config=configs/imagenet.py for ImageNet-1k weights)')
  mesh = steps.create_mesh(config)
  variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  split = split or config.data.eval_split
  metrics = train_lib.evaluate(steps.make_eval_step(module, module.num_classes, mesh), variables,
                               data_config=config.data, split=split, global_batch_size=config.eval.global_batch_size,
                               mesh=mesh)
  return {**metrics, 'step': 0, 'split': split, 'source': source.describe(), **extra}
