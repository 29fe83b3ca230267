"""The per-device train and eval steps, the train state and the mesh: pure JAX, no TensorFlow.

The step is per-device code in `jax.shard_map` under `jax.jit` over a 1-D `data` mesh axis (pmap
semantics): gradients are `pmean`-ed, BatchNorm statistics are synchronised through the model's
`axis_name`, and the state buffers are donated. Kept free of TensorFlow so that benchmarks and
notebooks can build the exact training step on a machine that has only JAX.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from flax.training import train_state
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:  # annotations only: the step builds on machines without ml_collections
  import ml_collections

from se_flax import fast_paths
from se_flax import optim

AXIS = 'data'


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # raw uint32[2] key; the step key is fold_in(rng, step)
  skipped: jax.Array  # int32: steps whose update was dropped for a non-finite loss or gradient


def num_mesh_devices(config: ml_collections.ConfigDict) -> int:
  return config.num_devices or jax.device_count()


def create_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over all devices, or the first `config.num_devices` (single process only)."""
  n = num_mesh_devices(config)
  return jax.sharding.Mesh(np.asarray(jax.devices()[:n]), (AXIS,))


def create_train_state(config, model, image_shape, tx, mesh) -> TrainState:
  """Initialise replicated parameters from config.seed on every device (same on every host)."""
  rng = jax.random.PRNGKey(config.seed)

  def init():
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init({'params': init_rng}, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats', {}), rng=state_rng,
                             skipped=jnp.zeros((), jnp.int32))

  replicated = NamedSharding(mesh, P())
  # Non-partitionable threefry (still a stable, backend-independent stream) compiles the replicated
  # init much faster on CPU: docs/speed_notes.md s.6.
  with jax.threefry_partitionable(False):
    abstract = jax.eval_shape(init)
    shardings = jax.tree_util.tree_map(lambda _: replicated, abstract)
    return jax.jit(init, out_shardings=shardings)()


def _train_step(state: TrainState, batch: dict, *, model, num_classes: int, label_smoothing: float,
                sync_bn: bool, lr_fn: optax.Schedule) -> tuple[TrainState, dict]:
  """One SGD step on this device's shard of the global batch."""
  step_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))

  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, batch['image'],
                                  train=True, mutable=['batch_stats'], rngs={'dropout': step_rng})
    loss = optim.cross_entropy(logits, batch['label'], num_classes, label_smoothing).mean()
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS)
  loss = jax.lax.pmean(loss, AXIS)
  if not sync_bn:  # keep the replicated statistics identical across devices
    batch_stats = jax.lax.pmean(batch_stats, AXIS)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # The optimiser's schedules read the global step, so the applied learning rate is the logged
  # lr_fn(state.step) also after skipped steps (whose optimiser state is left as it was).
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, step=state.step)
  updated = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, batch_stats=batch_stats)
  # A non-finite step changes nothing but the step (the next batch follows) and the skip count;
  # the loop then stops or goes on, as train.on_nonfinite says.
  dropped = state.replace(step=state.step + 1, skipped=state.skipped + 1)
  new_state = jax.tree_util.tree_map(lambda u, d: jnp.where(finite, u, d), updated, dropped)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  metrics = {'loss': loss, 'accuracy': jax.lax.pmean(accuracy, AXIS), 'learning_rate': lr_fn(state.step),
             'grad_norm': grad_norm, 'nonfinite': 1.0 - finite.astype(jnp.float32)}
  return new_state, metrics


def make_train_step(model, config, num_classes: int, mesh, lr_fn) -> Callable:
  step = functools.partial(_train_step, model=model, num_classes=num_classes,
                           label_smoothing=config.optim.label_smoothing,
                           sync_bn=config.model.sync_batch_norm, lr_fn=lr_fn)
  sharded = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=0, compiler_options=fast_paths.compiler_options())


def _eval_step(variables: dict, batch: dict, *, model, num_classes: int) -> dict:
  """Masked sums over this device's shard, psum-ed: exact for any batch size and device count."""
  logits = model.apply(variables, batch['image'], train=False)
  mask = batch['mask'].astype(jnp.float32)
  loss = optim.cross_entropy(logits, batch['label'], num_classes)
  top1 = (jnp.argmax(logits, -1) == batch['label'])
  k = min(5, num_classes)
  top5 = jnp.any(jax.lax.top_k(logits, k)[1] == batch['label'][:, None], axis=-1)
  sums = {'loss': jnp.sum(loss * mask), 'top1': jnp.sum(top1 * mask), 'top5': jnp.sum(top5 * mask),
          'count': jnp.sum(mask)}
  return jax.lax.psum(sums, AXIS)


def make_eval_step(model, num_classes: int, mesh) -> Callable:
  step = functools.partial(_eval_step, model=model, num_classes=num_classes)
  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(), check_vma=False),
                 compiler_options=fast_paths.compiler_options())


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """This process's numpy batch -> one global jax.Array per field, sharded over the mesh."""
  return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
