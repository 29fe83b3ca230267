"""Where the time of one train step goes: a `jax.profiler` trace read back and attributed to layers.

    python -m se_flax.tools.profile_step --model=seresnet50 --batch=16 --image-size=224 [--steps=2]
        [--top=25] [--logdir=DIR] [--disable-fast-paths=...] [--json]

Compiles the real train step (as the benchmark does), warms it up, traces `--steps` steps, and
reads the trace back (`jax.profiler.ProfileData`). Every event on the host's XLA threads whose
name is an instruction of the compiled step is attributed through that instruction's `op_name`
metadata (`compiled.as_text()`) to a layer (the flax module path) and a kind: forward, or the
backward pass (`transpose(jvp(...))`), and the primitive (conv, dot, reduce, ...). Prints the
slowest instructions and the totals by kind and by layer. On CPU the events are XLA's thunks; on
GPU the device plane's kernels carry the same instruction names. Times are summed over threads
(so they exceed the wall time when threads run in parallel) and averaged over the traced steps.
`--logdir` keeps the trace for TensorBoard / Perfetto.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax

from se_flax import fast_paths
from se_flax.tools import benchmark

# Shared with the benchmark tool (same meaning).
_MODEL, _BATCH, _IMAGE_SIZE, _DTYPE, _JSON, _DISABLE = (benchmark._MODEL, benchmark._BATCH, benchmark._IMAGE_SIZE,  # pylint: disable=protected-access
                                                        benchmark._DTYPE, benchmark._JSON, benchmark._DISABLE)  # pylint: disable=protected-access
_STEPS = flags.DEFINE_integer('profile-steps', 2, 'Traced steps (after one warm-up step).')
_TOP = flags.DEFINE_integer('top', 25, 'Slowest instructions to list.')
_LOGDIR = flags.DEFINE_string('logdir', None, 'Keep the trace here (default: a temporary directory).')

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}', re.M)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_PRIMITIVES = ('conv_general_dilated', 'dot_general', 'reduce_max', 'reduce_sum', 'select_n', 'max', 'pad',
               'transpose', 'rsqrt', 'integer_pow', 'mul', 'add', 'sub', 'div', 'logistic', 'exp', 'log')


def op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> its op_name metadata, over every computation of the compiled HLO."""
  names = {}
  for name, metadata in _INSTRUCTION.findall(hlo_text):
    match = _OP_NAME.search(metadata)
    if match:
      names[name] = match.group(1)
  return names


def describe(op_name: str) -> tuple[str, str]:
  """op_name -> (layer, kind): the flax module path, and 'forward|backward primitive'."""
  backward = 'transpose(' in op_name
  parts = [p for p in re.split(r'[/()]', op_name) if p]
  primitive = next((p for p in reversed(parts) if p in _PRIMITIVES), parts[-1] if parts else '?')
  # The module path below the network's top module (a CamelCase class name, e.g. ResNet/layer1_0/bn3);
  # operations of the step outside the model (loss, optimiser, gradient psum) are 'step'.
  top = next((i for i, p in enumerate(parts) if re.fullmatch(r'[A-Z]\w*', p)), None)
  modules = [p for p in parts[top + 1:]  # flax's method scopes ('layer4_0._finish') and JAX's wrappers dropped
             if '.' not in p and p not in _PRIMITIVES and not p.startswith(('jvp', 'transpose', '_', 'jit'))] \
      if top is not None else []
  layer = '/'.join(modules) if modules else ('model' if top is not None else 'step')
  return layer, f'{"backward" if backward else "forward"} {primitive}'


def attribute(events: list[tuple[str, float]], names: dict[str, str], steps: int) -> dict[str, Any]:
  """(instruction, seconds) events -> totals by instruction, kind and layer (per step)."""
  by_instruction: dict[str, float] = collections.Counter()
  for name, seconds in events:
    by_instruction[name] += seconds / steps
  by_kind: dict[str, float] = collections.Counter()
  by_layer: dict[str, float] = collections.Counter()
  rows = []
  for name, seconds in by_instruction.most_common():
    layer, kind = describe(names[name]) if name in names else ('?', 'unattributed')
    by_kind[kind] += seconds
    by_layer[layer] += seconds
    rows.append({'instruction': name, 'seconds': seconds, 'layer': layer, 'kind': kind,
                 'op_name': names.get(name, '')})
  return {'instructions': rows, 'by_kind': dict(by_kind.most_common()), 'by_layer': dict(by_layer.most_common()),
          'total_seconds': sum(by_instruction.values())}


def trace_events(logdir: str, names: dict[str, str]) -> list[tuple[str, float]]:
  """(instruction name, seconds) of every traced event named after an instruction of the step."""
  paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
  if not paths:
    raise RuntimeError(f'no trace written under {logdir}')
  data = jax.profiler.ProfileData.from_file(max(paths, key=os.path.getmtime))
  events = []
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in names:
          events.append((event.name, event.duration_ns / 1e9))
  return events


def profile(model_name: str, batch: int, image_size: int, dtype: str, steps: int, logdir: str,
            disabled: tuple[str, ...] = ()) -> dict[str, Any]:
  with fast_paths.disabled(disabled):
    variant = benchmark.compiled_train_step(benchmark.imagenet_recipe(model_name, dtype, batch, 1), image_size)
  benchmark.run_steps(variant)  # warm-up
  with jax.profiler.trace(logdir):
    benchmark.run_steps(variant, steps)
  names = op_names(variant['step'].as_text())
  result = attribute(trace_events(logdir, names), names, steps)
  times = benchmark.time_interleaved({'step': variant}, 3)['step']
  return result | {'model': model_name, 'batch': batch, 'image_size': image_size, 'dtype': dtype,
                   'step_seconds': statistics.median(times), 'logdir': logdir, 'fast_paths_disabled': sorted(disabled)}


def format_report(result: dict[str, Any], top: int) -> str:
  total = result['total_seconds']
  lines = [f'{result["model"]}, batch {result["batch"]}, {result["image_size"]} px, {result["dtype"]}: step '
           f'{result["step_seconds"]:.2f} s (untraced, median of 3); traced events {total:.2f} s per step '
           'summed over threads', '', f'slowest {top} instructions:',
           '| instruction | s/step | share | kind | layer |', '|---|---:|---:|---|---|']
  for r in result['instructions'][:top]:
    lines.append(f'| {r["instruction"]} | {r["seconds"]:.3f} | {r["seconds"] / total:.1%} | {r["kind"]} | {r["layer"]} |')
  for title, table in (('by kind', result['by_kind']), ('by layer (top 15)', dict(list(result['by_layer'].items())[:15]))):
    lines += ['', f'{title}:', '| | s/step | share |', '|---|---:|---:|']
    lines += [f'| {k} | {v:.3f} | {v / total:.1%} |' for k, v in table.items()]
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  try:
    disabled = tuple(fast_paths.check(_DISABLE.value))
  except ValueError as e:
    sys.exit(f'--disable-fast-paths: {e}')
  logdir = _LOGDIR.value or tempfile.mkdtemp(prefix='se_flax_profile_')
  result = profile(_MODEL.value, _BATCH.value, _IMAGE_SIZE.value, _DTYPE.value, _STEPS.value, logdir, disabled)
  print(format_report(result, _TOP.value))
  if _JSON.value:
    print(json.dumps(result))
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
