"""The attention slot: the module that sits where SE sits, in every network of the zoo.

Networks never name a module class: they call `build(config, dtype=..., param_dtype=...)` with
the slot's `SEConfig` (whose `kind` picks the module) and get a factory to call as
`attn(name='se')(x)` on an NHWC map, returning the same shape. One entry point means a new kind
of channel attention reaches every network and every placement at once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from se_flax.models import attention_kinds as kinds
from se_flax.models.se import KINDS, SEBlock, SEConfig

ModuleFactory = Callable[..., nn.Module]

# kind -> module class taking (config, dtype, param_dtype).
MODULES: dict[str, type[nn.Module]] = {
    'se': SEBlock,
    'ese': kinds.EffectiveSE,
    'eca': kinds.ECA,
    'ge': kinds.GatherExcite,
    'gc': kinds.GlobalContext,
    'cbam': kinds.CBAM,
    'srm': kinds.SRM,
    'fca': kinds.FcaAttention,
}
assert tuple(MODULES) == KINDS, 'every kind of se.KIND_DEFAULTS has a module here, in the same order'


def build(config: SEConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
          norm: ModuleFactory | None = None) -> ModuleFactory:
  """Factory for the slot's module: `build(cfg)(name='se')(x)` has x's shape.

  `norm`: the network's BatchNorm factory with `train` resolved (ResNet's `norm` partial), for the
  kinds with BatchNorm (cbam, srm, ge 'theta'/'theta_plus'): they then follow the network's
  train/eval mode, synchronised statistics and frozen statistics. Without it they use batch
  statistics exactly when 'batch_stats' is mutable (training steps), running statistics otherwise.
  """
  if config.kind not in MODULES:
    raise ValueError(f'attention kind={config.kind!r} is not one of {", ".join(MODULES)}')
  kwargs = dict(config=config, dtype=dtype, param_dtype=param_dtype)
  if config.kind != 'se':  # SEBlock has no BatchNorm
    kwargs['norm'] = norm
  return functools.partial(MODULES[config.kind], **kwargs)
