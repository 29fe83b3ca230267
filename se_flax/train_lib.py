"""Data-parallel training and evaluation: `train_and_evaluate(config, workdir)`.

The step is per-device code in `jax.shard_map` under `jax.jit` over a 1-D `data` mesh axis
(pmap semantics): gradients are `pmean`-ed, BatchNorm statistics are synchronised through the
model's `axis_name`, and the state buffers are donated. Batches are a deterministic function of
(seed, step), and the step's dropout key is `fold_in(rng, step)`, so a resumed run reproduces
an uninterrupted one bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from se_flax import checkpointing
from se_flax import errors
from se_flax.weights import init_from
from se_flax import launch
from se_flax import models
from se_flax import optim
from se_flax import paths
from se_flax import resilience
from se_flax import timing
from se_flax import trees
from se_flax.data import input_pipeline
from se_flax.steps import AXIS, TrainState, create_mesh, create_train_state
from se_flax.steps import make_eval_step, make_train_step, num_mesh_devices, to_global

# ---------------------------------------------------------------------------------------------
# Config -> objects


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.train.num_steps is not None:
    return int(config.train.num_steps)
  return int(math.ceil(config.train.num_epochs * steps_per_epoch))


def validate_config(config: ml_collections.ConfigDict, *, resuming: bool = False) -> nn.Module:
  """Fail fast, with one line naming the bad value, before anything touches the workdir; returns
  the run's model (`models.from_config`), built here once."""
  if config.num_devices is not None and not (
      0 < config.num_devices <= jax.device_count() and jax.process_count() == 1):
    raise ValueError(f'num_devices={config.num_devices} must be between 1 and the {jax.device_count()} '
                     'devices of a single-process run (leave it unset to use all)')
  num_devices = num_mesh_devices(config)
  input_pipeline.get_spec(config.data.name)
  for split in (config.data.train_split, config.data.eval_split):
    input_pipeline.num_examples(config.data, split)  # raises DataNotFoundError if not prepared
  models.spec(config.model.name)
  optim.warmup_steps(config, 1)  # schedule.warmup_steps / decay_steps, when set
  optim.decay_boundaries(config, 1)
  model = models.from_config(config.model, input_pipeline.num_classes(config.data), axis_name=AXIS)
  models.check_gate_init(model)
  channels = input_pipeline.get_spec(config.data.name).image_shape[-1]
  init_from.validate(config, model, (config.data.image_size, config.data.image_size, channels),
                    resuming=resuming)  # init_from (unless resuming), finetune
  if config.optim.get('decay_exclude'):
    optim.check_decay_exclude(config.optim.decay_exclude, init_from.variable_shapes(
        model, (config.data.image_size, config.data.image_size, channels)))
  if config.optim.name not in optim.OPTIMIZERS:
    raise ValueError(f'optim.name={config.optim.name!r} is not one of {", ".join(optim.OPTIMIZERS)}')
  if config.schedule.name not in optim.SCHEDULES:
    raise ValueError(f'schedule.name={config.schedule.name!r} is not one of {", ".join(optim.SCHEDULES)}')
  if config.train.on_nonfinite not in resilience.NONFINITE_MODES:
    raise ValueError(f'train.on_nonfinite={config.train.on_nonfinite!r} is not one of '
                     f'{", ".join(resilience.NONFINITE_MODES)}')
  if not config.optim.lr > 0:
    raise ValueError(f'optim.lr={config.optim.lr} must be positive')
  if config.train.num_steps is not None and config.train.num_steps <= 0:
    raise ValueError(f'train.num_steps={config.train.num_steps} must be positive')
  if config.train.num_steps is None and not config.train.num_epochs > 0:
    raise ValueError(f'train.num_epochs={config.train.num_epochs} must be positive')
  for field in ('train', 'eval'):
    batch = config[field].global_batch_size
    if batch <= 0 or batch % num_devices:
      raise ValueError(f'{field}.global_batch_size={batch} must be a positive multiple of the '
                       f'device count {num_devices}')
    if batch % jax.process_count():
      raise ValueError(f'{field}.global_batch_size={batch} must be divisible by the process count '
                       f'{jax.process_count()}')
  return model


def apply_tag_preprocessing(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A run from a pretrained tag trains and evaluates with the tag's preprocessing where the config
  leaves the data fields at the dataset's defaults (`init_from.tag_data_fields`); returns the changes."""
  fields = init_from.tag_data_fields(config, input_pipeline.default_data_config(config.data.name))
  if fields:
    with config.unlocked():
      config.data.update(fields)
    logging.info('init_from %s: data fields from the tag\'s preprocessing: %s', config.init_from,
                 ', '.join(f'{k}={v!r}' for k, v in fields.items()))
  return fields


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """Point JAX's persistent compilation cache at config.compilation_cache_dir (unless empty).

  JAX's own JAX_COMPILATION_CACHE_DIR environment variable, when set, wins.
  """
  if config.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    path = os.path.expanduser(config.compilation_cache_dir)
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def prefetch(iterator: Iterator[dict], sharding: NamedSharding, size: int = 2) -> Iterator[dict]:
  """Keep `size` batches in flight on the devices while the current step runs."""
  queue = collections.deque()

  def enqueue(n):
    for batch in itertools.islice(iterator, n):
      queue.append(to_global(batch, sharding))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def evaluate(eval_step: Callable, variables: dict, *, data_config, split: str | None, global_batch_size: int,
             mesh) -> dict[str, float]:
  """Top-1, top-5 and mean loss over every example of `split` exactly once."""
  sharding = NamedSharding(mesh, P(AXIS))
  it = input_pipeline.eval_iterator(data_config, split=split, global_batch_size=global_batch_size,
                                    process_index=jax.process_index(), process_count=jax.process_count())
  totals = collections.defaultdict(float)
  for batch in prefetch(it, sharding):
    for k, v in jax.device_get(eval_step(variables, batch)).items():
      totals[k] += float(v)
  n = totals['count']
  if n == 0:
    raise ValueError(f'evaluation split {split!r} of {data_config.name!r} has no examples')
  return {'top1': totals['top1'] / n, 'top5': totals['top5'] / n, 'loss': totals['loss'] / n,
          'num_examples': int(n)}


# ---------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class Experiment:
  """What both training and evaluation build from a config."""

  spec: input_pipeline.DatasetSpec
  model: Any
  mesh: jax.sharding.Mesh
  lr_fn: optax.Schedule
  steps_per_epoch: int
  total_steps: int
  state: TrainState


def start(config: ml_collections.ConfigDict, workdir: str | None = None, *, training: bool = False) -> nn.Module:
  """What every process does first: jax.distributed where the launcher implies several processes,
  the compilation cache, then one validation of the config that every process agrees on (a refusal
  is the same errors.UserError everywhere, before anything is created). A checkpoint in `workdir`
  means the run resumes, so init_from is not checked; `training` also wants the workdir writable.
  Returns the model the validation built.
  """
  launch.initialize(config)
  enable_compilation_cache(config)
  resuming = workdir is not None and checkpointing.has_checkpoint(workdir)
  apply_tag_preprocessing(config)  # before validation, so the fields it sets are checked too

  built = []

  def validate(c: ml_collections.ConfigDict) -> None:
    if training:
      paths.check_workdir_writable(workdir)
    built.append(validate_config(c, resuming=resuming))

  launch.check_agreement(config, validate, context=f'resuming={resuming}, training={training}')
  if not built:  # this config was validated before in this process
    built.append(models.from_config(config.model, input_pipeline.num_classes(config.data), axis_name=AXIS))
  return built[0]


def build_experiment(config: ml_collections.ConfigDict, workdir: str | None = None, *,
                     training: bool = False) -> Experiment:
  """`start` (validation), then build mesh, model, schedule and a freshly initialised state."""
  model = start(config, workdir, training=training)
  spec = dataclasses.replace(input_pipeline.get_spec(config.data.name),
                             num_classes=input_pipeline.num_classes(config.data))  # data.keep_labels
  image_shape = (config.data.image_size, config.data.image_size, spec.image_shape[-1])
  batch = config.train.global_batch_size
  steps_per_epoch = input_pipeline.steps_per_epoch(config.data, batch)
  if steps_per_epoch <= 0:
    raise errors.ConfigError(f'train.global_batch_size={batch} exceeds the {config.data.name!r} train split '
                             f'({input_pipeline.num_examples(config.data, config.data.train_split)} examples)')
  total_steps = num_train_steps(config, steps_per_epoch)
  mesh = create_mesh(config)
  launch.log_startup(config, mesh)
  lr_fn = optim.create_learning_rate_fn(config, steps_per_epoch, total_steps)
  state = create_train_state(config, model, image_shape, optim.create_optimizer(config, lr_fn), mesh)
  return Experiment(spec, model, mesh, lr_fn, steps_per_epoch, total_steps, state)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Train `config` in `workdir`, resuming from its newest good checkpoint; returns the final eval.

  On SIGTERM it saves the current step and returns {'preempted': True, 'step': ...}.
  """
  exp = build_experiment(config, workdir, training=True)
  workdir = str(checkpointing.workdir_path(workdir))  # absolute, or a URL such as gs://...
  checkpointing.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  with resilience.WorkdirLock(workdir), resilience.PreemptionWatcher() as preemption:
    manager = checkpointing.create_manager(workdir, config)
    try:
      return _train(config, workdir, exp, manager, preemption)
    finally:
      manager.wait_until_finished()  # an async save in flight completes even when a step failed
      manager.close()


def _train(config, workdir: str, exp: Experiment, manager, preemption) -> dict[str, Any]:
  spec, model, mesh, lr_fn = exp.spec, exp.model, exp.mesh, exp.lr_fn
  steps_per_epoch, total_steps = exp.steps_per_epoch, exp.total_steps
  batch = config.train.global_batch_size
  state, restored = checkpointing.restore_newest_good(manager, exp.state)
  if restored is not None:
    logging.info('Resumed from %s at step %d.', manager.directory, int(state.step))
  elif config.init_from:  # a fresh run only: a resumed run keeps its own weights
    state, _ = init_from.initialise(config, state)
  start_step = int(state.step)

  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams({k: str(v) if v is None else v for k, v in trees.flat_config(config).items()})
  n_params = models.count_params(state.params)
  logging.info('%s: %s parameters, %d devices (%d per process), global batch %d, %d steps/epoch, '
               '%d steps.', config.model.name, f'{n_params:,}', jax.device_count(),
               jax.local_device_count(), batch, steps_per_epoch, total_steps)

  train_step = make_train_step(model, config, spec.num_classes, mesh, lr_fn)
  eval_step = make_eval_step(model, spec.num_classes, mesh)
  run_eval = functools.partial(evaluate, eval_step, data_config=config.data, split=config.data.eval_split,
                               global_batch_size=config.eval.global_batch_size, mesh=mesh)
  eval_every = int(round(config.train.eval_every_epochs * steps_per_epoch)) or total_steps
  train_iter = prefetch(input_pipeline.train_iterator(
      config.data, global_batch_size=batch, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count()), NamedSharding(mesh, P(AXIS)))

  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)] if is_chief else []
  pending, eval_metrics, unchecked = [], {}, None
  skipped = int(state.skipped)
  check = functools.partial(resilience.check_nonfinite, mode=config.train.on_nonfinite)
  started = time.time()
  since_log = timing.Stopwatch(start_step)  # the img/s of a log line (the first one's includes compiling)
  training = timing.Stopwatch(start_step)  # of the run: the steps after the first, evaluation excluded
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, metrics = train_step(state, next(train_iter))
    if unchecked is not None:  # the previous step, read one step late so dispatch stays ahead
      skipped = check(unchecked[1], unchecked[0], skipped_total=skipped)
    unchecked = (step, metrics)
    if step == start_step + 1:
      jax.block_until_ready(metrics)
      logging.info('first step (compilation included) took %.1f s', time.time() - started)
      writer.write_scalars(step, {'compile/first_step_seconds': time.time() - started})
      training.restart(step)
    pending.append(metrics)
    for hook in hooks:
      hook(step)

    preempted = preemption.reached(step)
    due_log = step % config.train.log_every_steps == 0 or step == total_steps
    due_eval = step % eval_every == 0 or step == total_steps
    due_save = step % config.train.checkpoint_every_steps == 0 or step == total_steps or preempted
    if due_log or due_eval or due_save:  # never log, evaluate or save past an unchecked step
      skipped, unchecked = check(metrics, step, skipped_total=skipped), None
      training.lap(step)

    if due_log:
      _log_train(writer, pending, step, total_steps, steps_per_epoch, batch, *since_log.lap(step), skipped)
      pending = []
    if due_eval:
      eval_metrics = run_eval({'params': state.params, 'batch_stats': state.batch_stats})
      _log_eval(writer, step, eval_metrics)
      since_log.restart(step)  # keep evaluation out of the img/s figures
      training.restart(step)
    if due_save:
      checkpointing.save(manager, step, state, config, force=step == total_steps or preempted)
    if preempted:
      manager.wait_until_finished()
      logging.warning('preempted: checkpoint for step %d written to %s; rerun to continue', step,
                      manager.directory)
      writer.flush()
      return {'preempted': True, 'step': step}

  manager.wait_until_finished()  # final_eval.json says the run is done: the last checkpoint first
  writer.flush()
  if not eval_metrics:  # resumed at the end: evaluate the restored state
    eval_metrics = run_eval({'params': state.params, 'batch_stats': state.batch_stats})
  # What an ablation report puts beside the accuracy: size, cost, and training speed (img/s of
  # this process's steps after the first, evaluation excluded; None when it timed none of them,
  # e.g. a run resumed after its last step: reports then leave it out of the means).
  image_size = (config.data.image_size, config.data.image_size)
  result = {**eval_metrics, 'step': int(state.step), 'skipped_steps': skipped,
            'params': n_params, 'macs': models.count_macs(model, image_size, spec.image_shape[-1]),
            'train_img_per_sec': training.steps * batch / training.seconds if training.seconds > 0 else None}
  if is_chief:  # written whole or not at all, whenever the process dies
    checkpointing.write_json(os.path.join(workdir, 'final_eval.json'), result)
  return result


def _log_train(writer, pending: list[dict], step: int, total_steps: int, steps_per_epoch: int,
               batch: int, elapsed: float, steps_done: int, skipped: int) -> None:
  """Mean train metrics since the last log, throughput, and a progress line with the ETA."""
  summary = {k: float(np.mean([m[k] for m in jax.device_get(pending)])) for k in pending[0]}
  summary['img_per_sec'] = steps_done * batch / max(elapsed, 1e-9)
  summary['img_per_sec_per_device'] = summary['img_per_sec'] / jax.device_count()
  summary['epoch'] = step / steps_per_epoch
  summary['skipped_steps'] = skipped
  writer.write_scalars(step, {f'train/{k}': v for k, v in summary.items()})
  eta = (total_steps - step) * elapsed / max(steps_done, 1)
  logging.info('step %d/%d  epoch %.2f  loss %.4f  acc %.4f  lr %.4g  %.1f img/s  ETA %s', step,
               total_steps, summary['epoch'], summary['loss'], summary['accuracy'],
               summary['learning_rate'], summary['img_per_sec'], timing.hms(eta))


def _log_eval(writer, step: int, metrics: dict) -> None:
  writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
  logging.info('eval at step %d: top1 %.4f  top5 %.4f  loss %.4f  (%d examples)', step, metrics['top1'],
               metrics['top5'], metrics['loss'], metrics['num_examples'])

