"""The benchmark tools on a tiny model and a short duration: figures, errors, no TensorFlow.

The benchmarks run in subprocesses (fresh module tables, one device by default even though the
test session fakes four); the persistent compilation cache of conftest.py keeps reruns short.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from se_flax.tools import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--model=seresnet_tiny', '--batch=4', '--image-size=32', '--repeats=1', '--steps=1']
FIGURES = ('train_img_s', 'step_ms', 'infer_img_s', 'compile_s', 'macs_per_image')


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


def test_benchmark_json_figures_without_tensorflow():
  code = ('import sys, json; from se_flax.tools import benchmark; benchmark.main(sys.argv); '
          'print(json.dumps({m: m in sys.modules for m in ("tensorflow", "tensorflow_datasets")}))')
  proc = _python(code, *TINY, '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  *_, figures, imported = proc.stdout.strip().splitlines()
  assert json.loads(imported) == {'tensorflow': False, 'tensorflow_datasets': False}
  result = json.loads(figures)
  for key in FIGURES:
    assert result[key] > 0, key
  assert result['num_devices'] == 1 and result['batch'] == 4
  assert result['mfu'] is None  # CPU: no peak in the table and no --peak-tflops
  assert result['fast_paths_disabled'] == []
  assert '| se_flax seresnet_tiny |' in proc.stdout


def test_unknown_fast_path_is_a_one_line_error():
  proc = subprocess.run([sys.executable, '-m', 'se_flax.tools.benchmark', *TINY, '--disable-fast-paths=bn_vjp,bogus'],
                        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "--disable-fast-paths: fast paths ['bogus'] are not among dot_1x1, pool_vjp, bn_vjp, eigen_conv")


@pytest.mark.skipif(importlib.util.find_spec('torch') is not None, reason='torch is installed here')
def test_vs_timm_without_torch_is_one_line_install_hint():
  proc = subprocess.run([sys.executable, '-m', 'se_flax.tools.benchmark', *TINY, '--vs-timm'], cwd=REPO,
                        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines() == [
      '--vs-timm needs torch and timm (torch is missing for ' + sys.executable + '): '
      'pip install -r requirements-timm.txt']


def test_peak_tflops_table():
  assert benchmark.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.0
  assert benchmark.peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.0
  assert benchmark.peak_tflops('TPU v5 lite', 'bfloat16') == 197.0
  assert benchmark.peak_tflops('cpu', 'float32') is None
  assert benchmark.peak_tflops('cpu', 'float32', override=1.5) == 1.5
  assert benchmark.mfu(1000.0, 4_000_000_000, 989.0) == pytest.approx(1000 * 24e9 / 989e12)


@pytest.mark.parametrize('dataset, keys', [
    ('cifar', ('cifar_train_img_s',)),
    ('imagenet-jpeg', ('inception_train_img_s', 'flax_example_train_img_s', 'eval_img_s', 'pretrained_eval_img_s')),
])
def test_pipeline_benchmark(dataset, keys):
  proc = subprocess.run([sys.executable, '-m', 'se_flax.tools.pipeline_benchmark', f'--dataset={dataset}',
                         '--batch=8', '--seconds=0.5', '--num-jpegs=8', '--json'], cwd=REPO, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for key in keys:
    assert result[key] > 0 and result[key + '_per_core'] > 0 and result[key[:-6] + '_img_per_cpu_s'] > 0, key


def test_gpu_script_runs_every_variant_and_reports_ratios(tmp_path):
  """scripts/gpu_benchmark.sh on the CPU with the tiny net: one run per batch, one with a fast path
  off, and the summary's paths-off ratio is the two runs' step-time ratio."""
  env = dict(os.environ, PYTHONPATH=REPO, OUT=str(tmp_path), MODELS='seresnet_tiny', BATCHES='2 4', IMAGE='32',
             DTYPE='float32', VS_TIMM='0', REPEATS='1', STEPS='1', SLOW_PATHS='bn_vjp', PYTHON=sys.executable)
  proc = subprocess.run(['bash', 'scripts/gpu_benchmark.sh'], cwd=REPO, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.load(open(tmp_path / 'gpu_benchmark.json'))
  rows = {r['run']: r for r in report['summary']}
  assert list(rows) == ['seresnet_tiny_b2', 'seresnet_tiny_b2_off', 'seresnet_tiny_b4']
  assert rows['seresnet_tiny_b2_off']['fast_paths_disabled'] == ['bn_vjp']
  runs = report['runs']
  want = runs['seresnet_tiny_b2_off']['step_ms'] / runs['seresnet_tiny_b2']['step_ms']
  assert rows['seresnet_tiny_b2_off']['paths_off_step_ratio'] == pytest.approx(want)
  assert runs['seresnet_tiny_b4']['batch'] == 4 and rows['seresnet_tiny_b4']['paths_off_step_ratio'] is None
  assert '| se_flax | seresnet_tiny | 2 | bn_vjp |' in (tmp_path / 'gpu_benchmark.md').read_text()


def test_flax_example_reference_crops_and_normalises():
  """The pipeline benchmark's reference transform (the flax ImageNet example's train crops): 224 px
  crops of a flat grey JPEG come out as (grey - mean) / std in every pixel (any crop, any flip).
  In a child process: the pipeline tool's flags share names with the benchmark's."""
  code = (
      'import numpy as np, tensorflow as tf\n'
      'from se_flax.tools import pipeline_benchmark\n'
      'grey = tf.io.encode_jpeg(tf.fill([300, 400, 3], tf.constant(128, tf.uint8)), quality=100).numpy()\n'
      'assert np.all(tf.io.decode_jpeg(grey).numpy() == 128)\n'
      "x = np.asarray(next(pipeline_benchmark.flax_example_train_batches([grey], batch=4))['image'])\n"
      'want = (128 - np.array([0.485, 0.456, 0.406]) * 255) / (np.array([0.229, 0.224, 0.225]) * 255)\n'
      'print(x.shape, float(np.max(np.abs(x - want))))\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  shape, error = proc.stdout.strip().splitlines()[-1].rsplit(' ', 1)
  assert shape == '(4, 224, 224, 3)' and float(error) < 1e-5
