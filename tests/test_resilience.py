"""Faults a long run meets: SIGTERM, damaged or foreign checkpoints, NaNs, a busy workdir, bad input."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from se_flax import checkpointing
from se_flax import resilience
from se_flax import train_lib
from test_train import REPO, assert_same_state, final_state, run_cli, tiny_digits


def tree_digest(path: str) -> dict[str, str]:
  """Every file under `path` with a hash of its bytes: 'nothing was overwritten' made checkable."""
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      full = os.path.join(root, f)
      out[os.path.relpath(full, path)] = hashlib.sha256(open(full, 'rb').read()).hexdigest()
  return out


def cli_args(workdir, data_dir, *extra):
  return ['train.py', '--config=configs/digits.py:seresnet_tiny_cifar', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.train.global_batch_size=32', *extra]


def test_sigterm_saves_current_step_and_rerun_continues_exactly(digits_dir, tmp_path):
  work = tmp_path / 'work'
  args = cli_args(work, digits_dir, '--config.train.num_steps=60', '--config.train.log_every_steps=1',
                  '--config.train.checkpoint_every_steps=50')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stderr:  # wait until training is under way
      if ' step 12/60 ' in line:
        break
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0
  assert time.time() - sent < 60
  saved = sorted(int(d) for d in os.listdir(work / 'checkpoints') if d.isdigit())
  assert len(saved) == 1 and 12 <= saved[0] < 50  # the step reached, not a scheduled save
  assert '"preempted": true' in out.strip().splitlines()[-1]

  rerun = run_cli(args)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  straight = run_cli([a.replace(str(work), str(tmp_path / 'straight')) for a in args])
  assert straight.returncode == 0, straight.stderr[-2000:]
  assert_same_state(final_state(str(work)), final_state(str(tmp_path / 'straight')))


def _largest_file(path: str) -> str:
  files = [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize('damage', ['truncated_data', 'empty_metadata'])
def test_damaged_latest_checkpoint_falls_back_to_newest_good(digits_dir, tmp_path, damage, caplog):
  config = lambda n: tiny_digits(digits_dir, num_steps=n, checkpoint_every_steps=2, keep_checkpoints=10,
                                 eval_every_epochs=0.0)
  work = str(tmp_path / 'work')
  train_lib.train_and_evaluate(config(6), work)
  latest = os.path.join(work, 'checkpoints', '6')
  if damage == 'truncated_data':
    victim = _largest_file(os.path.join(latest, 'state'))
    with open(victim, 'r+b') as f:
      f.truncate(os.path.getsize(victim) // 3)
  else:
    open(os.path.join(latest, 'state', '_METADATA'), 'w').close()
  good = {s: tree_digest(os.path.join(work, 'checkpoints', s)) for s in ('2', '4')}

  with caplog.at_level('WARNING'):
    train_lib.train_and_evaluate(config(8), work)
  # ' is damaged (': the warning itself, not other records that merely hold this test's tmp path
  warnings = [r.getMessage() for r in caplog.records if ' is damaged (' in r.getMessage()]
  assert len(warnings) == 1 and f'{os.sep}6 is damaged' in warnings[0], warnings
  assert any(d.startswith('6.damaged-') for d in os.listdir(os.path.join(work, 'checkpoints')))
  for s, digest in good.items():  # good checkpoints untouched
    assert tree_digest(os.path.join(work, 'checkpoints', s)) == digest
  train_lib.train_and_evaluate(config(8), str(tmp_path / 'straight'))
  assert_same_state(final_state(work), final_state(str(tmp_path / 'straight')))


def test_checkpoint_of_another_model_is_refused_and_untouched(digits_dir, tmp_path):
  work = str(tmp_path / 'work')
  train_lib.train_and_evaluate(tiny_digits(digits_dir, num_steps=2, checkpoint_every_steps=2), work)
  before = tree_digest(os.path.join(work, 'checkpoints'))
  other = tiny_digits(digits_dir, num_steps=4)
  other.model.name = 'seresnet20_cifar'
  with pytest.raises(checkpointing.CheckpointMismatchError) as e:
    train_lib.train_and_evaluate(other, work)
  message = str(e.value)
  assert 'missing: ' in message and 'shape mismatches' in message and '(8,) vs (16,)' in message
  assert '\n' not in message
  assert tree_digest(os.path.join(work, 'checkpoints')) == before


def test_nonfinite_loss_stops_at_its_step_and_keeps_last_good_checkpoint(digits_dir, tmp_path):
  config = tiny_digits(digits_dir, num_steps=10, checkpoint_every_steps=1, log_every_steps=1)
  config.optim.lr = 1e6
  config.schedule.warmup_epochs = 0.0
  with pytest.raises(resilience.NonFiniteError, match=r'non-finite loss or gradient at step (\d+)') as e:
    train_lib.train_and_evaluate(config, str(tmp_path))
  bad_step = int(e.value.args[0].split('at step ')[1].split(' ')[0])
  saved = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert saved and max(saved) == bad_step - 1  # nothing written at or after the bad step
  state = final_state(str(tmp_path))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state['params']))


def test_nonfinite_steps_can_be_skipped_and_counted(digits_dir, tmp_path):
  config = tiny_digits(digits_dir, num_steps=6, checkpoint_every_steps=6, log_every_steps=2)
  config.optim.lr = 1e6
  config.schedule.warmup_epochs = 0.0
  config.train.on_nonfinite = 'skip'
  result = train_lib.train_and_evaluate(config, str(tmp_path))
  state = final_state(str(tmp_path))
  assert result['step'] == 6 and 0 < result['skipped_steps'] == int(state['skipped']) <= 6
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state['params']))


def test_after_a_skipped_step_the_applied_learning_rate_is_the_logged_one(digits_dir):
  """A dropped step moves state.step but not the optimiser's count; the next update still uses
  lr_fn(state.step), the rate that is logged: with plain SGD the update scales with it exactly."""
  from jax.sharding import NamedSharding, PartitionSpec
  from se_flax import steps
  from se_flax.data import input_pipeline
  config = tiny_digits(digits_dir)
  config.num_devices = 1
  config.optim.update(name='sgd', momentum=0.0, weight_decay=0.0, lr=10.0)  # moves far above rounding
  config.schedule.update(name='constant', warmup_steps=1, warmup_mode='constant', warmup_lr_factor=0.1)
  exp = train_lib.build_experiment(config)
  lr_fn = exp.lr_fn
  assert float(lr_fn(1)) == pytest.approx(10 * float(lr_fn(0)))
  train_step = steps.make_train_step(exp.model, config, exp.spec.num_classes, exp.mesh, lr_fn)
  batch = next(input_pipeline.train_iterator(config.data, global_batch_size=32, seed=0))
  sharding = NamedSharding(exp.mesh, PartitionSpec(steps.AXIS))
  good = steps.to_global(batch, sharding)
  nan = steps.to_global({**batch, 'image': np.full_like(batch['image'], np.nan)}, sharding)
  copy = lambda state: jax.tree_util.tree_map(lambda x: x.copy(), state)
  start = jax.device_get(exp.state.params)

  straight, _ = train_step(copy(exp.state), good)  # the batch at step 0: lr_fn(0)
  dropped, metrics = train_step(copy(exp.state), nan)
  assert float(metrics['nonfinite']) == 1.0 and int(dropped.step) == 1 and int(dropped.skipped) == 1
  after, metrics = train_step(dropped, good)  # the same batch at step 1, after the dropped step
  assert float(metrics['learning_rate']) == pytest.approx(float(lr_fn(1)))
  assert int(after.step) == 2 and float(metrics['nonfinite']) == 0.0
  moved_straight = jax.tree_util.tree_map(np.subtract, jax.device_get(straight.params), start)
  moved_after = jax.tree_util.tree_map(np.subtract, jax.device_get(after.params), start)
  for a, b in zip(jax.tree_util.tree_leaves(moved_straight), jax.tree_util.tree_leaves(moved_after)):
    np.testing.assert_allclose(b, 10 * a, rtol=1e-3, atol=1e-5)  # lr_fn(1) / lr_fn(0), not 1


def test_workdir_held_by_a_live_run_is_refused_and_stale_lock_is_not(digits_dir, tmp_path):
  work = tmp_path / 'work'
  work.mkdir()
  with resilience.WorkdirLock(str(work)):  # a live run in this process holds the lock
    busy = run_cli(cli_args(work, digits_dir, '--config.train.num_steps=2'))
  assert busy.returncode == 1
  errors = [l for l in busy.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'in use by a live run' in errors[0] and f'pid {os.getpid()}' in errors[0]
  assert not (work / 'checkpoints').exists()
  # The lock file is still there, but no process holds it: a new run proceeds.
  assert (work / '.lock').exists()
  train_lib.train_and_evaluate(tiny_digits(digits_dir, num_steps=2), str(work))


# Bad input through the command line: (arguments, what the one error line must contain).
CLI_BAD_INPUTS = [
    (['--config=configs/nope.py'], "cannot load --config='configs/nope.py': No such file"),
    (['--config=configs/digits.py', '--config.trian.num_steps=3'], 'Did you mean "train"'),
    (['--config=configs/digits.py', '--config.train.num_steps=abc'], "num_steps=abc"),
    (['--config=configs/digits.py:resnet5_cifar'], "unknown model 'resnet5_cifar'"),
    (['--config=configs/cifar10.py', '--config.data.data_dir={empty}'], 'tfds build cifar10'),
    (['--config=configs/digits.py', '--workdir={file}/sub'], 'is not writable'),
]


@pytest.mark.parametrize('args, message', CLI_BAD_INPUTS, ids=[
    'missing_config_file', 'field_typo', 'bad_value_type', 'unknown_model', 'missing_tfds_data',
    'unwritable_workdir'])
def test_cli_bad_input_is_one_line_exit_1_workdir_untouched(tmp_path, args, message):
  empty, file = tmp_path / 'empty', tmp_path / 'a_file'
  empty.mkdir()
  file.write_text('not a directory')
  args = [a.format(empty=empty, file=file) for a in args]
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={tmp_path / "work"}')
  proc = run_cli(['train.py', *args])
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'work').exists() and not (file.parent / 'a_file' / 'sub').exists()
  assert os.listdir(empty) == []
