"""Channel-attention kinds beyond SE for the attention slot (`se_flax.models.attention`).

Each module takes the slot's `SEConfig` (its kind's settings), works on an NHWC map and returns
the same shape. Kinds whose excitation is one gate per channel sow it as `intermediates/gate`
(N, C), for excitation analysis: se, ese, eca, srm, fca, gc (with a 'scale' fusion), cbam (its
channel gate), ge (global extent). None: gc with gc_fuse='add' (it adds, it does not gate), ge
with a finite extent (its gates vary over space).

Module names follow timm 1.0.31's where timm has the kind (`conv`, `fc`, `conv_attn`,
`mlp_scale/fc1`, `channel/fc1`, `spatial/conv/bn`, ...), so `se_flax.weights.convert` maps timm
state dicts with its generic rules. Kinds with BatchNorm (cbam, srm, ge 'theta'/'theta_plus') use
the network's `norm` factory (train/eval mode, synchronised statistics); without one they normalise
with batch statistics exactly when 'batch_stats' is mutable (a training step), as a network's own would.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from se_flax.models.se import _GATE_FNS, SEConfig, reduced_channels

ModuleFactory = Callable[..., nn.Module]


def _gap(x: jax.Array) -> jax.Array:
  """Global average pool (N, H, W, C) -> (N, C), accumulated in float32."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)


def _rescale(x: jax.Array, gate: jax.Array) -> jax.Array:
  """x * gate for a per-channel (N, C) or spatial (N, h, w, C) gate broadcast over x."""
  if gate.ndim == 2:
    gate = gate[:, None, None, :]
  return x * gate.astype(x.dtype)


class _Kind(nn.Module):
  """Fields shared by the slot's modules."""

  config: SEConfig = SEConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  norm: ModuleFactory | None = None  # the network's BatchNorm factory, `train` resolved

  def _dense(self, features: int, name: str, use_bias: bool = True, **kwargs) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                    **kwargs)

  def _batch_norm(self, name: str) -> nn.Module:
    if self.norm is not None:
      return self.norm(name=name)
    return nn.BatchNorm(use_running_average=not self.is_mutable_collection('batch_stats'), momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _gate(self, z: jax.Array) -> jax.Array:
    return _GATE_FNS[self.config.gate](z)


# ----------------------------------------------------------------------------------------------
# ESE

class EffectiveSE(_Kind):
  """Effective SE (Lee & Park, CenterMask / VoVNet-v2, arXiv 1911.06667, the eSE module; timm
  EffectiveSEModule).

  A_eSE(X) = gate(W_C(F_gap(X))), X_refine = A_eSE * X: one biased FC C -> C instead of SE's two with a
  bottleneck, which keeps every channel's information; gate hard-sigmoid (relu6(x + 3) / 6).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self._dense(x.shape[-1], 'fc', self.config.use_bias)(_gap(x).astype(self.dtype))
    s = self._gate(s)
    self.sow('intermediates', 'gate', s)
    return _rescale(x, s)


# ----------------------------------------------------------------------------------------------
# ECA

def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
  """ECA-Net's adaptive kernel size k = psi(C) = |log2(C) / gamma + beta / gamma|_odd, the nearest odd
  number (truncate, then the next odd one; ties at even integers go up), at least 3, exactly as
  timm 1.0.31's EcaModule: int(abs(log2(C) + beta) / gamma)."""
  t = int(abs(math.log(channels, 2) + beta) / gamma)
  return max(t if t % 2 else t + 1, 3)


class ECA(_Kind):
  """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv 1910.03151).

  omega = gate(C1D_k(GAP(x))), out = x * omega: a 1D convolution without bias across the pooled
  channel vector, k = psi(C) from the channel count (`eca_kernel_size`), zero padding (k - 1) / 2;
  out = x * omega. k weights a block, no dimensionality reduction.
  """

  config: SEConfig = SEConfig(kind='eca')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    k = eca_kernel_size(x.shape[-1], cfg.eca_gamma, cfg.eca_beta)
    s = _gap(x).astype(self.dtype)  # (N, C)
    # Channels as the 1D spatial axis, one feature: torch's Conv1d(1, 1, k) over (N, 1, C).
    s = nn.Conv(1, (k,), padding=((k // 2, k // 2),), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(s[..., None])[..., 0]
    s = self._gate(s)
    self.sow('intermediates', 'gate', s)
    return _rescale(x, s)


# ----------------------------------------------------------------------------------------------
# Gather-Excite

def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour interpolation of (N, h, w, C) to size (H, W): output row i reads input row
  floor(i * h / H) (PyTorch's F.interpolate(mode='nearest'))."""
  (h, w), (out_h, out_w) = x.shape[1:3], size
  rows = (np.arange(out_h) * h) // out_h
  cols = (np.arange(out_w) * w) // out_w
  return x[:, rows][:, :, cols]


class GatherExcite(_Kind):
  """Gather-Excite (Hu, Shen, Albanie, Sun, Vedaldi, NeurIPS 2018, arXiv 1810.12348), Section 3.

  out = x * gate(interp(xi_G(x))): the gather xi_G pools each channel over cells of extent e
  (ge_extent; 0 = the whole map, one value a channel), the excite resizes the gathered map back to
  H x W by nearest-neighbour interpolation and gates x with it. Variants (ge_variant):
    'theta_minus' (GE-theta-minus, no parameters): average pooling, window 2e - 1, stride e,
      padding e - 1 without counting the padding (ceil(H / e) cells); global: the mean.
    'theta' (GE-theta): log2(e) depthwise 3x3 stride-2 convolutions, each followed by BatchNorm,
      ReLU between them; global: one depthwise convolution whose kernel is the whole map (the
      input size is then fixed at init), then BatchNorm.
    'theta_plus' (GE-theta-plus): GE-theta's gather, then SE's excite MLP (C -> C // r -> C, biased
      FCs, ReLU) before the gate.
  The convolution layout (BatchNorm after each depthwise conv, ReLU between) is timm 1.0.31's
  GatherExcite, whose own module does not build inside timm's ResNet.
  """

  config: SEConfig = SEConfig(kind='ge')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    size, channels, e = x.shape[1:3], x.shape[-1], cfg.ge_extent
    if cfg.ge_variant == 'theta_minus':
      if e == 0:
        g = _gap(x).astype(self.dtype)[:, None, None, :]
      else:
        g = nn.avg_pool(x, (2 * e - 1, 2 * e - 1), strides=(e, e), padding=((e - 1, e - 1), (e - 1, e - 1)),
                        count_include_pad=False)
    else:
      depthwise = lambda kernel, strides, padding, name: nn.Conv(
          channels, kernel, strides=strides, padding=padding, feature_group_count=channels, use_bias=False,
          dtype=self.dtype, param_dtype=self.param_dtype, name=name)
      if e == 0:
        g = depthwise(tuple(size), (1, 1), 'VALID', 'gather_conv1')(x)
        g = self._batch_norm('gather_bn1')(g)
      else:
        steps = int(math.log2(e))
        g = x
        for i in range(1, steps + 1):
          g = depthwise((3, 3), (2, 2), ((1, 1), (1, 1)), f'gather_conv{i}')(g)
          g = self._batch_norm(f'gather_bn{i}')(g)
          if i < steps:
            g = nn.relu(g)
      if cfg.ge_variant == 'theta_plus':
        hidden = reduced_channels(channels, cfg.reduction, 'floor')
        g = self._dense(channels, 'fc2')(nn.relu(self._dense(hidden, 'fc1')(g)))
    g = self._gate(g)
    if g.shape[1:3] == (1, 1):
      g = g[:, 0, 0, :]
      self.sow('intermediates', 'gate', g)
    else:
      g = nearest_resize(g, size)
    return _rescale(x, g)


# ----------------------------------------------------------------------------------------------
# Global context

class _ConvMlp(_Kind):
  """GC's transform: 1x1 conv C -> C/r, LayerNorm, ReLU, 1x1 conv -> C (timm ConvMlp with
  LayerNorm2d, eps 1e-6), as Dense layers on the (N, C) context."""

  hidden: int = 1
  zero_last: bool = False

  @nn.compact
  def __call__(self, context: jax.Array) -> jax.Array:
    h = self._dense(self.hidden, 'fc1')(context)
    h = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=self.dtype, param_dtype=self.param_dtype,
                     name='norm')(h)
    init = nn.initializers.zeros if self.zero_last else nn.initializers.lecun_normal()
    return self._dense(context.shape[-1], 'fc2', kernel_init=init)(nn.relu(h))


class GlobalContext(_Kind):
  """Global context block (Cao et al., GCNet, arXiv 1904.11492; timm GlobalContext).

  Context modelling by attention pooling: alpha = softmax_j(W_k x_j) over the H*W positions,
  c = sum_j alpha_j x_j; transform t(c) = W_v2 ReLU(LN(W_v1 c)) with a bottleneck C / r; fusion
  (gc_fuse): 'add' (the paper's GC block: z_i = x_i + t(c), its last FC starting at zero so the block
  starts as the identity), 'scale' (x * gate(t(c)), timm's default) or 'both' (scale, then add,
  separate transforms).
  """

  config: SEConfig = SEConfig(kind='gc')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    n, h, w, c = x.shape
    logits = self._dense(1, 'conv_attn', kernel_init=nn.initializers.variance_scaling(
        2.0, 'fan_in', 'normal'))(x)  # (N, H, W, 1), W_k with a bias as in timm
    alpha = jax.nn.softmax(logits.reshape(n, h * w).astype(jnp.float32), axis=-1)
    context = jnp.einsum('nk,nkc->nc', alpha, x.reshape(n, h * w, c).astype(jnp.float32)).astype(self.dtype)
    hidden = reduced_channels(c, cfg.reduction, cfg.rounding)
    mlp = lambda name, zero_last=False: _ConvMlp(cfg, self.dtype, self.param_dtype, hidden=hidden,
                                                 zero_last=zero_last, name=name)
    if cfg.gc_fuse in ('scale', 'both'):
      s = self._gate(mlp('mlp_scale')(context))
      self.sow('intermediates', 'gate', s)
      x = _rescale(x, s)
    if cfg.gc_fuse in ('add', 'both'):
      x = x + mlp('mlp_add', zero_last=True)(context)[:, None, None, :].astype(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------
# CBAM

class _CbamChannel(_Kind):
  """CBAM's channel attention (Eq. 2): M_c = gate(MLP(AvgPool(F)) + MLP(MaxPool(F))), shared MLP."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    channels = x.shape[-1]
    hidden = reduced_channels(channels, cfg.reduction, cfg.rounding)
    pooled = jnp.stack([_gap(x), jnp.max(x, axis=(1, 2)).astype(jnp.float32)]).astype(self.dtype)  # (2, N, C)
    z = self._dense(channels, 'fc2', cfg.use_bias)(nn.relu(self._dense(hidden, 'fc1', cfg.use_bias)(pooled)))
    return self._gate(z[0] + z[1])


class _ConvNorm(_Kind):
  """A bias-free convolution and its BatchNorm (timm ConvNormAct without the activation)."""

  features: int = 1
  kernel_size: int = 7

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), padding=((k // 2, k // 2), (k // 2, k // 2)), use_bias=False,
                dtype=self.dtype, param_dtype=self.param_dtype, name='conv')(x)
    return self._batch_norm('bn')(x)


class _CbamSpatial(_Kind):
  """CBAM's spatial attention (Eq. 3) on the channel-refined map."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    desc = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True, dtype=jnp.float32).astype(x.dtype),
                            jnp.max(x, axis=-1, keepdims=True)], axis=-1)  # (N, H, W, 2): [mean, max]
    z = _ConvNorm(self.config, self.dtype, self.param_dtype, self.norm, features=1,
                  kernel_size=self.config.cbam_kernel_size, name='conv')(desc)
    return x * self._gate(z).astype(x.dtype)


class CBAM(_Kind):
  """Convolutional Block Attention Module (Woo et al., ECCV 2018, arXiv 1807.06521; timm CbamModule).

  F' = M_c(F) * F, then F'' = M_s(F') * F' (Eq. 1). Channel attention M_c (Eq. 2): average- and
  max-pooled descriptors through one shared MLP (C -> C/r -> C), summed, gated. Spatial attention
  M_s (Eq. 3): gate(BN(conv_7x7([mean_c(F'); max_c(F')]))), one map for all channels; the BatchNorm
  is in the authors' code and timm's. Sown gate: M_c (the spatial map has no per-channel gate).
  """

  config: SEConfig = SEConfig(kind='cbam')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate = _CbamChannel(self.config, self.dtype, self.param_dtype, self.norm, name='channel')(x)
    self.sow('intermediates', 'gate', gate)
    x = _rescale(x, gate)
    y = _CbamSpatial(self.config, self.dtype, self.param_dtype, self.norm, name='spatial')(x)
    return y


# ----------------------------------------------------------------------------------------------
# SRM

SRM_EPSILON = 1e-5  # inside the standard deviation's square root, as the authors' code


class SRM(_Kind):
  """Style-based Recalibration Module (Lee, Kim, Nam, ICCV 2019, arXiv 1903.10829), Section 3.

  Style pooling: t = [mu, sigma] per channel, mu the spatial mean and
  sigma = sqrt(mean((x - mu)^2) + eps) (the paper's 1/HW variance; the authors' code uses the
  unbiased one). Style integration: z = w_mu * mu + w_sigma * sigma (the channel-wise
  fully connected layer, `cfc` (C, 2), starting at zero as in the authors' code), BatchNorm,
  g = gate(z); out = x * g. 4C parameters a block (cfc and BatchNorm's scale and bias).
  """

  config: SEConfig = SEConfig(kind='srm')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    mu = jnp.mean(xf, axis=(1, 2))
    sigma = jnp.sqrt(jnp.mean(jnp.square(xf - mu[:, None, None, :]), axis=(1, 2)) + SRM_EPSILON)
    cfc = self.param('cfc', nn.initializers.zeros, (x.shape[-1], 2), self.param_dtype)
    z = (mu * cfc[:, 0] + sigma * cfc[:, 1]).astype(self.dtype)
    s = self._gate(self._batch_norm('bn')(z))
    self.sow('intermediates', 'gate', s)
    return _rescale(x, s)


# ----------------------------------------------------------------------------------------------
# FcaNet

# cfzd/FcaNet model/layer.py `get_freq_indices`: frequencies (u, v) of a 7x7 DCT, in the order of
# the paper's single-frequency ImageNet ranking ('top'), lowest first ('low'), worst first ('bot').
_FCA_ORDERS = {
    'top': ((0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
            (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)),
    'low': ((0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
            (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3)),
    'bot': ((6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
            (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3)),
}
FCA_GRID = 7  # the frequency tables index a 7x7 DCT


def fca_frequencies(selection: str) -> list[tuple[int, int]]:
  """The (u, v) frequencies of a selection such as 'top16', on the 7x7 grid."""
  us, vs = _FCA_ORDERS[selection[:3]]
  n = int(selection[3:])
  return list(zip(us[:n], vs[:n]))


def dct_basis(pos: np.ndarray, freq: int, size: int) -> np.ndarray:
  """Orthonormal 1D DCT-II basis cos(pi * freq * (pos + 1/2) / size) / sqrt(size), times sqrt(2) for
  freq > 0 (FcaNet's DCT basis, normalised as cfzd/FcaNet's `build_filter`)."""
  b = np.cos(np.pi * freq * (pos + 0.5) / size) / np.sqrt(size)
  return b * np.sqrt(2.0) if freq else b


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """(out, size) averaging matrix of PyTorch's adaptive_avg_pool1d: cell i averages inputs
  floor(i * size / out) .. ceil((i + 1) * size / out) - 1."""
  m = np.zeros((out, size))
  for i in range(out):
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def fca_filter(height: int, width: int, channels: int, selection: str) -> np.ndarray:
  """(H, W, C) weights whose sum against an (H, W, C) map is FcaNet's multi-spectral squeeze.

  The channels split into len(selection) equal groups, group i takes the 2D DCT coefficient at
  frequency (u_i, v_i) (FcaNet's multi-spectral squeeze). The DCT grid is the map itself when both sides are
  multiples of 7 (ImageNet ResNets: 56, 28, 14, 7), the 7x7 frequencies scaled by side // 7 so they
  mean the same on every grid (cfzd/FcaNet); otherwise the map is first averaged to a 7x7 grid
  (adaptive average pooling, FcaNet's own rule for other sizes), folded into the weights here.
  """
  freqs = fca_frequencies(selection)
  if channels % len(freqs):
    raise ValueError(f'fca_freq={selection!r} splits the channels into {len(freqs)} groups; '
                     f'{channels} channels are not a multiple of {len(freqs)}')
  on_grid = height % FCA_GRID == 0 and width % FCA_GRID == 0
  gh, gw = (height, width) if on_grid else (FCA_GRID, FCA_GRID)
  group = channels // len(freqs)
  weights = np.zeros((gh, gw, channels))
  for i, (u, v) in enumerate(freqs):
    u, v = u * (gh // FCA_GRID), v * (gw // FCA_GRID)
    basis = np.outer(dct_basis(np.arange(gh), u, gh), dct_basis(np.arange(gw), v, gw))
    weights[:, :, i * group:(i + 1) * group] = basis[:, :, None]
  if not on_grid:
    weights = np.einsum('ih,jw,ijc->hwc', adaptive_pool_matrix(height, gh), adaptive_pool_matrix(width, gw),
                        weights)
  return weights


class FcaAttention(_Kind):
  """Multi-spectral channel attention (Qin, Zhang, Wu, Li, FcaNet, ICCV 2021, arXiv 2012.11879).

  Squeeze: Freq = cat([Freq^0, ..., Freq^{n-1}]), Freq^i = 2DDCT^{u_i, v_i}(X^i) = sum_{h, w} X^i_{:, h, w}
  B^{u_i, v_i}_{h, w}, each channel group's DCT coefficient at
  one selected frequency (`fca_filter`; frequency (0, 0) alone is GAP times sqrt(HW)); excite as
  SE: ms_att = gate(fc2(ReLU(fc1(Freq)))), FCs without biases (C -> C // r -> C), out = x * ms_att.
  The DCT weights are constants, not parameters.
  """

  config: SEConfig = SEConfig(kind='fca')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    h, w, c = x.shape[1:]
    weights = jnp.asarray(fca_filter(h, w, c, cfg.fca_freq), jnp.float32)
    s = jnp.einsum('nhwc,hwc->nc', x.astype(jnp.float32), weights).astype(self.dtype)
    hidden = reduced_channels(c, cfg.reduction, 'floor')
    s = self._dense(c, 'fc2', use_bias=False)(nn.relu(self._dense(hidden, 'fc1', use_bias=False)(s)))
    s = self._gate(s)
    self.sow('intermediates', 'gate', s)
    return _rescale(x, s)
