"""Interleaved A/B of se_flax's fast paths (se_flax.fast_paths) on the real train step.

    python -m se_flax.tools.fast_path_ab --model=seresnet50 --batch=16 --image-size=224 --rounds=5

A variant is a model name, optionally followed by `~PATH` for each fast path to turn off (`~all`:
every one), e.g. `seresnet50~bn_vjp~pool_vjp`. Without `--variants` the list is: the model as it
trains, the model without each fast path in turn, the model without any, and its baseline without
SE (`resnet50` for `seresnet50`), so one run gives what each path saves and the SE overhead.
Every variant is compiled and warmed up first; then each round times one step of every variant in
turn (a machine whose load drifts slows all alike); figures are medians over rounds, and ratios are
against the first variant.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from absl import app
from absl import flags
import jax

from se_flax import fast_paths
from se_flax import models
from se_flax.tools import benchmark

# --model, --batch, --image-size, --dtype and --json are the benchmark tool's flags (same meaning).
_MODEL, _BATCH, _IMAGE_SIZE, _DTYPE, _JSON = (benchmark._MODEL, benchmark._BATCH, benchmark._IMAGE_SIZE,  # pylint: disable=protected-access
                                              benchmark._DTYPE, benchmark._JSON)  # pylint: disable=protected-access
_VARIANTS = flags.DEFINE_list('variants', [], 'MODEL[~PATH...] specs; default: see the module docstring.')
_ROUNDS = benchmark.ROUNDS

ALL = 'all'


def parse(spec: str) -> tuple[str, tuple[str, ...]]:
  """'seresnet50~bn_vjp' -> ('seresnet50', ('bn_vjp',)); a bad name is a one-line ValueError."""
  name, *off = spec.split('~')
  models.spec(name)  # unknown model: the registry's one-line error
  if ALL in off:
    return name, fast_paths.NAMES
  try:
    return name, tuple(fast_paths.check(off))
  except ValueError as e:
    raise ValueError(f'variant {spec!r}: {e} (or {ALL})') from None


def default_variants(model_name: str) -> list[str]:
  """The model, without each fast path, without all, and its baseline (where there is one)."""
  specs = [model_name, *(f'{model_name}~{p}' for p in fast_paths.NAMES), f'{model_name}~{ALL}']
  return specs + [b for b in [baseline(model_name)] if b]


def baseline(model_name: str) -> str | None:
  """The registered network without SE: 'seresnet50' -> 'resnet50', 'se_vgg16_bn' -> 'vgg16_bn'."""
  for prefix in ('se_', 'se'):
    base = model_name.removeprefix(prefix)
    if base != model_name and base in models.names():
      return base
  return None


def build(spec: str, batch: int, image_size: int, dtype: str) -> dict[str, Any]:
  """The compiled, warmed-up train step of one variant (its fast paths off while it is built)."""
  name, off = parse(spec)
  with fast_paths.disabled(off):
    variant = benchmark.compiled_train_step(benchmark.imagenet_recipe(name, dtype, batch, 1), image_size)
    benchmark.run_steps(variant)  # warm-up
  return variant


def measure(specs: list[str], batch: int, image_size: int, dtype: str, rounds: int) -> list[dict[str, Any]]:
  """One row per variant: median step ms, img/s, ratio to the first variant, every round's ms."""
  for spec in specs:
    parse(spec)  # every spec checked before any compile
  variants = {}
  for spec in specs:
    variants[spec] = build(spec, batch, image_size, dtype)
    print(f'{spec}: compiled in {variants[spec]["compile_s"]:.0f} s', file=sys.stderr, flush=True)
  times = benchmark.time_interleaved(variants, rounds)
  first = statistics.median(times[specs[0]])
  rows = []
  for spec in specs:
    median = statistics.median(times[spec])
    rows.append({'variant': spec, 'fast_paths_off': list(parse(spec)[1]), 'step_ms': median * 1e3,
                 'train_img_s': batch / median, 'ratio': median / first,
                 'compile_s': variants[spec]['compile_s'], 'rounds_ms': [t * 1e3 for t in times[spec]]})
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  lines = ['| variant | step ms | train img/s | step time / first | rounds (ms) |', '|---|---:|---:|---:|---|']
  for r in rows:
    rounds = ', '.join(f'{t:.0f}' for t in r['rounds_ms'])
    lines.append(f'| {r["variant"]} | {r["step_ms"]:.0f} | {r["train_img_s"]:.2f} | {r["ratio"]:.3f} | {rounds} |')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  specs = _VARIANTS.value or default_variants(_MODEL.value)
  try:
    rows = measure(specs, _BATCH.value, _IMAGE_SIZE.value, _DTYPE.value, _ROUNDS.value)
  except ValueError as e:
    sys.exit(f'fast_path_ab: {e}')
  benchmark.print_rows(f'batch {_BATCH.value}, {_IMAGE_SIZE.value} px, {_DTYPE.value}, {jax.devices()[0].device_kind} '
                       f'({jax.default_backend()}, {benchmark.cpu_cores()} CPU cores), median of {_ROUNDS.value} '
                       'interleaved rounds', format_table(rows), rows, _JSON.value)


if __name__ == '__main__':
  app.run(main)
