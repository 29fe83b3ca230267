"""BN-Inception (Ioffe & Szegedy, 2015), the Inception net of the SE paper's Table 2, and SE-BN-Inception.

The layout is the Caffe model the SE authors built on, as ported to PyTorch by the `pretrainedmodels`
package (0.7.4, `bninception`): 7x7/2 stem conv, Caffe's ceil-mode 3x3/2 max-pools without padding,
ten Inception modules (3a-3c, 4a-4e, 5a-5b; 3c and 4e halve the resolution), average pools of the
pooling branches counting the padding (/9), and convs with biases (`conv_bias`; the SE authors'
SE-BN-Inception prototxt has none). SE sits on each module's concat, as that prototxt
(`inception_3a_global_pool -> 1x1_down (C/16) -> ReLU -> 1x1_up -> sigmoid -> scale`).

The port's classifier pools with a fixed 7x7 window, so it only takes 223..230 px images (ceil-mode
pools); this net pools globally, equal to it there, and takes any size where 3c and 4e see an even
map (their strided convs and ceil-mode pools must agree): 224 or 256 px, not 299.

SE stages (the `se.stages` mask) group modules by the resolution of their output, the map SE sees:
stage 0 = 3a, 3b (28x28 at 224 px); stage 1 = 3c, 4a-4d (14x14); stage 2 = 4e, 5a, 5b (7x7).
Parameter names follow the port: `inception_3a/1x1/{conv,bn}` is `inception_3a_1x1` and
`inception_3a_1x1_bn`; SE is `inception_3a/se/fc{1,2}`; the classifier `fc` is `last_linear`.
"""

from __future__ import annotations

import jax
import flax.linen as nn

from se_flax.models.inception_parts import Conv, InceptionModule, InceptionNet, Pool, check_names, run_layers

_AVG = Pool('avg', 3, 1, 1, ceil_mode=True, count_include_pad=True)
_MAX_S1 = Pool('max', 3, 1, 1, ceil_mode=True)
_MAX_S2 = Pool('max', 3, 2, 0, ceil_mode=True)

STEM = (Conv('conv1_7x7_s2', 64, 7, 2, 3), _MAX_S2, Conv('conv2_3x3_reduce', 64, 1),
        Conv('conv2_3x3', 192, 3, 1, 1), _MAX_S2)


def _module(c1: int, c3r: int, c3: int, d3r: int, d3: int, proj: int, pool: Pool) -> tuple:
  return ((Conv('1x1', c1),),
          (Conv('3x3_reduce', c3r), Conv('3x3', c3, 3, 1, 1)),
          (Conv('double_3x3_reduce', d3r), Conv('double_3x3_1', d3, 3, 1, 1), Conv('double_3x3_2', d3, 3, 1, 1)),
          (pool, Conv('pool_proj', proj)))


def _reduction(c3r: int, c3: int, d3r: int, d3: int) -> tuple:
  return ((Conv('3x3_reduce', c3r), Conv('3x3', c3, 3, 2, 1)),
          (Conv('double_3x3_reduce', d3r), Conv('double_3x3_1', d3, 3, 1, 1), Conv('double_3x3_2', d3, 3, 2, 1)),
          (_MAX_S2,))


# name -> (SE stage, branches); channel widths of the port (= the BN-Inception paper's Fig. 5).
MODULES = {
    '3a': (0, _module(64, 64, 64, 64, 96, 32, _AVG)),
    '3b': (0, _module(64, 64, 96, 64, 96, 64, _AVG)),
    '3c': (1, _reduction(128, 160, 64, 96)),
    '4a': (1, _module(224, 64, 96, 96, 128, 128, _AVG)),
    '4b': (1, _module(192, 96, 128, 96, 128, 128, _AVG)),
    '4c': (1, _module(160, 128, 160, 128, 160, 128, _AVG)),
    '4d': (1, _module(96, 128, 192, 160, 192, 128, _AVG)),
    '4e': (2, _reduction(128, 192, 192, 256)),
    '5a': (2, _module(352, 192, 320, 160, 224, 128, _AVG)),
    '5b': (2, _module(352, 192, 320, 192, 224, 128, _MAX_S1)),
}


class BNInception(InceptionNet):
  """BN-Inception / SE-BN-Inception on NHWC images; returns float32 logits.

  Attributes (besides InceptionNet's):
    modules: the Inception modules built, in order (default all ten; a subset for small test nets).
  """

  modules: tuple[str, ...] = tuple(MODULES)
  conv_bias: bool = True
  bn_epsilon: float = 1e-5  # torch's default, as the port

  def __post_init__(self):
    check_names('modules', self.modules, tuple(MODULES))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv_bn = self._conv_bn(train)
    x = run_layers(x.astype(self.dtype), STEM, conv_bn)
    for name in self.modules:
      stage, branches = MODULES[name]
      if name in ('3c', '4e') and (x.shape[1] % 2 or x.shape[2] % 2):
        raise ValueError(f'BN-Inception needs an even map into inception_{name}, got {x.shape[1]}x{x.shape[2]} '
                         f'(its stride-2 convs and ceil-mode pool disagree otherwise); 224 or 256 px inputs work')
      x = InceptionModule(branches, conv_bn, attn=self._attn(stage, train), name=f'inception_{name}')(x)
    return self._head(x, train)
