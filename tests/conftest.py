"""Test set-up: four simulated CPU devices, so data-parallel code is exercised on one machine."""

import os

# Must happen before JAX initialises its backend. Tests that need one device build a 1-device mesh.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
