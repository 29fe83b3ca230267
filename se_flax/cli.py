"""What train.py and eval.py share: error reporting, workdir defaults, TensorFlow set-up."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def hide_gpus_from_tensorflow() -> None:
  """TensorFlow only feeds data: keep it off the GPUs so JAX gets all their memory."""
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # already initialised, visible devices can no longer change
    pass


class _DropLibraryChatter(logging.Filter):
  """Keep orbax's per-save INFO lines out of the console; warnings and errors still pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


def quiet_library_logs() -> None:
  from absl import logging as absl_logging
  absl_logging.get_absl_handler().addFilter(_DropLibraryChatter())


def default_workdir(config) -> str:
  return os.path.join('workdirs', f'{config.data.name}_{config.model.name}')


def check_workdir_writable(workdir: str) -> None:
  """Refuse an unwritable workdir before anything is created."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f'workdir {workdir!r} is not writable ({path!r} is not a writable directory)')


@contextlib.contextmanager
def clean_errors():
  """Configuration and data errors end the program with one line on stderr and exit code 1."""
  from se_flax.data import input_pipeline
  try:
    yield
  except (ValueError, FileNotFoundError, input_pipeline.DataNotFoundError) as e:
    if os.environ.get('SE_FLAX_TRACEBACK'):
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
