"""Small layers whose exact conventions matter for parity with Caffe- and timm-trained weights."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from se_flax import fast_paths

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))

def same_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """PyTorch-style symmetric padding k // 2 (flax 'SAME' pads asymmetrically at stride 2)."""
  p = kernel // 2
  return ((p, p), (p, p))


def _ceil_extra(size: int, window: int, stride: int) -> int:
  """Extra right padding that turns floor-mode pooling into PyTorch's ceil mode."""
  out = math.ceil((size - window) / stride) + 1
  if (out - 1) * stride >= size:  # the last window must start inside the input
    out -= 1
  return max(0, (out - 1) * stride + window - size)


def _max_pool_3x3_s2_slices(x: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """3x3 / 2 max-pool (-inf padding) as the max of 9 strided slices, differentiated by JAX.

  The same maxima as `nn.max_pool`, but the gradient is 9 elementwise selects instead of XLA's
  select-and-scatter, which is about 10x slower on CPU (docs/speed_notes.md). Ties split the
  gradient (JAX's rule for `max`). The path with fast path 'pool_vjp' off.
  """
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  windows = [x[:, i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2, :] for i in range(3) for j in range(3)]
  return functools.reduce(jnp.maximum, windows)


# Window offset 0, 1, 2 along an axis of the padded input = (block shift, phase) in its 2-blocks.
_TAPS = ((0, 0), (0, 1), (1, 0))


def _pool_windows(x: jax.Array, pads) -> list[jax.Array]:
  """The 9 window taps of a 3x3 / 2 pool, row-major, each (N, out_h, out_w, C): slices of the -inf
  padded input viewed as (N, out_h + 1, 2, out_w + 1, 2, C) blocks, so no strided slices."""
  n, h, w, c = x.shape
  (top, bottom), (left, right) = pads
  out_h, out_w = (h + top + bottom - 3) // 2 + 1, (w + left + right - 3) // 2 + 1
  x = jnp.pad(x, ((0, 0), (top, 2 * out_h + 2 - h - top), (left, 2 * out_w + 2 - w - left), (0, 0)),
              constant_values=-jnp.inf)
  blocks = x.reshape(n, out_h + 1, 2, out_w + 1, 2, c)
  return [blocks[:, si:si + out_h, pi, sj:sj + out_w, pj, :] for si, pi in _TAPS for sj, pj in _TAPS]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_3x3_s2(x: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """3x3 / 2 max-pool (-inf padding) whose gradient goes to the first maximum of each window in
  row-major order (PyTorch's rule; JAX's `max` would split ties).

  The forward pass also records which of the 9 taps won (int8), so the backward pass reads that
  and the output cotangent only: a quarter of the slice-based backward's CPU time, which
  recomputed the maxima (docs/speed_notes.md s.8).
  """
  return functools.reduce(jnp.maximum, _pool_windows(x, pads))


def _max_pool_forward(x, pads):
  best, winner = None, None
  for tap, v in enumerate(_pool_windows(x, pads)):
    if best is None:
      best, winner = v, jnp.zeros(v.shape, jnp.int8)
    else:
      better = v > best  # strict: the first maximum keeps the gradient
      best, winner = jnp.where(better, v, best), jnp.where(better, jnp.int8(tap), winner)
  return best, (winner, x.shape)


def _max_pool_backward(pads, residuals, dy):
  winner, (n, h, w, c) = residuals
  out_h, out_w = dy.shape[1:3]
  (top, _), (left, _) = pads
  zero = jnp.zeros((), dy.dtype)
  phases = [[jnp.zeros((n, out_h + 1, out_w + 1, c), dy.dtype) for _ in range(2)] for _ in range(2)]
  for a, (si, pi) in enumerate(_TAPS):
    for b, (sj, pj) in enumerate(_TAPS):
      took = jnp.where(winner == 3 * a + b, dy, zero)
      phases[pi][pj] = phases[pi][pj] + jnp.pad(took, ((0, 0), (si, 1 - si), (sj, 1 - sj), (0, 0)))
  blocks = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (N, out_h+1, 2, out_w+1, 2, C)
  dx = blocks.reshape(n, 2 * out_h + 2, 2 * out_w + 2, c)[:, top:top + h, left:left + w, :]
  return (dx,)


_max_pool_3x3_s2.defvjp(_max_pool_forward, _max_pool_backward)


def max_pool_stem(x: jax.Array, mode: str) -> jax.Array:
  """The 3x3 / 2 stem max-pool.

  mode 'pad': padding 1 (torchvision, timm). mode 'ceil': no padding, ceil mode
  (Caffe, timm `legacy_*`); the two differ in output size for odd inputs (113 -> 57 vs 56)
  and in window alignment for all.
  """
  if mode == 'pad':
    pads = ((1, 1), (1, 1))
  elif mode == 'ceil':
    pads = ((0, _ceil_extra(x.shape[1], 3, 2)), (0, _ceil_extra(x.shape[2], 3, 2)))
  else:
    raise ValueError(f'stem pool mode={mode!r} is not one of pad, ceil')
  return (_max_pool_3x3_s2 if fast_paths.enabled('pool_vjp') else _max_pool_3x3_s2_slices)(x, pads)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated`, with ungrouped unpadded 1x1 NHWC convolutions as a dot on CPU.

  For `nn.Conv(conv_general_dilated=...)`. XLA CPU computes the kernel gradient of a 1x1
  convolution as a convolution with an H x W window, tens of times slower than the equivalent
  matrix product (docs/speed_notes.md); the dot's gradients are matrix products.
  """
  unpadded = padding == 'VALID' or (not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding))
  undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  # CPU only: cuDNN handles 1x1 convolutions well, and XLA GPU (jax 0.11.2) aborts compiling the
  # strided-slice + dot form at 'highest' matmul precision (triton_tiling_propagation check).
  pointwise = (rhs.shape[:2] == (1, 1) and feature_group_count == 1 and dimension_numbers == _NHWC
               and unpadded and undilated and not kwargs and jax.default_backend() == 'cpu'
               and fast_paths.enabled('dot_1x1'))
  if not pointwise:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)
  sh, sw = window_strides
  x = lhs[:, ::sh, ::sw, :]
  n, h, w, c = x.shape
  # A 2-D dot: the kernel gradient is then x^T dy contracting one axis, which XLA runs without a
  # copy; contracting N, H and W of 4-D arrays made it transpose dy first (a layout copy of every
  # 1x1 conv's output cotangent, ~14% of a CPU step: docs/speed_notes.md s.8).
  y = lax.dot_general(x.reshape(n * h * w, c), rhs[0, 0], (((1,), (0,)), ((), ())), precision=precision)
  return y.reshape(n, h, w, rhs.shape[-1])


def avg_pool_ceil(x: jax.Array, window: int = 2) -> jax.Array:
  """AvgPool2d(window, window, ceil_mode=True, count_include_pad=False), timm's ResNet-D shortcut."""
  eh, ew = _ceil_extra(x.shape[1], window, window), _ceil_extra(x.shape[2], window, window)
  pads = ((0, 0), (0, eh), (0, ew), (0, 0))
  summed = nn.pool(jnp.pad(x, pads), 0.0, jax.lax.add, (window, window), (window, window), 'VALID')
  ones = jnp.pad(jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype), pads)
  counts = nn.pool(ones, 0.0, jax.lax.add, (window, window), (window, window), 'VALID')
  return summed / counts
