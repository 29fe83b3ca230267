"""scripts/slurm without SLURM: train.sbatch's decision after train.py (requeue, finish or fail), and
the checkpoint-save timer that docs/clusters.md quotes.

train.sbatch runs under bash with the environment a batch job has (SLURM_JOB_ID, SLURM_RESTART_COUNT,
...) and with `srun` and `scontrol` replaced by stand-ins that record their arguments: `srun`
exits with the status asked for, and the real final_eval.json check (Python, etils) decides.
tests/test_slurm.py runs the same script on a real SLURM cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import cli_runs

SCRIPT = os.path.join(cli_runs.REPO, 'scripts', 'slurm', 'train.sbatch')
STAND_IN = '#!/bin/bash\necho "$(basename "$0") $*" >> "$CALLS"\nexit "${SRUN_EXIT:-0}"\n'


def run_script(tmp_path, workdir: str | None, python: str = sys.executable, **env) -> tuple[int, list[str], str]:
  """(exit status, recorded srun/scontrol calls, stderr) of train.sbatch with --workdir=`workdir`."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  for name in ('srun', 'scontrol'):
    (bin_dir / name).write_text(STAND_IN)
    (bin_dir / name).chmod(0o755)
  calls = tmp_path / 'calls'
  calls.write_text('')
  job_env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'CALLS': str(calls), 'PYTHON': python,
             'SLURM_SUBMIT_DIR': cli_runs.REPO, 'SLURM_JOB_ID': '4100', 'SLURM_NTASKS': '2',
             'SLURM_JOB_NODELIST': 'node[1-2]', 'SLURM_CPUS_PER_TASK': '12',
             'PYTHONPATH': os.environ.get('PYTHONPATH', ''), **env}
  args = ['--config=configs/digits.py'] + ([f'--workdir={workdir}'] if workdir is not None else [])
  out = subprocess.run(['bash', SCRIPT, *args], env=job_env, capture_output=True, text=True, timeout=120)
  return out.returncode, calls.read_text().splitlines(), out.stdout + out.stderr


@pytest.fixture
def unfinished(tmp_path):
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints' / '7').mkdir(parents=True)
  return str(workdir)


def test_unfinished_run_is_requeued_and_srun_labels_lines(tmp_path, unfinished):
  rc, calls, out = run_script(tmp_path, f'file://{unfinished}', SLURM_RESTART_COUNT='3')
  assert rc == 0, out
  assert calls == [f'srun --label --kill-on-bad-exit=1 {sys.executable} train.py --config=configs/digits.py '
                   f'--workdir=file://{unfinished}', 'scontrol requeue 4100']
  assert 'requeueing job 4100 (restart 4 of at most 20)' in out


def test_finished_run_is_not_requeued(tmp_path, unfinished):
  with open(os.path.join(unfinished, 'final_eval.json'), 'w') as f:
    f.write('{}')
  rc, calls, out = run_script(tmp_path, unfinished)
  assert (rc, [c.split()[0] for c in calls]) == (0, ['srun']), out
  assert f'finished: {unfinished}/final_eval.json written' in out


def test_a_crashing_check_fails_the_job_instead_of_requeueing_it(tmp_path, unfinished):
  """An import error in the final_eval.json check (here: an etils that cannot be imported)."""
  broken = tmp_path / 'broken' / 'etils'
  broken.mkdir(parents=True)
  (broken / '__init__.py').write_text('raise ImportError("etils is broken here")\n')
  rc, calls, out = run_script(tmp_path, unfinished, PYTHONPATH=str(broken.parent))
  assert (rc, [c.split()[0] for c in calls]) == (1, ['srun']), out
  assert 'ImportError: etils is broken here' in out
  assert out.rstrip().endswith(f'error: could not check {unfinished} for final_eval.json (see the error above); '
                               'not requeueing')


@pytest.mark.parametrize('python', ['/bin/false', 'true'])
def test_a_check_that_says_nothing_useful_fails_the_job(tmp_path, unfinished, python):
  rc, calls, out = run_script(tmp_path, unfinished, python=python)
  assert (rc, [c.split()[0] for c in calls]) == (1, ['srun']), out
  assert 'not requeueing' in out.splitlines()[-1]


def test_restarts_are_capped(tmp_path, unfinished):
  rc, calls, out = run_script(tmp_path, unfinished, SLURM_RESTART_COUNT='20')
  assert (rc, [c.split()[0] for c in calls]) == (1, ['srun']), out
  assert out.splitlines()[-1] == ('error: not finished after 20 restarts (SE_FLAX_MAX_RESTARTS=20); '
                                  'not requeueing')
  rc, calls, _ = run_script(tmp_path, unfinished, SLURM_RESTART_COUNT='20', SE_FLAX_MAX_RESTARTS='21')
  assert (rc, calls[-1]) == (0, 'scontrol requeue 4100')


def test_failed_training_and_bad_input_are_not_requeued(tmp_path, unfinished):
  rc, calls, _ = run_script(tmp_path, unfinished, SRUN_EXIT='1')  # train.py crashed on some task
  assert (rc, [c.split()[0] for c in calls]) == (1, ['srun'])
  rc, calls, out = run_script(tmp_path, None)
  assert (rc, calls, out.splitlines()[-1]) == (1, [], 'error: give --workdir=DIR on storage that every node sees')
  rc, calls, out = run_script(tmp_path, unfinished, SE_FLAX_MAX_RESTARTS='many')
  assert (rc, calls) == (1, [])
  assert out.splitlines()[-1] == ('error: SE_FLAX_MAX_RESTARTS=many must be a whole number of restarts '
                                  '(default 20)')


def test_save_timer_saves_the_configs_state_and_reports_each_save(tmp_path):
  """scripts/slurm/time_checkpoint_save.py: the command docs/clusters.md gives, on the tiny model."""
  out = subprocess.run([sys.executable, 'scripts/slurm/time_checkpoint_save.py',
                        '--config=configs/digits.py:seresnet_tiny_cifar', '--repeats=2', f'--workdir={tmp_path}'],
                       cwd=cli_runs.REPO, env=cli_runs.env_for(1), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert re.fullmatch(r'seresnet_tiny_cifar: train state \d+\.\d MiB in \d+ arrays \(1 cpu device\(s\), jax \S+\)',
                      lines[0]), lines
  assert [re.sub(r'\d+\.\d\d', 'T', line) for line in lines[1:]] == [
      'save 1: save() returned after T s, committed after T s', 'save 2: save() returned after T s, committed after T s']
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']  # committed, nothing left half-written
