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
