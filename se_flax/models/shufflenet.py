"""ShuffleNet v1 (Zhang et al., CVPR 2018), with SE on each unit's residual branch.

Built from the ShuffleNet paper (Table 1, Fig. 2); no timm or torchvision model exists. A 3x3/2
conv (24 channels, BN, ReLU) and a 3x3/2 max-pool, then three stages (the paper's Stage2-4) of
ShuffleNet units, global average pooling and the classifier. A unit's residual branch: 1x1 group
conv to a bottleneck of a quarter of the stage width, BN, ReLU, channel shuffle, 3x3 depthwise
conv (stride 2 in a stage's first unit), BN, 1x1 group conv, BN. A stride-1 unit adds the input
and applies ReLU; a stride-2 unit concatenates a 3x3/2 average-pooled shortcut (padding 1, padded
zeros counted in the mean: PyTorch's AvgPool2d default) with the branch, whose 1x1 conv then
outputs the stage width minus the input width, and applies ReLU. The first pointwise conv of
Stage2 is not grouped (its input has only 24 channels). g = 3 gives widths 240/480/960 and 4/8/4
units: 140 MFLOPs (multiply-adds) in the paper's Table 2; 137.5M counted here (convolutions and
the classifier), 1.87M parameters.

SE (Hu et al., Table 3, "constructed by following similar schemes"): no definition is public. This
implementation reads it as in the residual networks of the paper: SE on the residual branch after
its last BN, before the addition or the concatenation (placement 'standard'), so that in stride-2
units it recalibrates the branch's channels only. With r = 16 that gives 1.87M -> 2.48M parameters,
the paper's 1.8M -> 2.4M cut to one decimal (SE on each unit's output, placement 'post', would give
2.59M). Placements 'pre', 'post', 'identity' and 'after_3x3' (after the depthwise conv's BN) are
as in the ResNets.

Parameter names: conv1, bn1, stage{2,3,4}_{B}/{conv_pw1, bn1, conv_dw, bn2, conv_pw2, bn3, se}, fc.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.models import attention
from se_flax.models import batch_norm
from se_flax.models import layers
from se_flax.models.se import PLACEMENTS, SEConfig
from se_flax.models.slot_checks import check_placement, check_stages

ModuleFactory = Callable[..., nn.Module]


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """Interleave the channels of `groups` groups (NHWC): channel g * n + i moves to i * groups + g."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


class ShuffleUnit(nn.Module):
  """One ShuffleNet unit: `features` output channels; stride 2 concatenates an average-pooled shortcut."""

  features: int
  groups: int
  conv: ModuleFactory
  depthwise: ModuleFactory
  norm: ModuleFactory
  strides: int = 1
  group_first: bool = True  # False: the first 1x1 conv is not grouped (Stage2's first unit)
  attn: ModuleFactory | None = None
  placement: str = 'standard'

  def _attn_at(self, where: str, x: jax.Array) -> jax.Array:
    return self.attn(name='se')(x) if self.attn is not None and self.placement == where else x

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_channels = x.shape[-1]
    mid = self.features // 4
    branch_out = self.features - in_channels if self.strides == 2 else self.features
    first_groups = self.groups if self.group_first else 1
    y = self._attn_at('pre', x)
    y = self.conv(mid, (1, 1), padding='VALID', feature_group_count=first_groups, name='conv_pw1')(y)
    y = nn.relu(self.norm(name='bn1')(y))
    y = channel_shuffle(y, self.groups) if self.groups > 1 else y
    y = self.depthwise(mid, (3, 3), strides=(self.strides, self.strides), padding=layers.same_padding(3),
                       feature_group_count=mid, name='conv_dw')(y)
    y = self.norm(name='bn2')(y)
    y = self._attn_at('after_3x3', y)
    y = self.conv(branch_out, (1, 1), padding='VALID', feature_group_count=self.groups, name='conv_pw2')(y)
    y = self.norm(name='bn3')(y)
    y = self._attn_at('standard', y)
    if self.strides == 2:
      shortcut = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
      out = jnp.concatenate([self._attn_at('identity', shortcut), y], axis=-1)
    else:
      out = y + self._attn_at('identity', x)
    return self._attn_at('post', nn.relu(out))


class ShuffleNetV1(nn.Module):
  """ShuffleNet v1 / SE-ShuffleNet on NHWC images; returns float32 logits.

  Attributes:
    groups: g, the groups of the pointwise convs (3).
    stage_sizes: units per stage (4, 8, 4); widths: stage output channels ((240, 480, 960) for g = 3,
      1x); each stage's width / 4 (the bottleneck) and its first unit's branch width must divide by g.
    stem_width: channels of the 3x3/2 stem conv (24).
    se: SEConfig or None (the plain baseline); `se.stages` has one entry per stage (Stage2-4).
  """

  groups: int = 3
  stage_sizes: Sequence[int] = (4, 8, 4)
  widths: Sequence[int] = (240, 480, 960)
  stem_width: int = 24
  num_classes: int = 1000
  se: SEConfig | None = None
  drop_rate: float = 0.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  axis_name: str | None = None
  frozen_batch_norm: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if len(self.widths) != len(self.stage_sizes):
      raise ValueError(f'widths={tuple(self.widths)} needs one entry per stage of stage_sizes={tuple(self.stage_sizes)}')
    in_channels = self.stem_width
    for width in self.widths:
      if width % 4 or (width // 4) % self.groups or (width - in_channels) % self.groups or width <= in_channels:
        raise ValueError(f'widths={tuple(self.widths)} with stem_width={self.stem_width} and groups={self.groups}: '
                         'each width must exceed the one before, and width / 4 and width - previous width must '
                         'divide by groups')
      in_channels = width
    check_placement(self.se, PLACEMENTS, 'ShuffleNet')
    check_stages(self.se, len(self.stage_sizes))
    if self.num_classes <= 0:
      raise ValueError(f'num_classes={self.num_classes} must be positive')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                             conv_general_dilated=layers.conv_general_dilated)
    depthwise = functools.partial(conv, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'))
    norm = batch_norm.for_network(self, train)
    x = x.astype(self.dtype)
    x = conv(self.stem_width, (3, 3), strides=(2, 2), padding=layers.same_padding(3), name='conv1')(x)
    x = nn.relu(norm(name='bn1')(x))
    x = layers.max_pool_stem(x, 'pad')
    for stage, (num_units, width) in enumerate(zip(self.stage_sizes, self.widths)):
      attn = None
      if self.se is not None and self.se.in_stage(stage):
        attn = attention.build(self.se, dtype=self.dtype, param_dtype=self.param_dtype, norm=norm)
      for i in range(num_units):
        x = ShuffleUnit(width, self.groups, conv, depthwise, norm, strides=2 if i == 0 else 1,
                        group_first=stage > 0 or i > 0, attn=attn,
                        placement=self.se.placement if self.se is not None else 'standard',
                        name=f'stage{stage + 2}_{i}')(x)
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='fc')(x)
    return x.astype(jnp.float32)
