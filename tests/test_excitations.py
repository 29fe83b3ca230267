"""Excitation analysis: gate capture leaves the logits unchanged, per-class means, files, end to end."""

from __future__ import annotations

import csv
import os

import jax
import numpy as np
import pytest

from se_flax import models
from se_flax.tools import excitations
from test_report import assert_png
from test_train import tiny_digits
from se_flax import train_lib

RANGES = {'sigmoid': (0.0, 1.0), 'tanh': (-1.0, 1.0)}


def tiny(gate='sigmoid', stages=None):
  """The tiny CIFAR net with perturbed weights, so that gates differ between images and channels
  (freshly initialised, the zero-initialised last BN of each block makes every gate 0.5)."""
  model = models.create('seresnet_tiny_cifar', se=dict(gate=gate, stages=stages))
  x = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype(np.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(1), x, train=False))  # shapes only: fast
  def fill(path, v):  # deterministic, zero-mean weights; BN scales and variances near 1
    wave = 0.3 * np.sin(np.arange(v.size) * 1.7 + 1.0).reshape(v.shape)
    positive = jax.tree_util.keystr(path).endswith(("['var']", "['scale']"))
    return (wave + positive).astype(np.float32)
  variables = jax.tree_util.tree_map_with_path(fill, variables)
  return model, variables, x


@pytest.mark.parametrize('gate', ['sigmoid', 'tanh'])
def test_capture_returns_plain_logits_and_gates_in_range(gate):
  model, variables, x = tiny(gate)
  logits, gates = jax.jit(lambda v, x: excitations.capture(model, v, x))(variables, x)
  plain = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(plain), rtol=1e-6, atol=1e-6)
  assert sorted(gates) == ['layer1_0/se', 'layer2_0/se', 'layer3_0/se']
  assert [gates[k].shape for k in sorted(gates)] == [(6, 8), (6, 16), (6, 32)]
  lo, hi = RANGES[gate]
  for g in gates.values():
    g = np.asarray(g)
    assert (g > lo).all() and (g < hi).all()
    assert g.std(axis=0).max() > 1e-5 and g.std(axis=1).max() > 1e-3  # varies with image and channel
  _, some = jax.eval_shape(lambda: excitations.capture(*tiny(stages=(False, True, True))[:2], x))
  assert sorted(some) == ['layer2_0/se', 'layer3_0/se']


def test_class_means_match_a_direct_computation_and_ignore_padding(tmp_path):
  model, variables, x = tiny()
  labels = np.array([0, 2, 2, 1, 0, 0])
  mask = np.array([True, True, True, True, True, False])  # the last example is padding
  batches = [{'image': x[:3], 'label': labels[:3], 'mask': mask[:3]},
             {'image': x[3:], 'label': labels[3:], 'mask': mask[3:]}]
  means, counts = excitations.class_means(model, variables, batches, num_classes=4)
  _, gates = jax.jit(lambda v, x: excitations.capture(model, v, x))(variables, x)
  assert counts.tolist() == [2, 1, 2, 0]
  g = np.asarray(gates['layer2_0/se'])
  np.testing.assert_allclose(means['by_class']['layer2_0/se'][0], g[[0, 4]].mean(0), rtol=1e-6)
  np.testing.assert_allclose(means['by_class']['layer2_0/se'][2], g[[1, 2]].mean(0), rtol=1e-6)
  np.testing.assert_allclose(means['all']['layer2_0/se'], g[:5].mean(0), rtol=1e-6)

  spread = excitations.write_outputs(str(tmp_path), means, counts, [0, 2], 'tiny')
  assert set(spread) == set(gates) and all(s >= 0 for s in spread.values())
  data = np.load(tmp_path / 'excitations.npz')
  assert list(data['blocks']) == ['layer1_0/se', 'layer2_0/se', 'layer3_0/se']
  np.testing.assert_allclose(data['block1_all'], means['all']['layer2_0/se'], rtol=1e-6)
  with open(tmp_path / 'excitations.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == (8 + 16 + 32) * (1 + 4)  # every channel: all classes, then each class
  assert_png(tmp_path / 'excitations.png')
  assert excitations.parse_classes(None, 10) == [0, 3, 6, 9]
  with pytest.raises(ValueError, match='0..9'):
    excitations.parse_classes('3,12', 10)


def test_run_on_a_trained_checkpoint(tmp_path, digits_dir):
  config = tiny_digits(digits_dir, num_steps=3, checkpoint_every_steps=3)
  config.model.se.stages = (False, True, True)  # SE in the last two stages only
  train_lib.train_and_evaluate(config, str(tmp_path / 'work'))
  spread = excitations.run(config, str(tmp_path / 'work'), classes='1,7', out_dir=str(tmp_path / 'out'))
  assert list(spread) == ['layer2_0/se', 'layer3_0/se']
  data = np.load(tmp_path / 'out' / 'excitations.npz')
  assert list(data['blocks']) == ['layer2_0/se', 'layer3_0/se']
  assert data['counts'].sum() == 360 and data['block1_by_class'].shape == (10, 32)  # the whole test split
  assert os.path.getsize(tmp_path / 'out' / 'excitations.png') > 10_000


def test_run_on_a_model_without_se_fails_in_one_line_before_reading_anything(tmp_path, digits_dir):
  config = tiny_digits(digits_dir)
  config.model.se.enabled = False
  (tmp_path / 'work' / 'checkpoints').mkdir(parents=True)  # empty: restoring it would fail differently
  with pytest.raises(ValueError, match=r"'seresnet_tiny_cifar' with config.model.se=\{'enabled': False\} "
                                       'has no SE block'):
    excitations.run(config, str(tmp_path / 'work'))
  with pytest.raises(FileNotFoundError, match='no checkpoints in workdir'):
    excitations.run(config, f'file://{tmp_path}/none')
