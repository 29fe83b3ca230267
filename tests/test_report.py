"""The sweep report on a directory of fake results: values, mean and std, baseline, paper column, plots."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys

import matplotlib.image
import pytest

from se_flax.tools import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

# setting -> overrides, top-1 per seed (None: unfinished), params
FAKE = {
    'reduction=4': ({'model.se.reduction': 4}, [0.95, 0.96, 0.97], 300),
    'reduction=16': ({'model.se.reduction': 16}, [0.90, 0.94, None], 200),
    'enabled=False': ({'model.se.enabled': False}, [0.91, 0.93, 0.92], 100),
}


def fake_sweep(root, fake=FAKE, varying=('model.se.reduction', 'model.se.enabled', 'seed'), paper=True):
  members = []
  for setting, (overrides, top1s, params) in fake.items():
    for seed, top1 in enumerate(top1s):
      name = f'{setting},seed={seed}'
      members.append({'name': name, 'setting': setting, 'overrides': {**overrides, 'seed': seed},
                      'workdir': name})
      os.makedirs(root / name)
      if top1 is not None:
        result = {'top1': top1, 'top5': 1.0, 'loss': 1 - top1, 'params': params, 'macs': 10 * params,
                  'train_img_per_sec': 50.0 + seed if seed < 2 else None}  # seed 2: resumed after its last step
        (root / name / 'final_eval.json').write_text(json.dumps(result))
  figures = [{'match': {'model.se.reduction': 4}, 'top1_err': 22.25, 'top5_err': 6.09, 'params_m': 35.7},
             {'match': {'model.se.enabled': False}, 'top1_err': 23.30, 'top5_err': 6.55}]
  manifest = {'sweep': 'configs/sweeps/x.py', 'command': 'python -m se_flax.tools.sweep ...',
              'varying': list(varying), 'members': members, 'paper': figures if paper else []}
  (root / 'sweep.json').write_text(json.dumps(manifest))


def assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
  assert image[..., :3].std() > 0.01  # something is drawn


def test_rows_mean_std_baseline_and_paper(tmp_path):
  fake_sweep(tmp_path)
  rows = {r['setting']: r for r in report.write_report(str(tmp_path))}
  assert list(rows) == ['reduction=4', 'reduction=16', 'enabled=False']  # sweep order
  r4, r16, base = rows['reduction=4'], rows['reduction=16'], rows['enabled=False']
  assert r4['n'] == 3 and r16['n'] == 2  # the unfinished seed is left out
  assert r4['top1_mean'] == pytest.approx(96.0)
  assert r4['top1_std'] == pytest.approx(statistics.stdev([95, 96, 97]))  # sample std: 1.0
  assert r16['top1_std'] == pytest.approx(statistics.stdev([90, 94]))
  assert r4['loss_mean'] == pytest.approx(0.04)
  assert base['baseline'] and not r4['baseline']
  assert r4['delta_top1'] == pytest.approx(96.0 - 92.0) and r16['delta_top1'] == pytest.approx(-0.0)
  assert r4['params'] == 300 and r4['macs'] == 3000 and r4['train_img_per_sec_mean'] == pytest.approx(50.5)
  assert r4['paper']['top1_err'] == 22.25 and r16['paper'] is None
  assert r4['paper_delta_top1'] == pytest.approx(23.30 - 22.25)

  with open(tmp_path / 'report.csv') as f:
    table = {row['setting']: row for row in csv.DictReader(f)}
  assert float(table['reduction=4']['top1_mean']) == pytest.approx(96.0)
  assert float(table['reduction=4']['top1_std']) == pytest.approx(1.0)
  assert table['reduction=4']['paper_top1'] == '77.75' and table['reduction=16']['paper_top1'] == ''
  md = (tmp_path / 'report.md').read_text()
  assert '| reduction=4 | 3 | 96.00 ± 1.00 | +4.00 |' in md
  assert '| enabled=False (baseline) | 3 | 92.00 ± 1.00 | +0.00 |' in md
  assert '| reduction=16 | 2 of 3 | 92.00 ± 2.83 |' in md  # the missing seed is counted, not hidden
  assert '8 of 9 members finished' in md and '- reduction=16,seed=2: failed, stopped or still running' in md
  assert table['reduction=16']['seeds'] == '2' and table['reduction=16']['members'] == '3'
  assert 'ImageNet' in md and 'trends only' in md
  assert report.numeric_axis(json.loads((tmp_path / 'sweep.json').read_text()),
                             list(rows.values())) == 'model.se.reduction'
  assert_png(tmp_path / 'report.png')


def test_failed_not_started_and_stale_members_are_named(tmp_path, capsys):
  fake = {'reduction=4': ({'model.se.reduction': 4}, [0.95, None, None], 300),
          'enabled=False': ({'model.se.enabled': False}, [0.91, 0.92], 100)}
  fake_sweep(tmp_path, fake, varying=('model.se.reduction', 'model.se.enabled', 'seed'))
  (tmp_path / 'reduction=4,seed=1' / 'train.log').write_text('step 1\nerror: out of memory\n')
  os.rmdir(tmp_path / 'reduction=4,seed=2')  # never started
  stale = tmp_path / 'enabled=False,seed=1'  # a finished run of other overrides in a member's directory
  (stale / 'sweep_member.json').write_text(json.dumps({'overrides': {'model.se.enabled': True, 'seed': 1}}))
  rows = {r['setting']: r for r in report.write_report(str(tmp_path))}
  assert rows['reduction=4']['n'] == 1 and math.isnan(rows['reduction=4']['top1_std'])  # one seed: no std
  assert rows['enabled=False']['n'] == 1 and rows['enabled=False']['top1_mean'] == pytest.approx(91.0)
  md = (tmp_path / 'report.md').read_text()
  assert '| reduction=4 | 1 of 3 | 95.00 | +4.00 |' in md
  assert '- reduction=4,seed=1: failed, stopped or still running; last log line: error: out of memory' in md
  assert '- reduction=4,seed=2: not started' in md
  assert '- enabled=False,seed=1: its directory was started with other overrides' in md
  assert 'warning: 3 of 5 members have no result' in capsys.readouterr().err
  assert_png(tmp_path / 'report.png')
  with pytest.raises(ValueError, match='is a URL'):
    report.write_report('gs://bucket/sweep')


def test_categorical_sweep_gives_a_bar_chart(tmp_path):
  fake = {'gate=sigmoid': ({'model.se.gate': 'sigmoid'}, [0.95, 0.96], 300),
          'gate=tanh': ({'model.se.gate': 'tanh'}, [0.93, 0.95], 300),
          'enabled=False': ({'model.se.enabled': False}, [0.91, 0.92], 100)}
  fake_sweep(tmp_path, fake, varying=('model.se.gate', 'model.se.enabled', 'seed'), paper=False)
  rows = report.write_report(str(tmp_path), str(tmp_path / 'out'), title='gates')
  assert report.numeric_axis({'varying': ['model.se.gate', 'seed']}, rows) is None
  assert_png(tmp_path / 'out' / 'report.png')
  assert 'paper' not in (tmp_path / 'out' / 'report.md').read_text().split('\n\n')[3]  # no paper column


def test_kinds_that_add_parameters_plot_accuracy_against_added_parameters(tmp_path):
  fake = {'kind=se': ({'model.attn.kind': 'se'}, [0.95, 0.97], 300),
          'kind=eca': ({'model.attn.kind': 'eca'}, [0.93, 0.95], 103),
          'kind=gc': ({'model.attn.kind': 'gc'}, [0.94, 0.94], 420),
          'enabled=False': ({'model.se.enabled': False}, [0.91, 0.92], 100)}
  fake_sweep(tmp_path, fake, varying=('model.attn.kind', 'model.se.enabled', 'seed'), paper=False)
  rows = report.write_report(str(tmp_path), str(tmp_path / 'out'), title='kinds')
  points = {s: (added, round(mean, 6), round(std, 6)) for s, added, mean, std in report.added_params_points(rows)}
  assert points == {'kind=se': (200, 96.0, round(2 ** 0.5, 6)), 'kind=eca': (3, 94.0, round(2 ** 0.5, 6)),
                    'kind=gc': (320, 94.0, 0.0), 'enabled=False': (0, 91.5, round(0.5 ** 0.5, 6))}
  assert_png(tmp_path / 'out' / 'report.png')
  gates = [{**r, 'params': 300} for r in rows]  # equal counts (gates, squeezes): the bar chart instead
  assert report.added_params_points(gates) == []


def test_cli_writes_report_and_rejects_a_non_sweep_dir(tmp_path):
  fake_sweep(tmp_path)
  run = lambda *a: subprocess.run([sys.executable, '-m', 'se_flax.tools.report', *a], cwd=REPO,
                                  capture_output=True, text=True, timeout=300)
  out = run(str(tmp_path), f'--out={tmp_path / "r"}')
  assert out.returncode == 0, out.stderr[-2000:]
  assert '96.00 ± 1.00' in out.stdout and os.path.exists(tmp_path / 'r' / 'report.png')
  bad = run(str(tmp_path / 'r'))
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 1 and last.startswith('error: ') and 'sweep.json' in last
