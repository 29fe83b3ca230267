"""se_flax.tools.profile_step: op_name parsing and attribution (exact, on fixed strings), and one
real traced step of the tiny net whose instructions are attributed to its layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from se_flax.tools import profile_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HLO = '''
  %ynn_fusion.4 = f32[8,64]{1,0} fusion(%p0, %p1), kind=kCustom, metadata={op_name="jit(_train_step)/shard_map/transpose(jvp(ResNet))/layer1_0/conv1/dot_general" source_file="x.py"}
  ROOT %all-reduce.8 = f32[64]{0} all-reduce(%a), metadata={op_name="jit(_train_step)/shard_map/psum"}
  %copy.1 = f32[64]{0} copy(%b)
'''


def test_op_names_and_description():
  names = profile_step.op_names(HLO)
  assert names == {'ynn_fusion.4': 'jit(_train_step)/shard_map/transpose(jvp(ResNet))/layer1_0/conv1/dot_general',
                   'all-reduce.8': 'jit(_train_step)/shard_map/psum'}
  assert profile_step.describe(names['ynn_fusion.4']) == ('layer1_0/conv1', 'backward dot_general')
  assert profile_step.describe('jit(_train_step)/jvp(ResNet)/layer4_0/layer4_0._finish/se/fc1/dot_general') == (
      'layer4_0/se/fc1', 'forward dot_general')
  assert profile_step.describe(names['all-reduce.8']) == ('step', 'forward psum')


def test_attribution_sums_per_step():
  names = {'a': 'jit(s)/jvp(ResNet)/layer1_0/conv1/dot_general', 'b': 'jit(s)/transpose(jvp(ResNet))/layer1_0/bn1/mul'}
  result = profile_step.attribute([('a', 1.0), ('b', 0.5), ('a', 3.0), ('c', 0.5)], names, steps=2)
  assert result['total_seconds'] == pytest.approx(2.5)
  assert [(r['instruction'], r['seconds']) for r in result['instructions']] == [('a', 2.0), ('b', 0.25), ('c', 0.25)]
  assert result['by_kind'] == {'forward dot_general': 2.0, 'backward mul': 0.25, 'unattributed': 0.25}
  assert result['by_layer'] == {'layer1_0/conv1': 2.0, 'layer1_0/bn1': 0.25, '?': 0.25}


def test_real_trace_of_the_tiny_net(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'se_flax.tools.profile_step', '--model=seresnet_tiny', '--batch=2',
                         '--image-size=32', '--profile-steps=1', f'--logdir={tmp_path}', '--json'], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), text=True, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['total_seconds'] > 0 and result['step_seconds'] > 0
  layers = set(result['by_layer'])
  assert {'stem_conv1', 'layer1_0/conv1', 'fc'} <= layers, sorted(layers)
  assert any(k.startswith('backward') for k in result['by_kind'])
  assert '| instruction | s/step |' in proc.stdout
