"""se_flax.tools.fast_path_ab: variant specs, the default list, that each variant really is built
with its fast paths off, and that the figures are medians of interleaved rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from se_flax import fast_paths
from se_flax.tools import benchmark
from se_flax.tools import fast_path_ab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'se_flax.tools.fast_path_ab', *flags], cwd=REPO, text=True,
                        env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=600)


def test_parse_specs():
  assert fast_path_ab.parse('seresnet50') == ('seresnet50', ())
  assert fast_path_ab.parse('seresnet50~bn_vjp~pool_vjp') == ('seresnet50', ('bn_vjp', 'pool_vjp'))
  assert fast_path_ab.parse('resnet50~all') == ('resnet50', fast_paths.NAMES)
  with pytest.raises(ValueError, match=r"variant 'seresnet50~bnvjp': fast paths \['bnvjp'\] are not among"):
    fast_path_ab.parse('seresnet50~bnvjp')
  with pytest.raises(ValueError, match='unknown model'):
    fast_path_ab.parse('seresnet51')


def test_default_variants_and_baselines():
  assert fast_path_ab.default_variants('seresnet50') == [
      'seresnet50', 'seresnet50~dot_1x1', 'seresnet50~pool_vjp', 'seresnet50~bn_vjp', 'seresnet50~eigen_conv',
      'seresnet50~all', 'resnet50']
  assert fast_path_ab.baseline('se_vgg16_bn') == 'vgg16_bn'
  assert fast_path_ab.baseline('seresnext50_32x4d') == 'resnext50_32x4d'
  assert fast_path_ab.baseline('resnet50') is None


def test_each_variant_is_built_with_its_paths_off(monkeypatch):
  seen = []
  monkeypatch.setattr(benchmark, 'compiled_train_step',
                      lambda config, size: seen.append((config.model.name, sorted(fast_paths._disabled))) or {})  # pylint: disable=protected-access
  monkeypatch.setattr(benchmark, 'run_steps', lambda v: None)
  fast_path_ab.build('seresnet_tiny~pool_vjp~bn_vjp', batch=2, image_size=32, dtype='float32')
  fast_path_ab.build('seresnet_tiny', batch=2, image_size=32, dtype='float32')
  assert seen == [('seresnet_tiny', ['bn_vjp', 'pool_vjp']), ('seresnet_tiny', [])]
  assert not fast_paths._disabled  # pylint: disable=protected-access


def test_rows_are_medians_of_interleaved_rounds(monkeypatch):
  durations = {'a': [10, 30, 20], 'a~bn_vjp': [12, 50, 26]}  # medians 20 and 26 ms
  order, now = [], [0.0]

  def fake_build(spec, batch, image_size, dtype):
    times = iter(durations[spec])

    def step(state, data):
      order.append(spec)
      now[0] += next(times) / 1e3
      return state, {}
    return {'step': step, 'state': 0, 'data': None, 'compile_s': 1.0}

  monkeypatch.setattr(fast_path_ab, 'parse', lambda spec: (spec.split('~')[0], tuple(spec.split('~')[1:])))
  monkeypatch.setattr(fast_path_ab, 'build', fake_build)
  monkeypatch.setattr(benchmark.time, 'perf_counter', lambda: now[0])
  rows = fast_path_ab.measure(['a', 'a~bn_vjp'], batch=4, image_size=32, dtype='float32', rounds=3)
  assert order == ['a', 'a~bn_vjp'] * 3
  assert [r['step_ms'] for r in rows] == pytest.approx([20.0, 26.0])
  assert rows[1]['ratio'] == pytest.approx(1.3) and rows[1]['train_img_s'] == pytest.approx(4 / 0.026)
  assert rows[1]['fast_paths_off'] == ['bn_vjp'] and rows[1]['rounds_ms'] == pytest.approx([12, 50, 26])
  assert '| a~bn_vjp | 26 | 153.85 | 1.300 | 12, 50, 26 |' in fast_path_ab.format_table(rows)


def test_bad_variant_is_a_one_line_error():
  proc = _run('--variants=seresnet_tiny~fast')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "fast_path_ab: variant 'seresnet_tiny~fast': fast paths ['fast'] are not among dot_1x1")


def test_real_run_of_two_variants():
  """End to end on the tiny net: two compiled train steps, one round, a table and JSON rows."""
  proc = _run('--batch=2', '--image-size=32', '--rounds=2', '--variants=seresnet_tiny,seresnet_tiny~all', '--json')
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json.loads(proc.stdout.strip().splitlines()[-1])
  assert [r['variant'] for r in rows] == ['seresnet_tiny', 'seresnet_tiny~all']
  assert rows[1]['fast_paths_off'] == list(fast_paths.NAMES) and rows[0]['ratio'] == 1.0
  assert all(len(r['rounds_ms']) == 2 and r['step_ms'] > 0 for r in rows)
  assert '| seresnet_tiny~all |' in proc.stdout
