"""The Squeeze-and-Excitation block (Hu et al., CVPR 2018 / TPAMI) and its ablation knobs.

SE recalibrates channels: squeeze (global pooling to one value a channel), excitation
(FC to C/r, ReLU, FC back to C, gate), then scale the input channel-wise. Every ablation of
the paper (reduction ratio, squeeze operator, gate, biases) is one field of `SEConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ROUNDINGS = ('floor', 'divisible8')
SQUEEZES = ('avg', 'max')
GATES = ('sigmoid', 'hard_sigmoid', 'tanh', 'relu')
PLACEMENTS = ('standard', 'pre', 'post', 'identity', 'after_3x3')

_GATE_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'sigmoid': jax.nn.sigmoid,
    'hard_sigmoid': jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, as timm's hard_sigmoid
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
}


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f'SE {field}={value!r} is not one of {", ".join(allowed)}')


def make_divisible(v: float, divisor: int = 8) -> int:
  """timm's `make_divisible(v, divisor, round_limit=0)`: round to the nearest multiple, at least `divisor`."""
  return max(divisor, int(v + divisor / 2) // divisor * divisor)


def reduced_channels(channels: int, reduction: int, rounding: str) -> int:
  """Width of the bottleneck FC: C // r (paper, Caffe, timm legacy) or timm's make_divisible(C / r, 8)."""
  _check_choice('rounding', rounding, ROUNDINGS)
  if rounding == 'floor':
    return max(1, channels // reduction)
  return make_divisible(channels / reduction, 8)


@dataclasses.dataclass(frozen=True)
class SEConfig:
  """Everything the paper ablates about SE, as data.

  Attributes:
    reduction: r, the excitation bottleneck ratio (Table 10).
    rounding: 'floor' (C // r) or 'divisible8' (timm's make_divisible(C / r, 8)).
    squeeze: 'avg' or 'max' global pooling (Table 11).
    gate: excitation non-linearity, 'sigmoid' | 'hard_sigmoid' | 'tanh' | 'relu' (Table 12).
    use_bias: biases in the two FC layers (the paper's ablations ran without).
    placement: where the unit sits in a residual block, 'standard' | 'pre' | 'post' |
      'identity' | 'after_3x3' (Tables 14-15).
    stages: per-stage on/off mask, e.g. (False, False, True, False) (Table 13); None = all on.
    kind: which module fills the slot ('se' here; `se_flax.models.attention` lists the others).
  """

  reduction: int = 16
  rounding: str = 'floor'
  squeeze: str = 'avg'
  gate: str = 'sigmoid'
  use_bias: bool = True
  placement: str = 'standard'
  stages: tuple[bool, ...] | None = None
  kind: str = 'se'

  def __post_init__(self):
    if not isinstance(self.reduction, int) or isinstance(self.reduction, bool) or self.reduction <= 0:
      raise ValueError(f'SE reduction={self.reduction!r} must be a positive integer')
    _check_choice('rounding', self.rounding, ROUNDINGS)
    _check_choice('squeeze', self.squeeze, SQUEEZES)
    _check_choice('gate', self.gate, GATES)
    _check_choice('placement', self.placement, PLACEMENTS)
    if self.stages is not None:
      object.__setattr__(self, 'stages', tuple(bool(s) for s in self.stages))

  def replace(self, **changes) -> 'SEConfig':
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      allowed = ', '.join(f.name for f in dataclasses.fields(self))
      raise ValueError(f'unknown SE field(s) {", ".join(unknown)}; allowed: {allowed}')
    return dataclasses.replace(self, **changes)

  def in_stage(self, stage: int) -> bool:
    """Whether SE is on in stage `stage` (0-based)."""
    if self.stages is None:
      return True
    if stage >= len(self.stages):
      raise ValueError(f'SE stages mask {self.stages} has no entry for stage {stage}')
    return self.stages[stage]


class SEBlock(nn.Module):
  """Squeeze-and-Excitation on an NHWC feature map; returns the same shape.

  Takes its settings as one `SEConfig` (validated when that is built) and reads the channel count
  from its input, so one SEBlock definition serves every stage.
  The two FCs are `nn.Dense` on the pooled vector (the paper's formulation; timm's 1x1 convs
  on a 1x1 map are the same linear maps). The gate values are sown as
  `intermediates/gate` for excitation analysis.
  """

  config: SEConfig = SEConfig()  # validated when built; placement and stages are the network's
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    channels = x.shape[-1]
    hidden = reduced_channels(channels, cfg.reduction, cfg.rounding)
    if cfg.squeeze == 'avg':
      # Accumulate the mean in float32 even for bf16 activations.
      s = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    else:
      s = jnp.max(x, axis=(1, 2)).astype(jnp.float32)
    dense = lambda features, name: nn.Dense(
        features, use_bias=cfg.use_bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    s = dense(hidden, 'fc1')(s.astype(self.dtype))
    s = nn.relu(s)
    s = dense(channels, 'fc2')(s)
    s = _GATE_FNS[cfg.gate](s)
    self.sow('intermediates', 'gate', s)
    return x * s[:, None, None, :].astype(x.dtype)
