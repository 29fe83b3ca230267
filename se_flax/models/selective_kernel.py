"""Selective-kernel convolution (Li et al., Selective Kernel Networks, CVPR 2019, arXiv 1903.06586).

An SK convolution replaces a block's 3x3: parallel branches of different receptive field
(3x3, and 5x5 as a 3x3 with dilation 2) each run conv-BN-ReLU; their sum is pooled to one
vector, squeezed by an FC-BN-ReLU and expanded to one logit per branch and channel; a softmax
over the branches weighs each branch's output, and the weighted outputs are summed.
As timm 1.0.31's `SelectiveKernel` (`timm/layers/selective_kernel.py`), which also splits the
input channels across the branches (`split_input`) to keep the parameter count of a ResNet.

Parameter names follow timm's so that the converter maps them one to one:
  paths_{i}_conv / paths_{i}_bn (timm paths.{i}.conv / .bn), attn/fc_reduce, attn/bn, attn/fc_select.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.models import se as se_lib

ModuleFactory = Callable[..., nn.Module]


def attention_width(channels: int, reduction: int, divisor: int) -> int:
  """timm's `make_divisible(channels / reduction, divisor)` (round_limit 0.9): the nearest multiple of
  `divisor`, at least `divisor`, and one `divisor` more where rounding lost over 10%."""
  v = channels / reduction
  width = se_lib.make_divisible(v, divisor)
  return width + divisor if width < 0.9 * v else width


@dataclasses.dataclass(frozen=True)
class SKConfig:
  """A selective-kernel convolution, as data (defaults: timm's `SelectiveKernel`).

  Attributes:
    kernel_sizes: one branch per entry (SKNet: 3 and 5).
    keep_3x3: every branch a 3x3, larger kernels becoming dilation (k - 1) // 2 (SKNet's
      5x5 = 3x3 with dilation 2).
    split_input: each branch sees its own contiguous 1/len(kernel_sizes) of the input channels
      (timm's SK-ResNets); False: every branch sees all of them (SKNet, timm skresnext50_32x4d).
    reduction, divisor: width of the attention's bottleneck FC, make_divisible(C / reduction, divisor)
      with `divisor` also the minimum (timm rd_ratio = 1 / reduction, rd_divisor).
  """

  kernel_sizes: tuple[int, ...] = (3, 5)
  keep_3x3: bool = True
  split_input: bool = True
  reduction: int = 16
  divisor: int = 8

  def __post_init__(self):
    object.__setattr__(self, 'kernel_sizes', tuple(int(k) for k in self.kernel_sizes))
    if len(self.kernel_sizes) < 2 or any(k < 3 or k % 2 == 0 for k in self.kernel_sizes):
      raise ValueError(f'selective kernel kernel_sizes={self.kernel_sizes} needs two or more odd sizes >= 3')
    for field in ('reduction', 'divisor'):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f'selective kernel {field}={value!r} must be a positive integer')

  def branches(self) -> tuple[tuple[int, int], ...]:
    """(kernel size, dilation) of each branch."""
    if self.keep_3x3:
      return tuple((3, (k - 1) // 2) for k in self.kernel_sizes)
    return tuple((k, 1) for k in self.kernel_sizes)


class SelectiveKernelAttn(nn.Module):
  """Softmax weights over branches from the branches' sum: pool, FC-BN-ReLU, FC, softmax.

  Input (N, H, W, C) (the branch sum); output (N, paths, C), summing to 1 over paths.
  The FCs are Dense layers on the pooled vector (timm: 1x1 convolutions without bias on a 1x1 map).
  """

  paths: int
  width: int
  norm: ModuleFactory
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    dense = lambda features, name: nn.Dense(features, use_bias=False, dtype=self.dtype,
                                            param_dtype=self.param_dtype, name=name)
    s = nn.relu(self.norm(name='bn')(dense(self.width, 'fc_reduce')(s)))
    s = dense(channels * self.paths, 'fc_select')(s)
    # timm views (N, paths * C) as (N, paths, C): branch-major.
    return jax.nn.softmax(s.reshape(s.shape[0], self.paths, channels).astype(jnp.float32), axis=1)


class SelectiveKernel(nn.Module):
  """SK convolution with `features` output channels; the BN and ReLU of each branch are inside.

  `conv` and `norm` are the network's factories (train mode, BN synchronisation and dtypes already
  resolved), so the module behaves like the conv-BN-ReLU it replaces.
  """

  features: int
  conv: ModuleFactory
  norm: ModuleFactory
  config: SKConfig = SKConfig()
  strides: int = 1
  groups: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    branches = cfg.branches()
    if cfg.split_input:
      if x.shape[-1] % len(branches):
        raise ValueError(f'selective kernel split_input: {x.shape[-1]} input channels do not split into '
                         f'{len(branches)} branches')
      inputs = jnp.split(x, len(branches), axis=-1)
    else:
      inputs = [x] * len(branches)
    groups = min(self.features, self.groups)
    outs = []
    for i, ((kernel, dilation), branch_in) in enumerate(zip(branches, inputs)):
      pad = ((self.strides - 1) + dilation * (kernel - 1)) // 2  # timm get_padding: symmetric
      y = self.conv(self.features, (kernel, kernel), strides=(self.strides, self.strides),
                    padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                    feature_group_count=groups, name=f'paths_{i}_conv')(branch_in)
      outs.append(nn.relu(self.norm(name=f'paths_{i}_bn')(y)))
    weights = SelectiveKernelAttn(
        len(branches), attention_width(self.features, cfg.reduction, cfg.divisor), self.norm,
        dtype=self.dtype, param_dtype=self.param_dtype, name='attn')(sum(outs))
    weights = weights.astype(outs[0].dtype)
    return sum(out * weights[:, i, None, None, :] for i, out in enumerate(outs))
