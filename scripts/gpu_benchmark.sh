#!/usr/bin/env bash
# se_flax vs timm on one GPU in one run: seresnet50 and resnet50, bf16, 224 px; one table, one JSON.
#
#   PYTHONPATH=. bash scripts/gpu_benchmark.sh            # from the repo root; results under $OUT
#   INSTALL=1 PYTHONPATH=. bash scripts/gpu_benchmark.sh  # first pip-installs jax[cuda12], the
#                                                         # requirements, torch and timm (Python 3.12)
#
# Per model: se_flax's real train step at each of BATCHES (default 256 and 512) with every fast path
# on (se_flax.fast_paths), and at the first batch once more with SLOW_PATHS off (default bn_vjp and
# pool_vjp, the two that act on GPUs; dot_1x1 and eigen_conv are CPU-only), which measures what
# they give; train and inference img/s, compile time, peak memory, MFU. timm runs at the first
# batch in a child process (channels_last, bf16 autocast, eager and torch.compile, train and eval).
# Writes $OUT/gpu_benchmark.json (every figure) and $OUT/gpu_benchmark.md (the table).
# Budget on one H100/H200: ~4 min per model (XLA compiles ~30 s a variant; torch.compile ~1 min for
# training and again for eval mode), ~8 min in all. Overrides for a CPU smoke test:
#   MODELS=seresnet_tiny BATCHES=4 IMAGE=64 DTYPE=float32 VS_TIMM=0 REPEATS=1 STEPS=1 bash scripts/gpu_benchmark.sh
#   MODELS="seresnet18 resnet18" BATCHES="2 4" IMAGE=64 DTYPE=float32 TIMM_COMPILE=0 REPEATS=1 STEPS=1 \
#     TIMM_PYTHON=/path/to/torch/venv/bin/python bash scripts/gpu_benchmark.sh
set -euo pipefail

MODELS=${MODELS:-"seresnet50 resnet50"}
BATCHES=${BATCHES:-${BATCH:-"256 512"}}
IMAGE=${IMAGE:-224}
DTYPE=${DTYPE:-bfloat16}
REPEATS=${REPEATS:-3}
STEPS=${STEPS:-10}
VS_TIMM=${VS_TIMM:-1}
TIMM_COMPILE=${TIMM_COMPILE:-1}
SLOW_PATHS=${SLOW_PATHS-bn_vjp,pool_vjp}  # empty: no run with fast paths off
INSTALL=${INSTALL:-0}
PYTHON=${PYTHON:-python}
export PYTHONPATH=${PYTHONPATH:-.}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}  # timm shares the GPU first
results=${OUT:-$(mktemp -d)}
mkdir -p "$results"

if [[ "$INSTALL" == 1 ]]; then
  # jax[cuda12] brings the CUDA 12 plugin and libraries; PyPI's Linux torch wheels bundle CUDA.
  "$PYTHON" -m pip install --quiet "jax[cuda12]" -r requirements.txt -r requirements-timm.txt
fi

timm_flags=()
if [[ "$VS_TIMM" == 1 ]]; then
  timm_flags=(--vs-timm --timm-layouts=channels_last)
  [[ "$TIMM_COMPILE" == 1 ]] || timm_flags+=(--notimm-compile)
  [[ -z "${TIMM_PYTHON:-}" ]] || timm_flags+=(--timm-python="$TIMM_PYTHON")  # torch in another venv
fi

"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
runs=()
bench() {  # NAME, then benchmark flags; one log and one JSON file per run
  local name=$1; shift
  echo "== $name" >&2
  "$PYTHON" -m se_flax.tools.benchmark --image-size="$IMAGE" --dtype="$DTYPE" --repeats="$REPEATS" \
    --steps="$STEPS" --warmup=2 --json "$@" | tee "$results/$name.log" | tail -n 1 > "$results/$name.json"
  runs+=("$name")
}
first_batch=${BATCHES%% *}
for model in $MODELS; do
  for batch in $BATCHES; do
    if [[ "$batch" == "$first_batch" ]]; then
      bench "${model}_b${batch}" --model="$model" --batch="$batch" "${timm_flags[@]}"
      [[ -z "$SLOW_PATHS" ]] || bench "${model}_b${batch}_off" --model="$model" --batch="$batch" \
        --disable-fast-paths="$SLOW_PATHS" --noinference  # inference uses neither path
    else
      bench "${model}_b${batch}" --model="$model" --batch="$batch"
    fi
  done
done

"$PYTHON" - "$results" "${runs[@]}" <<'PY' | tee "$results/gpu_benchmark.md"
"""One table over the runs: se_flax (fast paths on / off) and timm; ratios to timm's best variant at
the same batch, SE overhead against the plain net, and what the fast paths give."""
import json, os, sys

results, names = sys.argv[1], sys.argv[2:]
runs = {n: json.load(open(os.path.join(results, f'{n}.json'))) for n in names}
gib = lambda b: 'n/a' if b is None else f'{b / 2**30:.1f} GiB'
pct = lambda x: 'n/a' if x is None else f'{x:.1%}'
num = lambda x, f='.1f': 'n/a' if x is None else format(x, f)


def key(r):
  return r['model'], r['batch'], tuple(r.get('fast_paths_disabled', []))


by_key = {key(r): r for r in runs.values()}
timm_best = {}  # (model, batch) -> img/s of timm's best variant
for r in runs.values():
  if r.get('timm'):
    timm_best[r['model'], r['batch']] = max(t['train_img_s'] for t in r['timm'].values())
first = next(iter(runs.values()))
print(f'\n{first["device_kind"]}, {first["dtype"]}, {first["image_size"]} px, median of '
      f'{first["repeats"]} x {first["steps"]} steps')
print('| system | model | batch | fast paths off | train img/s | step ms | infer img/s | compile s | peak memory '
      '| MFU | / timm best | SE overhead | paths-off step / on |')
print('|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
summary = []
for n, r in runs.items():
  model, batch, off = key(r)
  best = timm_best.get((model, batch))  # timm runs at the first batch only
  ratio = r['train_img_s'] / best if best else None
  plain = next((model[len(p):] for p in ('se_', 'se') if model.startswith(p)), None)  # seresnet50 -> resnet50
  base = by_key.get((plain, batch, off))
  overhead = r['step_ms'] / base['step_ms'] if base else None
  on = by_key.get((model, batch, ())) if off else None
  gain = r['step_ms'] / on['step_ms'] if on else None
  print(f'| se_flax | {model} | {batch} | {",".join(off) or "-"} | {r["train_img_s"]:.1f} | {r["step_ms"]:.1f} | '
        f'{num(r.get("infer_img_s"))} | {r["compile_s"]:.1f} | {gib(r["peak_memory_bytes"])} | {pct(r["mfu"])} | '
        f'{num(ratio, ".2f")} | {num(overhead, ".3f")} | {num(gain, ".3f")} |')
  summary.append({'run': n, 'model': model, 'batch': batch, 'fast_paths_disabled': list(off),
                  'train_img_s': r['train_img_s'], 'infer_img_s': r.get('infer_img_s'), 'mfu': r['mfu'],
                  'ratio_vs_timm_best': ratio, 'se_overhead': overhead, 'paths_off_step_ratio': gain})
  for v, t in r.get('timm', {}).items():
    print(f'| timm {v} | {model} | {batch} | - | {t["train_img_s"]:.1f} | {t["step_ms"]:.1f} | '
          f'{num(t.get("infer_img_s"))} | {t["compile_s"]:.1f} | {gib(t["peak_memory_bytes"])} | {pct(t["mfu"])} '
          '| - | - | - |')
json.dump({'summary': summary, 'runs': runs}, open(os.path.join(results, 'gpu_benchmark.json'), 'w'), indent=1)
PY
echo "results: $results" >&2
