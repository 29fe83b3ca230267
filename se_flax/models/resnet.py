"""One generic ResNet for the whole SENet family: ResNet, SE-ResNet, SE-ResNeXt, SENet-154, CIFAR nets,
and timm's channel-attention ResNets (ECA-ResNet-D/-T, SK-ResNet/-ResNeXt).

SE is injected, not a separate network family (as in timm): blocks receive an `attn` factory
(`attention.build(se)`, an SEBlock or another kind of the slot, or None) and an `SEConfig.placement`. The network builds the `conv`,
`norm` and `attn` partials once, with `train` resolved, and hands them to the blocks, so blocks
never see `train` and BatchNorm statistics can be synchronised through `axis_name`.

Parameter names are an API (checkpoints and the timm converter rely on them):
  stem_conv{1,2,3} / stem_bn{1,2,3}, layer{S}_{B}/{conv,bn}{1,2,3}, layer{S}_{B}/se/fc{1,2},
  layer{S}_{B}/downsample_{conv,bn}, head_bn (pre-activation nets), fc. A selective-kernel
  convolution (`se_flax.models.selective_kernel`) takes the 3x3's conv name (basic: conv1,
  bottleneck: conv2) and holds that conv's BatchNorm.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.models import batch_norm
from se_flax.models import layers
from se_flax.models import attention
from se_flax.models.se import SEConfig
from se_flax.models.selective_kernel import SelectiveKernel, SKConfig

ModuleFactory = Callable[..., nn.Module]

BLOCKS = ('basic', 'bottleneck', 'preact_basic', 'preact_bottleneck')
STEMS = ('conv7', 'deep', 'tiered', 'cifar')
STRIDE_ON = ('1x1', '3x3')
DOWNSAMPLES = ('conv', 'avg', 'pad')


class _Residual(nn.Module):
  """Shared fields and the SE placement logic of all residual blocks."""

  filters: int  # 'planes': output channels are filters * expansion
  conv: ModuleFactory
  norm: ModuleFactory
  strides: int = 1
  attn: ModuleFactory | None = None
  placement: str = 'standard'
  downsample: str | None = None  # None (identity) | 'conv' | 'avg' | 'pad'
  down_kernel_size: int = 1
  cardinality: int = 1
  base_width: int = 64
  reduce_first: int = 1
  stride_on: str = '3x3'
  act_before_attn: bool = False  # Caffe SE-ResNet basic block applies ReLU before SE
  sk: ModuleFactory | None = None  # selective-kernel conv in place of the (first) 3x3, with its BN-ReLU
  expansion = 1
  projection_norm = True  # BatchNorm after a projection shortcut's conv

  def _attn_at(self, where: str, x: jax.Array) -> jax.Array:
    if self.attn is not None and self.placement == where:
      return self.attn(name='se')(x)
    return x

  def _shortcut(self, x: jax.Array, out_channels: int) -> jax.Array:
    """Identity, or the projection that matches shapes (conv+BN, ResNet-D avg-pool, or zero-pad)."""
    if self.downsample is None:
      return x
    if self.downsample == 'pad':  # He et al. CIFAR option A: subsample, zero-pad channels
      x = x[:, ::self.strides, ::self.strides, :]
      extra = out_channels - x.shape[-1]
      return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    kernel, strides = self.down_kernel_size, self.strides
    if self.downsample == 'avg':
      if strides != 1:
        x = layers.avg_pool_ceil(x, strides)
      kernel, strides = 1, 1
    elif strides == 1:
      kernel = 1
    x = self.conv(out_channels, (kernel, kernel), strides=(strides, strides),
                  padding=layers.same_padding(kernel), name='downsample_conv')(x)
    return self.norm(name='downsample_bn')(x) if self.projection_norm else x

  def _finish(self, y: jax.Array, shortcut: jax.Array, out_channels: int, post_act: bool) -> jax.Array:
    """Standard/identity/post SE placements around the residual sum."""
    if self.act_before_attn and self.attn is not None:  # part of the SE port, gone with SE off
      y = nn.relu(y)
    y = self._attn_at('standard', y)
    shortcut = self._shortcut(shortcut, out_channels)
    shortcut = self._attn_at('identity', shortcut)
    out = y + shortcut
    if post_act:
      out = nn.relu(out)
    return self._attn_at('post', out)

  def _width(self) -> int:
    return int(self.filters * (self.base_width / 64)) * self.cardinality

  def _strides(self, position: str) -> tuple[int, int]:
    s = self.strides if self.stride_on == position else 1
    return (s, s)


class BasicBlock(_Residual):
  """Two 3x3 convs (ResNet-18/34, CIFAR ResNet-20..110)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_channels = self.filters
    y = self._attn_at('pre', x)
    if self.sk is not None:
      y = self.sk(self.filters // self.reduce_first, strides=self.strides, name='conv1')(y)
    else:
      y = self.conv(self.filters // self.reduce_first, (3, 3), strides=(self.strides, self.strides),
                    padding=layers.same_padding(3), name='conv1')(y)
      y = nn.relu(self.norm(name='bn1')(y))
    y = self._attn_at('after_3x3', y)
    y = self.conv(out_channels, (3, 3), padding=layers.same_padding(3), name='conv2')(y)
    y = self.norm(name='bn2', scale_init=nn.initializers.zeros)(y)
    return self._finish(y, x, out_channels, post_act=True)


class Bottleneck(_Residual):
  """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand. `stride_on` picks the Caffe or timm stride."""

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = self._width()
    out_channels = self.filters * self.expansion
    y = self._attn_at('pre', x)
    y = self.conv(width // self.reduce_first, (1, 1), strides=self._strides('1x1'),
                  padding='VALID', name='conv1')(y)
    y = nn.relu(self.norm(name='bn1')(y))
    if self.sk is not None:
      y = self.sk(width, strides=self._strides('3x3')[0], groups=self.cardinality, name='conv2')(y)
    else:
      y = self.conv(width, (3, 3), strides=self._strides('3x3'), padding=layers.same_padding(3),
                    feature_group_count=self.cardinality, name='conv2')(y)
      y = nn.relu(self.norm(name='bn2')(y))
    y = self._attn_at('after_3x3', y)
    y = self.conv(out_channels, (1, 1), padding='VALID', name='conv3')(y)
    y = self.norm(name='bn3', scale_init=nn.initializers.zeros)(y)
    return self._finish(y, x, out_channels, post_act=True)


class PreActBasicBlock(_Residual):
  """Pre-activation basic block (He et al., Identity Mappings; Wide ResNets). A projection shortcut
  is a bare conv on the pre-activated input, as in both papers' code."""

  projection_norm = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_channels = self.filters
    # SE-PRE recalibrates the residual branch only; the identity keeps x (paper Fig. 5c).
    pre = nn.relu(self.norm(name='bn1')(self._attn_at('pre', x)))
    # The projection shortcut sees the pre-activated input, as in the original nets.
    shortcut = x if self.downsample in (None, 'pad') else pre
    y = self.conv(out_channels, (3, 3), strides=(self.strides, self.strides),
                  padding=layers.same_padding(3), name='conv1')(pre)
    y = self._attn_at('after_3x3', y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(out_channels, (3, 3), padding=layers.same_padding(3), name='conv2')(y)
    return self._finish(y, shortcut, out_channels, post_act=False)


class PreActBottleneck(_Residual):
  """Pre-activation bottleneck (ResNet-164 of He et al., Identity Mappings); bare-conv projections."""

  expansion = 4
  projection_norm = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = self._width()
    out_channels = self.filters * self.expansion
    pre = nn.relu(self.norm(name='bn1')(self._attn_at('pre', x)))
    shortcut = x if self.downsample in (None, 'pad') else pre
    y = self.conv(width, (1, 1), padding='VALID', name='conv1')(pre)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(width, (3, 3), strides=(self.strides, self.strides), padding=layers.same_padding(3),
                  feature_group_count=self.cardinality, name='conv2')(y)
    y = self._attn_at('after_3x3', y)
    y = nn.relu(self.norm(name='bn3')(y))
    y = self.conv(out_channels, (1, 1), padding='VALID', name='conv3')(y)
    return self._finish(y, shortcut, out_channels, post_act=False)


_BLOCK_CLASSES = {'basic': BasicBlock, 'bottleneck': Bottleneck,
                  'preact_basic': PreActBasicBlock, 'preact_bottleneck': PreActBottleneck}


def _check(field: str, value: Any, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f'{field}={value!r} is not one of {", ".join(allowed)}')


class ResNet(nn.Module):
  """ResNet / SE-ResNet / SE-ResNeXt / SENet-154 on NHWC images; returns float32 logits.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3).
    block: 'basic' | 'bottleneck' | 'preact_basic' | 'preact_bottleneck'.
    widths: 'planes' per stage (ImageNet 64..512, CIFAR 16..64 times a widen factor).
    stem: 'conv7' (7x7/2), 'deep' (three 3x3, first stride 2), 'tiered' (the deep stem with a
      narrower first conv: timm's 'deep_tiered', 24-32-64 for stem_width 32) or 'cifar' (one 3x3/1,
      no pool).
    stem_width: channels of the first two deep-stem convs (tiered: 3 * (stem_width // 4) and
      stem_width); stem_channels: stem output channels.
    stem_pool: 'pad' (3x3/2 padding 1, timm) or 'ceil' (3x3/2 ceil mode, Caffe / timm legacy).
    stride_on: in bottlenecks, '3x3' (timm, ResNeXt) or '1x1' (Caffe SE-ResNet).
    downsample: shortcut projection, 'conv' (conv+BN; pre-activation blocks: the conv alone),
      'avg' (ResNet-D avg-pool+conv+BN), 'pad' (CIFAR option A, parameter-free).
    down_kernel_size: kernel of strided projection convs (3 for SENet-154).
    cardinality, base_width: ResNeXt groups and width per group; reduce_first: divisor of the
      first conv's width (2 for SENet-154).
    act_before_attn: ReLU before SE in basic blocks (timm legacy_seresnet18/34 quirk).
    selective_kernel: SKConfig or None: a selective-kernel convolution in place of the 3x3 (basic
      blocks: the first one), as timm's SK-ResNets (post-activation blocks only).
    se: SEConfig or None (no SE: the plain baseline).
    drop_rate: dropout before the classifier.
    zero_init_last_bn: start each residual branch's last BN scale at zero (post-act blocks).
    axis_name: mesh axis over which BatchNorm statistics are averaged in training.
    frozen_batch_norm: BatchNorm always normalises with (and keeps) its running statistics, also
      in training (fine-tuning on small batches); dropout still follows `train`.
  """

  stage_sizes: Sequence[int]
  block: str = 'bottleneck'
  num_classes: int = 1000
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'conv7'
  stem_width: int = 64
  stem_channels: int = 64
  stem_pool: str = 'pad'
  stride_on: str = '3x3'
  downsample: str = 'conv'
  down_kernel_size: int = 1
  cardinality: int = 1
  base_width: int = 64
  reduce_first: int = 1
  act_before_attn: bool = False
  selective_kernel: SKConfig | None = None
  se: SEConfig | None = None
  drop_rate: float = 0.0
  zero_init_last_bn: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  axis_name: str | None = None
  frozen_batch_norm: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    _check('block', self.block, BLOCKS)
    _check('stem', self.stem, STEMS)
    _check('stem_pool', self.stem_pool, ('pad', 'ceil'))
    _check('stride_on', self.stride_on, STRIDE_ON)
    _check('downsample', self.downsample, DOWNSAMPLES)
    if self.selective_kernel is not None and self.block.startswith('preact'):
      raise ValueError(f'selective_kernel needs block basic or bottleneck, not {self.block!r}')
    if len(self.widths) != len(self.stage_sizes):
      raise ValueError(f'widths={tuple(self.widths)} needs one entry per stage of stage_sizes={tuple(self.stage_sizes)}')
    if self.se is not None and self.se.stages is not None and len(self.se.stages) != len(self.stage_sizes):
      raise ValueError(f'SE stages={self.se.stages} needs {len(self.stage_sizes)} entries, one per stage')
    if self.num_classes <= 0:
      raise ValueError(f'num_classes={self.num_classes} must be positive')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                             conv_general_dilated=layers.conv_general_dilated)
    norm = batch_norm.for_network(self, train)
    preact = self.block.startswith('preact')
    x = x.astype(self.dtype)
    x = self._stem(x, conv, norm, preact)

    block_cls = _BLOCK_CLASSES[self.block]
    sk = None
    if self.selective_kernel is not None:
      sk = functools.partial(SelectiveKernel, conv=conv, norm=norm, config=self.selective_kernel,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    in_channels = x.shape[-1]
    for stage, (num_blocks, filters) in enumerate(zip(self.stage_sizes, self.widths)):
      attn = None
      if self.se is not None and self.se.in_stage(stage):
        attn = attention.build(self.se, dtype=self.dtype, param_dtype=self.param_dtype, norm=norm)
      for i in range(num_blocks):
        strides = 2 if stage > 0 and i == 0 else 1
        out_channels = filters * block_cls.expansion
        needs_proj = strides != 1 or in_channels != out_channels
        block_norm = norm
        if not self.zero_init_last_bn:
          block_norm = functools.partial(_NormIgnoringScaleInit, norm)
        x = block_cls(
            filters=filters, conv=conv, norm=block_norm, strides=strides, attn=attn,
            placement=self.se.placement if self.se is not None else 'standard',
            downsample=self.downsample if needs_proj else None,
            down_kernel_size=self.down_kernel_size, cardinality=self.cardinality,
            base_width=self.base_width, reduce_first=self.reduce_first, stride_on=self.stride_on,
            act_before_attn=self.act_before_attn, sk=sk, name=f'layer{stage + 1}_{i}')(x)
        in_channels = out_channels

    if preact:
      x = nn.relu(norm(name='head_bn')(x))
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='fc')(x)
    return x.astype(jnp.float32)

  def _stem(self, x, conv, norm, preact: bool) -> jax.Array:
    if self.stem == 'cifar':
      x = conv(self.stem_channels, (3, 3), padding=layers.same_padding(3), name='stem_conv1')(x)
      # Pre-activation nets start their first block with BN-ReLU; no stem BN then.
      return x if preact else nn.relu(norm(name='stem_bn1')(x))
    if self.stem == 'conv7':
      x = conv(self.stem_channels, (7, 7), strides=(2, 2), padding=layers.same_padding(7), name='stem_conv1')(x)
      x = nn.relu(norm(name='stem_bn1')(x))
    else:  # deep / tiered: three 3x3 convs (ResNet-D, SENet-154; timm's ResNet-T)
      first = 3 * (self.stem_width // 4) if self.stem == 'tiered' else self.stem_width
      chans = (first, self.stem_width, self.stem_channels)
      for i, c in enumerate(chans):
        x = conv(c, (3, 3), strides=(2, 2) if i == 0 else (1, 1), padding=layers.same_padding(3),
                 name=f'stem_conv{i + 1}')(x)
        x = nn.relu(norm(name=f'stem_bn{i + 1}')(x))
    return layers.max_pool_stem(x, self.stem_pool)


def _NormIgnoringScaleInit(norm: ModuleFactory, *args, scale_init=None, **kwargs) -> nn.Module:
  """A norm factory that keeps the default (ones) scale init: turns zero-init-last-BN off."""
  del scale_init
  return norm(*args, **kwargs)
