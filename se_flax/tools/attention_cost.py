"""What each kind of the attention slot costs one network: parameters, multiply-adds, train step time.

    python -m se_flax.tools.attention_cost --model=seresnet50 --batch=8 --image-size=224 --rounds=3

Every kind (and the empty slot) is compiled first; then each round times one train step of every
variant in turn, so a machine whose load drifts slows all variants alike (the figures are the
medians over rounds, and the overhead is each kind's step time over the empty slot's). The train
step is the real one (`steps.make_train_step` with configs/imagenet.py's recipe for the model).
"""

from __future__ import annotations

import statistics
from typing import Any

from absl import app
from absl import flags
import jax

from se_flax import models
from se_flax.tools import benchmark

# --model, --batch, --image-size and --json are the benchmark tool's flags (same meaning).
_MODEL, _BATCH, _IMAGE_SIZE, _JSON = benchmark._MODEL, benchmark._BATCH, benchmark._IMAGE_SIZE, benchmark._JSON  # pylint: disable=protected-access
_KINDS = flags.DEFINE_list('kinds', list(models.KINDS), 'Kinds to time (the empty slot is always timed).')
_ROUNDS = benchmark.ROUNDS

NONE = 'none'


def _variant(model_name: str, kind: str, batch: int, image_size: int) -> dict[str, Any]:
  """Compiled train step, state and batch of `model_name` with `kind` in its slot (NONE: empty)."""
  config = benchmark.imagenet_recipe(model_name, 'float32', batch, 1)
  if kind == NONE:
    config.model.se.enabled = False
  else:
    config.model.se.kind = kind
  variant = benchmark.compiled_train_step(config, image_size)
  benchmark.run_steps(variant)  # warm-up
  state = variant['state']
  return variant | {'params': models.count_params(state.params),
                    'macs': models.count_macs(variant['model'], image_size)}


def measure(model_name: str, kinds: list[str], batch: int, image_size: int, rounds: int) -> list[dict[str, Any]]:
  unknown = [k for k in kinds if k not in models.KINDS]
  if unknown:
    raise ValueError(f'--kinds: {", ".join(unknown)} not among {", ".join(models.KINDS)}')
  variants = {k: _variant(model_name, k, batch, image_size) for k in [NONE, *kinds]}
  for kind, times in benchmark.time_interleaved(variants, rounds).items():
    variants[kind]['times'] = times
  base = variants[NONE]
  base_ms = statistics.median(base['times']) * 1e3
  rows = []
  for kind, v in variants.items():
    ms = statistics.median(v['times']) * 1e3
    rows.append({'kind': kind, 'params': v['params'], 'params_added': v['params'] - base['params'],
                 'macs': v['macs'], 'macs_added': v['macs'] - base['macs'], 'step_ms': ms,
                 'overhead': ms / base_ms, 'rounds_ms': [t * 1e3 for t in v['times']]})
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  lines = ['| kind | params | added | MACs | added | step ms | overhead |', '|---|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f'| {r["kind"]} | {r["params"]:,} | {r["params_added"]:,} | {r["macs"]:,} | {r["macs_added"]:,} | '
                 f'{r["step_ms"]:.0f} | {r["overhead"]:.3f} |')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  rows = measure(_MODEL.value, _KINDS.value, _BATCH.value, _IMAGE_SIZE.value, _ROUNDS.value)
  benchmark.print_rows(f'{_MODEL.value}, batch {_BATCH.value}, {_IMAGE_SIZE.value} px, float32, '
                       f'{jax.devices()[0].device_kind} ({benchmark.cpu_cores()} CPU cores), median of '
                       f'{_ROUNDS.value} interleaved rounds', format_table(rows), rows, _JSON.value)


if __name__ == '__main__':
  app.run(main)
