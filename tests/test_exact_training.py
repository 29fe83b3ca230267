"""Exact checks of training semantics: the data-parallel step, BatchNorm, optimisers, schedules.

Every check compares with a formula or an independent computation (no accuracy thresholds):
  * on the 4 simulated devices (conftest), every replica holds bit-identical parameters, BatchNorm
    statistics and optimiser state after each step, and (synchronised BatchNorm, no dropout) they
    equal a 1-device run on the same global batches;
  * `model.sync_batch_norm=False`: each device normalises with its own shard's statistics, and the
    running statistics are the mean over devices of the per-device updates (steps.py pmean-s them
    so that the replicas stay identical);
  * dropout masks differ between devices;
  * BatchNorm's running statistics follow `m * old + (1 - m) * batch` with m = 0.9 (PyTorch's and
    timm's momentum 0.1) and the biased batch variance (see test_batch_norm_running_statistics);
  * each optimiser name takes the update of its textbook formula, weight-decay mask included;
  * each schedule kind gives the expected learning rate at the steps around every boundary, with
    both warm-up modes.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from configs import digits as digits_config
from se_flax import models
from se_flax import optim
from se_flax import steps

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
GLOBAL_BATCH = 16  # 4 examples a device
LR = 0.05


# ---------------------------------------------------------------------------------------------
# The data-parallel step


def tiny_config(**model):
  """The digits config with the tiny CIFAR net (8x8 inputs): a fast but complete train step."""
  config = digits_config.get_config('seresnet_tiny_cifar')
  config.train.global_batch_size = GLOBAL_BATCH
  config.model.update(model)
  return config


def random_batches(count: int, batch: int = GLOBAL_BATCH, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{'image': rng.normal(size=(batch, *IMAGE_SHAPE)).astype(np.float32),
           'label': rng.integers(0, NUM_CLASSES, batch).astype(np.int32)} for _ in range(count)]


def train(config, num_devices: int, batches: list[dict]):
  """The production step (steps.make_train_step) on the first `num_devices` devices; the final state."""
  config.num_devices = num_devices
  mesh = steps.create_mesh(config)
  model = models.from_config(config.model, NUM_CLASSES, axis_name=steps.AXIS)
  lr_fn = optax.constant_schedule(LR)
  state = steps.create_train_state(config, model, IMAGE_SHAPE, optim.create_optimizer(config, lr_fn), mesh)
  step = steps.make_train_step(model, config, NUM_CLASSES, mesh, lr_fn)
  sharding = NamedSharding(mesh, P(steps.AXIS))
  for batch in batches:
    state, _ = step(state, steps.to_global(batch, sharding))
  return state


def per_device(state) -> list[dict]:
  """Each device's own copy of the (replicated) state, read from its buffer: {path: array}."""
  leaves = jax.tree_util.tree_leaves_with_path({'params': state.params, 'batch_stats': state.batch_stats,
                                                'opt_state': state.opt_state, 'step': state.step})
  copies = []
  for path, leaf in leaves:
    shards = sorted(leaf.addressable_shards, key=lambda s: s.device.id)
    for i, shard in enumerate(shards):
      if i == len(copies):
        copies.append({})
      copies[i][jax.tree_util.keystr(path)] = np.asarray(shard.data)
  return copies


def assert_replicas_identical(state, num_devices: int) -> dict:
  """Every device holds bit-identical values; returns device 0's copy."""
  copies = per_device(state)
  assert len(copies) == num_devices
  for d, copy in enumerate(copies[1:], start=1):
    for key, value in copy.items():
      np.testing.assert_array_equal(value, copies[0][key], err_msg=f'device {d} differs from device 0 in {key}')
  return copies[0]


def max_diff(a: dict, b: dict, prefix: str = '') -> tuple[float, str]:
  worst, where = 0.0, ''
  for key in a:
    if key.startswith(prefix) and np.issubdtype(a[key].dtype, np.floating):
      d = float(np.max(np.abs(a[key].astype(np.float64) - b[key]), initial=0.0))
      if d >= worst:
        worst, where = d, key
  return worst, where


def test_replicas_agree_and_equal_one_device_on_the_global_batch():
  """Synchronised BatchNorm, no dropout: 4 devices x 4 examples == 1 device x 16 examples."""
  batches = random_batches(3)
  four = assert_replicas_identical(train(tiny_config(), 4, batches), 4)
  one = assert_replicas_identical(train(tiny_config(), 1, batches), 1)
  assert int(four["['step']"]) == 3
  assert four.keys() == one.keys()
  for key in four:
    np.testing.assert_allclose(four[key], one[key], rtol=1e-5, atol=2e-6, err_msg=key)


def shard_reference_step(config, state, batch: dict, num_devices: int) -> tuple[dict, dict]:
  """What sync_batch_norm=False promises, computed one shard at a time on one device: each shard
  normalised with its own statistics, gradients averaged over shards, running statistics averaged
  over the per-shard updates, then the optimiser's update. Returns (params, batch_stats)."""
  model = models.from_config(config.model, NUM_CLASSES)
  params, stats = jax.device_get(state.params), jax.device_get(state.batch_stats)
  tx = optim.create_optimizer(config, optax.constant_schedule(LR))

  def loss_fn(p, images, labels):
    logits, updates = model.apply({'params': p, 'batch_stats': stats}, images, train=True,
                                  mutable=['batch_stats'])
    return optim.cross_entropy(logits, labels, NUM_CLASSES).mean(), updates['batch_stats']

  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  grads, new_stats = [], []
  for images, labels in zip(np.split(batch['image'], num_devices), np.split(batch['label'], num_devices)):
    (_, s), g = grad_fn(params, images, labels)
    grads.append(g)
    new_stats.append(s)
  mean = lambda trees: jax.tree_util.tree_map(lambda *x: sum(x) / len(x), *trees)
  updates, _ = tx.update(mean(grads), jax.device_get(state.opt_state), params)
  return optax.apply_updates(params, updates), mean(new_stats)


def test_unsynchronised_batch_norm_is_per_device_and_averaged():
  """sync_batch_norm=False: per-shard normalisation, replicas still identical, stats = mean of updates."""
  (batch,) = random_batches(1, seed=1)
  config = tiny_config(sync_batch_norm=False)
  config.num_devices = 4
  mesh = steps.create_mesh(config)
  model = models.from_config(config.model, NUM_CLASSES, axis_name=steps.AXIS)
  tx = optim.create_optimizer(config, optax.constant_schedule(LR))
  start = steps.create_train_state(config, model, IMAGE_SHAPE, tx, mesh)
  want_params, want_stats = shard_reference_step(config, start, batch, 4)

  got = assert_replicas_identical(train(tiny_config(sync_batch_norm=False), 4, [batch]), 4)
  flat = lambda prefix, tree: {f"['{prefix}']{jax.tree_util.keystr(p)}": np.asarray(v)
                               for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  want = {**flat('params', want_params), **flat('batch_stats', want_stats)}
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=2e-6, err_msg=key)

  # The same step with synchronised statistics is measurably different: the check above can tell.
  synced = assert_replicas_identical(train(tiny_config(), 4, [batch]), 4)
  diff, where = max_diff(synced, got, "['batch_stats']")
  assert diff > 1e-3, (diff, where)


class DropoutProbe(nn.Module):
  """A linear classifier that also stores the dropout mask it drew in `batch_stats` (which the step
  leaves per-device when BatchNorm is synchronised), so each device's mask can be read back."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    mask = self.variable('batch_stats', 'mask', jnp.zeros, (x.shape[0], 32))
    kept = nn.Dropout(0.5, deterministic=not train)(jnp.ones((x.shape[0], 32)))
    if train:
      mask.value = kept
    return nn.Dense(NUM_CLASSES)(x.reshape(x.shape[0], -1))


def test_dropout_masks_differ_between_devices_and_steps():
  config = tiny_config()
  config.num_devices = 4
  mesh = steps.create_mesh(config)
  lr_fn = optax.constant_schedule(LR)
  state = steps.create_train_state(config, DropoutProbe(), IMAGE_SHAPE, optim.create_optimizer(config, lr_fn), mesh)
  step = steps.make_train_step(DropoutProbe(), config, NUM_CLASSES, mesh, lr_fn)
  sharding = NamedSharding(mesh, P(steps.AXIS))
  masks = []
  for batch in random_batches(2):
    state, _ = step(state, steps.to_global(batch, sharding))
    masks.append([copy["['batch_stats']['mask']"] for copy in per_device(state)])
  for s, per_step in enumerate(masks):
    assert all(set(np.unique(m)) == {0.0, 2.0} for m in per_step)  # rate 0.5: dropped, or kept and doubled
    for i in range(4):
      for j in range(i):
        assert not np.array_equal(per_step[i], per_step[j]), f'step {s}: devices {i} and {j} drew the same mask'
  for d in range(4):
    assert not np.array_equal(masks[0][d], masks[1][d]), f'device {d} drew the same mask in two steps'


# ---------------------------------------------------------------------------------------------
# BatchNorm


def batch_norm_calls(model, variables, images) -> tuple[dict, dict]:
  """Train-mode forward pass; every BatchNorm's input and output by module path, and the updates."""

  @jax.jit
  def forward(variables, images):
    calls = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, nn.BatchNorm) and context.method_name == '__call__':
        calls['/'.join(context.module.path)] = (args[0], out)
      return out

    with nn.intercept_methods(record):
      _, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
    return calls, updates['batch_stats']

  calls, stats = jax.device_get(forward(variables, images))
  return {tuple(k.split('/')): tuple(np.asarray(a, np.float64) for a in v) for k, v in calls.items()}, stats


def test_batch_norm_running_statistics():
  """running = 0.9 * old + 0.1 * batch for every BatchNorm, batch statistics over N, H, W.

  flax (as this code uses it) averages the BIASED batch variance (divisor N*H*W) into the running
  variance, and normalises with it in training. PyTorch, and so timm, normalise with the biased
  variance too but keep the UNBIASED one (divisor N*H*W - 1) as running_var; weights trained here
  thus carry running variances smaller by the factor (n - 1) / n (0.4% at n = 256, 6% at n = 16
  values a channel). Converted timm weights are unaffected (their running statistics are copied).
  """
  config = tiny_config(zero_init_last_bn=False)
  model = models.from_config(config.model, NUM_CLASSES)
  images = np.random.default_rng(3).normal(size=(4, *IMAGE_SHAPE)).astype(np.float32)
  # Any values will do (and the init need not be compiled): random parameters, and running
  # statistics that are not the init's 0 and 1.
  rng = np.random.default_rng(4)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  variables = jax.tree_util.tree_map(lambda x: rng.uniform(0.5, 1.5, x.shape).astype(np.float32), shapes)
  old = variables['batch_stats']
  calls, new = batch_norm_calls(model, variables, images)
  assert len(calls) == 9  # stem, two per block, two projection shortcuts

  unbiased_mismatch = []
  for path, (x, y) in calls.items():
    prev, got = node_at(old, path), node_at(new, path)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased: divisor N*H*W
    np.testing.assert_allclose(got['mean'], 0.9 * prev['mean'] + 0.1 * mean, rtol=1e-5, atol=1e-6, err_msg=path)
    np.testing.assert_allclose(got['var'], 0.9 * prev['var'] + 0.1 * var, rtol=1e-5, atol=1e-6, err_msg=path)
    params = node_at(variables['params'], path)
    want_y = (x - mean) / np.sqrt(var + 1e-5) * params['scale'] + params['bias']  # batch statistics
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4, err_msg=path)
    n = x.size // x.shape[-1]
    unbiased = 0.9 * prev['var'] + 0.1 * var * n / (n - 1)  # PyTorch's running_var
    unbiased_mismatch.append(not np.allclose(got['var'], unbiased, rtol=1e-5, atol=1e-6))
  assert any(unbiased_mismatch)  # the convention is observable here (and documented above)


def node_at(tree: dict, path: tuple[str, ...]) -> dict:
  for name in path:
    tree = tree[name]
  return tree


# ---------------------------------------------------------------------------------------------
# Optimisers


def optim_config(name: str, decay_all: bool):
  config = default.get_config()
  config.optim.update(name=name, momentum=0.9, weight_decay=0.05, decay_bn_and_bias=decay_all, b1=0.8, b2=0.95,
                      rmsprop_decay=0.85, rmsprop_eps=0.5)
  return config


def lr_at(count: int) -> float:
  return 0.1 / (1 + count)  # changes every step: the update must use lr(k) at its k-th call


def reference_updates(name: str, params: dict, grads: list[dict], decayed: dict) -> dict:
  """The textbook updates in float64 (PyTorch's SGD with dampening 0 and coupled L2 decay; its
  nesterov=True; AdamW with decoupled decay times lr, eps 1e-8 outside the square root;
  TensorFlow's RMSProp with momentum, eps inside the square root, and coupled L2 decay)."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t, g in enumerate(grads):
    lr = lr_at(t)
    for k in p:
      if name in ('sgd', 'nesterov'):
        d = g[k] + 0.05 * p[k] * decayed[k]
        m[k] = 0.9 * m[k] + d
        p[k] = p[k] - lr * ((d + 0.9 * m[k]) if name == 'nesterov' else m[k])
      elif name == 'rmsprop':
        d = g[k] + 0.05 * p[k] * decayed[k]
        v2[k] = 0.85 * v2[k] + 0.15 * d ** 2
        m[k] = 0.9 * m[k] + lr * d / np.sqrt(v2[k] + 0.5)
        p[k] = p[k] - m[k]
      else:
        m[k] = 0.8 * m[k] + 0.2 * g[k]
        v2[k] = 0.95 * v2[k] + 0.05 * g[k] ** 2
        mhat, vhat = m[k] / (1 - 0.8 ** (t + 1)), v2[k] / (1 - 0.95 ** (t + 1))
        p[k] = p[k] - lr * (mhat / (np.sqrt(vhat) + 1e-8) + 0.05 * p[k] * decayed[k])
  return p


@pytest.mark.parametrize('decay_all', [False, True])
@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_optimizer_matches_its_formula(name, decay_all):
  rng = np.random.default_rng(5)
  shapes = {('conv', 'kernel'): (3, 3, 2, 4), ('bn', 'scale'): (4,), ('bn', 'bias'): (4,),
            ('fc', 'kernel'): (4, 3), ('fc', 'bias'): (3,)}
  flat = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)]
  decayed = {k: decay_all or k[-1] == 'kernel' for k in shapes}
  unflat = lambda d: {a: {b: jnp.asarray(v) for (a2, b), v in d.items() if a2 == a} for a, _ in d}

  tx = optim.create_optimizer(optim_config(name, decay_all), lr_at)
  params = unflat(flat)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(unflat(g), state, params)
    params = optax.apply_updates(params, updates)
  want = reference_updates(name, flat, grads, decayed)
  for k in shapes:
    np.testing.assert_allclose(np.asarray(params[k[0]][k[1]]), want[k], rtol=2e-5, atol=1e-6, err_msg=str(k))


# ---------------------------------------------------------------------------------------------
# Schedules


def schedule_config(name: str, warmup_mode: str, warmup_epochs: float, decay_epochs=(), lr=0.4):
  config = default.get_config()
  config.optim.update(lr=lr, lr_batch_base=0)  # peak lr = optim.lr
  config.schedule.update(name=name, warmup_mode=warmup_mode, warmup_epochs=warmup_epochs,
                         warmup_lr_factor=0.1, decay_epochs=tuple(decay_epochs), decay_factor=0.2)
  return config


def expected_lr(step: int, *, name: str, warmup_mode: str, warmup: int, boundaries=(), total: int,
                peak: float = 0.4) -> float:
  """The documented schedule at absolute step `step` (0-based: the lr of the step's update)."""
  start = 0.1 * peak
  if step < warmup:
    return start + (peak - start) * step / warmup if warmup_mode == 'linear' else start
  if name == 'step':
    return peak * 0.2 ** sum(step >= b for b in boundaries)
  if name == 'cosine':
    t = min(step - warmup, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * t / (total - warmup)))
  return peak


def around(*points: int) -> list[int]:
  return sorted({s for p in points for s in (p - 1, p, p + 1) if s >= 0})


@pytest.mark.parametrize('warmup_mode', ['linear', 'constant'])
@pytest.mark.parametrize('name', ['step', 'cosine', 'constant'])
def test_schedule_around_every_boundary_with_warmup(name, warmup_mode):
  spe, total = 10, 100  # steps per epoch; warm-up 25 steps; decays at epochs 4 and 7.5
  config = schedule_config(name, warmup_mode, warmup_epochs=2.5, decay_epochs=(4, 7.5))
  lr = optim.create_learning_rate_fn(config, steps_per_epoch=spe, total_steps=total)
  kind = dict(name=name, warmup_mode=warmup_mode, warmup=25, boundaries=(40, 75), total=total)
  checked = around(0, 12, 25, 40, 62, 75, 99, 100)
  got = [float(lr(s)) for s in checked]
  want = [expected_lr(s, **kind) for s in checked]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=str(list(zip(checked, got, want))))


def test_step_schedule_of_he_et_al_recipe():
  """CIFAR ResNet recipe of He et al.: lr/10 at iterations 32k and 48k, 400 iterations at lr/10
  first; here with 391 steps an epoch, the boundaries given in epochs as 32000/391 and 48000/391."""
  spe = 391
  config = schedule_config('step', 'constant', warmup_epochs=400 / spe,
                           decay_epochs=(32_000 / spe, 48_000 / spe))
  lr = optim.create_learning_rate_fn(config, steps_per_epoch=spe, total_steps=64_000)
  checked = around(0, 400, 32_000, 48_000, 63_999)
  got = [float(lr(s)) for s in checked]
  want = [expected_lr(s, name='step', warmup_mode='constant', warmup=400, boundaries=(32_000, 48_000),
                      total=64_000) for s in checked]
  np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=str(list(zip(checked, got, want))))
