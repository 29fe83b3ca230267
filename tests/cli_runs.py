"""Run `python train.py` as real subprocesses and watch them: shared by the kill and multi-host tests.

A `Run` starts train.py with its own simulated device count, reads its stderr line by line in a
thread and can wait for an observable event (a log line, a directory under `checkpoints/`), kill
it with SIGKILL, or wait for it to finish. Every wait has a deadline, and a `Run` used as a context
manager is always killed on the way out, so a failing test never leaves a trainer behind.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = '.orbax-checkpoint-tmp'  # orbax's suffix for a checkpoint being written
STEP_LINE = re.compile(r'\] step (\d+)/(\d+) ')
RESUMED_LINE = re.compile(r'Resumed from \S+ at step (\d+)')
POLL_S = 0.002


def free_port() -> int:
  """A TCP port nobody listens on right now (bind to port 0, let the kernel choose)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def env_for(num_devices: int) -> dict[str, str]:
  """This environment (JAX's persistent compilation cache included) with `num_devices` CPUs."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  flags.append(f'--xla_force_host_platform_device_count={num_devices}')
  return {**os.environ, 'XLA_FLAGS': ' '.join(flags), 'TF_CPP_MIN_LOG_LEVEL': '2',
          'PYTHONUNBUFFERED': '1', 'JAX_PLATFORMS': 'cpu'}


def train_args(workdir: str, data_dir: str, **overrides) -> list[str]:
  """train.py on the digits config with the tiny model; `overrides` are config fields ('a.b' -> a__b)."""
  args = ['train.py', '--config=configs/digits.py:seresnet_tiny_cifar', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}']
  return args + [f'--config.{k.replace("__", ".")}={v}' for k, v in overrides.items()]


def distributed_args(port: int, num_processes: int, process_id: int) -> list[str]:
  return ['--config.distributed.initialize=True',
          f'--config.distributed.coordinator_address=localhost:{port}',
          f'--config.distributed.num_processes={num_processes}',
          f'--config.distributed.process_id={process_id}']


# ---------------------------------------------------------------------------------------------
# Checkpoint directory


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, 'checkpoints')


def listing(workdir: str) -> list[str]:
  try:
    return sorted(os.listdir(checkpoint_dir(workdir)))
  except FileNotFoundError:
    return []


def finalized_steps(workdir: str) -> list[int]:
  """Steps whose checkpoint orbax has committed (renamed from its temporary name)."""
  return sorted(int(d) for d in listing(workdir) if d.isdigit())


def in_flight(workdir: str) -> list[str]:
  """Temporary directories of checkpoints being written (or left by a killed write)."""
  return [d for d in listing(workdir) if TMP_MARK in d]


def tmp_step(name: str) -> int:
  return int(name.split('.')[0])


def read_state(workdir: str, step: int | None = None) -> dict:
  """A checkpoint's state tree as numpy arrays (default: the newest), read with orbax alone.

  Restored as host numpy, so it works whatever process/device layout wrote it.
  """
  import jax
  import orbax.checkpoint as ocp
  step = max(finalized_steps(workdir)) if step is None else step
  path = os.path.join(checkpoint_dir(workdir), str(step), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    tree = getattr(meta, 'item_metadata', meta)
    tree = getattr(tree, 'tree', tree)
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def flat_leaves(tree: dict) -> dict[str, np.ndarray]:
  import jax
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def event_files(workdir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*')))


def scalars(workdir: str, tag: str) -> dict[int, float]:
  """A scalar series from the workdir's TensorBoard event files, read with TensorBoard's reader."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  out = {}
  for path in event_files(workdir):
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    if tag in acc.Tags().get('tensors', []):
      out.update({e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)})
  return out


# ---------------------------------------------------------------------------------------------
# A watched subprocess


class Run:
  """`python <args>` in the repository root, its output collected line by line as it comes."""

  def __init__(self, args: list[str], *, num_devices: int = 4, name: str = 'train'):
    self.name = name
    self.args = args
    self.stderr: list[str] = []
    self.stdout: list[str] = []
    self.started = time.monotonic()
    self.ended = None
    self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env_for(num_devices),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, errors='replace')
    self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
                     threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, True), daemon=True)]
    for t in self._threads:
      t.start()

  def _pump(self, stream, lines: list[str], timed: bool = False) -> None:
    for line in stream:
      lines.append(line.rstrip('\n'))
    if timed:  # end of stderr: the process has exited (or closed it on its way out)
      self.ended = time.monotonic()

  def __enter__(self) -> 'Run':
    return self

  def __exit__(self, *exc) -> None:
    self.kill()

  # -- inspection
  def tail(self, n: int = 40) -> str:
    return f'--- {self.name} {" ".join(self.args[1:])}\n' + '\n'.join(self.stderr[-n:])

  def step_lines(self) -> list[int]:
    return [int(m.group(1)) for line in list(self.stderr) if (m := STEP_LINE.search(line))]

  def resumed_step(self) -> int | None:
    steps = [int(m.group(1)) for line in list(self.stderr) if (m := RESUMED_LINE.search(line))]
    return steps[-1] if steps else None

  def grep(self, pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [line for line in list(self.stderr) if regex.search(line)]

  # -- control
  def wait_for(self, what: str, predicate: Callable[[], object], timeout: float) -> object:
    """Poll `predicate` every few ms until it returns something truthy; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while True:
      value = predicate()
      if value:
        return value
      if self.proc.poll() is not None:
        value = predicate()  # the event may have come with the exit
        if value:
          return value
        self._join_pumps()
        raise AssertionError(f'{self.name} exited with {self.proc.returncode} before {what}\n{self.tail()}')
      if time.monotonic() > deadline:
        raise AssertionError(f'{self.name}: no {what} within {timeout:.0f} s\n{self.tail()}')
      time.sleep(POLL_S)

  def kill(self) -> None:
    """SIGKILL (no clean-up of any kind in the child), then reap it."""
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGKILL)
    self.proc.wait(timeout=60)
    self._join_pumps()

  def finish(self, timeout: float) -> int:
    """Wait for a normal exit; kill and fail on timeout."""
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f'{self.name} did not finish within {timeout:.0f} s\n{self.tail()}') from None
    self._join_pumps()
    return self.proc.returncode

  def _join_pumps(self) -> None:
    for t in self._threads:
      t.join(timeout=10)

  @property
  def seconds(self) -> float:
    """Wall time from start to exit (or to now while it runs)."""
    return (self.ended or time.monotonic()) - self.started


def finish_all(runs: list[Run], timeout: float) -> None:
  """Wait until every run has exited with 0; the first failure (or the deadline) kills the rest.

  The processes of one multi-process job wait for each other in collectives: when one dies, the
  others would hang until JAX's heartbeat timeout, so they are killed at once instead.
  """
  deadline = time.monotonic() + timeout
  while True:
    codes = [r.proc.poll() for r in runs]
    failed = [r for r, c in zip(runs, codes) if c not in (None, 0)]
    if failed or time.monotonic() > deadline:
      kill_all(runs)
      why = 'failed' if failed else f'still running after {timeout:.0f} s'
      raise AssertionError(f'{", ".join(r.name for r in failed) or "a run"} {why}\n'
                           + '\n'.join(r.tail() for r in runs))
    if all(c == 0 for c in codes):
      for r in runs:
        r.finish(60)
      return
    time.sleep(0.05)


def kill_all(runs: Iterable[Run]) -> None:
  for run in runs:
    try:
      run.kill()
    except Exception:  # pylint: disable=broad-except  (best effort while already failing)
      pass
