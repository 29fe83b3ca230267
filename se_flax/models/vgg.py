"""VGG with BatchNorm (Simonyan & Zisserman; torchvision / timm `vgg16_bn`), with SE after every conv.

The SE paper (Hu et al., Section 5.1, Table 2) adds BatchNorm after each convolution of VGG-16 and
puts an SE unit after the non-linearity that follows each convolution. Here each conv is one
`ConvBNAct` module (conv with bias, BN, ReLU, then the attention slot), five stages separated by
2x2/2 max-pools (floor mode), then timm's ConvMlp head: fc6 as a 7x7 convolution, fc7 as a 1x1
convolution (both ReLU, dropout after fc6), global average pooling, dropout, and the classifier.

Input sizes: timm feeds fc6 a map of at least 7x7: a smaller map is first average-pooled up to 7
(`F.adaptive_avg_pool2d`, which repeats rows and columns); a larger one gives fc6 more than one
position, averaged before the classifier. Both are reproduced, so any input size of 32 px or more works.

Parameter names (checkpoints and the timm converter rely on them): conv{S}_{J}/{conv,bn,se},
fc6, fc7, fc (the VGG paper's and Caffe's layer names).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from se_flax.models import attention
from se_flax.models import batch_norm
from se_flax.models import layers
from se_flax.models.se import SEConfig
from se_flax.models.slot_checks import check_placement, check_stages

ModuleFactory = Callable[..., nn.Module]
PLACEMENTS = ('standard',)  # SE after each conv's ReLU; there is no residual branch to place it on


def _pool_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging weights of PyTorch's adaptive average pooling along one axis: output i
  averages inputs floor(i * size / out) .. ceil((i + 1) * size / out) - 1."""
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """`F.adaptive_avg_pool2d(x, (out_h, out_w))` on NHWC (any in/out sizes; timm's ConvMlp grows maps)."""
  rows, cols = _pool_matrix(x.shape[1], out_h), _pool_matrix(x.shape[2], out_w)
  x = jnp.einsum('oh,nhwc->nowc', jnp.asarray(rows, x.dtype), x)
  return jnp.einsum('pw,nowc->nopc', jnp.asarray(cols, x.dtype), x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """MaxPool2d(2, 2) (floor mode: an odd last row or column is dropped) as a reshape and a max: the
  windows do not overlap, so no select-and-scatter in the gradient (slow on XLA:CPU)."""
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class ConvBNAct(nn.Module):
  """3x3 conv (with bias, as VGG's), BatchNorm, ReLU, then the attention slot (SE) if any."""

  features: int
  conv: ModuleFactory
  norm: ModuleFactory
  attn: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, (3, 3), padding=layers.same_padding(3), name='conv')(x)
    x = nn.relu(self.norm(name='bn')(x))
    return self.attn(name='se')(x) if self.attn is not None else x


class VGG(nn.Module):
  """VGG-BN / SE-VGG-BN on NHWC images; returns float32 logits.

  Attributes:
    stage_sizes: convs per stage, (2, 2, 3, 3, 3) for VGG-16.
    widths: output channels per stage, (64, 128, 256, 512, 512).
    head_width: fc6/fc7 width (4096); head_kernel: fc6's kernel (7, the 7x7 map of a 224 input).
    se: SEConfig or None (the plain baseline); `se.stages` has one entry per stage.
    drop_rate: dropout after fc6 and before the classifier (timm's ConvMlp and head).
  """

  stage_sizes: Sequence[int] = (2, 2, 3, 3, 3)
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  head_width: int = 4096
  head_kernel: int = 7
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
    check_placement(self.se, PLACEMENTS, 'VGG')
    check_stages(self.se, len(self.stage_sizes))
    if self.num_classes <= 0:
      raise ValueError(f'num_classes={self.num_classes} must be positive')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                             conv_general_dilated=layers.conv_general_dilated)
    norm = batch_norm.for_network(self, train)
    x = x.astype(self.dtype)
    for stage, (num_convs, width) in enumerate(zip(self.stage_sizes, self.widths)):
      attn = None
      if self.se is not None and self.se.in_stage(stage):
        attn = attention.build(self.se, dtype=self.dtype, param_dtype=self.param_dtype, norm=norm)
      for j in range(num_convs):
        x = ConvBNAct(width, conv, norm, attn, name=f'conv{stage + 1}_{j + 1}')(x)
      x = max_pool_2x2(x)

    k = self.head_kernel
    if x.shape[1] < k or x.shape[2] < k:  # timm's ConvMlp: grow small maps to the kernel size
      x = adaptive_avg_pool(x, max(k, x.shape[1]), max(k, x.shape[2]))
    x = nn.relu(conv(self.head_width, (k, k), padding='VALID', name='fc6')(x))
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.relu(conv(self.head_width, (1, 1), padding='VALID', name='fc7')(x))
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='fc')(x)
    return x.astype(jnp.float32)
