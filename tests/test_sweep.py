"""Sweeps: expansion and names (se_flax.hyper), the ready sweep files, and the runner (tools/sweep)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from configs import digits as digits_config
from configs import imagenet as imagenet_config
from se_flax import hyper
from se_flax import train_lib
from se_flax.tools import sweep
from test_train import final_state, tiny_digits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = os.path.join(REPO, 'configs', 'sweeps')

# A stand-in for train.py: records its call, fails for seed 1 of r=4, else writes final_eval.json.
FAKE_TRAIN = """
import json, os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
with open(os.environ['CALLS'], 'a') as f:
  f.write(args['workdir'] + '\\n')
if args.get('config.model.se.reduction') == '4' and args.get('config.seed') == '1':
  print('error: this member fails on purpose', file=sys.stderr)
  sys.exit(1)
top1 = 0.5 + 0.01 * int(args.get('config.model.se.reduction', 0)) + 0.001 * int(args['config.seed'])
with open(os.path.join(args['workdir'], 'final_eval.json'), 'w') as f:
  json.dump({'top1': top1, 'top5': 1.0, 'loss': 1.0, 'params': 1, 'macs': 1, 'train_img_per_sec': 1.0}, f)
"""

SMALL_SWEEP = """
from se_flax import hyper
def get_sweep(config, arg=None):
  return hyper.product([hyper.sweep('config.model.se.reduction', [2, 4]), hyper.sweep('config.seed', [0, 1])])
"""


def test_product_zip_chain_names_and_order():
  members = hyper.product([hyper.sweep('config.model.se.reduction', [2, 4]), hyper.sweep('seed', [0, 1, 2])])
  assert members == [{'model.se.reduction': r, 'seed': s} for r in (2, 4) for s in (0, 1, 2)]  # first slowest
  zipped = hyper.zip([hyper.sweep('model.se.gate', ['tanh', 'relu']), hyper.sweep('optim.lr', [0.1, 0.2])])
  assert zipped == [{'model.se.gate': 'tanh', 'optim.lr': 0.1}, {'model.se.gate': 'relu', 'optim.lr': 0.2}]
  with pytest.raises(ValueError, match='equal length'):
    hyper.zip([hyper.sweep('a', [1]), hyper.sweep('b', [1, 2])])
  with pytest.raises(ValueError, match='set twice'):
    hyper.product([hyper.sweep('seed', [0]), hyper.sweep('config.seed', [1])])

  rows = hyper.chain([hyper.sweep('model.se.reduction', [8]), hyper.fixed('model.se.enabled', False)])
  sweep = hyper.product([rows, hyper.fixed('model.se.use_bias', False), hyper.sweep('seed', [0, 1])])
  names = hyper.member_names(sweep)
  # Fixed fields (use_bias) stay out of the names; the seed is always last.
  assert names == ['reduction=8,seed=0', 'reduction=8,seed=1', 'enabled=False,seed=0', 'enabled=False,seed=1']
  assert hyper.member_names(sweep) == names  # stable
  assert hyper.member_names(hyper.sweep('seed', [3])) == ['seed=3']  # the seed is named even when fixed
  assert hyper.format_value((True, False, False)) == 'T-F-F'
  assert hyper.setting_name(sweep[1], hyper.varying_keys(sweep)) == 'reduction=8'
  # Same last component in two fields: the full path keeps the names apart.
  both = hyper.zip([hyper.sweep('optim.lr', [1, 2]), hyper.sweep('schedule.lr', [3, 4])])
  assert hyper.member_names(both) == ['optim.lr=1,schedule.lr=3', 'optim.lr=2,schedule.lr=4']
  with pytest.raises(ValueError, match=r"members 0 and 1 share the name 'seed=0' \(the same overrides twice"):
    hyper.member_names(hyper.sweep('seed', [0, 0]))


def test_names_are_distinct_and_safe_for_values_that_look_alike():
  values = ['a/b', 'a_b', 'a b', 'a%b', 'x,y=z', '..', 0.1, 1e-05, -1, (1, -2), (-1, 2), ((1, 2), (3,)),
            ((1,), (2, 3)), ('a-b', 'c'), ('a', 'b-c'), (True, False, False, True), (0.5, 0.25), 'tanh']
  names = hyper.member_names(hyper.sweep('model.x', values))
  assert len(set(names)) == len(values)
  assert all(re.fullmatch(r'x=[A-Za-z0-9._+%-]*', n) for n in names), names
  assert names[0] == 'x=a%2Fb' and names[1] == 'x=a_b' and names[5] == 'x=..'
  assert names[15] == 'x=T-F-F-T' and names[16] == 'x=0.5-0.25' and names[7] == 'x=1e-05'
  assert hyper.format_value((1, -2)) == '1-%2D2'
  with pytest.raises(ValueError, match=r'share the name .*values spelled alike'):
    hyper.member_names(hyper.sweep('model.x', [1, '1']))
  with pytest.raises(ValueError, match='more than a directory name may have'):
    hyper.member_names(hyper.sweep('model.x', [tuple(range(100)), (1,)]))


def test_overrides_apply_to_a_copy_and_reject_unknown_fields():
  config = digits_config.get_config()
  changed = hyper.apply_overrides(config, {'model.se.stages': (False, True, True), 'seed': 5})
  assert changed.model.se.stages == (False, True, True) and changed.seed == 5 and config.seed == 0
  with pytest.raises(ValueError, match='model.se.reductoin'):
    hyper.apply_overrides(config, {'model.se.reductoin': 8})
  assert hyper.override_flags({'model.se.stages': (True, False), 'seed': 1}) == [
      '--config.model.se.stages=(True, False)', '--config.seed=1']


@pytest.mark.parametrize('name,settings', [('reduction', 6), ('squeeze', 3), ('gate', 4), ('stages', 5),
                                           ('placement', 6)])
def test_ready_sweeps_expand_for_any_base_config(name, settings):
  path = os.path.join(SWEEPS, f'{name}.py')
  for config, stages in ((digits_config.get_config(), 3), (imagenet_config.get_config(), 4)):
    module, members = hyper.load_sweep(path, config)  # every member fits the config
    keys = hyper.varying_keys(members)
    assert len({hyper.setting_name(m, keys) for m in members}) == settings + (stages - 3) * (name == 'stages')
    assert len(members) == 3 * len({hyper.setting_name(m, keys) for m in members})  # 3 seeds each
    assert all(m['model.se.use_bias'] is False for m in members)  # the paper's ablations: no FC biases
    assert sum(m.get('model.se.enabled') is False for m in members) == 3  # the no-SE baseline
    if name == 'stages':
      assert {len(m['model.se.stages']) for m in members if 'model.se.stages' in m} == {stages}
    paper = module.get_paper(config)
    matched = [m for m in members if any(all(m.get(k) == v for k, v in match.items()) for match, _ in paper)]
    assert matched or name == 'stages'
  _, five = hyper.load_sweep(os.path.join(SWEEPS, 'reduction.py:5'), digits_config.get_config())
  assert len(five) == 6 * 5
  for bad in ('x', '0'):
    with pytest.raises(ValueError, match=f"number of seeds must be a positive integer, got '{bad}'"):
      hyper.load_sweep(os.path.join(SWEEPS, f'reduction.py:{bad}'), digits_config.get_config())


def test_load_sweep_rejects_a_get_sweep_that_returns_no_list(tmp_path):
  (tmp_path / 'bad.py').write_text("def get_sweep(config):\n  return {'seed': 1}\n")
  with pytest.raises(ValueError, match='must return a list of override dicts'):
    hyper.load_sweep(str(tmp_path / 'bad.py'), digits_config.get_config())


def test_base_args_take_both_flag_spellings():
  got = sweep.base_args(['--config', 'configs/x.py:a', '--config.seed', '3', '--config.optim.lr=-1',
                         '--workdir', 'w', '--parallel=2'], 'default.py')
  assert got == [f'--config={os.path.abspath("configs/x.py")}:a', '--config.seed=3', '--config.optim.lr=-1']
  assert sweep.base_args(['--config.seed=3'], 'd.py') == ['--config=d.py', '--config.seed=3']


def sweep_cli(args):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'se_flax.tools.sweep', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_cli_dry_run_prints_one_train_command_per_member(tmp_path, digits_dir):
  (tmp_path / 'small.py').write_text(SMALL_SWEEP)
  args = ['--config=configs/digits.py:seresnet_tiny_cifar', f'--sweep={tmp_path / "small.py"}',
          f'--workdir={tmp_path / "sweep"}', f'--config.data.data_dir={digits_dir}']
  out = sweep_cli([*args, '--dry_run', '--config.train.num_steps=7'])
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4 and all(l.split()[1].endswith('train.py') for l in lines)
  assert '--config.model.se.reduction=4' in lines[2] and '--config.seed=0' in lines[2]
  assert all('--config.train.num_steps=7' in l for l in lines)  # base overrides go to every member
  assert lines[3].endswith(f'--workdir={tmp_path}/sweep/reduction=4,seed=1')
  assert not os.path.exists(tmp_path / 'sweep')  # a dry run touches nothing


def run_small(tmp_path, digits_dir, **kw) -> tuple[int, str]:
  """The small sweep, in this process, with the fake trainer; returns (exit code, output)."""
  config = tiny_digits(digits_dir)
  out = io.StringIO()
  code = sweep.run_sweep(config, str(tmp_path / 'small.py'), str(tmp_path / 'sweep'), ['--config=x'],
                         train_script=str(tmp_path / 'fake_train.py'), out=out, **kw)
  return code, out.getvalue()


def test_failure_does_not_stop_others_skip_finished_and_task_index(tmp_path, digits_dir, monkeypatch):
  (tmp_path / 'small.py').write_text(SMALL_SWEEP)
  (tmp_path / 'fake_train.py').write_text(FAKE_TRAIN)
  calls = tmp_path / 'calls.txt'
  monkeypatch.setenv('CALLS', str(calls))
  code, dry = run_small(tmp_path, digits_dir, dry_run=True, task_index=1)
  assert code == 0 and dry.strip().endswith('--workdir=' + str(tmp_path / 'sweep' / 'reduction=2,seed=1'))
  assert len(dry.strip().splitlines()) == 1
  with pytest.raises(ValueError, match='--task_index=4 is out of range: the sweep has 4 members'):
    run_small(tmp_path, digits_dir, task_index=4)

  code, out = run_small(tmp_path, digits_dir, parallel=2)
  assert code == 1
  assert len(calls.read_text().splitlines()) == 4  # the failing member did not stop the others
  tail = out[out.index('member(s) failed'):]
  assert 'reduction=4,seed=1 (member 3, exit 1): error: this member fails on purpose' in tail
  assert 'sweep: 3/4 done (0 already finished), 0 running, 1 failed, 0 pending' in out
  manifest = json.load(open(tmp_path / 'sweep' / 'sweep.json'))
  assert [m['setting'] for m in manifest['members']] == ['reduction=2'] * 2 + ['reduction=4'] * 2

  calls.write_text('')
  code, out = run_small(tmp_path, digits_dir)
  assert code == 1 and calls.read_text().splitlines() == [str(tmp_path / 'sweep' / 'reduction=4,seed=1')]
  assert '3 already finished' in out  # finished members are skipped

  calls.write_text('')
  os.remove(tmp_path / 'sweep' / 'reduction=2,seed=1' / 'final_eval.json')
  code, _ = run_small(tmp_path, digits_dir, task_index=1)
  assert code == 0 and calls.read_text().splitlines() == [str(tmp_path / 'sweep' / 'reduction=2,seed=1')]
  code, _ = run_small(tmp_path, digits_dir, task_index=0)
  assert code == 0 and len(calls.read_text().splitlines()) == 1  # finished: not run again
  record = json.load(open(tmp_path / 'sweep' / 'reduction=2,seed=0' / sweep.MEMBER_RECORD))
  assert record['overrides'] == {'model.se.reduction': 2, 'seed': 0} and record['base_args'] == ['--config=x']

  # The sweep file changes a field that is not in the names: finished members are not taken for it.
  (tmp_path / 'small.py').write_text(SMALL_SWEEP.replace("[0, 1])])", "[0, 1]), "
                                                         "hyper.fixed('model.se.use_bias', False)])"))
  with pytest.raises(ValueError, match=r"reduction=2,seed=0 holds a run with the overrides .*did the sweep"):
    run_small(tmp_path, digits_dir, task_index=0)
  assert len(calls.read_text().splitlines()) == 1  # nothing ran
  # A finished run without a record (not started by the sweep) is not taken for a member either.
  os.remove(tmp_path / 'sweep' / 'reduction=2,seed=0' / sweep.MEMBER_RECORD)
  with pytest.raises(ValueError, match='no sweep_member.json saying which overrides'):
    run_small(tmp_path, digits_dir, task_index=0)
  with pytest.raises(ValueError, match='must be a local or network-filesystem path'):
    sweep.run_sweep(tiny_digits(digits_dir), str(tmp_path / 'small.py'), 'gs://bucket/sweep', [],
                    train_script=str(tmp_path / 'fake_train.py'))


def test_sigterm_reaches_running_members_and_starts_no_more(tmp_path):
  """What a SLURM/TPU preemption of the sweep itself does: members save (here: exit 0) and stop."""
  script = tmp_path / 'slow_train.py'
  script.write_text('import signal, sys, time\n'
                    'signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n'
                    'time.sleep(60)\n')
  members = [sweep.Member(i, f'seed={i}', {'seed': i}, str(tmp_path / f'seed={i}')) for i in range(2)]
  runner = sweep.Runner(members, [], str(script), parallel=1, out=io.StringIO())
  def stop_when_started():
    while not runner.running:
      time.sleep(0.05)
    time.sleep(0.5)  # let the child install its handler
    runner.terminate()
  threading.Thread(target=stop_when_started, daemon=True).start()
  start = time.time()
  assert runner.run() == 143
  assert time.time() - start < 30
  assert [m.name for m in runner.interrupted] == ['seed=0'] and [m.name for m in runner.not_started] == ['seed=1']
  assert 'rerun the same command to continue: seed=0 seed=1' in runner.out.getvalue()


def test_half_finished_member_resumes_from_its_checkpoint(tmp_path, digits_dir):
  """A member stopped at step 2 of 4 (checkpoint, no final_eval.json) continues from step 2, via train.py."""
  (tmp_path / 'one.py').write_text("from se_flax import hyper\n"
                                   "def get_sweep(config):\n  return hyper.sweep('seed', [3])\n")
  member = tmp_path / 'sweep' / 'seed=3'
  config = tiny_digits(digits_dir, num_steps=2, checkpoint_every_steps=2)
  train_lib.train_and_evaluate(hyper.apply_overrides(config, {'seed': 3}), str(member))
  os.remove(member / 'final_eval.json')
  config.train.num_steps = 4
  base = ['--config=' + os.path.join(REPO, 'configs', 'digits.py') + ':seresnet_tiny_cifar',
          f'--config.data.data_dir={digits_dir}', '--config.train.global_batch_size=32',
          '--config.eval.global_batch_size=64', '--config.train.num_steps=4',
          '--config.train.checkpoint_every_steps=2']
  out = io.StringIO()
  code = sweep.run_sweep(config, str(tmp_path / 'one.py'), str(tmp_path / 'sweep'), base, out=out)
  log = (member / 'train.log').read_text()
  assert code == 0, log[-3000:]
  assert re.search(r'Resumed from \S+ at step 2', log)
  result = json.load(open(member / 'final_eval.json'))
  assert result['step'] == 4 and result['params'] > 0 and result['macs'] > 0
  assert result['train_img_per_sec'] > 0
  assert int(final_state(str(member))['step']) == 4
