"""What the Inception networks share: the conv-BN-ReLU unit, layer specs as data, the module that
concatenates parallel branches, PyTorch's pooling conventions, and a base class with the fields,
the SE slot and the classifier head of every Inception network.

An Inception module is data: a tuple of branches, each a tuple of layers (`Conv`, `Pool`, or
`Fork`, parallel convs concatenated, as in Inception-v3's widest modules). `concat_branches` runs
them inside any module, so the parameter names are the specs' names (ideally the reference port's
names). SE sits on a module's output (Inception) or on a residual branch (Inception-ResNet); the
networks group their modules into stages by the resolution of the map SE sees, the module's
output, as a ResNet stage opens with its strided block.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from se_flax.models import attention
from se_flax.models import batch_norm
from se_flax.models import layers
from se_flax.models.se import SEConfig

ModuleFactory = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class Conv:
  """A conv-BN-ReLU unit: `features` at width 1, kernel (h, w), stride, symmetric zero padding
  (h, w) as PyTorch's Conv2d(padding=...); 0 is 'valid'."""

  name: str
  features: int
  kernel: int | tuple[int, int] = 1
  stride: int = 1
  padding: int | tuple[int, int] = 0


@dataclasses.dataclass(frozen=True)
class Pool:
  """A pooling layer with PyTorch's conventions: ceil_mode (Caffe's pools) and, for averages,
  whether the zero padding counts in the divisor (count_include_pad)."""

  kind: str  # 'max' | 'avg'
  window: int = 3
  stride: int = 1
  padding: int = 0
  ceil_mode: bool = False
  count_include_pad: bool = True


@dataclasses.dataclass(frozen=True)
class Fork:
  """Parallel convs on the same input, concatenated (Inception-v3's 1x3 / 3x1 pairs)."""

  convs: tuple[Conv, ...]


Layer = Union[Conv, Pool, Fork]
Branch = tuple[Layer, ...]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _pool_pads(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> tuple[int, int, int]:
  """(low pad, high pad, output size) of a PyTorch pool along one axis. Ceil mode adds windows
  that overhang the padded input, except one that would start in the right padding."""
  span = size + 2 * padding - window
  if ceil_mode:
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
      out -= 1
  else:
    out = span // stride + 1
  high = max(padding, (out - 1) * stride + window - size - padding)
  return padding, high, out


def _windows(x: jax.Array, window: int, stride: int, out: tuple[int, int]) -> list[jax.Array]:
  """The window*window strided slices whose elementwise reduction is the pool (cheap gradients on
  CPU, as layers.max_pool_stem)."""
  return [x[:, i:i + stride * (out[0] - 1) + 1:stride, j:j + stride * (out[1] - 1) + 1:stride, :]
          for i in range(window) for j in range(window)]


def pool(x: jax.Array, spec: Pool) -> jax.Array:
  """`spec` on an NHWC map, equal to torch's MaxPool2d / AvgPool2d with the same arguments."""
  (hl, hh, ho), (wl, wh, wo) = (_pool_pads(n, spec.window, spec.stride, spec.padding, spec.ceil_mode)
                                for n in x.shape[1:3])
  pads = ((0, 0), (hl, hh), (wl, wh), (0, 0))
  if spec.kind == 'max':
    padded = jnp.pad(x, pads, constant_values=-jnp.inf)
    return functools.reduce(jnp.maximum, _windows(padded, spec.window, spec.stride, (ho, wo)))
  if spec.kind != 'avg':
    raise ValueError(f'pool kind={spec.kind!r} is not one of max, avg')
  total = functools.reduce(jnp.add, _windows(jnp.pad(x, pads), spec.window, spec.stride, (ho, wo)))
  # Divisor per output position (static): the window's cells inside the input, plus the explicit
  # padding when count_include_pad (never the ceil-mode overhang), as torch counts.
  p = spec.padding if spec.count_include_pad else 0
  inside = np.pad(np.ones((1, x.shape[1] + 2 * p, x.shape[2] + 2 * p, 1), np.float32),
                  ((0, 0), (hl - p, hh - p), (wl - p, wh - p), (0, 0)))
  counts = functools.reduce(np.add, _windows(inside, spec.window, spec.stride, (ho, wo)))
  return total / jnp.asarray(counts, x.dtype)


class ConvBN(nn.Module):
  """Conv, BatchNorm, ReLU: the unit every Inception network is built of (submodules `conv`, `bn`,
  as timm's ConvNormAct). The conv has a bias where the reference has one (the Caffe BN-Inception port)."""

  features: int
  kernel: tuple[int, int]
  conv: ModuleFactory
  norm: ModuleFactory
  strides: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (ph, pw) = self.padding
    x = self.conv(self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)),
                  use_bias=self.use_bias, name='conv')(x)
    return nn.relu(self.norm(name='bn')(x))


def run_layers(x: jax.Array, branch: Branch, conv_bn: Callable[[Conv], nn.Module]) -> jax.Array:
  """One branch, in the calling module's scope (its convs are named by their specs)."""
  for layer in branch:
    if isinstance(layer, Conv):
      x = conv_bn(layer)(x)
    elif isinstance(layer, Pool):
      x = pool(x, layer)
    else:
      x = jnp.concatenate([conv_bn(c)(x) for c in layer.convs], axis=-1)
  return x


def concat_branches(x: jax.Array, branches: tuple[Branch, ...], conv_bn: Callable[[Conv], nn.Module]) -> jax.Array:
  """The Inception module: every branch on `x`, concatenated along channels in order."""
  return jnp.concatenate([run_layers(x, b, conv_bn) for b in branches], axis=-1)


class InceptionModule(nn.Module):
  """Parallel branches concatenated, then the attention slot on the concat (SE-Inception, paper Fig. 2)."""

  branches: tuple[Branch, ...]
  conv_bn: Callable[[Conv], nn.Module]
  attn: ModuleFactory | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = concat_branches(x, self.branches, self.conv_bn)
    return y if self.attn is None else self.attn(name='se')(y)


def _check(field: str, value: Any, allowed) -> None:
  if value not in allowed:
    raise ValueError(f'{field}={value!r} is not one of {", ".join(map(str, allowed))}')


class InceptionNet(nn.Module):
  """Fields and pieces shared by BN-Inception, Inception-v3 and Inception-ResNet-v2.

  Attributes:
    se: SEConfig or None (no SE: the plain baseline); `se.stages` has NUM_STAGES entries.
    num_classes: classifier outputs.
    width: multiplier on every conv's channels (1: the published net; small for test variants).
    conv_bias: biases in the conv-BN-ReLU units' convs (the Caffe BN-Inception port has them).
    drop_rate: dropout before the classifier.
    bn_momentum, bn_epsilon: BatchNorm running-average momentum (flax's; torch's 0.1 is 0.9) and epsilon.
    axis_name: mesh axis over which BatchNorm statistics are averaged in training.
    frozen_batch_norm: BatchNorm always normalises with (and keeps) its running statistics.
  """

  se: SEConfig | None = None
  num_classes: int = 1000
  width: float = 1.0
  conv_bias: bool = False
  drop_rate: float = 0.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  axis_name: str | None = None
  frozen_batch_norm: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  NUM_STAGES = 3
  PLACEMENTS = ('standard',)  # SE placements the network has (SEConfig.placement)

  def __post_init__(self):
    if self.se is not None:
      if self.se.placement not in self.PLACEMENTS:
        raise ValueError(f'SE placement={self.se.placement!r} has no meaning in {type(self).__name__}; '
                         f'allowed: {", ".join(self.PLACEMENTS)}')
      if self.se.stages is not None and len(self.se.stages) != self.NUM_STAGES:
        raise ValueError(f'SE stages={self.se.stages} needs {self.NUM_STAGES} entries, one per stage')
    if not self.width > 0:
      raise ValueError(f'width={self.width} must be positive')
    if self.num_classes <= 0:
      raise ValueError(f'num_classes={self.num_classes} must be positive')
    super().__post_init__()

  def _conv_factory(self) -> ModuleFactory:
    return functools.partial(nn.Conv, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                             conv_general_dilated=layers.conv_general_dilated)

  def _norm(self, train: bool) -> ModuleFactory:
    """The network's BatchNorm, with `train` resolved (also handed to the attention slot)."""
    return batch_norm.for_network(self, train)

  def _conv_bn(self, train: bool) -> Callable[[Conv], nn.Module]:
    """spec -> its ConvBN module (channels times `width`), with `train` resolved."""
    return functools.partial(_make_conv_bn, conv=self._conv_factory(), norm=self._norm(train),
                             use_bias=self.conv_bias, width=self.width)

  def _attn(self, stage: int, train: bool) -> ModuleFactory | None:
    """The attention slot of `stage` (None where SE is off), with the network's BatchNorm: kinds
    with BatchNorm (cbam, srm, ge theta) sync over `axis_name` and honour frozen statistics."""
    if self.se is None or not self.se.in_stage(stage):
      return None
    return attention.build(self.se, dtype=self.dtype, param_dtype=self.param_dtype, norm=self._norm(train))

  def _head(self, x: jax.Array, train: bool) -> jax.Array:
    """Global average pool, dropout, the classifier `fc`; float32 logits."""
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    self.sow('intermediates', 'pre_logits', x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='fc')(x)
    return x.astype(jnp.float32)


def scaled(features: int, width: float) -> int:
  """Channels at `width` (at least 1)."""
  return max(1, int(math.floor(features * width + 1e-9)))


def _make_conv_bn(spec: Conv, *, conv: ModuleFactory, norm: ModuleFactory, use_bias: bool, width: float) -> nn.Module:
  return ConvBN(scaled(spec.features, width), _pair(spec.kernel), conv=conv, norm=norm,
                strides=_pair(spec.stride), padding=_pair(spec.padding), use_bias=use_bias, name=spec.name)


def check_names(field: str, names, allowed) -> None:
  """A one-line error for a module name the network does not have."""
  for n in names:
    _check(f'{field} entry', n, allowed)
