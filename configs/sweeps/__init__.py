"""Ablation sweeps of the paper (Tables 10-15), one file each; run with `python -m se_flax.tools.sweep`.

Each file defines `get_sweep(config, arg=None)`: the members (override dicts) for the base config
it is given, so the same sweep runs on digits, CIFAR or ImageNet. `arg` (`--sweep=FILE:N`) sets the
number of seeds (default 3). `get_paper(config)` pairs settings with the paper's SE-ResNet-50
ImageNet figures (docs/reference.md, section 3), which reports print for comparing trends only.

As in the paper's ablations, the excitation FCs have no biases (`model.se.use_bias=False`); the
other SE settings keep the model's own values unless the sweep varies them.
"""

from __future__ import annotations

from se_flax import hyper

SEEDS = 3
# ResNet-50 without SE, the baseline of the paper's ablation tables: top-1 / top-5 error (%), params.
PAPER_BASELINE = dict(top1_err=23.30, top5_err=6.55, params_m=25.6)
# SE-ResNet-50 with the standard settings (r = 16, avg squeeze, sigmoid, standard placement).
PAPER_SE_DEFAULT = dict(top1_err=22.28, top5_err=6.03, params_m=28.1)
NO_SE = {'model.se.enabled': False}


def seeds(arg: str | None) -> list[dict]:
  try:
    n = int(arg) if arg else SEEDS
  except ValueError:
    n = 0
  if n <= 0:
    raise ValueError(f'--sweep=FILE:{arg}: the number of seeds must be a positive integer, got {arg!r}')
  return hyper.sweep('config.seed', range(n))


def members(settings: list[dict], arg: str | None, *, baseline: bool = True) -> list[dict]:
  """Every setting (then the no-SE baseline) times every seed, with the paper's no-bias FCs."""
  rows = hyper.chain([settings, [dict(NO_SE)]]) if baseline else settings
  return hyper.product([rows, hyper.fixed('config.model.se.use_bias', False), seeds(arg)])


def num_stages(config) -> int:
  from se_flax import models
  return models.spec(config.model.name).num_stages
