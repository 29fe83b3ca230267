"""models.batch_norm.BatchNorm against flax's nn.BatchNorm differentiated by JAX.

The closed-form gradient must equal autodiff of flax's formula (to float32 rounding): outputs,
running statistics and the gradients of a loss with respect to the input, scale and bias, on one
device and with statistics synchronised over the 4 simulated devices of conftest (`axis_name`),
in float32 and bfloat16. The variables (names, shapes, initial values) are flax's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax.models.batch_norm import BatchNorm

SHAPE = (8, 5, 3, 6)  # N, H, W, C: 120 values a channel
AXIS = 'data'


def inputs(dtype=jnp.float32):
  """Non-centred inputs with per-channel spread, a random output cotangent, perturbed variables."""
  keys = jax.random.split(jax.random.key(0), 4)
  x = (jax.random.normal(keys[0], SHAPE) * jnp.linspace(0.5, 3.0, SHAPE[-1]) + 1.5).astype(dtype)
  weights = jax.random.normal(keys[1], SHAPE)
  variables = nn.BatchNorm(use_running_average=False).init(keys[2], x)
  noise = lambda a, k: a + 0.5 * jax.random.uniform(k, a.shape)
  variables = jax.tree_util.tree_map(noise, variables, {c: {n: keys[3] for n in v} for c, v in variables.items()})
  return x, weights, variables


def loss_and_grads(cls, x, weights, variables, *, dtype=jnp.float32, axis_name=None, stats_weight=0.0):
  """sum(y * weights) (+ stats_weight * the updated running statistics): value, y, updates, grads."""
  module = cls(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name=axis_name)

  def loss(params, x):
    y, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                              mutable=['batch_stats'])
    stats = updates['batch_stats']
    value = jnp.sum(y.astype(jnp.float32) * weights) + stats_weight * jnp.sum(stats['mean'] + 3.0 * stats['var'])
    return value, (y, stats)

  return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables['params'], x)


def assert_close(got, want, rtol, atol_fraction, what):
  """Elementwise |got - want| <= rtol |want| + atol_fraction * max |want| (tolerance stated per dtype)."""
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol_fraction * np.max(np.abs(w)),
                               err_msg=f'{what}{jax.tree_util.keystr(path)}')


@pytest.mark.parametrize('stats_weight', [0.0, 1.0])
def test_float32_matches_flax_autodiff(stats_weight):
  """Forward, running statistics and every gradient; stats_weight=1 also differentiates through the
  updated statistics (the cotangents training never sends)."""
  x, weights, variables = inputs()
  run = lambda cls: jax.jit(lambda x: loss_and_grads(cls, x, weights, variables, stats_weight=stats_weight))(x)
  want, got = run(nn.BatchNorm), run(BatchNorm)
  assert_close(got, want, rtol=1e-5, atol_fraction=1e-6, what='float32')
  # The forward pass is flax's arithmetic, op for op: bit-identical here.
  np.testing.assert_array_equal(got[0][1][0], want[0][1][0])


def test_bfloat16_matches_flax_autodiff():
  """bf16 compute (statistics and the backward in float32, as flax): within one bf16 rounding."""
  x, weights, variables = inputs(jnp.bfloat16)
  run = lambda cls: jax.jit(lambda x: loss_and_grads(cls, x, weights, variables, dtype=jnp.bfloat16))(x)
  want, got = run(nn.BatchNorm), run(BatchNorm)
  (_, (y, stats)), (grad_params, grad_x) = got
  assert y.dtype == grad_x.dtype == jnp.bfloat16 and stats['var'].dtype == grad_params['scale'].dtype == jnp.float32
  assert_close(got, want, rtol=2 ** -7, atol_fraction=2 ** -8, what='bfloat16')


def test_synchronised_statistics_match_flax_autodiff_on_4_devices():
  """axis_name: statistics over the global batch (pmean of the per-device moments), and the backward
  means over all devices; per-device gradients as autodiff through flax's pmean gives them."""
  if jax.device_count() < 4:
    pytest.skip('needs the 4 simulated devices of conftest')
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), (AXIS,))
  x, weights, variables = inputs()

  def run(cls):
    def per_device(x, weights):
      (value, (y, stats)), (grad_params, grad_x) = loss_and_grads(cls, x, weights, variables, axis_name=AXIS,
                                                                  stats_weight=1.0)
      # Parameter gradients differ per device: gather them (out_specs P(AXIS)) to compare each.
      return y, stats, jax.tree_util.tree_map(lambda g: g[None], grad_params), grad_x
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS), P(AXIS)),
                                 out_specs=(P(AXIS), P(), P(AXIS), P(AXIS)), check_vma=False))(x, weights)

  want, got = run(nn.BatchNorm), run(BatchNorm)
  assert_close(got, want, rtol=1e-5, atol_fraction=1e-6, what='4 devices')
  # The statistics are the global batch's: the same running averages as one device on all of x.
  _, (_, one_device_stats) = loss_and_grads(nn.BatchNorm, x, weights, variables)[0]
  assert_close(got[1], one_device_stats, rtol=1e-5, atol_fraction=1e-6, what='global statistics')


def test_variables_and_evaluation_mode_are_flax():
  """Same variable tree and initial values (scale_init honoured); use_running_average is flax's code."""
  x, _, variables = inputs()
  zero = nn.initializers.zeros
  assert_close(BatchNorm(use_running_average=False, scale_init=zero).init(jax.random.key(1), x),
               nn.BatchNorm(use_running_average=False, scale_init=zero).init(jax.random.key(1), x),
               rtol=0, atol_fraction=0, what='init')
  np.testing.assert_array_equal(BatchNorm(use_running_average=True).apply(variables, x),
                                nn.BatchNorm(use_running_average=True).apply(variables, x))
  assert issubclass(BatchNorm, nn.BatchNorm)  # code that inspects modules (tests, tools) still finds it
