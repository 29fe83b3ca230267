"""Kill at any moment: SIGKILL `train.py` at many points, rerun the same command each time, and the
final parameters are bit for bit those of a run that was never interrupted.

One workdir goes through a chain of runs; each run but the last is killed (SIGKILL: no signal
handler, no `finally`, no flush) at the moment an observable event happens, never after a sleep:

  1. start-up: the model is built and the first step is compiling, no checkpoint yet;
  2. just after a checkpoint is finalised (`checkpoints/5` appears);
  3. between checkpoints, after a `step N/40` line with N not a checkpoint step;
  4. during an asynchronous checkpoint write: its `*.orbax-checkpoint-tmp` directory exists and
     training has already gone past its step (the write runs in orbax's background thread);
  5. during the final evaluation (after the `step 40/40` line);
  6. just after the last checkpoint is finalised (`checkpoints/40` appears);

then one last rerun completes. Each rerun must resume from the newest checkpoint that was
finalised when the previous run died (a half-written one never counts) and get going again. While
any run is watched, `final_eval.json` must never exist before the last checkpoint is committed (a
run that says it is done must be done).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import cli_runs
from cli_runs import Run

NUM_STEPS = 40
EVERY = 5
RUN_TIMEOUT = 420  # s per event on a loaded 2-core machine; a healthy run needs ~30 s in all


def command(workdir: str, data_dir: str) -> list[str]:
  return cli_runs.train_args(
      workdir, data_dir, train__global_batch_size=32, eval__global_batch_size=64,
      train__num_steps=NUM_STEPS, train__checkpoint_every_steps=EVERY, train__log_every_steps=1,
      train__eval_every_epochs=0.0, train__keep_checkpoints=3,
      model__drop_rate=0.3)  # dropout keys must follow the step across restarts too


# Kill points: (name, event) where event(run, workdir, resumed_from) -> a description once it happened.

def at_startup(run: Run, workdir: str, start: int):
  if run.grep(r'parameters, \d+ devices'):
    return f'model built, first step compiling ({len(run.step_lines())} step lines)'
  return None


def after_finalised(step: int):
  def event(run: Run, workdir: str, start: int):
    return step in cli_runs.finalized_steps(workdir) and f'checkpoint {step} just finalised'
  return event


def between_checkpoints(run: Run, workdir: str, start: int):
  """After a step line past this run's first finalised checkpoint, not a checkpoint step."""
  done = [s for s in cli_runs.finalized_steps(workdir) if s > start]
  if not done:
    return None
  lines = [s for s in run.step_lines() if s > done[0] + 1 and s % EVERY]
  return lines and f'after the step {lines[-1]}/{NUM_STEPS} line'


def during_background_write(run: Run, workdir: str, start: int):
  """A save that is not the run's first, whose blocking part is over: training has gone past it."""
  last = max(run.step_lines(), default=0)
  writing = [d for d in cli_runs.in_flight(workdir)
             if start + 2 * EVERY <= cli_runs.tmp_step(d) < last]
  return writing and f'writing {writing[0]} in the background (step {last} logged)'


def during_final_eval(run: Run, workdir: str, start: int):
  return NUM_STEPS in run.step_lines() and f'after the step {NUM_STEPS}/{NUM_STEPS} line (final eval)'


KILL_POINTS = [
    ('startup', at_startup),
    ('after_finalise', after_finalised(EVERY)),
    ('between_checkpoints', between_checkpoints),
    ('during_background_write', during_background_write),
    ('during_final_eval', during_final_eval),
    ('after_last_checkpoint', after_finalised(NUM_STEPS)),
]


def assert_states_equal(got: dict, want: dict) -> None:
  got, want = cli_runs.flat_leaves(got), cli_runs.flat_leaves(want)
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)


def done_implies_committed(workdir: str) -> None:
  """The invariant checked at every poll: `final_eval.json` only after the last checkpoint."""
  if os.path.exists(os.path.join(workdir, 'final_eval.json')):
    assert NUM_STEPS in cli_runs.finalized_steps(workdir), (
        f'{workdir}: final_eval.json was written before checkpoint {NUM_STEPS} was committed: '
        f'{cli_runs.listing(workdir)}')


def watch(run: Run, workdirs: list[str], what: str, event, timeout: float = RUN_TIMEOUT):
  """Wait for `event` (or the run's exit when None), checking the invariant at every poll."""
  def poll():
    for workdir in workdirs:
      done_implies_committed(workdir)
    return event() if event else run.proc.poll() is not None
  return run.wait_for(what, poll, timeout)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_is_bitwise_equal(digits_dir, tmp_path):
  t0 = time.monotonic()
  straight, chained = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  runs, report = [], []
  try:
    # The uninterrupted reference runs alongside the chain (an independent workdir).
    reference = Run(command(straight, digits_dir), name='uninterrupted')
    runs.append(reference)

    newest = None  # newest finalised checkpoint when the previous run died
    for i, (name, event) in enumerate(KILL_POINTS):
      run = Run(command(chained, digits_dir), name=f'run {i + 1} ({name})')
      runs.append(run)
      start = newest or 0
      what = watch(run, [chained, straight], name, lambda: event(run, chained, start))
      run.kill()
      left = cli_runs.listing(chained)
      done = os.path.exists(os.path.join(chained, 'final_eval.json'))
      report.append(f'{name}: resumed from {run.resumed_step()}, killed {what} at {run.seconds:.1f} s; '
                    f'left {left}{" + final_eval.json" if done else ""}')
      print(report[-1], flush=True)
      context = '\n'.join(report) + '\n' + run.tail()
      # Every run resumes from the newest checkpoint that was finalised when the one before died.
      assert run.resumed_step() == newest, context
      done_implies_committed(chained)
      if name == 'during_background_write':
        assert any(cli_runs.TMP_MARK in d for d in left), f'the write finished before the kill\n{context}'
      if name == 'startup':
        assert cli_runs.finalized_steps(chained) == [], context
      if name == 'during_final_eval':
        assert not done, context
      newest = max(cli_runs.finalized_steps(chained), default=None)

    final = Run(command(chained, digits_dir), name='final rerun')
    runs.append(final)
    watch(final, [chained, straight], 'exit', None)
    watch(reference, [chained, straight], 'exit', None)
    assert final.finish(60) == 0, final.tail()
    assert reference.finish(60) == 0, reference.tail()
    assert final.resumed_step() == newest == NUM_STEPS, final.tail()
  finally:
    cli_runs.kill_all(runs)
  print(f'final rerun {final.seconds:.1f} s, uninterrupted run {reference.seconds:.1f} s, '
        f'test {time.monotonic() - t0:.0f} s')

  assert cli_runs.finalized_steps(chained)[-1] == cli_runs.finalized_steps(straight)[-1] == NUM_STEPS
  want = cli_runs.read_state(straight)
  assert int(want['step']) == NUM_STEPS
  assert_states_equal(cli_runs.read_state(chained), want)
  # The evaluation of the restored final state (the last rerun had nothing left to train) is the
  # uninterrupted run's, and both runs printed it as their last stdout line.
  untimed = lambda r: {k: v for k, v in r.items() if k != 'train_img_per_sec'}  # each run times itself
  result = untimed(json.load(open(os.path.join(chained, 'final_eval.json'))))
  expected = untimed(json.load(open(os.path.join(straight, 'final_eval.json'))))
  assert result == expected and 'top1' in expected
  # Speed is each process's own: the last rerun timed no step, so it records none (not 0 img/s).
  assert json.load(open(os.path.join(chained, 'final_eval.json')))['train_img_per_sec'] is None
  assert json.load(open(os.path.join(straight, 'final_eval.json')))['train_img_per_sec'] > 0
  assert untimed(json.loads(final.stdout[-1])) == untimed(json.loads(reference.stdout[-1])) == expected
