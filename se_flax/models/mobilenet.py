"""MobileNet v1 (Howard et al. 2017; timm `mobilenetv1_100`), with SE after each depthwise-separable block.

A 3x3/2 stem conv, then depthwise-separable blocks: a 3x3 depthwise conv (stride 2 where the
resolution halves), BN, activation, a 1x1 pointwise conv, BN, activation. timm's layout: ReLU6
activations, stage groups by resolution (blocks 1, 2, 2, 6, 2 at 112, 56, 28, 14, 7 px for a 224
input: the first group keeps the stem's resolution), global average pooling, the classifier.

SE (Hu et al., Table 3): the SE-MobileNet prototxt the authors posted (GitHub hujie-frank/SENet,
thread #64) scales the output of each block's pointwise conv (after its BN and activation), i.e. the end
of every depthwise-separable block: placement 'standard'. Placement 'after_3x3' puts it after the
depthwise conv instead (where MobileNet v3 / EfficientNet and timm's DepthwiseSeparableConv have it).
The stem has none. `se.stages` has one entry per resolution group.

Parameter names (the timm converter relies on them): conv_stem, bn1, blocks_{S}_{B}/{conv_dw, bn1,
conv_pw, bn2, se}, fc (timm: classifier).
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
from se_flax.models.se import SEConfig
from se_flax.models.slot_checks import check_placement, check_stages

ModuleFactory = Callable[..., nn.Module]
PLACEMENTS = ('standard', 'after_3x3')
ACTIVATIONS = {'relu': nn.relu, 'relu6': jax.nn.relu6}


class DepthwiseSeparable(nn.Module):
  """3x3 depthwise conv, BN, act, 1x1 pointwise conv, BN, act; SE at the end ('standard') or after
  the depthwise part ('after_3x3')."""

  features: int
  conv: ModuleFactory
  depthwise: ModuleFactory
  norm: ModuleFactory
  act: Callable[[jax.Array], jax.Array]
  strides: int = 1
  attn: ModuleFactory | None = None
  placement: str = 'standard'

  def _attn_at(self, where: str, x: jax.Array) -> jax.Array:
    return self.attn(name='se')(x) if self.attn is not None and self.placement == where else x

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.depthwise(x.shape[-1], (3, 3), strides=(self.strides, self.strides), padding=layers.same_padding(3),
                       feature_group_count=x.shape[-1], name='conv_dw')(x)
    x = self.act(self.norm(name='bn1')(x))
    x = self._attn_at('after_3x3', x)
    x = self.conv(self.features, (1, 1), padding='VALID', name='conv_pw')(x)
    x = self.act(self.norm(name='bn2')(x))
    return self._attn_at('standard', x)


class MobileNetV1(nn.Module):
  """MobileNet v1 / SE-MobileNet on NHWC images; returns float32 logits.

  Attributes:
    stage_sizes: blocks per resolution group, (1, 2, 2, 6, 2).
    widths: output channels per group, (64, 128, 256, 512, 1024); each group but the first starts
      with a stride-2 depthwise conv.
    stem_width: channels of the 3x3/2 stem conv (32).
    act: 'relu6' (timm, TF-slim) or 'relu' (the MobileNet paper, the SE authors' Caffe prototxt).
    se: SEConfig or None (the plain baseline).
  """

  stage_sizes: Sequence[int] = (1, 2, 2, 6, 2)
  widths: Sequence[int] = (64, 128, 256, 512, 1024)
  stem_width: int = 32
  act: str = 'relu6'
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
    if self.act not in ACTIVATIONS:
      raise ValueError(f'act={self.act!r} is not one of {", ".join(ACTIVATIONS)}')
    check_placement(self.se, PLACEMENTS, 'MobileNet')
    check_stages(self.se, len(self.stage_sizes))
    if self.num_classes <= 0:
      raise ValueError(f'num_classes={self.num_classes} must be positive')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                             conv_general_dilated=layers.conv_general_dilated)
    # He init over a depthwise filter's own 9 taps (fan_out per group, as timm's `_init_weight_goog`).
    depthwise = functools.partial(conv, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'))
    norm = batch_norm.for_network(self, train)
    act = ACTIVATIONS[self.act]
    x = x.astype(self.dtype)
    x = conv(self.stem_width, (3, 3), strides=(2, 2), padding=layers.same_padding(3), name='conv_stem')(x)
    x = act(norm(name='bn1')(x))
    for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      attn = None
      if self.se is not None and self.se.in_stage(stage):
        attn = attention.build(self.se, dtype=self.dtype, param_dtype=self.param_dtype, norm=norm)
      for i in range(num_blocks):
        x = DepthwiseSeparable(
            width, conv, depthwise, norm, act, strides=2 if stage > 0 and i == 0 else 1, attn=attn,
            placement=self.se.placement if self.se is not None else 'standard', name=f'blocks_{stage}_{i}')(x)
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='fc')(x)
    return x.astype(jnp.float32)
