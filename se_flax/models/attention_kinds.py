"""Channel-attention kinds beyond SE for the attention slot (`se_flax.models.attention`).

Each module takes the slot's `SEConfig` (its kind's settings), works on an NHWC map and returns
the same shape. Kinds whose excitation is one gate per channel sow it as `intermediates/gate`
(N, C), for excitation analysis. Module names follow timm's (`conv`, `fc`, ...) where timm has
the kind, so `se_flax.weights.convert` maps them with its generic rules.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from se_flax.models.se import _GATE_FNS, SEConfig


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
  """ECA-Net Eq. 12: k = |log2(C) / gamma + beta / gamma|_odd (truncated, then the next odd number),
  at least 3, exactly as timm 1.0.31's EcaModule: int(abs(log2(C) + beta) / gamma)."""
  t = int(abs(math.log(channels, 2) + beta) / gamma)
  return max(t if t % 2 else t + 1, 3)


class ECA(nn.Module):
  """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv 1910.03151).

  omega = gate(C1D_k(GAP(x))) (paper Eq. 9-10): a 1D convolution without bias across the pooled
  channel vector, k from the channel count (Eq. 12, `eca_kernel_size`), zero padding (k - 1) / 2;
  out = x * omega. k weights a block, no dimensionality reduction.
  """

  config: SEConfig = SEConfig(kind='eca')
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    k = eca_kernel_size(x.shape[-1], cfg.eca_gamma, cfg.eca_beta)
    s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)  # (N, C)
    # Channels as the 1D spatial axis, one feature: torch's Conv1d(1, 1, k) over (N, 1, C).
    s = nn.Conv(1, (k,), padding=((k // 2, k // 2),), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(s[..., None])[..., 0]
    s = _GATE_FNS[cfg.gate](s)
    self.sow('intermediates', 'gate', s)
    return x * s[:, None, None, :].astype(x.dtype)
