"""Inception-ResNet-v2 (Szegedy et al., Inception-v4, Inception-ResNet, 2017) and SE-Inception-ResNet-v2.

The layout of timm 1.0.31's `inception_resnet_v2` (the port of TF-slim's model): the Inception-v3
stem, Mixed_5b (its pooling branch averages over the input cells only), 10 Block35 (35x35 at 299
px), Mixed_6a, 20 Block17 (17x17), Mixed_7a, 9 Block8 and a final Block8 without ReLU (8x8),
conv2d_7b (1536 channels), BatchNorm epsilon 1e-3. A residual block concatenates its branches,
projects back to the input width with a 1x1 conv that has a bias and no BatchNorm, scales that by
0.17 / 0.10 / 0.20 (the last Block8: 1.0) and adds the input.

SE sits on the residual branch before the scaled sum (paper: SE on the non-identity branch), after
the projection; the three Mixed (reduction) modules have no residual branch and get none.
`se.placement` also takes 'pre' (on the block input, residual branch only), 'post' (after the sum
and ReLU) and 'identity' (on the shortcut), as for the ResNets. SE stages group the residual
blocks by resolution: stage 0 = Block35, 1 = Block17, 2 = Block8 (with the final one).
Parameter names are timm's with block numbers and branch indices joined by '_': `block35_0` is
`repeat.0`, `block17_{i}` `repeat_1.{i}`, `block8_{i}` `repeat_2.{i}`; `branch1_0` is
`branch1.0`; `fc` is `classif`. The smallest input the net takes is 75 px.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from se_flax.models.inception_parts import (Branch, Conv, InceptionModule, InceptionNet, ModuleFactory, Pool,
                                            concat_branches, run_layers)

_MAX = Pool('max', 3, 2)

STEM = (Conv('conv2d_1a', 32, 3, 2), Conv('conv2d_2a', 32, 3), Conv('conv2d_2b', 64, 3, 1, 1), _MAX,
        Conv('conv2d_3b', 80), Conv('conv2d_4a', 192, 3), _MAX)

MIXED_5B = ((Conv('branch0', 96),),
            (Conv('branch1_0', 48), Conv('branch1_1', 64, 5, 1, 2)),
            (Conv('branch2_0', 64), Conv('branch2_1', 96, 3, 1, 1), Conv('branch2_2', 96, 3, 1, 1)),
            (Pool('avg', 3, 1, 1, count_include_pad=False), Conv('branch3_1', 64)))
MIXED_6A = ((Conv('branch0', 384, 3, 2),),
            (Conv('branch1_0', 256), Conv('branch1_1', 256, 3, 1, 1), Conv('branch1_2', 384, 3, 2)),
            (_MAX,))
MIXED_7A = ((Conv('branch0_0', 256), Conv('branch0_1', 384, 3, 2)),
            (Conv('branch1_0', 256), Conv('branch1_1', 288, 3, 2)),
            (Conv('branch2_0', 256), Conv('branch2_1', 288, 3, 1, 1), Conv('branch2_2', 320, 3, 2)),
            (_MAX,))
BLOCK35 = ((Conv('branch0', 32),),
           (Conv('branch1_0', 32), Conv('branch1_1', 32, 3, 1, 1)),
           (Conv('branch2_0', 32), Conv('branch2_1', 48, 3, 1, 1), Conv('branch2_2', 64, 3, 1, 1)))
BLOCK17 = ((Conv('branch0', 192),),
           (Conv('branch1_0', 128), Conv('branch1_1', 160, (1, 7), 1, (0, 3)), Conv('branch1_2', 192, (7, 1), 1, (3, 0))))
BLOCK8 = ((Conv('branch0', 192),),
          (Conv('branch1_0', 192), Conv('branch1_1', 224, (1, 3), 1, (0, 1)), Conv('branch1_2', 256, (3, 1), 1, (1, 0))))

PLACEMENTS = ('standard', 'pre', 'post', 'identity')


class InceptionResidual(nn.Module):
  """Branches concatenated, a 1x1 projection (bias, no BN) back to the input width, scaled, added to
  the input, ReLU (unless `activate` is False); the attention slot at `placement`."""

  branches: tuple[Branch, ...]
  conv_bn: Callable[[Conv], nn.Module]
  conv: ModuleFactory
  scale: float
  activate: bool = True
  attn: ModuleFactory | None = None
  placement: str = 'standard'

  def _attn_at(self, where: str, x: jax.Array) -> jax.Array:
    return self.attn(name='se')(x) if self.attn is not None and self.placement == where else x

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = concat_branches(self._attn_at('pre', x), self.branches, self.conv_bn)
    y = self.conv(x.shape[-1], (1, 1), padding='VALID', use_bias=True, name='conv2d')(y)
    y = self._attn_at('standard', y)
    out = y * self.scale + self._attn_at('identity', x)
    if self.activate:
      out = nn.relu(out)
    return self._attn_at('post', out)


class InceptionResNetV2(InceptionNet):
  """Inception-ResNet-v2 / SE-Inception-ResNet-v2 on NHWC images; returns float32 logits.

  Attributes (besides InceptionNet's):
    depths: Block35, Block17 and Block8 repeats before the final Block8 (10, 20, 9).
    residual_scales: the three repeats' branch scales (0.17, 0.10, 0.20; the final Block8 uses 1).
  """

  depths: tuple[int, int, int] = (10, 20, 9)
  residual_scales: tuple[float, float, float] = (0.17, 0.10, 0.20)

  PLACEMENTS = PLACEMENTS

  def __post_init__(self):
    if len(self.depths) != 3 or any(not isinstance(d, int) or d < 0 for d in self.depths):
      raise ValueError(f'depths={self.depths!r} must be three integers >= 0 (Block35, Block17, Block8 repeats)')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv_bn, conv = self._conv_bn(train), self._conv_factory()
    placement = self.se.placement if self.se is not None else 'standard'

    def residual(branches, stage, scale, name, activate=True):
      return InceptionResidual(branches, conv_bn, conv, scale, activate, attn=self._attn(stage, train),
                               placement=placement, name=name)

    x = run_layers(x.astype(self.dtype), STEM, conv_bn)
    x = InceptionModule(MIXED_5B, conv_bn, name='mixed_5b')(x)
    for i in range(self.depths[0]):
      x = residual(BLOCK35, 0, self.residual_scales[0], f'block35_{i}')(x)
    x = InceptionModule(MIXED_6A, conv_bn, name='mixed_6a')(x)
    for i in range(self.depths[1]):
      x = residual(BLOCK17, 1, self.residual_scales[1], f'block17_{i}')(x)
    x = InceptionModule(MIXED_7A, conv_bn, name='mixed_7a')(x)
    for i in range(self.depths[2]):
      x = residual(BLOCK8, 2, self.residual_scales[2], f'block8_{i}')(x)
    x = residual(BLOCK8, 2, 1.0, 'block8', activate=False)(x)
    x = conv_bn(Conv('conv2d_7b', 1536))(x)
    return self._head(x, train)
