"""Every error a user can act on is an errors.UserError and still the built-in error it was."""

from __future__ import annotations

import pytest

from se_flax import checkpointing
from se_flax import errors
from se_flax import paths
from se_flax import resilience
from se_flax.data import input_pipeline
from se_flax.weights import init_from
from se_flax.weights import pretrained


@pytest.mark.parametrize('cls, builtin', [
    (errors.ConfigError, ValueError), (resilience.WorkdirBusyError, ValueError),
    (resilience.NonFiniteError, RuntimeError), (checkpointing.CheckpointMismatchError, ValueError),
    (init_from.InitFromMismatchError, ValueError), (pretrained.PretrainedNotFoundError, FileNotFoundError),
    (input_pipeline.DataNotFoundError, FileNotFoundError), (input_pipeline.DataNotFoundError, ValueError)])
def test_user_errors_keep_their_builtin_class(cls, builtin):
  assert issubclass(cls, errors.UserError) and issubclass(cls, builtin)
  assert issubclass(cls, errors.INPUT_ERRORS)


def test_an_unwritable_workdir_is_a_config_error(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.ConfigError, match='is not writable'):
    paths.check_workdir_writable(str(tmp_path / 'file' / 'run'))
