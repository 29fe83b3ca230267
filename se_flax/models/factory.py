"""A model from the `config.model` section: the one place config fields become `create` overrides.

`config.model.se` fields left at None keep the registered model's own SE settings; `se.enabled`
(False: the plain baseline, True: SE on a plain net) is resolved by `registry.create` with the rest.
`se.kind` fills the same slot with another kind of attention (eca, gc, cbam, ...: its own defaults,
the registered placement and stages), the section's other fields then being that kind's settings.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from se_flax.models import registry

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def from_config(model_cfg: Any, num_classes: int, *, axis_name: str | None = None) -> nn.Module:
  """`models.create(model_cfg.name, ...)` with the section's overrides; `axis_name` is the mesh axis
  BatchNorm statistics are averaged over (used when `model_cfg.sync_batch_norm`)."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f'model.dtype={model_cfg.dtype!r} is not one of {", ".join(DTYPES)}')
  if not isinstance(model_cfg.freeze_bn_stats, bool):
    raise ValueError(f'model.freeze_bn_stats={model_cfg.freeze_bn_stats!r} must be True or False')
  overrides = dict(num_classes=num_classes, dtype=DTYPES[model_cfg.dtype],
                   axis_name=axis_name if model_cfg.sync_batch_norm else None)
  for field in ('drop_rate', 'zero_init_last_bn', 'downsample'):  # None: the model's default
    if model_cfg[field] is not None:
      overrides[field] = model_cfg[field]
  if model_cfg.freeze_bn_stats:
    overrides['frozen_batch_norm'] = True  # running statistics kept as loaded
  se = {k: v for k, v in model_cfg.se.items() if v is not None}
  if se:
    overrides['se'] = se
  return registry.create(model_cfg.name, **overrides)


def check_gate_init(model: nn.Module) -> None:
  """A gate with gate(0) = 0 (tanh, ReLU) on a residual branch whose last BatchNorm scale starts at
  0 never trains: the branch is 0, so the gate's input is 0, so the gate is 0 and passes no
  gradient back to the branch (both stay exactly 0; the net is its shortcuts alone)."""
  se = getattr(model, 'se', None)
  if (se is not None and se.gate in ('tanh', 'relu') and getattr(model, 'zero_init_last_bn', False)
      and not model.block.startswith('preact')):
    raise ValueError(f'model.se.gate={se.gate!r} with zero-initialised last BatchNorm scales never trains the '
                     'residual branches (gate(0) = 0); set model.zero_init_last_bn=False')
