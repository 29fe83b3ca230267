"""BatchNorm with a hand-written gradient: flax's `nn.BatchNorm`, computed the same way, differentiated
in closed form.

Autodiff of flax's BatchNorm differentiates the two statistics and the normalisation separately
and sums the input's cotangents from all three uses (`add_any`); on XLA CPU that sum ran as layout
copies taking ~15% of a ResNet-50 training step (docs/speed_notes.md). The closed form needs two
reductions of the output's cotangent and one elementwise pass:

  xhat = (x - mean) / sqrt(var + eps)
  dx = scale / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat))
  dscale = sum(dy * xhat),  dbias = sum(dy)

With `axis_name` the statistics are the mean of the per-device moments (one `pmean`, as flax), and
the two backward means are taken over all devices the same way, which is the gradient autodiff gives
through flax's `pmean`. Variables, their names, shapes, initialisers and the running-statistics
update (momentum * old + (1 - momentum) * batch, biased variance) are flax's: this class is a
subclass of `nn.BatchNorm` that replaces only the training-mode arithmetic, so checkpoints and
converted weights load unchanged.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
from flax.linen import dtypes
import jax
from jax import lax
import jax.numpy as jnp

from se_flax import fast_paths


def _means(xs: tuple[jax.Array, ...], axes: tuple[int, ...], axis_name: str | None) -> tuple[jax.Array, ...]:
  """Means over `axes` (sibling reductions XLA fuses into one pass), then over the devices of
  `axis_name` in one pmean of the stacked means (as flax)."""
  means = tuple(jnp.mean(x, axes) for x in xs)
  if axis_name is None:
    return means
  stacked = lax.pmean(jnp.stack(means), axis_name)
  return tuple(stacked[i] for i in range(len(xs)))


def _moments(x: jax.Array, axes: tuple[int, ...], axis_name: str | None) -> tuple[jax.Array, jax.Array]:
  """flax's fast variance, in at least float32: var = max(0, E[x^2] - E[x]^2)."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, mean2 = _means((x, lax.square(x)), axes, axis_name)
  return mean, jnp.maximum(0.0, mean2 - lax.square(mean))


def _normalise(x, mean, var, scale, bias, epsilon: float, dtype):
  """flax's `_normalize` arithmetic: (x - mean) * (rsqrt(var + eps) * scale) + bias."""
  y = x - mean
  y = y * (lax.rsqrt(var + epsilon) * scale)
  return (y + bias).astype(dtype)


def _reduced_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(x.ndim - 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x, scale, bias, epsilon: float, dtype, axis_name: str | None):
  """Training-mode BatchNorm over all axes but the last: (y, batch mean, biased batch variance)."""
  mean, var = _moments(x, _reduced_axes(x), axis_name)
  return _normalise(x, mean, var, scale, bias, epsilon, dtype), mean, var


def _forward(x, scale, bias, epsilon, dtype, axis_name):
  x, scale, bias = x.value, scale.value, bias.value  # symbolic_zeros=True wraps the primals
  y, mean, var = batch_norm_train.fun(x, scale, bias, epsilon, dtype, axis_name)  # the undecorated primal
  return (y, mean, var), (x, scale, mean, var)


def _backward(epsilon, dtype, axis_name, residuals, cotangents):
  del dtype
  x, scale, mean, var = residuals
  dy, dmean, dvar = cotangents
  axes = _reduced_axes(x)
  inv = lax.rsqrt(var + epsilon)
  centred = x.astype(mean.dtype) - mean
  xhat = centred * inv
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    dx = jnp.zeros(x.shape, mean.dtype)
    dscale = dbias = jnp.zeros_like(scale)
  else:
    dy = dy.astype(mean.dtype)
    dy_mean, dy_xhat_mean = _means((dy, dy * xhat), axes, axis_name)
    dx = (scale * inv) * (dy - dy_mean - xhat * dy_xhat_mean)
    dscale, dbias = jnp.sum(dy * xhat, axes), jnp.sum(dy, axes)
  # Cotangents of the returned statistics (symbolic zeros in training, where the statistics only
  # feed the running averages): over all N values of every device, d mean/dx = 1/N and
  # d var/dx = 2 (x - mean)/N, so each device adds the devices' summed cotangents.
  stats = [jnp.zeros_like(mean) if isinstance(c, jax.custom_derivatives.SymbolicZero) else c
           for c in (dmean, dvar)]
  if not all(isinstance(c, jax.custom_derivatives.SymbolicZero) for c in (dmean, dvar)):
    n = math.prod(x.shape[a] for a in axes)
    if axis_name is not None:
      n = n * lax.psum(1, axis_name)
      stats = list(lax.psum(jnp.stack(stats), axis_name))
    dx = dx + (stats[0] + 2.0 * stats[1] * centred) / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_forward, _backward, symbolic_zeros=True)


def for_network(net: nn.Module, train: bool) -> functools.partial:
  """A network's BatchNorm factory: batch statistics while training unless `net.frozen_batch_norm`,
  and the network's `bn_momentum`, `bn_epsilon`, `axis_name`, `dtype` and `param_dtype`."""
  return functools.partial(BatchNorm, use_running_average=not train or net.frozen_batch_norm,
                           momentum=net.bn_momentum, epsilon=net.bn_epsilon, axis_name=net.axis_name,
                           dtype=net.dtype, param_dtype=net.param_dtype)


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` (same fields, variables and numerics) with the closed-form training gradient.

  Supports what se_flax uses: features on the last axis, scale and bias, flax's default fast
  variance, no mask or axis_index_groups. Those, evaluation mode and
  `fast_paths.disabled(['bn_vjp'])` run flax's own code.
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    running = nn.merge_param('use_running_average', self.use_running_average, use_running_average)
    custom = (fast_paths.enabled('bn_vjp') and not running and mask is None and self.axis in (-1, x.ndim - 1)
              and self.use_bias and self.use_scale and self.use_fast_variance and self.axis_index_groups is None
              and self.force_float32_reductions and not jnp.iscomplexobj(x))
    if not custom:
      return super().__call__(x, use_running_average, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    dtype = dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    axis_name = None if self.is_initializing() else self.axis_name
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, dtype, axis_name)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
