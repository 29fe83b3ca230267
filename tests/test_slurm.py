"""A real SLURM cluster on this machine: train.py as 2 processes x 2 CPU devices under srun and sbatch.

The fixture writes a slurm.conf for one node (localhost, 4 CPUs), starts munged, slurmctld and slurmd
in the foreground as children of the test and stops them by pid at the end, after cancelling every
job it submitted. `cred_expire=5` shortens the time a requeued job waits before it starts again
from SLURM's default 121 s to 6 s. Nothing outside its temporary directory is touched, and ports and job ids are
chosen per run, so it can run beside anything else.

Missing SLURM binaries skip the test, unless SE_FLAX_REQUIRE_SLURM=1 (CI installs them and sets
it), where they fail it.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import cli_runs
from test_multihost import max_abs_diff

PATH = os.environ.get('PATH', '') + ':/usr/sbin:/sbin'
BINARIES = ('munged', 'slurmctld', 'slurmd', 'srun', 'sbatch', 'scancel', 'scontrol', 'squeue', 'sinfo')
NUM_STEPS = 16  # 2x2 vs 1x4 stays within 1e-6 this long (cross-process sums are ordered differently)
TERM_AT = 3  # once this step is logged the tasks are stopped, sent SIGTERM, and continued
# An evaluation after every step (44 steps an epoch) keeps the steps after TERM_AT slower than JAX's
# preemption sync, which agrees on the step to save over the coordination service: with bare tiny
# steps (tens of ms) an idle machine could finish all NUM_STEPS before the processes agreed.
EVAL_EVERY_EPOCHS = 1 / 44
TOL = 1e-6
TIMEOUT = 480  # s for one job on a loaded 2-core machine

SLURM_CONF = """\
ClusterName=sefl{tag}
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
FirstJobId={first_job}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
  """munged + slurmctld + slurmd for one node, children of this process."""

  def __init__(self, root: str):
    self.root = root
    self.daemons: list[subprocess.Popen] = []
    self.jobs: set[str] = set()
    self.env = {**os.environ, 'PATH': PATH, 'SLURM_CONF': os.path.join(root, 'slurm.conf')}

  def start(self) -> None:
    for d in ('munge', 'state', 'spool', 'log'):
      os.makedirs(os.path.join(self.root, d), mode=0o700)
    key = os.path.join(self.root, 'munge', 'munge.key')
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
      f.write(os.urandom(1024))
    with open(self.env['SLURM_CONF'], 'w') as f:
      f.write(SLURM_CONF.format(root=self.root, user=getpass.getuser(), tag=os.getpid(),
                                ctld_port=cli_runs.free_port(), slurmd_port=cli_runs.free_port(),
                                first_job=random.randrange(1000, 4000)))
    m = os.path.join(self.root, 'munge')
    self._daemon('munged', '--foreground', '--force', f'--socket={m}/munge.socket', f'--key-file={key}',
                 f'--pid-file={m}/munged.pid', f'--log-file={m}/munged.log', f'--seed-file={m}/seed')
    self._wait(lambda: os.path.exists(f'{m}/munge.socket'), 'munged socket', 'munge/munged.log')
    self._daemon('slurmctld', '-D', '-i')
    self._daemon('slurmd', '-D', '-N', 'localhost')
    self._wait(lambda: self.run('sinfo', '-h', '-o', '%T', check=False).stdout.strip() == 'idle',
               'an idle node', 'log/slurmd.log')

  def _daemon(self, *args: str) -> None:
    log = open(os.path.join(self.root, 'log', f'{args[0]}.out'), 'w')
    self.daemons.append(subprocess.Popen([shutil.which(args[0], path=PATH), *args[1:]], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

  def _wait(self, ready, what: str, log: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
      dead = [p.args[0] for p in self.daemons if p.poll() is not None]
      if dead or time.monotonic() > deadline:
        logs = ''.join(open(p).read()[-3000:] for p in glob.glob(os.path.join(self.root, 'log', '*')))
        raise AssertionError(f'no {what} (exited: {dead}); {log}:\n{logs}')
      time.sleep(0.2)

  def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
    assert not check or out.returncode == 0, (args, out.stdout, out.stderr)
    return out

  def sbatch(self, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run(['sbatch', '--parsable', *args], env={**env, 'PATH': PATH}, cwd=cli_runs.REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    self.jobs.add(out.stdout.strip().split(';')[0])
    return out.stdout.strip().split(';')[0]

  def state(self, job: str) -> str:
    """PENDING, RUNNING, COMPLETED, FAILED, ... (finished jobs stay listed for MinJobAge, 300 s)."""
    out = self.run('scontrol', 'show', 'job', '-o', job, check=False).stdout
    return m.group(1) if (m := re.search(r'JobState=(\w+)', out)) else ''

  def stop(self) -> None:
    for job in self.jobs:
      self.run('scancel', '--signal=KILL', '--full', job, check=False)
    deadline = time.monotonic() + 30
    while self.jobs and time.monotonic() < deadline and self.run('squeue', '-h', check=False).stdout.strip():
      time.sleep(0.5)
    for p in reversed(self.daemons):
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    for p in reversed(self.daemons):
      try:
        p.wait(timeout=15)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@pytest.fixture
def slurm(tmp_path_factory):
  missing = [b for b in BINARIES if not shutil.which(b, path=PATH)]
  if missing:
    message = f'SLURM not installed (missing {", ".join(missing)}: apt-get install slurm-wlm munge)'
    if os.environ.get('SE_FLAX_REQUIRE_SLURM') == '1':
      pytest.fail(message)
    pytest.skip(message)
  cluster = Cluster(str(tmp_path_factory.mktemp('slurm')))
  try:
    cluster.start()
    yield cluster
  finally:
    cluster.stop()


def train_args(workdir: str, data_dir: str) -> list[str]:
  return cli_runs.train_args(
      workdir, data_dir, train__global_batch_size=32, eval__global_batch_size=64, train__num_steps=NUM_STEPS,
      train__checkpoint_every_steps=1000, train__log_every_steps=1, train__eval_every_epochs=EVAL_EVERY_EPOCHS,
      model__drop_rate=0.3)[1:]  # dropout keys depend on the device index


def wait_for(what: str, predicate, timeout: float = TIMEOUT, log: str = '', poll: float = 0.1):
  deadline = time.monotonic() + timeout
  while not (value := predicate()):
    assert time.monotonic() < deadline, f'no {what} within {timeout:.0f} s\n{read(log)[-4000:] if log else ""}'
    time.sleep(poll)
  return value


def read(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except FileNotFoundError:
    return ''


def process_pids(log: str, index: int) -> list[int]:
  """The pids of process `index` (one per attempt), from the start-up line every process logs."""
  return [int(pid) for pid in re.findall(rf'process {index} of 2: pid (\d+)', read(log))]


def assert_events_only_from_process_0(workdir: str, log: str, attempts: int) -> None:
  """Each attempt's process 0 wrote one TensorBoard file (its pid is in the name); process 1 none."""
  firsts, seconds = process_pids(log, 0), process_pids(log, 1)
  assert len(firsts) == len(seconds) == attempts, read(log)[-3000:]
  written = [int(os.path.basename(e).split('.')[-3]) for e in cli_runs.event_files(workdir)]
  assert sorted(written) == sorted(firsts), (written, firsts, seconds)


def test_sbatch_2x2_matches_1x4_and_resumes_after_scancel_term(slurm, digits_dir, tmp_path):
  t0 = time.monotonic()
  one, pre, log = str(tmp_path / 'one'), str(tmp_path / 'preempted'), str(tmp_path / 'job.log')
  env = {**slurm.env, **cli_runs.env_for(2), 'PYTHON': sys.executable}  # 2 CPU devices per process
  report = []
  with cli_runs.Run(['train.py', *train_args(one, digits_dir)], num_devices=4, name='1x4') as reference:
    # scripts/slurm/train.sbatch: srun starts 2 tasks on 1 node; the workdir is given as a file:// URL.
    job = slurm.sbatch('--nodes=1', '--ntasks-per-node=2', '--gpus-per-node=0', '--cpus-per-task=1',
                       f'--output={log}', 'scripts/slurm/train.sbatch',
                       *train_args(f'file://{pre}', digits_dir), env=env)
    wait_for(f'both tasks of job {job}', lambda: process_pids(log, 0) and process_pids(log, 1), log=log)
    tasks = process_pids(log, 0) + process_pids(log, 1)
    wait_for(f'step {TERM_AT} of job {job}', lambda: re.search(rf'\] step {TERM_AT}/', read(log)), log=log,
             poll=0.01)
    # Stopped (SIGSTOP), the tasks cannot finish before SIGTERM reaches them; continued, they act on it.
    # (SLURM refuses to signal a job it suspended itself.)
    for pid in tasks:
      os.kill(pid, signal.SIGSTOP)
    try:
      slurm.run('scancel', '--signal=TERM', job)
    finally:
      for pid in tasks:
        os.kill(pid, signal.SIGCONT)
    term_sent = time.monotonic()
    wait_for('requeued job', lambda: 'requeueing' in read(log) and slurm.state(job) == 'PENDING', log=log)
    report.append(f'{time.monotonic() - t0:.0f} s: job saved, exited and was requeued '
                  f'{time.monotonic() - term_sent:.1f} s after scancel --signal=TERM')
    assert reference.finish(TIMEOUT) == 0, reference.tail()
    report.append(f'{time.monotonic() - t0:.0f} s: 1x4 reference done')
    wait_for(f'end of job {job}', lambda: slurm.state(job) not in ('PENDING', 'RUNNING', 'COMPLETING'), log=log)
    assert slurm.state(job) == 'COMPLETED', read(log)[-4000:]
    report.append(f'{time.monotonic() - t0:.0f} s: requeued job done')

  # SIGTERM -> a checkpoint at the step reached -> requeued by the script -> resumed there.
  text = read(log)
  assert 'launcher: slurm' in text and 'processes: 2;' in text, text[-3000:]
  preempted = {int(s) for s in re.findall(r'\{"preempted": true, "step": (\d+)\}', text)}
  assert len(preempted) == 1, text[-4000:]  # both processes saved the same step
  stopped = preempted.pop()
  assert TERM_AT <= stopped < NUM_STEPS and 'restart 1' in text, text[-4000:]
  assert re.search(rf'Resumed from \S+ at step {stopped}\b', text), text[-4000:]
  assert cli_runs.finalized_steps(pre) == [stopped, NUM_STEPS]
  # Both processes joined each attempt; only process 0 wrote logs, events and final_eval.json.
  assert_events_only_from_process_0(pre, log, attempts=2)
  assert sorted(os.listdir(pre)) == sorted(['.lock', 'checkpoints', 'final_eval.json',
                                            *map(os.path.basename, cli_runs.event_files(pre))])

  got, want = cli_runs.read_state(pre), cli_runs.read_state(one)
  assert int(got['step']) == int(want['step']) == NUM_STEPS
  diff, where = max_abs_diff(got, want)
  loss, want_loss = cli_runs.scalars(pre, 'train/loss'), cli_runs.scalars(one, 'train/loss')
  assert sorted(loss) == sorted(want_loss) == list(range(1, NUM_STEPS + 1))
  loss_diff = max(abs(loss[s] - want_loss[s]) for s in loss)
  result, want_eval = (json.load(open(os.path.join(d, 'final_eval.json'))) for d in (pre, one))
  report.append(f'2x2 (stopped at {stopped}, resumed) vs 1x4: max |param diff| {diff:.3g} ({where}), '
                f'max |loss diff| {loss_diff:.3g}, eval loss {result["loss"]:.7f} vs {want_eval["loss"]:.7f}')
  assert diff <= TOL and loss_diff <= TOL, report
  assert result['num_examples'] == want_eval['num_examples'] == 360
  assert result['loss'] == pytest.approx(want_eval['loss'], abs=TOL * 10)
  print('\n'.join(report), f'test {time.monotonic() - t0:.0f} s', sep='\n')
