"""Throughput of se_flax's real training step (steps.make_train_step) on synthetic data, optionally
against the matching timm model in PyTorch.

  python -m se_flax.tools.benchmark --model=seresnet50 --batch=16 --image-size=224 \
      --dtype=float32 [--vs-timm [--notimm-compile] [--timm-python=PATH]] [--json] \
      [--disable-fast-paths=bn_vjp,pool_vjp] [--noinference]

Synthetic batches live on the device; compilation and warm-up are outside the timed part; each
of `--repeats` repeats times `--steps` steps and the median is reported. `--batch` is per device
and `--num-devices` defaults to 1, so figures are per device and comparable with timm's.
`--vs-timm` runs se_flax/tools/timm_benchmark.py in a child process first (before JAX takes the
accelerator; it may be another virtualenv's Python) and prints the ratio se_flax / timm's best
variant. With `--json` the last stdout line is one JSON object with every figure.
`--disable-fast-paths` builds se_flax's steps with some of `se_flax.fast_paths` off, to measure
what each gives; `--noinference` skips the eval-step (and timm eval-mode) timing.

Imports no TensorFlow: the model, optimiser and schedule are configs/imagenet.py's (`imagenet_recipe`),
fed to the real `optim` and `steps` functions.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from configs import imagenet as imagenet_config
from se_flax import fast_paths
from se_flax import models
from se_flax import optim
from se_flax import steps

_MODEL = flags.DEFINE_string('model', 'seresnet50', 'Registered se_flax model name.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size per device.')
_IMAGE_SIZE = flags.DEFINE_integer('image-size', 224, 'Square input resolution.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', list(models.DTYPES), 'Compute dtype (parameters stay float32).')
_NUM_DEVICES = flags.DEFINE_integer('num-devices', 1, 'Devices in the data mesh (the batch is per device).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats; the median is reported.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Steps per timed repeat.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps after compilation.')
_PEAK_TFLOPS = flags.DEFINE_float('peak-tflops', None, 'Peak TFLOP/s per device for MFU (default: table by device kind).')
_VS_TIMM = flags.DEFINE_boolean('vs-timm', False, 'Also time the matching timm model in PyTorch.')
_TIMM_COMPILE = flags.DEFINE_boolean('timm-compile', True, 'Include torch.compile variants (slow to compile).')
_TIMM_LAYOUTS = flags.DEFINE_list('timm-layouts', 'nchw,channels_last', 'PyTorch memory formats to time.')
_TIMM_PYTHON = flags.DEFINE_string('timm-python', sys.executable, 'Python that has torch and timm.')
_JSON = flags.DEFINE_boolean('json', False, 'Print the figures as one JSON object on the last line.')
_DISABLE = flags.DEFINE_list('disable-fast-paths', [],
                             f'se_flax fast paths to turn off: any of {", ".join(fast_paths.NAMES)}.')
_INFERENCE = flags.DEFINE_boolean('inference', True, 'Also time the eval step (and timm in eval mode).')
ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds of the A/B tools (attention_cost, fast_path_ab); '
                              'medians are reported.')

NUM_CLASSES = 1000
INSTALL_HINT = 'pip install -r requirements-timm.txt'
TIMM_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'timm_benchmark.py')

# Dense peak TFLOP/s per device: (bfloat16, float32). float32 uses TF32 tensor cores on NVIDIA
# GPUs (XLA's default precision does); TPUs run float32 convolutions as bf16 passes by default.
# Matched as substrings of jax's device_kind, first match wins.
PEAK_TFLOPS = (
    ('H100 PCIe', (756.0, 378.0)),
    ('H100', (989.0, 494.0)),
    ('H200', (989.0, 494.0)),
    ('A100', (312.0, 156.0)),
    ('TPU v4', (275.0, 275.0)),
    ('TPU v5 lite', (197.0, 197.0)),
    ('TPU v5', (459.0, 459.0)),
    ('TPU v6 lite', (918.0, 918.0)),
)


def imagenet_recipe(model: str, dtype: str, batch: int, num_devices: int) -> ml_collections.ConfigDict:
  """configs/imagenet.py for `model`, with this benchmark's dtype, per-device batch and devices."""
  config = imagenet_config.get_config(model)
  config.model.dtype = dtype
  config.num_devices = num_devices
  config.train.global_batch_size = batch * num_devices
  return config


def cpu_cores() -> int:
  """Cores this process may run on: what XLA's CPU client uses, and what torch gets."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def peak_tflops(device_kind: str, dtype: str, override: float | None = None) -> float | None:
  """Peak dense TFLOP/s of one device, or None when unknown (CPUs)."""
  if override:
    return override
  for key, (bf16, fp32) in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


def median_step_seconds(run_steps: Callable[[int], None], repeats: int, num_steps: int) -> float:
  """Median over repeats of the mean step time; `run_steps(n)` must block until n steps are done."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_steps(num_steps)
    times.append((time.perf_counter() - start) / num_steps)
  return statistics.median(times)


def synthetic_batch(mesh, batch: int, image_size: int, with_mask: bool = False) -> dict:
  """Normal images and random labels, sharded over the mesh like the training loop's batches."""
  n = batch * mesh.size
  rng = np.random.default_rng(0)
  data = {'image': rng.standard_normal((n, image_size, image_size, 3), np.float32),
          'label': rng.integers(0, NUM_CLASSES, n).astype(np.int32)}
  if with_mask:
    data['mask'] = np.ones(n, bool)
  return jax.device_put(data, NamedSharding(mesh, P(steps.AXIS)))


def peak_memory_bytes(devices) -> int | None:
  """Largest `peak_bytes_in_use` over the devices, None where the backend has no memory stats."""
  stats = [d.memory_stats() for d in devices]
  peaks = [s['peak_bytes_in_use'] for s in stats if s and 'peak_bytes_in_use' in s]
  return max(peaks) if peaks else None


def benchmark_jax(model_name: str, batch: int, image_size: int, dtype: str, num_devices: int,
                  repeats: int, num_steps: int, warmup: int, disabled: tuple[str, ...] = (),
                  inference: bool = True) -> dict[str, Any]:
  """Compile, warm up and time the train step (and the eval step) of se_flax, with the fast paths
  in `disabled` off while the model is traced and the steps are compiled."""
  with fast_paths.disabled(disabled):
    return _benchmark_jax(model_name, batch, image_size, dtype, num_devices, repeats, num_steps, warmup,
                          inference) | {'fast_paths_disabled': sorted(disabled)}


def compiled_train_step(config: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
  """The real train step of `config` (`steps.make_train_step`), compiled for synthetic batches of
  `image_size` px: {'step', 'state', 'data', 'model', 'mesh', 'lr_fn', 'compile_s'}. The fast paths
  in force are those enabled while this runs (tracing and compilation happen here)."""
  mesh = steps.create_mesh(config)
  model = models.from_config(config.model, NUM_CLASSES, axis_name=steps.AXIS)
  lr_fn = optim.create_learning_rate_fn(config, steps_per_epoch=1000, total_steps=100_000)
  state = steps.create_train_state(config, model, (image_size, image_size, 3),
                                   optim.create_optimizer(config, lr_fn), mesh)
  data = synthetic_batch(mesh, config.train.global_batch_size // mesh.size, image_size)
  start = time.perf_counter()
  step = steps.make_train_step(model, config, NUM_CLASSES, mesh, lr_fn).lower(state, data).compile()
  return {'step': step, 'state': state, 'data': data, 'model': model, 'mesh': mesh, 'lr_fn': lr_fn,
          'compile_s': time.perf_counter() - start}


def time_interleaved(variants: dict[str, dict[str, Any]], rounds: int) -> dict[str, list[float]]:
  """Seconds of one train step of every variant (`compiled_train_step` dicts, warmed up), variant
  after variant in each round, so load that drifts during the run slows all variants alike."""
  times: dict[str, list[float]] = {name: [] for name in variants}
  for _ in range(rounds):
    for name, v in variants.items():
      start = time.perf_counter()
      run_steps(v)
      times[name].append(time.perf_counter() - start)
  return times


def print_rows(header: str, table: str, rows: Any, as_json: bool) -> None:
  """The A/B tools' output: a header line, the Markdown table, and with --json the rows as JSON last."""
  print(header)
  print(table)
  if as_json:
    print(json.dumps(rows))
  sys.stdout.flush()


def run_steps(variant: dict[str, Any], n: int = 1) -> None:
  """Run `n` train steps of a `compiled_train_step` dict (its state advances) and wait for them."""
  metrics = None
  for _ in range(n):
    variant['state'], metrics = variant['step'](variant['state'], variant['data'])
  jax.block_until_ready((variant['state'], metrics))


def _benchmark_jax(model_name, batch, image_size, dtype, num_devices, repeats, num_steps, warmup, inference):
  if num_devices > jax.device_count():
    raise ValueError(f'--num-devices={num_devices} exceeds the {jax.device_count()} devices here')
  config = imagenet_recipe(model_name, dtype, batch, num_devices)
  built = compiled_train_step(config, image_size)
  model, mesh = built['model'], built['mesh']
  run_train = functools.partial(run_steps, built)

  run_train(warmup)
  step_s = median_step_seconds(run_train, repeats, num_steps)
  peak = peak_memory_bytes(mesh.devices.flat)

  eval_s = None
  if inference:
    state = built['state']
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    eval_data = synthetic_batch(mesh, batch, image_size, with_mask=True)
    eval_step = steps.make_eval_step(model, NUM_CLASSES, mesh).lower(variables, eval_data).compile()
    run_eval = lambda n: jax.block_until_ready([eval_step(variables, eval_data) for _ in range(n)])
    run_eval(warmup)
    eval_s = median_step_seconds(run_eval, repeats, num_steps)

  device = mesh.devices.flat[0]
  macs = models.count_macs(model, image_size)
  return {'model': model_name, 'batch': batch, 'image_size': image_size, 'dtype': dtype,
          'num_devices': num_devices, 'backend': jax.default_backend(), 'device_kind': device.device_kind,
          'cpu_cores': cpu_cores(), 'repeats': repeats, 'steps': num_steps, 'macs_per_image': macs,
          'train_img_s': batch * num_devices / step_s, 'step_ms': step_s * 1e3,
          'infer_img_s': batch * num_devices / eval_s if eval_s else None,
          'infer_step_ms': eval_s * 1e3 if eval_s else None,
          'compile_s': built['compile_s'], 'peak_memory_bytes': peak}


def mfu(train_img_s_per_device: float, macs_per_image: int, peak: float | None) -> float | None:
  """Model FLOPs utilisation: 3 (forward + 2 backward) x 2 FLOPs per multiply-add."""
  if not peak:
    return None
  return train_img_s_per_device * 3 * 2 * macs_per_image / (peak * 1e12)


def run_timm(python: str, model_name: str, batch: int, image_size: int, dtype: str,
             layouts: list[str], compile_: bool, repeats: int, num_steps: int, warmup: int,
             inference: bool = True) -> dict:
  """timm_benchmark.py in a child process; exits with its one-line error when it fails."""
  cmd = [python, TIMM_WORKER, '--model', model_name, '--batch', str(batch), '--image-size',
         str(image_size), '--dtype', dtype, '--layouts', ','.join(layouts), '--repeats', str(repeats),
         '--steps', str(num_steps), '--warmup', str(warmup), '--threads', str(cpu_cores())]
  cmd += [] if compile_ else ['--no-compile']
  cmd += [] if inference else ['--no-inference']
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if proc.returncode:
    lines = proc.stderr.strip().splitlines() or [f'{python} exited with status {proc.returncode}']
    sys.exit(lines[-1])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(value: float | None, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


def _gib(value: int | None) -> str:
  return 'n/a' if value is None else f'{value / 2**30:.2f} GiB'


def format_table(result: dict) -> str:
  """One Markdown table: se_flax, then each timm variant."""
  rows = ['| system | train img/s | step ms | infer img/s | compile s | peak memory | MFU | vs timm best |',
          '|---|---:|---:|---:|---:|---:|---:|---:|']
  rows.append(f'| se_flax {result["model"]} | {result["train_img_s"]:.2f} | {result["step_ms"]:.1f} | '
              f'{_fmt(result["infer_img_s"], ".2f")} | {result["compile_s"]:.1f} | {_gib(result["peak_memory_bytes"])} | '
              f'{_fmt(result["mfu"], ".1%")} | {_fmt(result.get("ratio_vs_timm"), ".2f")} |')
  for name, v in result.get('timm', {}).items():
    rows.append(f'| timm {name} | {v["train_img_s"]:.2f} | {v["step_ms"]:.1f} | '
                f'{_fmt(v.get("infer_img_s"), ".2f")} | {v["compile_s"]:.1f} | '
                f'{_gib(v["peak_memory_bytes"])} | {_fmt(v["mfu"], ".1%")} | '
                f'{result["train_img_s"] / v["train_img_s"]:.2f} |')
  return '\n'.join(rows)


def run(model_name: str, batch: int, image_size: int, dtype: str, num_devices: int, repeats: int,
        num_steps: int, warmup: int, peak_override: float | None, vs_timm: bool,
        timm_compile: bool, timm_layouts: list[str], timm_python: str, disabled: tuple[str, ...] = (),
        inference: bool = True) -> dict[str, Any]:
  """All figures as one dict (timm first, so JAX has not yet taken the accelerator)."""
  models.spec(model_name)  # fail on an unknown name before any work
  fast_paths.check(disabled)
  timm = None
  if vs_timm:
    timm = run_timm(timm_python, model_name, batch, image_size, dtype, timm_layouts, timm_compile,
                    repeats, num_steps, warmup, inference)
  result = benchmark_jax(model_name, batch, image_size, dtype, num_devices, repeats, num_steps, warmup,
                         tuple(disabled), inference)
  peak = peak_tflops(result['device_kind'], dtype, peak_override)
  result['peak_tflops'] = peak
  result['mfu'] = mfu(result['train_img_s'] / num_devices, result['macs_per_image'], peak)
  if timm is not None:
    for v in timm.values():
      v['mfu'] = mfu(v['train_img_s'], result['macs_per_image'], peak)
    best = max(timm, key=lambda k: timm[k]['train_img_s'])
    result.update(timm=timm, timm_best=best, ratio_vs_timm=result['train_img_s'] / timm[best]['train_img_s'])
  return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Parses flags from argv (default sys.argv), prints the table (and JSON), returns the figures."""
  flags.FLAGS(argv or sys.argv)
  try:
    fast_paths.check(_DISABLE.value)
  except ValueError as e:
    sys.exit(f'--disable-fast-paths: {e}')
  result = run(_MODEL.value, _BATCH.value, _IMAGE_SIZE.value, _DTYPE.value, _NUM_DEVICES.value,
               _REPEATS.value, _STEPS.value, _WARMUP.value, _PEAK_TFLOPS.value, _VS_TIMM.value,
               _TIMM_COMPILE.value, _TIMM_LAYOUTS.value, _TIMM_PYTHON.value, tuple(_DISABLE.value),
               _INFERENCE.value)
  print(f'{result["model"]}, batch {result["batch"]} x {result["num_devices"]} device(s), '
        f'{result["image_size"]} px, {result["dtype"]}, {result["device_kind"]} ({result["backend"]}, '
        f'{result["cpu_cores"]} CPU cores), median of {result["repeats"]} x {result["steps"]} steps'
        + (f'; fast paths off: {", ".join(result["fast_paths_disabled"])}' if result['fast_paths_disabled'] else ''))
  print(format_table(result))
  if _JSON.value:
    print(json.dumps(result))
  return result


def _app_main(argv: list[str]) -> None:
  main(argv)


if __name__ == '__main__':
  app.run(_app_main)
