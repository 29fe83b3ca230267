"""What the command-line programs share: config and distributed flags, one-line errors, quieter logs."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

from se_flax import errors


class _DropLibraryChatter(logging.Filter):
  """Keep orbax's per-save and TFDS's per-read INFO lines out of the console (so that the run's own
  start-up lines come first); warnings and errors still pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/'))


def quiet_library_logs() -> None:
  from absl import logging as absl_logging
  absl_logging.get_absl_handler().addFilter(_DropLibraryChatter())


_DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')


def define_distributed_flags() -> None:
  """Flags for multi-process runs without a launcher JAX detects (srun, TPU pods detect themselves);
  each sets the config.distributed field of the same name."""
  from absl import flags
  flags.DEFINE_string('coordinator_address', None, 'host:port where process 0 serves jax.distributed.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes of the run.')
  flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")


def _one_line(e: BaseException) -> str:
  text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  return ' '.join(str(text).split())


def define_config_flag(default: str, help_text: str) -> None:
  """`--config` (a locked ml_collections config file). config_flags applies `--config.x=...`
  overrides already here, so an override naming an unknown field fails here: in one line."""
  from ml_collections import config_flags
  try:
    config_flags.DEFINE_config_file('config', default, help_text, lock_config=True)
  except KeyError as e:
    print(f'error: unknown config field in an override: {_one_line(e)}', file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (unknown flag, bad value, config field typo) are one line."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, ValueError, TypeError, AttributeError, OSError) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
    sys.exit(1)


def load_config(flag_values):
  """The --config file with its overrides applied, or one line saying what went wrong.

  ml_collections defers both a load failure and a bad override until the config is first used.
  """
  try:
    config = flag_values.config
    config.keys()
    return config
  except KeyError as e:  # --config.some.typo=...
    print(f'error: unknown config field in an override: {_one_line(e)}', file=sys.stderr)
  except (OSError, ImportError, SyntaxError, AttributeError, TypeError, ValueError) as e:
    reason = re.findall(r'\[Errno \d+\] ([^\n]*)', str(e)) or [_one_line(e)]
    print(f'error: cannot load --config={flag_values["config"].config_filename!r}: {reason[-1]}',
          file=sys.stderr)
  sys.exit(1)


@contextlib.contextmanager
def clean_errors(*kinds: type[BaseException]):
  """Errors of `kinds` (default: errors.INPUT_ERRORS) end the program with one line on stderr and
  exit code 1; set SE_FLAX_TRACEBACK=1 to see the traceback instead."""
  kinds = kinds or errors.INPUT_ERRORS
  try:
    yield
  except kinds as e:
    if os.environ.get('SE_FLAX_TRACEBACK'):
      raise
    print(f'error: {_one_line(e)}', file=sys.stderr)
    sys.exit(1)


def program_config(argv: list[str]):
  """How a program's main starts: no stray arguments, quieter library logs, and the --config with
  its overrides and, where the program defines them, the distributed flags applied."""
  from absl import app
  from absl import flags
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  quiet_library_logs()
  config = load_config(flags.FLAGS)
  for name in _DISTRIBUTED_FLAGS:
    if name in flags.FLAGS and flags.FLAGS[name].value is not None:
      config.distributed[name] = flags.FLAGS[name].value
  return config
