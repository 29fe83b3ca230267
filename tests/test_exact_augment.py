"""What the input pipeline's augmentation produces, checked exactly on images that encode coordinates.

Every pixel of a test image holds (row + 1, column + 1, example id + 1) in its three channels, and
the pipeline runs with mean 0 and std 1, so each output pixel says where in which source image it
came from: the crop box, the flip and the example can be read back from the output, and the output
can be compared with what the documented transform must give (input_pipeline's module doc):
  * evaluation (and augment 'none') is the deterministic centre view, also with random_flip on;
  * 'cifar' is an exact `image_size` window of the zero-padded view, every offset in
    [0, 2 * crop_padding] used, mirrored left-right about half the time;
  * 'inception' is a box inside the image whose area is within rrc_scale of the image's and whose
    width / height is within rrc_ratio (up to the rounding of the width to whole pixels), resized
    bilinearly to `image_size`;
  * an example gets a different crop and flip in epochs 0 and 1 (and the augmentation of a batch
    position does not repeat from one epoch to the next), and the same ones again on a rerun, for
    the in-memory and the streaming (JPEG) paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from se_flax.data import input_pipeline as ip

NUM_EXAMPLES = 128
BATCH = 32  # 4 steps an epoch


def coordinate_images(n: int, height: int, width: int) -> np.ndarray:
  images = np.zeros((n, height, width, 3), np.uint8)
  images[..., 0] = np.arange(1, height + 1)[None, :, None]
  images[..., 1] = np.arange(1, width + 1)[None, None, :]
  images[..., 2] = np.arange(1, n + 1)[:, None, None]
  return images


@pytest.fixture
def coords(monkeypatch):
  """`coords(height, width, **data)`: the data config of an in-memory dataset of coordinate images."""

  def make(height: int, width: int, **data):
    images = coordinate_images(NUM_EXAMPLES, height, width)
    labels = (np.arange(NUM_EXAMPLES) % 10).astype(np.int32)
    monkeypatch.setitem(ip.DATASETS, 'coords', ip.DatasetSpec(
        'se_flax_test_coords', 10, (height, width, 3), True, 'train', 'test', (0.0,) * 3, (1.0,) * 3))
    monkeypatch.setattr(ip, '_load_split', lambda name, data_dir, split: (images, labels))
    cfg = ip.default_data_config('cifar10')
    cfg.update({'name': 'coords', 'mean': (0.0,) * 3, 'std': (1.0,) * 3, 'random_flip': True, **data})
    return cfg

  return make


def train_images(cfg, steps: int, seed: int = 0) -> np.ndarray:
  it = ip.train_iterator(cfg, global_batch_size=BATCH, seed=seed)
  return np.stack([next(it)['image'] for _ in range(steps)])  # [steps, BATCH, S, S, 3]


def example_ids(images: np.ndarray) -> np.ndarray:
  """The example each output came from (channel 2 is id + 1 wherever the pixel is not padding)."""
  return images[..., 2].reshape(*images.shape[:-3], -1).max(-1).astype(int) - 1


# ---------------------------------------------------------------------------------------------
# Evaluation: the centre view, whatever the augmentation settings.


@pytest.mark.parametrize('augment', ['cifar', 'inception'])
def test_eval_is_the_centre_view_even_with_random_flip(coords, augment):
  # 48 x 32 images: the short side 32 is resized to 16 (24 x 16), then the centre 16 x 16 is cut.
  cfg = coords(48, 32, image_size=16, eval_resize=16, augment=augment)
  (batch,) = list(ip.eval_iterator(cfg, global_batch_size=NUM_EXAMPLES))
  i = np.arange(16, dtype=np.float32)
  # Halving with bilinear half-pixel sampling averages rows 2i and 2i+1; the crop starts at row 4.
  want_rows, want_cols = 2 * (i + 4) + 1.5, 2 * i + 1.5
  images = batch['image']
  np.testing.assert_array_equal(images[..., 0], np.broadcast_to(want_rows[None, :, None], images.shape[:3]))
  np.testing.assert_array_equal(images[..., 1], np.broadcast_to(want_cols[None, None, :], images.shape[:3]))
  np.testing.assert_array_equal(example_ids(images), np.arange(NUM_EXAMPLES))
  # augment 'none' trains on exactly that view (no flip either).
  cfg.augment = 'none'
  (trained,) = train_images(cfg, 1)
  np.testing.assert_array_equal(trained, images[example_ids(trained)])


# ---------------------------------------------------------------------------------------------
# 'cifar': pad, random crop, random flip.

PAD = 4
SIZE = 16


def cifar_params(image: np.ndarray, padded: np.ndarray) -> tuple[int, int, bool]:
  """The unique (dy, dx, flipped) with image == crop of `padded` at (dy, dx), mirrored if flipped."""
  found = []
  for dy in range(2 * PAD + 1):
    for dx in range(2 * PAD + 1):
      window = padded[dy:dy + SIZE, dx:dx + SIZE]
      for flipped in (False, True):
        if np.array_equal(image, window[:, ::-1] if flipped else window):
          found.append((dy, dx, flipped))
  assert len(found) == 1, f'not exactly one crop/flip of the padded image: {found}'
  return found[0]


def cifar_epochs(cfg, seed: int = 0) -> tuple[list[list], list[dict]]:
  """Two epochs of train batches -> per epoch, the (dy, dx, flip) of every batch position, and of
  every example id."""
  images = train_images(cfg, 8, seed)
  padded = np.pad(coordinate_images(NUM_EXAMPLES, SIZE, SIZE).astype(np.float32),
                  ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
  by_position, by_example = [[], []], [{}, {}]
  for step, batch in enumerate(images):
    epoch = step // 4
    for image, example in zip(batch, example_ids(batch)):
      params = cifar_params(image, padded[example])
      by_position[epoch].append(params)
      by_example[epoch][example] = params
  assert all(len(e) == NUM_EXAMPLES for e in by_example)  # each epoch saw every example once
  return by_position, by_example


def fraction_same(a, b) -> float:
  return float(np.mean([x == y for x, y in zip(a, b)]))


def test_cifar_crop_flip_ranges_and_epochs(coords):
  cfg = coords(SIZE, SIZE, image_size=SIZE, eval_resize=SIZE, augment='cifar', crop_padding=PAD)
  by_position, by_example = cifar_epochs(cfg)
  every = by_position[0] + by_position[1]
  # Every offset of the padded image is used, and about half the crops are mirrored.
  assert {p[0] for p in every} == {p[1] for p in every} == set(range(2 * PAD + 1))
  assert 0.3 < np.mean([p[2] for p in every]) < 0.7
  # Epoch 1 does not repeat epoch 0: not per example, not per batch position; crop and flip each.
  ids = sorted(by_example[0])
  per_example = [[by_example[e][i] for i in ids] for e in (0, 1)]
  for name, (a, b) in {'example': per_example, 'position': by_position}.items():
    assert fraction_same([p[:2] for p in a], [p[:2] for p in b]) < 0.1, f'crops repeat per {name}'
    assert 0.25 < fraction_same([p[2] for p in a], [p[2] for p in b]) < 0.75, f'flips repeat per {name}'
  # A rerun gives the same crops and flips; another seed does not.
  np.testing.assert_array_equal(train_images(cfg, 8), train_images(cfg, 8))
  other = cifar_epochs(cfg, seed=1)[1]
  assert fraction_same([other[0][i] for i in ids], per_example[0]) < 0.1


def test_digits_style_no_flip(coords):
  """random_flip=False (digits): crops only, never mirrored."""
  cfg = coords(SIZE, SIZE, image_size=SIZE, eval_resize=SIZE, augment='cifar', crop_padding=PAD,
               random_flip=False)
  by_position, _ = cifar_epochs(cfg)
  assert not any(p[2] for p in by_position[0] + by_position[1])


# ---------------------------------------------------------------------------------------------
# 'inception': random-resized crop.

HEIGHT, WIDTH = 48, 32
SCALE, RATIO = (0.25, 0.6), (0.5, 1.5)  # not the defaults: the configured ranges must be the ones used


def crop_box(image: np.ndarray) -> tuple[int, int, int, int, bool]:
  """(top, left, height, width, flipped) of the source box that `image` was resized from.

  Bilinear resizing with half-pixel centres maps output row i to source row
  top + (i + 0.5) * height / S - 0.5 (clamped to the box), and a linear ramp stays linear: the
  slope between two central rows gives the height, then the offset the top.
  """
  size = image.shape[0]
  rows, cols = image[:, 0, 0].astype(np.float64), image[0, :, 1].astype(np.float64)
  flipped = bool(cols[0] > cols[-1])
  if flipped:
    cols = cols[::-1]
  lo, hi = size // 2 - 2, size // 2 + 1

  def fit(ramp):
    extent = int(round((ramp[hi] - ramp[lo]) / (hi - lo) * size))
    start = int(round(ramp[lo] - 1 - ((lo + 0.5) * extent / size - 0.5)))
    return start, extent

  (top, height), (left, width) = fit(rows), fit(cols)
  i = np.arange(size)
  want = lambda start, extent: np.clip(start + (i + 0.5) * extent / size - 0.5, start, start + extent - 1) + 1
  view = image[:, ::-1] if flipped else image
  np.testing.assert_allclose(view[..., 0], np.broadcast_to(want(top, height)[:, None], (size, size)), atol=2e-3)
  np.testing.assert_allclose(view[..., 1], np.broadcast_to(want(left, width)[None, :], (size, size)), atol=2e-3)
  return top, left, height, width, flipped


def test_inception_crops_stay_in_the_configured_area_and_ratio(coords):
  cfg = coords(HEIGHT, WIDTH, image_size=16, eval_resize=16, augment='inception', rrc_scale=SCALE,
               rrc_ratio=RATIO)
  images = train_images(cfg, 8)
  boxes = [[crop_box(image) for image in batch] for batch in images]
  flat = [b for batch in boxes for b in batch]
  area = HEIGHT * WIDTH
  fallback = (8, 0, 32, 32)  # the centre view (all 10 attempts failed): a 32 x 32 box at row 8
  sampled = [b for b in flat if b[:4] != fallback]
  assert len(sampled) >= 0.95 * len(flat)
  for top, left, h, w, _ in sampled:
    assert 0 <= top and top + h <= HEIGHT and 0 <= left and left + w <= WIDTH, (top, left, h, w)
    assert SCALE[0] * area <= h * w <= SCALE[1] * area, (h, w, h * w / area)
    # The sampler draws a height, then rounds the width to whole pixels: ratio within 0.5 / h.
    assert RATIO[0] - 0.5 / h <= w / h <= RATIO[1] + 0.5 / h, (h, w, w / h)
  fractions, ratios = [h * w / area for _, _, h, w, _ in sampled], [w / h for _, _, h, w, _ in sampled]
  assert min(fractions) < 0.3 and max(fractions) > 0.55, (min(fractions), max(fractions))
  assert min(ratios) < 0.65 and max(ratios) > 1.3, (min(ratios), max(ratios))
  assert 0.3 < np.mean([b[4] for b in flat]) < 0.7
  # Epochs differ per example, a rerun does not.
  ids = example_ids(images)
  per_epoch = [dict(zip(ids[e * 4:(e + 1) * 4].ravel(), [b for batch in boxes[e * 4:(e + 1) * 4] for b in batch]))
               for e in (0, 1)]
  assert fraction_same([per_epoch[0][i] for i in range(NUM_EXAMPLES)],
                       [per_epoch[1][i] for i in range(NUM_EXAMPLES)]) < 0.1
  np.testing.assert_array_equal(train_images(cfg, 8), images)


# ---------------------------------------------------------------------------------------------
# The streaming (JPEG) path: its own seeds per (seed, epoch, process).

_JPEGS = 24


class SeFlaxTestAugmentJpegs(tfds.core.GeneratorBasedBuilder):
  """Random JPEGs whose label is the example id."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = epath.Path(__file__)  # See se_flax/data/digits.py.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'label': tfds.features.ClassLabel(num_classes=_JPEGS),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    for i in range(_JPEGS):
      yield i, {'image': rng.integers(0, 256, (20, 14, 3), dtype=np.uint8), 'label': i}


@pytest.fixture
def jpeg_cfg(tmp_path_factory, monkeypatch):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  SeFlaxTestAugmentJpegs(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  monkeypatch.setitem(ip.DATASETS, 'jpegs', ip.DatasetSpec(
      'se_flax_test_augment_jpegs', _JPEGS, (8, 8, 3), False, 'train', 'validation', (0.0,) * 3, (1.0,) * 3))
  cfg = ip.default_data_config('imagenet2012')
  cfg.update(name='jpegs', data_dir=data_dir, image_size=8, eval_resize=10, mean=(0.0,) * 3,
             std=(1.0,) * 3, shuffle_buffer=64, random_flip=True)
  return cfg


def test_stream_augmentation_changes_between_epochs_and_eval_is_fixed(jpeg_cfg):
  def epochs(seed):  # 24 examples, batch 6: 4 steps an epoch; {label: image} per epoch
    it = ip.train_iterator(jpeg_cfg, global_batch_size=6, seed=seed)
    batches = [next(it) for _ in range(8)]
    return [{int(l): im for b in batches[e * 4:(e + 1) * 4] for l, im in zip(b['label'], b['image'])}
            for e in (0, 1)]

  first, again = epochs(0), epochs(0)
  assert all(len(e) == _JPEGS for e in first)
  for e in (0, 1):
    for label in range(_JPEGS):
      np.testing.assert_array_equal(first[e][label], again[e][label])
  same = [np.array_equal(first[0][label], first[1][label]) for label in range(_JPEGS)]
  assert sum(same) <= 2, same

  def eval_images(**changes):
    cfg = jpeg_cfg.copy_and_resolve_references()
    cfg.update(changes)
    return np.concatenate([b['image'] for b in ip.eval_iterator(cfg, global_batch_size=_JPEGS)])

  np.testing.assert_array_equal(eval_images(), eval_images(augment='none', random_flip=False))
