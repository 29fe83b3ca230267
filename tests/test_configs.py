"""Every file in configs/ is data: loading it (and calling its get_config) imports no TensorFlow."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'configs', '**', '*.py'),
                                                                   recursive=True))
_PROBE = '''
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
if hasattr(module, 'get_config'):
  module.get_config()
print(json.dumps({m: m in sys.modules for m in ('tensorflow', 'tensorflow_datasets')}))
'''


def test_every_config_file_is_listed():
  assert 'configs/imagenet.py' in CONFIG_FILES and 'configs/sweeps/reduction.py' in CONFIG_FILES


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_config_file_imports_no_tensorflow(path):
  module = path[:-len('.py')].replace(os.sep, '.').removesuffix('.__init__')
  proc = subprocess.run([sys.executable, '-c', _PROBE, module], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == '{"tensorflow": false, "tensorflow_datasets": false}'
