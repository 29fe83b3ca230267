"""Training throughput of a timm model in PyTorch, the `--vs-timm` side of benchmark.py.

  python se_flax/tools/timm_benchmark.py --model=seresnet50 --batch=16 --image-size=224 --dtype=float32

Standalone on purpose (argparse, no JAX, no absl): benchmark.py runs it as a child process, which
may be another virtualenv's Python and which releases the accelerator before JAX starts. The step
mirrors se_flax's: train-mode BatchNorm, mean cross entropy, SGD momentum 0.9 with coupled weight
decay 1e-4 on weights only (not BatchNorm or biases), lr 0.6 per 1024 images; bfloat16 runs under
autocast. With --inference (the default) each variant also times eval-mode forward passes under
torch.inference_mode (a compiled variant compiles again for eval mode). The last stdout line is a
JSON object {variant: figures}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

try:
  import torch
  import torch.nn.functional as F
  import timm
except ImportError as e:
  sys.exit(f'--vs-timm needs torch and timm ({e.name} is missing for {sys.executable}): '
           'pip install -r requirements-timm.txt')

LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
NUM_CLASSES = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', required=True)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--image-size', type=int, default=224)
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  p.add_argument('--layouts', default='nchw,channels_last', help='comma-separated: nchw, channels_last')
  p.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True)
  p.add_argument('--inference', action=argparse.BooleanOptionalAction, default=True)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s)')
  args = p.parse_args(argv)
  for layout in args.layouts.split(','):
    if layout not in LAYOUTS:
      p.error(f'--layouts entry {layout!r} is not one of {", ".join(LAYOUTS)}')
  if not timm.is_model(args.model):
    sys.exit(f'timm has no model {args.model!r}; --vs-timm needs an ImageNet name timm shares, e.g. seresnet50')
  return args


def make_optimizer(model: torch.nn.Module, batch: int) -> torch.optim.Optimizer:
  """se_flax's ImageNet SGD: weight decay on conv / linear weights only."""
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  groups = [{'params': decay, 'weight_decay': 1e-4}, {'params': no_decay, 'weight_decay': 0.0}]
  return torch.optim.SGD(groups, lr=0.6 * batch / 1024, momentum=0.9)


def synchronize(device: torch.device) -> None:
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


def time_variant(args: argparse.Namespace, layout: str, compiled: bool, device: torch.device) -> dict:
  """Compile (first step), warm up and time one layout / eager-or-compiled variant."""
  fmt = LAYOUTS[layout]
  model = timm.create_model(args.model, num_classes=NUM_CLASSES).to(device, memory_format=fmt).train()
  opt = make_optimizer(model, args.batch)
  forward = torch.compile(model) if compiled else model
  x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).to(memory_format=fmt)
  y = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16')

  def run(n: int) -> None:
    for _ in range(n):
      with autocast:
        loss = F.cross_entropy(forward(x), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    synchronize(device)

  if device.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(device)
  start = time.perf_counter()
  run(1)
  compile_s = time.perf_counter() - start
  run(args.warmup)
  step_s = median_step_seconds(run, args)
  peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None
  result = {'train_img_s': args.batch / step_s, 'step_ms': step_s * 1e3, 'compile_s': compile_s,
            'peak_memory_bytes': peak}
  if args.inference:
    result.update(time_inference(args, model, forward, x, autocast, device))
  return result


def median_step_seconds(run, args: argparse.Namespace) -> float:
  """Median over --repeats of the mean time of --steps calls; `run(n)` must wait for the device."""
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    run(args.steps)
    times.append((time.perf_counter() - start) / args.steps)
  return statistics.median(times)


def time_inference(args: argparse.Namespace, model, forward, x, autocast, device: torch.device) -> dict:
  """Eval-mode forward passes (running BatchNorm statistics), timed like the train step."""
  model.eval()

  def run(n: int) -> None:
    with torch.inference_mode(), autocast:
      for _ in range(n):
        forward(x)
    synchronize(device)

  run(1 + args.warmup)  # the first call compiles again (eval mode) when the variant is compiled
  step_s = median_step_seconds(run, args)
  return {'infer_img_s': args.batch / step_s, 'infer_step_ms': step_s * 1e3}


def main(argv: list[str] | None = None) -> dict:
  args = parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if device.type == 'cuda':
    torch.backends.cudnn.benchmark = True
  results = {}
  for layout in args.layouts.split(','):
    for compiled in (False, True) if args.compile else (False,):
      name = f'{"compile" if compiled else "eager"} {layout}'
      results[name] = time_variant(args, layout, compiled, device)
      print(f'timm {args.model} {name}: {results[name]["train_img_s"]:.2f} img/s', file=sys.stderr)
  print(json.dumps(results))
  return results


if __name__ == '__main__':
  main()
