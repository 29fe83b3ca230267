"""TFDS builder for scikit-learn's handwritten digits (`se_flax_digits`).

The data are the 1,797 real 8x8 grey-scale images of `sklearn.datasets.
load_digits()` (UCI "Optical Recognition of Handwritten Digits", test part),
shipped inside the scikit-learn package, so the dataset is prepared fully
offline: `_split_generators` never touches the download manager.

Features:
  image: uint8 (8, 8, 1); the 0..16 counts are mapped to `min(v * 16, 255)`.
  label: ClassLabel(num_classes=10), the digit.

Split (fixed, deterministic): stratified, 20% test, numpy seed 0.
  train: 1,437 examples, test: 360 examples
  (test per digit 0..9: 36, 37, 35, 37, 36, 36, 36, 36, 35, 36).
Per class, the test share is 20% of the class count, rounded by largest
remainder (ties to the lower class id) so the total is exactly 360; within a
class the test examples are the first ones of
`np.random.default_rng(0).permutation` of that class's indices (the classes
are visited in order 0..9 with the same generator). The example key is the
sklearn index; TFDS stores each split in a fixed order derived from the keys.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from sklearn.datasets import load_digits

NUM_TEST = 360
SPLIT_SEED = 0


def stratified_test_indices(labels: np.ndarray, num_test: int, seed: int) -> np.ndarray:
  """Sorted test indices: a class-proportional share of exactly `num_test`."""
  classes, counts = np.unique(labels, return_counts=True)
  quota = counts * num_test / len(labels)
  take = np.floor(quota).astype(int)
  # Largest remainder; the stable sort breaks ties towards lower class ids.
  extra = np.argsort(-(quota - take), kind='stable')[: num_test - take.sum()]
  take[extra] += 1
  rng = np.random.default_rng(seed)
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
  return np.sort(np.concatenate(chosen))


def split_indices() -> dict[str, np.ndarray]:
  """The fixed train/test partition of the sklearn indices."""
  labels = load_digits().target
  test = stratified_test_indices(labels, NUM_TEST, SPLIT_SEED)
  train = np.setdiff1d(np.arange(len(labels)), test)
  return {'train': train, 'test': test}


class SeFlaxDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn digits as a TFDS dataset, prepared offline."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 1,437 train / 360 test split, seed 0.'}
  # TFDS 4.9.x derives this via `importlib_resources`, which it does not
  # install on Python >= 3.9 (tensorflow/datasets#11212); set it directly.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='scikit-learn handwritten digits (8x8, 10 classes).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Reads the copy bundled with scikit-learn; `dl_manager` is unused."""
    del dl_manager
    return {name: self._generate_examples(idx) for name, idx in split_indices().items()}

  def _generate_examples(self, indices: np.ndarray):
    digits = load_digits()
    images = np.minimum(digits.images * 16, 255).astype(np.uint8)[..., None]
    for i in indices:
      yield int(i), {'image': images[i], 'label': int(digits.target[i])}


def ensure_prepared(data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Returns the digits builder, preparing it (offline, ~1 s) on first use."""
  builder = SeFlaxDigits(data_dir=data_dir)
  if not builder.is_prepared():
    # No GCS lookup: the machine may have no network.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
