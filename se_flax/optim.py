"""Optimisers and learning-rate schedules from the config (optax).

Schedules are functions of the global step: the train step passes `step=state.step` to the
optimiser's `update` (optax extra args), so a step dropped for a non-finite loss (state.step moves
on, the optimiser state does not) leaves the applied learning rate equal to the logged
`lr_fn(state.step)`. Called without `step`, every transformation counts its own updates, as optax's.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from se_flax import trees

if TYPE_CHECKING:  # annotations only: the step builds on machines without ml_collections
  import ml_collections

OPTIMIZERS = ('sgd', 'nesterov', 'adamw', 'rmsprop')
SCHEDULES = ('cosine', 'step', 'constant')
WARMUPS = ('linear', 'constant')


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """optim.lr scaled linearly with the global batch (lr is given per `lr_batch_base` images)."""
  base = config.optim.lr_batch_base
  scale = config.train.global_batch_size / base if base else 1.0
  return config.optim.lr * scale


def warmup_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """schedule.warmup_steps when set, else round(warmup_epochs * steps_per_epoch)."""
  steps = config.schedule.warmup_steps
  if steps is None:
    return int(round(config.schedule.warmup_epochs * steps_per_epoch))
  if not (isinstance(steps, int) and steps >= 0):
    raise ValueError(f'schedule.warmup_steps={steps!r} must be an integer >= 0')
  return steps


def decay_boundaries(config: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, ...]:
  """The 'step' schedule's boundaries in steps: schedule.decay_steps when set, else
  round(e * steps_per_epoch) for e in decay_epochs."""
  steps = config.schedule.decay_steps
  if steps is None:
    return tuple(int(round(e * steps_per_epoch)) for e in config.schedule.decay_epochs)
  steps = tuple(steps)
  if not all(isinstance(s, int) and s > 0 for s in steps) or list(steps) != sorted(set(steps)):
    raise ValueError(f'schedule.decay_steps={steps!r} must be increasing positive integers, e.g. (32000, 48000)')
  return steps


def create_learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int,
                            total_steps: int) -> optax.Schedule:
  """Warm-up (linear ramp, or constant low lr as He et al.), then cosine to zero, step decay at
  `decay_boundaries`, or constant. The schedule's argument is the global step: the update of
  step s (0-based) uses lr(s)."""
  peak = peak_learning_rate(config)
  sched = config.schedule
  if sched.name not in SCHEDULES:
    raise ValueError(f'schedule.name={sched.name!r} is not one of {", ".join(SCHEDULES)}')
  warmup = warmup_steps(config, steps_per_epoch)
  if sched.name == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup))
  elif sched.name == 'step':
    boundaries = {b - warmup: sched.decay_factor for b in decay_boundaries(config, steps_per_epoch)}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:
    main = optax.constant_schedule(peak)
  if warmup <= 0:
    return main
  start = peak * sched.warmup_lr_factor
  if sched.warmup_mode not in WARMUPS:
    raise ValueError(f'schedule.warmup_mode={sched.warmup_mode!r} is not one of {", ".join(WARMUPS)}')
  ramp = (optax.linear_schedule(start, peak, warmup) if sched.warmup_mode == 'linear'
          else optax.constant_schedule(start))
  return optax.join_schedules([ramp, main], [warmup])


def decay_mask(params, exclude: Sequence[str] = (), kernels_only: bool = True) -> dict:
  """True for parameters that get weight decay: kernels (every parameter with kernels_only=False,
  i.e. optim.decay_bn_and_bias), less those whose path matches a glob of `exclude`
  (optim.decay_exclude, e.g. '*/conv_dw/kernel': MobileNet's depthwise filters)."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: (k[-1] == 'kernel' or not kernels_only) and not trees.matches('/'.join(('params', *k)), exclude)
       for k in flat})


def check_decay_exclude(patterns, variable_paths) -> None:
  """optim.decay_exclude must be a tuple of globs, each matching some parameter ('params/...' paths)."""
  if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) and p for p in patterns):
    raise ValueError(f'optim.decay_exclude={patterns!r} must be a tuple of non-empty glob strings, '
                     "e.g. ('*/conv_dw/kernel',)")
  params = [k for k in variable_paths if k.startswith('params/')]
  for p in patterns:
    if not any(trees.matches(k, (p,)) for k in params):
      raise ValueError(f'optim.decay_exclude glob {p!r} matches no parameter (paths look like '
                       f'{params[0].split("/", 1)[1]}, {params[-1].split("/", 1)[1]})')


def param_labels(params, head: tuple[str, ...] = ('fc/*',)) -> dict:
  """'head' for parameters whose path ('fc/kernel', 'layer1_0/se/fc1/bias') matches a glob of
  `head` (`trees.matches`: a glob may also carry the collection, 'params/fc/*'), 'backbone' for
  the rest."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: 'head' if trees.matches('/'.join(('params', *k)), head) else 'backbone' for k in flat})


class _AfterState(NamedTuple):
  count: jax.Array
  inner: optax.OptState


def scale_by_step_schedule(schedule: optax.Schedule, count_offset: int = 0) -> optax.GradientTransformationExtraArgs:
  """Updates times -schedule(step), `step` being the global step passed to `update`; without it, the
  own update count + `count_offset` (then exactly optax.scale_by_learning_rate). Its state is
  optax's ScaleByScheduleState, so checkpoints keep their layout."""

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, step=None, **extra_args):
    del params, extra_args
    step_size = -schedule(state.count + count_offset if step is None else step)
    updates = jax.tree_util.tree_map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init, update)


def after_steps(steps: int, inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Zero updates for the first `steps` steps (global steps when `update` gets `step`, else its own
  count), then `inner`, whose state (momentum, schedule count, weight decay) only starts moving
  then: frozen parameters stay exactly as they are."""
  inner = optax.with_extra_args_support(inner)

  def init(params):
    return _AfterState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None, **extra_args):
    def frozen():
      return jax.tree_util.tree_map(jnp.zeros_like, updates), state.inner

    def active():
      return inner.update(updates, state.inner, params, **extra_args)

    step = extra_args.get('step')
    new_updates, new_inner = jax.lax.cond((state.count if step is None else step) < steps, frozen, active)
    return new_updates, _AfterState(state.count + 1, new_inner)

  return optax.GradientTransformationExtraArgs(init, update)


def create_optimizer(config: ml_collections.ConfigDict, lr_fn: optax.Schedule) -> optax.GradientTransformation:
  """The configured optimiser; with config.finetune's backbone_lr_multiplier != 1 or
  freeze_backbone_steps > 0, the head (finetune.head globs) and the backbone get separate
  optimisers (optax.multi_transform): the backbone's learning rate is lr * multiplier, and it is
  not updated at all during the first freeze_backbone_steps steps."""
  ft = config.finetune
  multiplier = float(ft.backbone_lr_multiplier)
  frozen = int(ft.freeze_backbone_steps)
  if multiplier == 1.0 and frozen == 0:
    return _single_optimizer(config, lr_fn)
  if multiplier == 0.0:
    backbone = optax.set_to_zero()
  else:
    # Without the global step, the backbone's own count starts after the freeze: offset it by that.
    backbone = _single_optimizer(config, lambda step: multiplier * lr_fn(step), count_offset=frozen)
    if frozen:
      backbone = after_steps(frozen, backbone)
  labels = functools.partial(param_labels, head=tuple(ft.head))
  return optax.multi_transform({'head': _single_optimizer(config, lr_fn), 'backbone': backbone}, labels)


def _single_optimizer(config: ml_collections.ConfigDict, lr_fn: optax.Schedule,
                      count_offset: int = 0) -> optax.GradientTransformation:
  """optax.adamw, or coupled-decay SGD or RMSProp, built as optax builds them (same state layout)
  but with the learning rate of `scale_by_step_schedule`."""
  opt = config.optim
  if opt.name not in OPTIMIZERS:
    raise ValueError(f'optim.name={opt.name!r} is not one of {", ".join(OPTIMIZERS)}')
  exclude = tuple(opt.get('decay_exclude') or ())
  mask = (None if opt.decay_bn_and_bias and not exclude else
          functools.partial(decay_mask, exclude=exclude, kernels_only=not opt.decay_bn_and_bias))
  scale = scale_by_step_schedule(lr_fn, count_offset)
  if opt.name == 'adamw':  # optax.adamw's chain
    return optax.chain(optax.scale_by_adam(b1=opt.b1, b2=opt.b2),
                       optax.add_decayed_weights(opt.weight_decay, mask), scale)
  if opt.name == 'rmsprop':
    # optax.rmsprop's chain, TensorFlow's RMSProp as the Inception papers trained with: ms = decay * ms
    # + (1 - decay) g^2; mom = momentum * mom + lr g / sqrt(ms + eps); w -= mom. Coupled L2 decay first.
    momentum = optax.trace(decay=opt.momentum) if opt.momentum else optax.identity()
    rms = optax.scale_by_rms(decay=opt.rmsprop_decay, eps=opt.rmsprop_eps, eps_in_sqrt=True)
    return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=mask), optax.chain(rms, scale, momentum))
  # Coupled L2 decay for SGD (the paper's and the reference recipes' convention); optax.sgd's chain.
  momentum = (optax.trace(decay=opt.momentum, nesterov=opt.name == 'nesterov') if opt.momentum
              else optax.identity())
  return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=mask), optax.chain(momentum, scale))


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy with optional label smoothing, in float32."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
