"""`tfds.testing.mock_data` for datasets that cannot be downloaded here (CIFAR, ImageNet)."""

from __future__ import annotations

import contextlib

import tensorflow_datasets as tfds


def write_metadata(name: str, data_dir: str, num_examples: int) -> None:
  """TFDS metadata claiming train/test/validation splits of `num_examples` each."""
  builder = tfds.builder(name, data_dir=data_dir)
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=name,
                                           filetype_suffix='tfrecord')
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0,
                          filename_template=template.replace(split=split))
      for split in ('train', 'test', 'validation')]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)


@contextlib.contextmanager
def mock_tfds(name: str, num_examples: int, data_dir: str):
  """TFDS serves `num_examples` random examples per split of `name`, as if prepared.

  The metadata make `is_prepared()` and `info.splits` work (USE_FILES policy); inside, every
  builder's data_dir is replaced by `data_dir`.
  """
  write_metadata(name, data_dir, num_examples)
  with tfds.testing.mock_data(num_examples=num_examples, data_dir=data_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    yield
