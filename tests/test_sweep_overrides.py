"""Sweep overrides reach train.py as the values the sweep planned: one-element tuples included.

The sweep runner spells each member's overrides as `--config.a.b=value` flags of train.py, which
ml_collections parses back. Here the runner starts the real train.py (its flags, config parsing and
checks) with only `train_lib.train_and_evaluate` replaced by a recorder, and the config train.py
would train is compared, field by field, with the planned one.
"""

from __future__ import annotations

import io
import json
import os

import ml_collections
import pytest

from configs import digits as digits_config
from se_flax import hyper
from se_flax.tools import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# train.py itself, with the training call replaced by one that records the config it was given.
RECORDING_TRAIN = """
import json, os, sys
sys.path.insert(0, {repo!r})
from absl import app
from se_flax import cli, train_lib
import train

def record(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json())
  result = {{'top1': 0.5, 'top5': 1.0, 'loss': 1.0, 'params': 1, 'macs': 1, 'train_img_per_sec': 1.0}}
  with open(os.path.join(workdir, 'final_eval.json'), 'w') as f:
    json.dump(result, f)
  return result

train_lib.train_and_evaluate = record
app.run(train.main, flags_parser=cli.parse_flags)
"""

ONE_ELEMENT = {'data.keep_labels': (3,), 'data.mean': (0.0,), 'data.std': (1.0,),
               'schedule.decay_epochs': (2.5,), 'finetune.head': ('fc/kernel',)}
SWEEP = f"""
from se_flax import hyper
def get_sweep(config):
  return [{ONE_ELEMENT!r}]
"""


def test_one_element_tuples_reach_train_py(tmp_path, digits_dir):
  (tmp_path / 'tuples.py').write_text(SWEEP)
  (tmp_path / 'train.py').write_text(RECORDING_TRAIN.format(repo=REPO))
  config = digits_config.get_config('seresnet_tiny_cifar')
  config.data.data_dir = digits_dir
  base = [f'--config={os.path.join(REPO, "configs", "digits.py")}:seresnet_tiny_cifar',
          f'--config.data.data_dir={digits_dir}']
  out = io.StringIO()
  code = sweep.run_sweep(config, str(tmp_path / 'tuples.py'), str(tmp_path / 'sweep'), base,
                         train_script=str(tmp_path / 'train.py'), out=out)
  (member,) = [d for d in (tmp_path / 'sweep').iterdir() if d.is_dir()]
  assert code == 0, (member / 'train.log').read_text()[-3000:]
  got = ml_collections.ConfigDict(json.loads((member / 'config.json').read_text()))
  planned = hyper.apply_overrides(config, ONE_ELEMENT)
  for key, value in ONE_ELEMENT.items():
    assert tuple(field_of(got, key)) == value, (key, field_of(got, key))
  assert json.loads(got.to_json()) == json.loads(planned.to_json())  # and nothing else changed


def field_of(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


@pytest.mark.parametrize('field', ['model.drop_rate', 'model.se.reduction', 'data.data_dir'])
def test_none_override_is_refused_before_anything_runs(tmp_path, field):
  """None has no command-line spelling: ml_collections reads 'None' as a string (data_dir 'None')
  or fails to parse it as a number in every member's train.py. The sweep refuses it up front."""
  (tmp_path / 'none.py').write_text('from se_flax import hyper\n'
                                    f'def get_sweep(config):\n  return hyper.sweep({field!r}, [None, 2])\n')
  with pytest.raises(ValueError) as e:
    hyper.load_sweep(str(tmp_path / 'none.py'), digits_config.get_config())
  message = str(e.value)
  assert f'{field}=None' in message and 'leave the field out' in message and '\n' not in message
