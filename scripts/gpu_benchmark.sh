#!/usr/bin/env bash
# se_flax vs timm on one GPU: seresnet50 and resnet50, bf16, batch 256, 224 px; one table.
#
#   PYTHONPATH=. bash scripts/gpu_benchmark.sh      # from the repo root; results also under $OUT
#
# Needs jax (CUDA), flax, optax, torch and timm; not TensorFlow. Each model: timm first in a child
# process (channels_last, bf16 autocast, eager and torch.compile), then se_flax's real train step.
# Budget: ~1-2 min torch.compile + ~1 min XLA compile per model. Overrides for a CPU smoke test:
#   MODELS=seresnet_tiny BATCH=4 IMAGE=64 DTYPE=float32 VS_TIMM=0 bash scripts/gpu_benchmark.sh
#   MODELS="seresnet18 resnet18" BATCH=2 IMAGE=64 DTYPE=float32 TIMM_COMPILE=0 REPEATS=1 STEPS=1 \
#     TIMM_PYTHON=/path/to/torch/venv/bin/python bash scripts/gpu_benchmark.sh
set -euo pipefail

MODELS=${MODELS:-"seresnet50 resnet50"}
BATCH=${BATCH:-256}
IMAGE=${IMAGE:-224}
DTYPE=${DTYPE:-bfloat16}
REPEATS=${REPEATS:-5}
STEPS=${STEPS:-10}
VS_TIMM=${VS_TIMM:-1}
TIMM_COMPILE=${TIMM_COMPILE:-1}
PYTHON=${PYTHON:-python}
export PYTHONPATH=${PYTHONPATH:-.}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
results=${OUT:-$(mktemp -d)}
mkdir -p "$results"

timm_flags=()
if [[ "$VS_TIMM" == 1 ]]; then
  timm_flags=(--vs-timm --timm-layouts=channels_last)
  [[ "$TIMM_COMPILE" == 1 ]] || timm_flags+=(--notimm-compile)
  [[ -z "${TIMM_PYTHON:-}" ]] || timm_flags+=(--timm-python="$TIMM_PYTHON")  # torch in another venv
fi

"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
for model in $MODELS; do
  echo "== $model" >&2
  "$PYTHON" -m se_flax.tools.benchmark --model="$model" --batch="$BATCH" --image-size="$IMAGE" \
    --dtype="$DTYPE" --repeats="$REPEATS" --steps="$STEPS" --warmup=2 "${timm_flags[@]}" --json \
    | tee "$results/benchmark_$model.log" | tail -n 1 > "$results/benchmark_$model.json"
done

"$PYTHON" - "$results" $MODELS <<'PY'
"""One table over the models: se_flax vs timm's best variant, and SE overhead vs resnet50."""
import json, os, sys

results, names = sys.argv[1], sys.argv[2:]
runs = {n: json.load(open(os.path.join(results, f'benchmark_{n}.json'))) for n in names}
gib = lambda b: 'n/a' if b is None else f'{b / 2**30:.1f} GiB'
pct = lambda x: 'n/a' if x is None else f'{x:.1%}'
first = next(iter(runs.values()))
print(f'\n{first["device_kind"]}, {first["dtype"]}, batch {first["batch"]}, {first["image_size"]} px, '
      f'median of {first["repeats"]} x {first["steps"]} steps')
print('| system | model | train img/s | step ms | compile s | peak memory | MFU | se_flax / timm best | SE overhead |')
print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
for n, r in runs.items():
  base = runs.get(n[2:]) if n.startswith('se') else None  # seresnet50 -> resnet50
  overhead = f'{r["step_ms"] / base["step_ms"]:.3f}' if base else '-'
  ratio = f'{r["ratio_vs_timm"]:.2f}' if 'ratio_vs_timm' in r else 'n/a'
  print(f'| se_flax | {n} | {r["train_img_s"]:.1f} | {r["step_ms"]:.1f} | {r["compile_s"]:.1f} | '
        f'{gib(r["peak_memory_bytes"])} | {pct(r["mfu"])} | {ratio} | {overhead} |')
  for v, t in r.get('timm', {}).items():
    print(f'| timm {v} | {n} | {t["train_img_s"]:.1f} | {t["step_ms"]:.1f} | {t["compile_s"]:.1f} | '
          f'{gib(t["peak_memory_bytes"])} | {pct(t["mfu"])} | - | - |')
json.dump(runs, open(os.path.join(results, 'gpu_benchmark.json'), 'w'), indent=1)
PY
echo "results: $results" >&2
