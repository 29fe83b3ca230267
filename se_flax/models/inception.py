"""Inception-v3 (Szegedy et al., Rethinking the Inception Architecture, 2016) and SE-Inception-v3.

The layout of timm 1.0.31's `inception_v3` (torchvision's Inception3 without the auxiliary
classifier): a stem of 'valid' 3x3 convs (the first stride 2) and 3x3/2 max-pools without padding,
eleven Mixed modules (5b-5d at 35x35, 6a-6e at 17x17, 7a-7c at 8x8 for 299 px), pooling branches
averaging over 3x3 windows that count the zero padding (/9), BatchNorm epsilon 1e-3, no conv biases.
SE sits on each Mixed module's output (the concat), as the SE paper does for Inception (Fig. 2).

SE stages (the `se.stages` mask) group modules by the resolution of their output, the map SE sees:
stage 0 = Mixed_5b-5d; stage 1 = Mixed_6a-6e (6a halves the resolution); stage 2 = Mixed_7a-7c.
Parameter names are timm's (`Mixed_5b/branch1x1/{conv,bn}`, `Conv2d_1a_3x3/...`, `fc`); SE is
`Mixed_5b/se/fc{1,2}`. The smallest input the stem and the strided modules take is 75 px.
"""

from __future__ import annotations

import jax
import flax.linen as nn

from se_flax.models.inception_parts import Conv, Fork, InceptionModule, InceptionNet, Pool, check_names, run_layers

_MAX = Pool('max', 3, 2)
_AVG = Pool('avg', 3, 1, 1, count_include_pad=True)

STEM = (Conv('Conv2d_1a_3x3', 32, 3, 2), Conv('Conv2d_2a_3x3', 32, 3), Conv('Conv2d_2b_3x3', 64, 3, 1, 1), _MAX,
        Conv('Conv2d_3b_1x1', 80), Conv('Conv2d_4a_3x3', 192, 3), _MAX)


def _a(pool_features: int) -> tuple:
  return ((Conv('branch1x1', 64),),
          (Conv('branch5x5_1', 48), Conv('branch5x5_2', 64, 5, 1, 2)),
          (Conv('branch3x3dbl_1', 64), Conv('branch3x3dbl_2', 96, 3, 1, 1), Conv('branch3x3dbl_3', 96, 3, 1, 1)),
          (_AVG, Conv('branch_pool', pool_features)))


_B = ((Conv('branch3x3', 384, 3, 2),),
      (Conv('branch3x3dbl_1', 64), Conv('branch3x3dbl_2', 96, 3, 1, 1), Conv('branch3x3dbl_3', 96, 3, 2)),
      (_MAX,))


def _c(c7: int) -> tuple:
  return ((Conv('branch1x1', 192),),
          (Conv('branch7x7_1', c7), Conv('branch7x7_2', c7, (1, 7), 1, (0, 3)),
           Conv('branch7x7_3', 192, (7, 1), 1, (3, 0))),
          (Conv('branch7x7dbl_1', c7), Conv('branch7x7dbl_2', c7, (7, 1), 1, (3, 0)),
           Conv('branch7x7dbl_3', c7, (1, 7), 1, (0, 3)), Conv('branch7x7dbl_4', c7, (7, 1), 1, (3, 0)),
           Conv('branch7x7dbl_5', 192, (1, 7), 1, (0, 3))),
          (_AVG, Conv('branch_pool', 192)))


_D = ((Conv('branch3x3_1', 192), Conv('branch3x3_2', 320, 3, 2)),
      (Conv('branch7x7x3_1', 192), Conv('branch7x7x3_2', 192, (1, 7), 1, (0, 3)),
       Conv('branch7x7x3_3', 192, (7, 1), 1, (3, 0)), Conv('branch7x7x3_4', 192, 3, 2)),
      (_MAX,))

_E = ((Conv('branch1x1', 320),),
      (Conv('branch3x3_1', 384),
       Fork((Conv('branch3x3_2a', 384, (1, 3), 1, (0, 1)), Conv('branch3x3_2b', 384, (3, 1), 1, (1, 0))))),
      (Conv('branch3x3dbl_1', 448), Conv('branch3x3dbl_2', 384, 3, 1, 1),
       Fork((Conv('branch3x3dbl_3a', 384, (1, 3), 1, (0, 1)), Conv('branch3x3dbl_3b', 384, (3, 1), 1, (1, 0))))),
      (_AVG, Conv('branch_pool', 192)))

# name -> (SE stage, branches).
MODULES = {
    '5b': (0, _a(32)), '5c': (0, _a(64)), '5d': (0, _a(64)),
    '6a': (1, _B), '6b': (1, _c(128)), '6c': (1, _c(160)), '6d': (1, _c(160)), '6e': (1, _c(192)),
    '7a': (2, _D), '7b': (2, _E), '7c': (2, _E),
}


class InceptionV3(InceptionNet):
  """Inception-v3 / SE-Inception-v3 on NHWC images; returns float32 logits.

  Attributes (besides InceptionNet's):
    modules: the Mixed modules built, in order (default all eleven; a subset for small test nets).
  """

  modules: tuple[str, ...] = tuple(MODULES)

  def __post_init__(self):
    check_names('modules', self.modules, tuple(MODULES))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv_bn = self._conv_bn(train)
    x = run_layers(x.astype(self.dtype), STEM, conv_bn)
    for name in self.modules:
      stage, branches = MODULES[name]
      x = InceptionModule(branches, conv_bn, attn=self._attn(stage, train), name=f'Mixed_{name}')(x)
    return self._head(x, train)
