"""train.py and eval.py as functions: what each program runs once its flags are parsed.

Refused input, a busy workdir or a diverged run raise an errors.UserError (evaluation: also a
ValueError or FileNotFoundError), which the programs print as one line.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from se_flax import errors
from se_flax import evaluation
from se_flax import paths
from se_flax import train_lib


def train(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  """Train in `workdir` (default: workdirs/<dataset>_<model>), resuming from its checkpoint; see
  train_lib.train_and_evaluate (start-up, validation on every process alike, the loop)."""
  return train_lib.train_and_evaluate(config, workdir or paths.default_workdir(config))


def evaluate(config: ml_collections.ConfigDict, *, workdir: str | None = None, step: int | None = None,
             split: str | None = None, pretrained: str | None = None, timm_model: str | None = None,
             timm_weights: str | None = None) -> dict[str, Any]:
  """Evaluate pretrained weights (a tag or hub id, with `timm_model` for a file outside the tag
  table), a timm .safetensors file (`timm_weights` with `timm_model`), or else a checkpoint of
  `workdir` (default: workdirs/<dataset>_<model>; `step` default: the latest)."""
  if pretrained:
    if timm_weights:
      raise errors.ConfigError('--pretrained and --timm_weights name two different weights; give one')
    return evaluation.evaluate_pretrained(config, pretrained, name=timm_model, split=split)
  if timm_weights or timm_model:
    if not (timm_weights and timm_model):
      raise errors.ConfigError('--timm_model and --timm_weights must be given together')
    return evaluation.evaluate_timm(config, timm_model, timm_weights, split=split)
  workdir = paths.resolve_workdir(workdir or paths.default_workdir(config))
  return evaluation.evaluate_checkpoint(config, workdir, step=step, split=split)
