"""Small layers whose exact conventions matter for parity with Caffe- and timm-trained weights."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


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


def max_pool_stem(x: jax.Array, mode: str) -> jax.Array:
  """The 3x3 / 2 stem max-pool.

  mode 'pad': padding 1 (torchvision, timm). mode 'ceil': no padding, ceil mode
  (Caffe, timm `legacy_*`); the two differ in output size for odd inputs (113 -> 57 vs 56)
  and in window alignment for all.
  """
  if mode == 'pad':
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  if mode == 'ceil':
    eh, ew = _ceil_extra(x.shape[1], 3, 2), _ceil_extra(x.shape[2], 3, 2)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((0, eh), (0, ew)))
  raise ValueError(f'stem pool mode={mode!r} is not one of pad, ceil')


def avg_pool_ceil(x: jax.Array, window: int = 2) -> jax.Array:
  """AvgPool2d(window, window, ceil_mode=True, count_include_pad=False), timm's ResNet-D shortcut."""
  eh, ew = _ceil_extra(x.shape[1], window, window), _ceil_extra(x.shape[2], window, window)
  pads = ((0, 0), (0, eh), (0, ew), (0, 0))
  summed = nn.pool(jnp.pad(x, pads), 0.0, jax.lax.add, (window, window), (window, window), 'VALID')
  ones = jnp.pad(jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype), pads)
  counts = nn.pool(ones, 0.0, jax.lax.add, (window, window), (window, window), 'VALID')
  return summed / counts
