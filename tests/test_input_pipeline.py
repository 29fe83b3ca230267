"""Tests for se_flax.data.input_pipeline: determinism, sharding, coverage, errors.

Real data: the offline digits dataset (in-memory path) and a tiny JPEG
dataset built here (streaming path). CIFAR/ImageNet use `tfds.testing.
mock_data` on top of metadata written by `tfds_mocks.mock_tfds`.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Iterator

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from se_flax.data import digits
from se_flax.data import input_pipeline as ip
from se_flax.data import pil_eval
import tfds_mocks

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden'))
import photos  # noqa: E402  (tests/golden/photos.py)

_JPEG_TRAIN, _JPEG_EVAL = 37, 23


class SeFlaxTestJpegs(tfds.core.GeneratorBasedBuilder):
  """Random JPEGs of varied sizes whose label is the example id."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = epath.Path(__file__)  # See se_flax/data/digits.py.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=_JPEG_TRAIN + _JPEG_EVAL),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, _JPEG_TRAIN),
            'validation': self._generate_examples(_JPEG_TRAIN, _JPEG_TRAIN + _JPEG_EVAL)}

  def _generate_examples(self, start: int, stop: int):
    rng = np.random.default_rng(start)
    for i in range(start, stop):
      h, w = rng.integers(9, 20, size=2)
      yield i, {'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 'label': i}


# ----------------------------------------------------------------------------
# Helpers and fixtures.


@pytest.fixture(scope='module')
def jpeg_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  SeFlaxTestJpegs(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


@pytest.fixture
def jpeg_cfg(jpeg_dir: str, monkeypatch: pytest.MonkeyPatch):
  """Config of the JPEG dataset, registered as streaming se_flax dataset 'jpegs'."""
  monkeypatch.setitem(ip.DATASETS, 'jpegs', ip.DatasetSpec(
      'se_flax_test_jpegs', _JPEG_TRAIN + _JPEG_EVAL, (8, 8, 3), False, 'train',
      'validation', (127.5,) * 3, (64.0,) * 3))
  cfg = ip.default_data_config('imagenet2012')
  cfg.update(name='jpegs', data_dir=jpeg_dir, image_size=8, eval_resize=10,
             mean=(127.5,) * 3, std=(64.0,) * 3, shuffle_buffer=64)
  return cfg


def _digits_cfg(data_dir: str, **overrides) -> ip.Config:
  cfg = ip.default_data_config('digits')
  cfg.data_dir = data_dir
  cfg.update(overrides)
  return cfg


def _digits_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The split in stored order, normalised like the pipeline does."""
  builder = digits.ensure_prepared(data_dir)
  data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
  spec = ip.get_spec('digits')
  images = (data['image'].astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
  return images, data['label']


def _take(iterator: Iterator[dict], n: int) -> list[dict]:
  return [next(iterator) for _ in range(n)]


def _assert_same(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _concat(batches: list[dict]) -> dict:
  return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


# ----------------------------------------------------------------------------
# Digits (in-memory path).


def test_digits_counts_and_batch_format(digits_dir):
  cfg = _digits_cfg(digits_dir)
  assert ip.num_examples(cfg, 'train') == 1437
  assert ip.num_examples(cfg, 'test') == 360
  assert ip.steps_per_epoch(cfg, 100) == 14
  epoch = _take(ip.train_iterator(cfg, global_batch_size=100, seed=0), 14)
  assert epoch[0]['image'].shape == (100, 8, 8, 1) and epoch[0]['image'].dtype == np.float32
  assert epoch[0]['label'].shape == (100,) and epoch[0]['label'].dtype == np.int32
  images = np.concatenate([b['image'] for b in epoch])
  assert abs(images.mean()) < 0.02 and abs(images.std() - 1) < 0.02  # Train mean/std.
  evaluated = next(ip.eval_iterator(cfg, global_batch_size=64))
  assert evaluated['mask'].dtype == bool and evaluated['image'].shape == (64, 8, 8, 1)


def test_train_batches_follow_the_documented_permutation(digits_dir):
  cfg = _digits_cfg(digits_dir)  # augment 'none': batches are plain examples.
  images, labels = _digits_split(digits_dir, 'train')
  batches = _take(ip.train_iterator(cfg, global_batch_size=100, seed=3, start_step=13), 2)
  for batch, (epoch, k) in zip(batches, [(0, 13), (1, 0)]):
    idx = np.random.default_rng([3, epoch]).permutation(1437)[k * 100:(k + 1) * 100]
    np.testing.assert_allclose(batch['image'], images[idx], rtol=1e-6)
    np.testing.assert_array_equal(batch['label'], labels[idx])


@pytest.mark.parametrize('augment', ['cifar', 'inception'])
def test_train_is_deterministic_and_resumes_exactly(digits_dir, augment):
  cfg = _digits_cfg(digits_dir, augment=augment)
  batches = _take(ip.train_iterator(cfg, global_batch_size=100, seed=7), 16)  # 14 per epoch.
  for a, b in zip(batches, _take(ip.train_iterator(cfg, global_batch_size=100, seed=7), 16)):
    _assert_same(a, b)
  for start in (13, 15):  # Last step of epoch 0, inside epoch 1.
    _assert_same(next(ip.train_iterator(cfg, global_batch_size=100, seed=7,
                                        start_step=start)), batches[start])
  other = next(ip.train_iterator(cfg, global_batch_size=100, seed=8))
  assert not np.array_equal(other['label'], batches[0]['label'])


@pytest.mark.parametrize('augment', ['cifar', 'inception'])
def test_processes_and_batch_sizes_see_identical_examples(digits_dir, augment):
  cfg = _digits_cfg(digits_dir, augment=augment)
  single = _take(ip.train_iterator(cfg, global_batch_size=100, seed=1, start_step=13), 2)
  shards = [_take(ip.train_iterator(cfg, global_batch_size=100, seed=1, start_step=13,
                                    process_index=p, process_count=2), 2) for p in range(2)]
  assert shards[0][0]['image'].shape == (50, 8, 8, 1)
  for step in range(2):  # Crosses the epoch boundary.
    _assert_same(_concat([shard[step] for shard in shards]), single[step])
  # Augmentation depends on the position in the epoch, not on the batch size.
  halves = _take(ip.train_iterator(cfg, global_batch_size=50, seed=1), 2)
  _assert_same(_concat(halves), next(ip.train_iterator(cfg, global_batch_size=100, seed=1)))


@pytest.mark.parametrize('global_batch', [64, 100, 360, 512])
@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_split_once_in_order(digits_dir, global_batch, process_count):
  cfg = _digits_cfg(digits_dir)
  per_process = [list(ip.eval_iterator(cfg, global_batch_size=global_batch, process_index=p,
                                       process_count=process_count))
                 for p in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1
  assert len(per_process[0]) == -(-360 // global_batch)
  merged = _concat([_concat(list(step)) for step in zip(*per_process)])
  images, labels = _digits_split(digits_dir, 'test')
  mask = merged['mask']
  assert mask.sum() == 360 and mask[:360].all()
  np.testing.assert_allclose(merged['image'][mask], images, rtol=1e-6)
  np.testing.assert_array_equal(merged['label'][mask], labels)
  assert not merged['image'][~mask].any() and not merged['label'][~mask].any()


# ----------------------------------------------------------------------------
# Streaming path, on a real (tiny) JPEG dataset.


@pytest.mark.parametrize('global_batch', [4, 6, 10, 30])
@pytest.mark.parametrize('process_count', [1, 2])
def test_stream_eval_covers_split_once(jpeg_cfg, global_batch, process_count):
  per_process = [list(ip.eval_iterator(jpeg_cfg, global_batch_size=global_batch,
                                       process_index=p, process_count=process_count))
                 for p in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1
  merged = _concat([b for batches in per_process for b in batches])
  assert merged['image'].shape[1:] == (8, 8, 3)
  assert sorted(merged['label'][merged['mask']]) == list(range(_JPEG_TRAIN, 60))
  assert not merged['image'][~merged['mask']].any()


def test_stream_train_shards_epochs_and_resumes(jpeg_cfg):
  # 37 examples, G=6: 6 steps per epoch; 2 processes with local batch 3.
  assert ip.steps_per_epoch(jpeg_cfg, 6) == 6
  shards = [_take(ip.train_iterator(jpeg_cfg, global_batch_size=6, seed=0, process_index=p,
                                    process_count=2), 8) for p in range(2)]
  for epoch in (slice(0, 6),):
    seen = [np.concatenate([b['label'] for b in shard[epoch]]) for shard in shards]
    assert all(len(set(s)) == 18 for s in seen)  # No repeats within an epoch.
    assert not set(seen[0]) & set(seen[1])  # Disjoint process shares.
  for start in (2, 7):
    _assert_same(next(ip.train_iterator(jpeg_cfg, global_batch_size=6, seed=0, start_step=start,
                                        process_index=1, process_count=2)), shards[1][start])
  assert shards[0][0]['image'].shape == (3, 8, 8, 3)
  assert np.isfinite(shards[0][0]['image']).all()


# ----------------------------------------------------------------------------
# Mocked CIFAR-10 and ImageNet.


def test_mock_cifar10_batches(tmp_path):
  with tfds_mocks.mock_tfds('cifar10', 20, str(tmp_path)):
    cfg = ip.default_data_config('cifar10')
    cfg.data_dir = str(tmp_path)
    assert cfg.augment == 'cifar'
    batch = next(ip.train_iterator(cfg, global_batch_size=8, seed=0, process_index=1,
                                   process_count=2))
    assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
    assert batch['label'].dtype == np.int32 and batch['label'].max() < 10
    batches = list(ip.eval_iterator(cfg, global_batch_size=8))
    assert [b['mask'].sum() for b in batches] == [8, 8, 4]


def test_mock_imagenet_batches(tmp_path):
  with tfds_mocks.mock_tfds('imagenet2012', 12, str(tmp_path)):
    cfg = ip.default_data_config('imagenet2012')
    cfg.update(data_dir=str(tmp_path), image_size=32, eval_resize=36)
    assert cfg.augment == 'inception' and cfg.eval_split == 'validation'
    batch = next(ip.train_iterator(cfg, global_batch_size=4, seed=0))
    assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
    assert np.isfinite(batch['image']).all() and np.abs(batch['image']).max() < 3
    per_process = [list(ip.eval_iterator(cfg, global_batch_size=4, process_index=p,
                                         process_count=2)) for p in range(2)]
    assert [len(b) for b in per_process] == [3, 3]
    assert sum(b['mask'].sum() for batches in per_process for b in batches) == 12


def test_standard_tfds_mock_serves_cifar_and_imagenet():
  """`tfds.testing.mock_data` with its default policy (no metadata files: info from code, split
  sizes unknown): the datasets count as present, and their sizes are what the mock serves."""
  with tfds.testing.mock_data(num_examples=8):
    cifar = ip.default_data_config('cifar10')
    assert ip.num_examples(cifar, 'train') == 8 and ip.steps_per_epoch(cifar, 4) == 2
    assert next(ip.train_iterator(cifar, global_batch_size=4, seed=0))['image'].shape == (4, 32, 32, 3)
    imagenet = ip.default_data_config('imagenet2012')
    imagenet.update(image_size=32, eval_resize=36)
    assert ip.num_examples(imagenet, 'validation') == 8
    batches = list(ip.eval_iterator(imagenet, global_batch_size=4, process_index=1, process_count=2))
    assert len(batches) == 4 and sum(b['mask'].sum() for b in batches) == 8  # each share: the 8 mocked
    assert next(ip.train_iterator(imagenet, global_batch_size=4, seed=0))['image'].shape == (4, 32, 32, 3)


# ----------------------------------------------------------------------------
# JPEG decoding and the PIL eval path.


def _pil_pixels(data: bytes) -> np.ndarray:
  from PIL import Image
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('RGB'))


def _jpeg_420(name: str) -> bytes:
  """A photo re-encoded with 4:2:0 chroma subsampling (most ImageNet JPEGs are), so the chroma
  upsampling of the decoders is compared as well."""
  from PIL import Image
  out = io.BytesIO()
  Image.fromarray(_pil_pixels(photos.encoded(name))).save(out, format='JPEG', quality=85, subsampling=2)
  return out.getvalue()


@pytest.mark.parametrize('source', ['china', 'flower', 'china_420', 'flower_420'])
def test_jpeg_decoding_equals_pils(source):
  """The pipeline decodes JPEGs as PIL does, pixel for pixel (accurate DCT); TensorFlow's default fast
  DCT does not. The inception path's crop decoding too, but for the chroma upsampling of a 4:2:0
  JPEG at the window's left and right columns (a few levels; libjpeg crops before upsampling)."""
  data = _jpeg_420(source[:-4]) if source.endswith('_420') else photos.encoded(source)
  expected = _pil_pixels(data)
  np.testing.assert_array_equal(ip._decoder(True, 3)(tf.constant(data)).numpy(), expected)
  window = tf.constant([64, 96, 200, 300])  # top, left, height, width
  crop = tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=ip.JPEG_DCT).numpy()
  np.testing.assert_array_equal(crop[:, 1:-1], expected[64:264, 97:395])
  assert np.abs(crop.astype(int) - expected[64:264, 96:396]).max() <= (8 if source.endswith('_420') else 0)
  assert np.abs(tf.io.decode_jpeg(data, channels=3).numpy().astype(int) - expected).max() > 0


def test_pil_eval_backend_is_pil_eval_on_every_example(jpeg_cfg):
  """eval_backend='pil': each eval example is pil_eval's view of the stored JPEG, normalised."""
  jpeg_cfg.update(eval_backend='pil', eval_interpolation='bicubic', eval_resize=11)
  batches = list(ip.eval_iterator(jpeg_cfg, global_batch_size=8))
  builder = tfds.builder('se_flax_test_jpegs', data_dir=jpeg_cfg.data_dir)
  raw = tfds.as_numpy(builder.as_dataset(split='validation', shuffle_files=False,
                                         decoders={'image': tfds.decode.SkipDecoding()}))
  expected = np.stack([pil_eval.normalise(pil_eval.view(ex['image'], 11, 8, 'bicubic', 3), jpeg_cfg.mean, jpeg_cfg.std)
                       for ex in raw])
  merged = _concat(batches)
  np.testing.assert_array_equal(merged['image'][merged['mask']], expected)
  tf_batch = next(ip.eval_iterator(_with(jpeg_cfg, eval_backend='tensorflow'), global_batch_size=8))
  assert not np.array_equal(tf_batch['image'], batches[0]['image'])


def test_pil_eval_backend_on_in_memory_images(digits_dir):
  """Stored uint8 arrays (1 channel) go through PIL too; without a resize it is the identity crop."""
  cfg = _digits_cfg(digits_dir)
  tf_batch = next(ip.eval_iterator(cfg, global_batch_size=64))
  pil_batch = next(ip.eval_iterator(_with(cfg, eval_backend='pil'), global_batch_size=64))
  _assert_same(tf_batch, pil_batch)


def _with(cfg, **changes):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(changes)
  return cfg


def test_pil_centre_view_follows_torchvision():
  """torchvision Resize(short side) + CenterCrop: long side int(short * long / short_in), offsets
  int(round(.)) (halves to even), no resize when the short side already fits."""
  assert pil_eval.resized_shape(300, 451, 200) == (200, 300)  # 300.67 truncates
  assert pil_eval.resized_shape(451, 300, 200) == (300, 200)
  image = pil_eval.decode(np.arange(11 * 14 * 3, dtype=np.uint8).reshape(11, 14, 3))
  np.testing.assert_array_equal(pil_eval.centre_view(image, 11, 8), np.asarray(image)[2:10, 3:11])
  gray = pil_eval.view(np.full((9, 20, 1), 7, np.uint8), 12, 12, 'bilinear', 1)
  assert gray.shape == (12, 12, 1) and (gray == 7).all()
  with pytest.raises(ValueError, match="interpolation 'lanczos' is not one of bilinear, bicubic"):
    pil_eval.centre_view(image, 11, 8, 'lanczos')


# ----------------------------------------------------------------------------
# Errors.


def test_unknown_dataset_name_is_rejected_in_one_line():
  for call in (lambda: ip.get_spec('mnist'), lambda: ip.default_data_config('mnist')):
    with pytest.raises(ValueError) as info:
      call()
    message = str(info.value)
    assert "'mnist'" in message and '\n' not in message
    assert all(name in message for name in ('digits', 'cifar10', 'cifar100', 'imagenet2012'))


def test_unprepared_cifar_is_never_downloaded(tmp_path):
  cfg = ip.default_data_config('cifar10')
  cfg.data_dir = str(tmp_path)
  with pytest.raises(ip.DataNotFoundError) as info:
    ip.train_iterator(cfg, global_batch_size=8, seed=0)
  message = str(info.value)
  assert '\n' not in message and str(tmp_path) in message
  assert f'tfds build cifar10 --data_dir={tmp_path}' in message
  assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
  assert not list(tmp_path.iterdir())


def test_unprepared_imagenet_says_where_the_tars_go(tmp_path):
  cfg = ip.default_data_config('imagenet2012')
  cfg.data_dir = str(tmp_path)
  with pytest.raises(ip.DataNotFoundError) as info:
    ip.eval_iterator(cfg, global_batch_size=8)
  message = str(info.value)
  assert '\n' not in message and f'{tmp_path}/downloads/manual' in message
  assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message


def test_bad_settings_are_rejected(digits_dir):
  with pytest.raises(ValueError, match="eval_backend 'opencv' is not one of tensorflow, pil"):
    ip.eval_iterator(_digits_cfg(digits_dir, eval_backend='opencv'), global_batch_size=8)
  with pytest.raises(ValueError, match="'mixup'"):
    ip.train_iterator(_digits_cfg(digits_dir, augment='mixup'), global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match='101'):
    ip.train_iterator(_digits_cfg(digits_dir), global_batch_size=101, seed=0, process_count=2)
  with pytest.raises(ValueError, match='2000'):
    ip.steps_per_epoch(_digits_cfg(digits_dir), 2000)
