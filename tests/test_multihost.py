"""Many hosts on one machine: 2 processes x 2 CPU devices train exactly like 1 process x 4 devices.

Each "host" is a `python train.py` subprocess with its own 2 simulated CPU devices, joined by
`jax.distributed` through a coordinator on localhost (cross-process collectives: gloo, JAX's CPU
default). The 4 devices form the same 1-D data mesh in both layouts (process 0's devices first) and
process p reads slice p of every global batch, so the two layouts compute the same steps; only the
order of cross-process sums may differ, hence a 1e-6 tolerance.

Process 1 gets its own workdir whose `checkpoints/` is a symlink to process 0's (checkpoints need
shared storage, logs do not): anything else process 1 writes shows up there, and must not.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

import cli_runs
from cli_runs import Run

NUM_STEPS = 12
RESUME_AT = 6  # the checkpoint handed from one layout to the other
TOL = 1e-6
TIMEOUT = 480  # s for a whole job on a loaded 2-core machine (a healthy one takes ~40 s)


def command(workdir: str, data_dir: str) -> list[str]:
  return cli_runs.train_args(
      workdir, data_dir, train__global_batch_size=32, eval__global_batch_size=64,
      train__num_steps=NUM_STEPS, train__checkpoint_every_steps=RESUME_AT, train__log_every_steps=1,
      train__eval_every_epochs=0.0, model__drop_rate=0.3)  # dropout keys depend on the device index


def start_one_process(workdir: str, data_dir: str, name: str) -> list[Run]:
  return [Run(command(workdir, data_dir), num_devices=4, name=name)]


def start_two_processes(workdir: str, data_dir: str, name: str) -> list[Run]:
  """Process 0 in `workdir`, process 1 in `workdir`_p1 sharing only `checkpoints/`."""
  os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
  os.makedirs(workdir + '_p1', exist_ok=True)
  os.symlink(os.path.join(workdir, 'checkpoints'), os.path.join(workdir + '_p1', 'checkpoints'))
  port = cli_runs.free_port()
  runs = []
  try:
    for i, wd in enumerate([workdir, workdir + '_p1']):
      runs.append(Run(command(wd, data_dir) + cli_runs.distributed_args(port, 2, i), num_devices=2,
                      name=f'{name} process {i}'))
  except BaseException:
    cli_runs.kill_all(runs)
    raise
  return runs


def copy_checkpoint(src_workdir: str, step: int, dst_workdir: str) -> None:
  """Hand checkpoint `step` (and nothing else) to a fresh workdir, as if the job had stopped there."""
  shutil.copytree(os.path.join(src_workdir, 'checkpoints', str(step)),
                  os.path.join(dst_workdir, 'checkpoints', str(step)))


def max_abs_diff(got: dict, want: dict) -> tuple[float, str]:
  """The largest |got - want| over all leaves (exact equality for integer leaves)."""
  got, want = cli_runs.flat_leaves(got), cli_runs.flat_leaves(want)
  assert sorted(got) == sorted(want)
  worst, where = 0.0, ''
  for key, w in want.items():
    g = got[key]
    assert g.shape == w.shape and g.dtype == w.dtype, key
    if not np.issubdtype(w.dtype, np.floating):
      np.testing.assert_array_equal(g, w, err_msg=key)
      continue
    d = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)), initial=0.0))
    if d >= worst:
      worst, where = d, key
  return worst, where


def assert_logs_only_on_process_0(workdir: str, runs: list[Run]) -> None:
  """Process 0 wrote the TensorBoard events and final_eval.json; process 1 wrote nothing."""
  events = cli_runs.event_files(workdir)
  assert len(events) == 1, events
  assert f'.{runs[0].proc.pid}.' in os.path.basename(events[0]), (events, runs[0].proc.pid)
  assert os.path.exists(os.path.join(workdir, 'final_eval.json'))
  assert os.listdir(workdir + '_p1') == ['checkpoints'], os.listdir(workdir + '_p1')
  # Both processes computed (and printed) the same final evaluation.
  timing = ('train_img_per_sec',)  # each process times its own loop
  results = [{k: v for k, v in json.loads(r.stdout[-1]).items() if k not in timing} for r in runs]
  assert results[0] == results[1] and 'top1' in results[0]


@pytest.mark.slow
def test_two_processes_match_one_and_hand_checkpoints_over(digits_dir, tmp_path):
  t0 = time.monotonic()
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  two_then_one, one_then_two = str(tmp_path / 'two_then_one'), str(tmp_path / 'one_then_two')
  report = []
  runs = []
  try:
    # 1 process x 4 devices and 2 processes x 2 devices, side by side.
    runs = start_one_process(one, digits_dir, 'one') + start_two_processes(two, digits_dir, 'two')
    cli_runs.finish_all(runs, TIMEOUT)
    report.append(f'uninterrupted: 1x4 {runs[0].seconds:.0f} s, 2x2 {runs[1].seconds:.0f} s')
    assert_logs_only_on_process_0(two, runs[1:])
    assert all(r.resumed_step() is None for r in runs)

    # Checkpoint RESUME_AT of each layout continues in the other one.
    copy_checkpoint(two, RESUME_AT, two_then_one)
    copy_checkpoint(one, RESUME_AT, one_then_two)
    runs = (start_one_process(two_then_one, digits_dir, '2x2 -> 1x4')
            + start_two_processes(one_then_two, digits_dir, '1x4 -> 2x2'))
    cli_runs.finish_all(runs, TIMEOUT)
    report.append(f'handed over: 1x4 {runs[0].seconds:.0f} s, 2x2 {runs[1].seconds:.0f} s')
    assert [r.resumed_step() for r in runs] == [RESUME_AT] * 3, [r.tail() for r in runs]
    assert_logs_only_on_process_0(one_then_two, runs[1:])
  finally:
    cli_runs.kill_all(runs)

  want = cli_runs.read_state(one)
  want_loss = cli_runs.scalars(one, 'train/loss')
  assert sorted(want_loss) == list(range(1, NUM_STEPS + 1))
  want_eval = json.load(open(os.path.join(one, 'final_eval.json')))
  for workdir, first in [(two, 1), (two_then_one, RESUME_AT + 1), (one_then_two, RESUME_AT + 1)]:
    name = os.path.basename(workdir)
    got = cli_runs.read_state(workdir)
    assert int(got['step']) == NUM_STEPS, name
    diff, where = max_abs_diff(got, want)
    loss = cli_runs.scalars(workdir, 'train/loss')
    assert sorted(loss) == list(range(first, NUM_STEPS + 1)), (name, sorted(loss))
    loss_diff = max(abs(loss[s] - want_loss[s]) for s in loss)
    result = json.load(open(os.path.join(workdir, 'final_eval.json')))
    report.append(f'{name}: max |param - 1x4| {diff:.3g} ({where}), max |loss - 1x4| {loss_diff:.3g}, '
                  f'eval {result["top1"]:.4f}/{result["loss"]:.6f} vs {want_eval["top1"]:.4f}/'
                  f'{want_eval["loss"]:.6f}')
    assert diff <= TOL, report[-1]
    assert loss_diff <= TOL, report[-1]
    assert result['num_examples'] == want_eval['num_examples'] == 360
    assert result['top1'] == pytest.approx(want_eval['top1'], abs=1 / 360)  # at most one flip
    assert result['loss'] == pytest.approx(want_eval['loss'], abs=TOL * 10)
  print('\n'.join(report), f'test {time.monotonic() - t0:.0f} s', sep='\n')
