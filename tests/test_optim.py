"""Schedules, optimisers, weight-decay mask and loss from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from se_flax import optim


def config(**changes):
  c = default.get_config()
  c.train.global_batch_size = 512
  c.optim.lr = 0.1
  c.optim.lr_batch_base = 256
  for key, value in changes.items():
    section, field = key.split('__')
    c[section][field] = value
  return c


def test_lr_scales_linearly_with_batch():
  assert optim.peak_learning_rate(config()) == pytest.approx(0.2)
  assert optim.peak_learning_rate(config(optim__lr_batch_base=0)) == pytest.approx(0.1)


def test_step_schedule_divides_at_epoch_boundaries():
  lr = optim.create_learning_rate_fn(config(schedule__name='step', schedule__decay_epochs=(2, 3)),
                                     steps_per_epoch=10, total_steps=40)
  got = [float(lr(s)) for s in (0, 19, 20, 29, 30, 39)]
  np.testing.assert_allclose(got, [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)


def test_linear_and_constant_warmup_then_cosine():
  c = config(schedule__warmup_epochs=1.0, schedule__warmup_lr_factor=0.1)
  lr = optim.create_learning_rate_fn(c, steps_per_epoch=10, total_steps=110)
  assert float(lr(0)) == pytest.approx(0.02)
  assert float(lr(5)) == pytest.approx(0.11)
  assert float(lr(10)) == pytest.approx(0.2)
  assert float(lr(60)) == pytest.approx(0.1, rel=1e-5)  # half-way through the cosine
  assert float(lr(110)) == pytest.approx(0.0, abs=1e-7)
  c.schedule.warmup_mode = 'constant'  # He et al.: lr 0.01 for 400 iterations, then 0.1
  lr = optim.create_learning_rate_fn(c, steps_per_epoch=10, total_steps=110)
  assert [float(lr(s)) for s in (0, 9)] == pytest.approx([0.02, 0.02])
  assert float(lr(10)) == pytest.approx(0.2)


def test_unknown_schedule_and_optimizer_are_rejected():
  with pytest.raises(ValueError, match="schedule.name='poly'.*cosine"):
    optim.create_learning_rate_fn(config(schedule__name='poly'), 10, 100)
  with pytest.raises(ValueError, match="optim.name='lamb'.*sgd"):
    optim.create_optimizer(config(optim__name='lamb'), optax.constant_schedule(0.1))
  with pytest.raises(ValueError, match="warmup_mode='cubic'"):
    optim.create_learning_rate_fn(config(schedule__warmup_mode='cubic', schedule__warmup_epochs=1.0), 10, 100)


PARAMS = {'conv': {'kernel': jnp.ones((3, 3, 2, 2))}, 'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)},
          'fc': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}


def test_decay_mask_covers_kernels_only():
  mask = optim.decay_mask(PARAMS)
  assert mask == {'conv': {'kernel': True}, 'bn': {'scale': False, 'bias': False},
                  'fc': {'kernel': True, 'bias': False}}


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
@pytest.mark.parametrize('decay_all', [False, True])
def test_weight_decay_reaches_only_masked_params(name, decay_all):
  """With zero gradients, only decayed parameters move."""
  c = config(optim__name=name, optim__weight_decay=0.1, optim__decay_bn_and_bias=decay_all)
  tx = optim.create_optimizer(c, optax.constant_schedule(0.5))
  zeros = jax.tree_util.tree_map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  moved = jax.tree_util.tree_map(lambda u: bool(jnp.any(u != 0)), updates)
  expected = jax.tree_util.tree_map(lambda _: True, PARAMS) if decay_all else optim.decay_mask(PARAMS)
  assert moved == expected


def test_cross_entropy_with_label_smoothing():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  logp = jax.nn.log_softmax(logits)[0]
  plain = optim.cross_entropy(logits, jnp.array([0]), 3)
  assert float(plain[0]) == pytest.approx(-float(logp[0]), rel=1e-6)
  smooth = optim.cross_entropy(logits, jnp.array([0]), 3, label_smoothing=0.3)
  target = np.array([0.8, 0.1, 0.1])  # 0.7 one-hot + 0.3 / 3 everywhere
  assert float(smooth[0]) == pytest.approx(-float(np.dot(target, logp)), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# The paper's CIFAR recipes, to the step.


@pytest.mark.parametrize('model, warmup', [('seresnet110_cifar', 400), ('resnet164_cifar', 400),
                                           ('resnet20_cifar', 0)])
def test_cifar_resnet_schedule_is_the_papers_to_the_step(model, warmup):
  """He et al.: lr 0.1, /10 at 32k and 48k iterations, 64k in all; 110/164 layers at 0.01 for the
  first 400. Given in steps, so independent of the epoch length (50,000 // 128 = 390)."""
  from configs import cifar10
  c = cifar10.get_config(model)
  assert c.train.num_steps == 64_000
  for steps_per_epoch in (390, 391):
    lr = optim.create_learning_rate_fn(c, steps_per_epoch, c.train.num_steps)
    got = {s: float(lr(s)) for s in (0, 399, 400, 31_999, 32_000, 47_999, 48_000, 63_999)}
    first = 0.01 if warmup else 0.1
    assert got == pytest.approx({0: first, 399: first, 400: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01,
                                 48_000: 0.001, 63_999: 0.001}, rel=1e-6)


def test_wrn_schedule_is_in_the_loops_epochs():
  from configs import cifar10
  c = cifar10.get_config('sewrn16_8_cifar')
  lr = optim.create_learning_rate_fn(c, 390, 200 * 390)
  got = [float(lr(s)) for s in (23_399, 23_400, 46_799, 46_800, 62_399, 62_400)]
  np.testing.assert_allclose(got, [0.1, 0.02, 0.02, 0.004, 0.004, 0.0008], rtol=1e-6)


def test_schedule_steps_win_over_epochs_and_are_checked():
  c = config(schedule__name='step', schedule__decay_epochs=(1,), schedule__warmup_epochs=1.0)
  c.schedule.update(decay_steps=(5, 8), warmup_steps=2, warmup_mode='constant', warmup_lr_factor=0.5)
  lr = optim.create_learning_rate_fn(c, steps_per_epoch=100, total_steps=10)
  np.testing.assert_allclose([float(lr(s)) for s in range(10)],
                             [0.1, 0.1, 0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)
  for field, value, message in (('decay_steps', (8, 5), 'schedule.decay_steps=(8, 5) must be increasing'),
                                ('decay_steps', (0,), 'schedule.decay_steps=(0,) must be increasing'),
                                ('warmup_steps', -1, 'schedule.warmup_steps=-1 must be an integer >= 0')):
    bad = config(schedule__name='step')
    bad.schedule[field] = value
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
      optim.create_learning_rate_fn(bad, 10, 100)


# ---------------------------------------------------------------------------------------------
# The optimiser follows the global step (train.on_nonfinite='skip' keeps lr applied == lr logged).


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_optimizers_are_optax_s_own_chains(name):
  """Same state layout (checkpoints) and bit-identical updates as optax's aliases; passing the global
  step equal to the update count changes nothing."""
  c = config(optim__name=name, optim__weight_decay=0.01)
  lr = optax.linear_schedule(0.3, 0.1, 5)
  mask = optim.decay_mask
  if name == 'adamw':
    reference = optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=0.01, mask=mask)
  elif name == 'rmsprop':
    reference = optax.chain(optax.add_decayed_weights(0.01, mask=mask),
                            optax.rmsprop(lr, decay=0.9, eps=1.0, momentum=0.9))
  else:
    reference = optax.chain(optax.add_decayed_weights(0.01, mask=mask),
                            optax.sgd(lr, momentum=0.9, nesterov=name == 'nesterov'))
  tx = optim.create_optimizer(c, lr)
  states = [reference.init(PARAMS), tx.init(PARAMS), tx.init(PARAMS)]
  assert jax.tree_util.tree_structure(states[0]) == jax.tree_util.tree_structure(states[1])
  params = [PARAMS] * 3
  for step in range(4):
    grads = jax.tree_util.tree_map(lambda p: jnp.sin(p * (step + 1) + jnp.arange(p.size).reshape(p.shape)), PARAMS)
    out = [reference.update(grads, states[0], params[0]), tx.update(grads, states[1], params[1]),
           tx.update(grads, states[2], params[2], step=jnp.int32(step))]
    for i, (updates, state) in enumerate(out):
      states[i], params[i] = state, optax.apply_updates(params[i], updates)
    for i in (1, 2):
      for a, b in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[i])):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_and_freeze_follow_the_global_step():
  """With `step`, the schedule and the backbone freeze read the global step, not the update count."""
  c = config(optim__name='sgd', optim__momentum=0.0, optim__weight_decay=0.0)
  lr = lambda s: 0.1 * (s + 1)
  grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
  tx = optim.create_optimizer(c, lr)
  updates, state = tx.update(grads, tx.init(PARAMS), PARAMS, step=jnp.int32(6))  # count 0, global step 6
  assert float(updates['fc']['kernel'][0, 0]) == pytest.approx(-0.7)
  c.finetune.update(freeze_backbone_steps=3, backbone_lr_multiplier=0.5)
  tx = optim.create_optimizer(c, lr)
  frozen, _ = tx.update(grads, tx.init(PARAMS), PARAMS, step=jnp.int32(2))
  active, _ = tx.update(grads, tx.init(PARAMS), PARAMS, step=jnp.int32(3))
  assert float(frozen['conv']['kernel'][0, 0, 0, 0]) == 0.0 and float(frozen['fc']['kernel'][0, 0]) == pytest.approx(-0.3)
  assert float(active['conv']['kernel'][0, 0, 0, 0]) == pytest.approx(-0.5 * 0.4)
