"""Tests for the offline `se_flax_digits` TFDS dataset."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from se_flax.data import digits


def _no_network(*args, **kwargs):
  raise OSError('network access is disabled in this test')


@pytest.fixture(scope='module')
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
  """Both splits as numpy, prepared into a fresh data_dir with sockets disabled."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(socket.socket, 'connect', _no_network)
    builder = digits.ensure_prepared(data_dir)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == 1437
  assert builder.info.splits['test'].num_examples == 360
  return {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
          for split in ('train', 'test')}


def _rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
  """Sorted (label, pixels) records: a multiset fingerprint of examples."""
  return sorted(bytes([label]) + image.tobytes() for image, label in zip(images, labels))


def test_splits_have_documented_counts_and_features(prepared):
  for split, n in (('train', 1437), ('test', 360)):
    images, labels = prepared[split]['image'], prepared[split]['label']
    assert images.shape == (n, 8, 8, 1) and images.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(10))
  assert set(np.unique(prepared['test']['label'])) == set(range(10))
  assert set(np.unique(prepared['train']['label'])) == set(range(10))


def test_pixels_are_sklearn_values_times_16_clipped(prepared):
  sk = load_digits()
  expected = np.minimum(sk.images * 16, 255).astype(np.uint8)[..., None]
  images = np.concatenate([prepared[s]['image'] for s in ('train', 'test')])
  labels = np.concatenate([prepared[s]['label'] for s in ('train', 'test')])
  assert _rows(images, labels) == _rows(expected, sk.target)
  assert images.max() == 255


def test_split_is_fixed_stratified_and_stored(prepared):
  first, second = digits.split_indices(), digits.split_indices()
  for split in ('train', 'test'):
    np.testing.assert_array_equal(first[split], second[split])
  assert len(first['test']) == 360 and len(first['train']) == 1437
  np.testing.assert_array_equal(np.union1d(first['train'], first['test']), np.arange(1797))
  sk = load_digits()
  per_class = np.bincount(sk.target)
  test_per_class = np.bincount(sk.target[first['test']], minlength=10)
  assert np.all(np.abs(test_per_class - 0.2 * per_class) < 1)
  expected = np.minimum(sk.images * 16, 255).astype(np.uint8)[..., None]
  for split in ('train', 'test'):
    idx = first[split]
    assert _rows(prepared[split]['image'], prepared[split]['label']) == _rows(
        expected[idx], sk.target[idx])


def test_stratified_indices_total_is_exact():
  labels = np.repeat(np.arange(3), [5, 7, 9])
  test = digits.stratified_test_indices(labels, num_test=4, seed=0)
  assert len(test) == 4 and len(np.unique(test)) == 4
  np.testing.assert_array_equal(np.bincount(labels[test], minlength=3), [1, 1, 2])
