"""What keeps a run safe: one run per workdir, preemption (SIGTERM), and non-finite steps."""

from __future__ import annotations

import fcntl
import os
import signal
import socket

from absl import logging
import jax
from jax.experimental import multihost_utils

from se_flax import errors
from se_flax import paths

NONFINITE_MODES = ('stop', 'skip')


class WorkdirBusyError(errors.UserError, ValueError):
  """Another live run holds the workdir."""


class NonFiniteError(errors.UserError, RuntimeError):
  """A step produced a non-finite loss or gradient norm and train.on_nonfinite is 'stop'."""


class WorkdirLock:
  """An exclusive `flock` on `<workdir>/.lock`, held by process 0 for the whole run.

  The kernel releases the lock when its process dies, so a lock left by a killed run never
  blocks a new one; the file itself only records who held it last. Local and network filesystems
  (NFS, Lustre: the shared storage of a SLURM cluster) support `flock`; an object store (gs://)
  has no lock that dies with its holder, so a URL workdir is not locked (a warning says so):
  a lock file there would outlive a preempted VM and block its own restart.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    if jax.process_index() != 0:
      return self
    if paths.is_url(self.path):
      logging.warning('workdir %s is not local: it is not locked against a second run at the same time',
                      os.path.dirname(self.path))
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 200).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise WorkdirBusyError(f'workdir {os.path.dirname(self.path)!r} is in use by a live run '
                             f'({holder}); wait for it or choose another --workdir') from None
    os.ftruncate(fd, 0)
    os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the flock
      self._fd = None


class PreemptionWatcher:
  """Turns SIGTERM into 'save at the current step and exit'.

  One process: a SIGTERM handler sets a flag. Several processes: JAX's preemption sync point,
  so that all processes agree on the step at which they save.
  """

  def __init__(self):
    self._received = False
    self._previous = None
    self._multi = jax.process_count() > 1

  def __enter__(self) -> 'PreemptionWatcher':
    if not self._multi:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the current step, then exiting')
    self._received = True

  def reached(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received


def check_nonfinite(metrics: dict, step: int, mode: str, skipped_total: int) -> int:
  """Act on a step's `nonfinite` flag: raise in 'stop' mode, count and warn in 'skip' mode."""
  if not float(metrics['nonfinite']):
    return skipped_total
  detail = f'loss {float(metrics["loss"])}, gradient norm {float(metrics["grad_norm"])}'
  if mode == 'stop':
    raise NonFiniteError(f'non-finite loss or gradient at step {step} ({detail}); the update was not '
                         'applied and no checkpoint was written after it (train.on_nonfinite=skip '
                         'skips such steps instead)')
  logging.warning('step %d: non-finite %s; update skipped (%d skipped so far)', step, detail,
                  skipped_total + 1)
  return skipped_total + 1
