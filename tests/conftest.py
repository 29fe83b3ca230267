"""Test set-up: four simulated CPU devices, so data-parallel code is exercised on one machine."""

import os
import tempfile

# Must happen before JAX initialises its backend. Tests that need one device build a 1-device mesh.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Identical programs (the same tiny model in several tests, the CLI subprocesses) compile once.
_cache = os.path.join(tempfile.gettempdir(), f'se_flax_test_jax_cache_{os.getuid()}')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _cache)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory) -> str:
  """The offline digits dataset, prepared once per test session (about 2 s)."""
  from se_flax.data import digits
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits.ensure_prepared(data_dir)
  return data_dir
