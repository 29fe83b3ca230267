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

ROUNDINGS = ('floor', 'divisible8', 'nearest')
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
  """Width of the bottleneck FC: C // r (paper, Caffe, timm legacy), timm's make_divisible(C / r, 8)
  (timm SE), or C / r rounded to the nearest integer (timm's make_divisible(C / r, 1): GC, CBAM)."""
  _check_choice('rounding', rounding, ROUNDINGS)
  if rounding == 'floor':
    return max(1, channels // reduction)
  if rounding == 'nearest':
    return make_divisible(channels / reduction, 1)
  return make_divisible(channels / reduction, 8)


# The slot's kinds and their own settings with their defaults, as data: a kind uses exactly the
# settings listed for it (anything else given for it is an error) and starts from these values.
# Sources: the papers, and timm 1.0.31's modules where timm has the kind (timm's defaults win where
# the two differ, so that the parameter counts and outputs equal timm's; see docs/reference.md).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    # Hu et al.: C // r, average squeeze, sigmoid, biased FCs.
    'se': dict(reduction=16, rounding='floor', squeeze='avg', gate='sigmoid', use_bias=True),
    # VoVNet-v2 / CenterMask (arXiv 1911.06667), timm EffectiveSEModule: one biased FC C -> C.
    'ese': dict(gate='hard_sigmoid', use_bias=True),
    # ECA-Net (arXiv 1910.03151): kernel size from the channels with the paper's gamma 2, b 1 (timm EcaModule).
    'eca': dict(eca_gamma=2, eca_beta=1, gate='sigmoid'),
    # Gather-Excite (arXiv 1810.12348): the parameter-free GE-theta-minus with global extent; the
    # reduction is the GE-theta-plus excite MLP's (SE's 16).
    'ge': dict(ge_variant='theta_minus', ge_extent=0, reduction=16, gate='sigmoid'),
    # GCNet (arXiv 1904.11492), timm GlobalContext: rd_ratio 1/8, rd_divisor 1, fuse_scale=True,
    # fuse_add=False (the paper's own choice is 'add': gc_fuse='add', timm's 'gca').
    'gc': dict(reduction=8, rounding='nearest', gc_fuse='scale', gate='sigmoid'),
    # CBAM (arXiv 1807.06521), timm CbamModule: rd_ratio 1/16, rd_divisor 1, MLP without biases, 7x7.
    'cbam': dict(reduction=16, rounding='nearest', use_bias=False, cbam_kernel_size=7, gate='sigmoid'),
    # SRM (arXiv 1903.10829): no settings but the gate.
    'srm': dict(gate='sigmoid'),
    # FcaNet (arXiv 2012.11879, cfzd/FcaNet): 'top16' frequencies, r 16, FCs without biases.
    'fca': dict(reduction=16, fca_freq='top16', gate='sigmoid'),
}
KINDS = tuple(KIND_DEFAULTS)
# Settings that belong to one kind or another (the rest, placement and stages, are the slot's).
KIND_SETTINGS = tuple(dict.fromkeys(k for d in KIND_DEFAULTS.values() for k in d))
GE_VARIANTS = ('theta_minus', 'theta', 'theta_plus')
GC_FUSIONS = ('scale', 'add', 'both')
# FcaNet's frequency selections: 'top', 'low' or 'bot' and how many of the 7x7 grid's 32 listed.
FCA_FREQS = tuple(f'{order}{n}' for order in ('top', 'low', 'bot') for n in (1, 2, 4, 8, 16, 32))
_CHOICES = {'rounding': ROUNDINGS, 'squeeze': SQUEEZES, 'gate': GATES, 'ge_variant': GE_VARIANTS,
            'gc_fuse': GC_FUSIONS, 'fca_freq': FCA_FREQS}


def _check_positive(field: str, value: Any, integer: bool) -> None:
  number = isinstance(value, int) if integer else isinstance(value, (int, float))
  if not number or isinstance(value, bool) or value <= 0:
    raise ValueError(f'SE {field}={value!r} must be a positive {"integer" if integer else "number"}')


@dataclasses.dataclass(frozen=True)
class SEConfig:
  """The attention slot's settings, as data: which kind fills it, the kind's own settings, and
  where the slot is on (placement, stages).

  A setting left at None takes the kind's default from `KIND_DEFAULTS`; a setting the kind does
  not use must stay None (a one-line ValueError otherwise). `replace(kind=...)` to another kind
  keeps placement and stages and starts the new kind from its defaults.

  Attributes:
    reduction: r, the excitation bottleneck ratio (Table 10).
    rounding: 'floor' (C // r) or 'divisible8' (timm's make_divisible(C / r, 8)).
    squeeze: 'avg' or 'max' global pooling (Table 11).
    gate: excitation non-linearity, 'sigmoid' | 'hard_sigmoid' | 'tanh' | 'relu' (Table 12).
    use_bias: biases in the two FC layers (the paper's ablations ran without).
    placement: where the unit sits in a residual block, 'standard' | 'pre' | 'post' |
      'identity' | 'after_3x3' (Tables 14-15).
    stages: per-stage on/off mask, e.g. (False, False, True, False) (Table 13); None = all on.
    kind: which module fills the slot, one of `KINDS` (`se_flax.models.attention.MODULES`).
    eca_gamma, eca_beta: ECA's kernel size from the channel count, k = |log2(C)/gamma + beta/gamma|_odd.
    ge_variant: Gather-Excite's 'theta_minus' (parameter-free average gather), 'theta' (depthwise-conv
      gather) or 'theta_plus' (depthwise-conv gather and an SE-style excite MLP).
    ge_extent: GE's gather extent e: 0 = global, else a power of two (each gathered cell covers
      about e x e inputs).
    gc_fuse: GC's fusion of the context: 'scale' (timm 'gc'), 'add' (the GCNet paper's, timm 'gca'), 'both'.
    cbam_kernel_size: CBAM's spatial-attention convolution size (odd).
    fca_freq: FcaNet's DCT frequency selection on the 7x7 grid, e.g. 'top16' (the paper's).
  """

  reduction: int | None = None
  rounding: str | None = None
  squeeze: str | None = None
  gate: str | None = None
  use_bias: bool | None = None
  placement: str = 'standard'
  stages: tuple[bool, ...] | None = None
  kind: str = 'se'
  eca_gamma: float | None = None
  eca_beta: float | None = None
  ge_variant: str | None = None
  ge_extent: int | None = None
  gc_fuse: str | None = None
  cbam_kernel_size: int | None = None
  fca_freq: str | None = None

  def __post_init__(self):
    if self.kind not in KIND_DEFAULTS:
      raise ValueError(f'attention kind={self.kind!r} is not one of {", ".join(KINDS)}')
    defaults = KIND_DEFAULTS[self.kind]
    for field in KIND_SETTINGS:
      value = getattr(self, field)
      if field in defaults:
        if value is None:
          object.__setattr__(self, field, defaults[field])
      elif value is not None:
        raise ValueError(f'attention kind {self.kind!r} has no setting {field}={value!r}; its settings: '
                         f'{", ".join(defaults)}, placement, stages')
    if self.reduction is not None:
      _check_positive('reduction', self.reduction, integer=True)
    for field, allowed in _CHOICES.items():
      if getattr(self, field) is not None:
        _check_choice(field, getattr(self, field), allowed)
    if self.use_bias is not None and not isinstance(self.use_bias, bool):
      raise ValueError(f'SE use_bias={self.use_bias!r} must be True or False')
    if self.eca_gamma is not None:
      _check_positive('eca_gamma', self.eca_gamma, integer=False)
    if self.eca_beta is not None and (not isinstance(self.eca_beta, (int, float)) or isinstance(self.eca_beta, bool)
                                      or self.eca_beta < 0):
      raise ValueError(f'SE eca_beta={self.eca_beta!r} must be a number >= 0')
    e = self.ge_extent
    if e is not None and (not isinstance(e, int) or isinstance(e, bool) or e < 0 or (e and e & (e - 1)) or e == 1):
      raise ValueError(f'SE ge_extent={e!r} must be 0 (global) or a power of two >= 2')
    k = self.cbam_kernel_size
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k <= 0 or k % 2 == 0):
      raise ValueError(f'SE cbam_kernel_size={k!r} must be a positive odd integer')
    _check_choice('placement', self.placement, PLACEMENTS)
    if self.stages is not None:
      object.__setattr__(self, 'stages', tuple(bool(s) for s in self.stages))

  def replace(self, **changes) -> 'SEConfig':
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      allowed = ', '.join(f.name for f in dataclasses.fields(self))
      raise ValueError(f'unknown SE field(s) {", ".join(unknown)}; allowed: {allowed}')
    if changes.get('kind', self.kind) != self.kind:  # a new kind starts from its own defaults
      return SEConfig(**{'placement': self.placement, 'stages': self.stages, **changes})
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
