"""Deterministic, resumable, multi-process image input pipelines (TF + numpy).

Every iterator yields numpy batches for ONE process; this module never imports
jax and keeps TensorFlow off the GPUs.

Two paths, chosen by `DatasetSpec.in_memory`:

In-memory (digits, cifar10, cifar100): a split is read once into numpy arrays
and cached in-process. With N train examples, global batch G, P processes and
L = G // P:
  * epoch e uses `perm = np.random.default_rng([seed, e]).permutation(N)` and
    has `N // G` steps (the remainder of each epoch is dropped);
  * global step s uses `perm[k*G:(k+1)*G]` of epoch `s // steps`, with
    `k = s % steps`; process p takes the contiguous slice [p*L, (p+1)*L) of
    it, so concatenating processes in order gives the 1-process batch;
  * augmentation of the example at position j of epoch e's permutation uses
    the stateless seed pair `(key(seed, e), j)` (`key`: numpy SeedSequence),
    so it does not depend on G, P or on where the run (re)started;
  * `start_step` only changes where the index plan starts: O(1) resume.

Streaming (imagenet2012): each process reads its `tfds.even_splits` share of
raw JPEG bytes (decoding skipped), file order and a `shuffle_buffer` shuffle
seeded by `key(seed, e, p)`, exactly `N // G` local batches per epoch on every
process. Resuming at step s re-reads, but does not decode or augment, the
first `(s % steps) * L` records of the epoch; for ImageNet this costs up to
one epoch of file I/O. Augmentation seeds are `(key(seed, e, p), j)` with j
the record's position in the process's epoch stream, so a resumed stream is
bitwise identical to an uninterrupted one (but, unlike the in-memory path,
the data depend on P).

Preprocessing (pixel values stay in 0..255 until the final normalisation):
  * JPEGs are decoded with `dct_method='INTEGER_ACCURATE'` (libjpeg's accurate
    integer DCT, which PIL, OpenCV and so PyTorch pipelines use; TensorFlow's
    default fast DCT is off by up to 18 grey levels);
  * eval / augment 'none': resize the short side to `eval_resize`
    (`eval_interpolation`, area-averaged when shrinking if `eval_antialias`, as
    PIL and so timm do; skipped if it already has that size), then centre crop
    `image_size`. With `eval_backend='pil'` evaluation decodes, resizes and
    crops with PIL itself (`pil_eval`, via `tf.numpy_function`): exactly timm's
    eval transform, as `eval.py --pretrained` uses;
  * 'cifar': the above, then `crop_padding` zero pixels (black, before
    normalisation) on each side, a random `image_size` crop and a random
    horizontal flip;
  * 'inception': `stateless_sample_distorted_bounding_box` with area range
    `rrc_scale`, aspect ratio range `rrc_ratio` and 10 attempts (fallback when
    all fail: the eval transform), bilinear resize to `image_size`, random
    flip. JPEGs are decoded with `decode_and_crop_jpeg` (only the crop).
  * finally `(x - mean) / std` in float32.

`keep_labels` (in-memory datasets) keeps only the examples of those classes,
relabelled 0..K-1 in the order given, e.g. 5 of the 10 digits for fine-tuning.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from se_flax import errors
from se_flax.data import digits
from se_flax.data import pil_eval
# The TF-free dataset facts, re-exported: callers may keep reading them here.
from se_flax.data.datasets import DATASETS, DatasetSpec, default_data_config, get_spec, num_classes  # noqa: F401

try:
  tf.config.set_visible_devices([], 'GPU')  # TF must never take a GPU.
except (RuntimeError, ValueError):  # Devices already initialised or absent.
  pass

Config = ml_collections.ConfigDict
# `(stored image or JPEG bytes[, seed]) -> float32 [S, S, C]` in 0..255.
Transform = Callable[..., tf.Tensor]
AUGMENTATIONS = ('none', 'cifar', 'inception')
INTERPOLATIONS = ('bilinear', 'bicubic')
EVAL_BACKENDS = ('tensorflow', 'pil')
JPEG_DCT = 'INTEGER_ACCURATE'  # as PIL (libjpeg's default islow DCT); big_vision's decode(precise=True)
_INCEPTION_ATTEMPTS = 10
_LOAD_CHUNK = 8192


class DataNotFoundError(errors.UserError, FileNotFoundError, ValueError):
  """A dataset's TFDS files are missing and cannot be produced here."""


# Datasets built from data shipped with a Python package: prepared on demand.
_AUTO_PREPARE = {'se_flax_digits': digits.ensure_prepared}
# Datasets whose source files must be downloaded by hand (TFDS manual_dir).
_MANUAL_FILES = {'imagenet2012': ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')}


# ----------------------------------------------------------------------------
# Data access.


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """A prepared (or mocked) builder; never downloads (there may be no network)."""
  spec = get_spec(name)
  if spec.tfds_name in _AUTO_PREPARE:
    return _AUTO_PREPARE[spec.tfds_name](data_dir)
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if not builder.is_prepared() and not _served_without_files(builder, spec.train_split):
    raise DataNotFoundError(_missing_message(spec.tfds_name, str(builder.data_dir_root)))
  return builder


def _served_without_files(builder: tfds.core.DatasetBuilder, split: str) -> bool:
  """Whether TFDS serves a dataset that has no prepared files: `tfds.testing.mock_data` (its
  default policy builds the dataset's info from code). An unprepared real dataset refuses."""
  try:
    builder.as_dataset(split=split)
  except AssertionError:  # TFDS: 'could not find data in <data_dir>'
    return False
  return True


def _split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Examples of a (sub)split: TFDS's metadata, or, where there is none (a dataset mocked from
  code), the cardinality of what TFDS serves."""
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  return int(builder.as_dataset(split=split).cardinality())


def _missing_message(tfds_name: str, root: str) -> str:
  """One line: where the data should be and how to produce it."""
  if tfds_name in _MANUAL_FILES:
    tars = ' and '.join(_MANUAL_FILES[tfds_name])
    return (f'TFDS dataset {tfds_name!r} is not prepared in {root}: put {tars} in '
            f'{root}/downloads/manual/ and run `tfds build {tfds_name} --data_dir={root}`.')
  return (f'TFDS dataset {tfds_name!r} is not prepared in {root} and is never downloaded '
          f'at run time: run `tfds build {tfds_name} --data_dir={root}` on a machine '
          f'with network access and copy {root}/{tfds_name} here.')


def _read_options() -> tf.data.Options:
  """Options that make every tf.data stage order-deterministic."""
  options = tf.data.Options()
  options.deterministic = True
  return options


@functools.lru_cache(maxsize=4)
def _load_split(name: str, data_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
  """A whole split as (uint8 images [N,H,W,C], int32 labels [N]) in stored order."""
  builder = _builder(name, data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(options=_read_options()))
  chunks = list(tfds.as_numpy(ds.batch(_LOAD_CHUNK)))
  images = np.concatenate([c['image'] for c in chunks])
  labels = np.concatenate([c['label'] for c in chunks]).astype(np.int32)
  return images, labels


def _split_arrays(data_cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """An in-memory split, restricted to `keep_labels` (relabelled 0..K-1) when set."""
  images, labels = _load_split(data_cfg.name, data_cfg.data_dir, split)
  keep = tuple(data_cfg.get('keep_labels') or ())
  if not keep:
    return images, labels
  num_classes(data_cfg)  # validates keep_labels
  relabel = np.full(get_spec(data_cfg.name).num_classes, -1, np.int32)
  relabel[list(keep)] = np.arange(len(keep), dtype=np.int32)
  chosen = relabel[labels] >= 0
  return images[chosen], relabel[labels[chosen]]


def num_examples(data_cfg: Config, split: str) -> int:
  """Examples in `split`: exactly what the iterators go through."""
  if get_spec(data_cfg.name).in_memory:
    return len(_split_arrays(data_cfg, split)[1])
  num_classes(data_cfg)  # keep_labels is refused here
  return _split_size(_builder(data_cfg.name, data_cfg.data_dir), split)


def steps_per_epoch(data_cfg: Config, global_batch_size: int) -> int:
  """Full global batches per train epoch (each epoch drops its remainder)."""
  n = num_examples(data_cfg, data_cfg.train_split)
  if not 0 < global_batch_size <= n:
    raise ValueError(f'global_batch_size {global_batch_size} must be in [1, {n}] '
                     f'(train examples of {data_cfg.name!r}).')
  return n // global_batch_size


# ----------------------------------------------------------------------------
# Preprocessing (TF graph code; images in 0..255 until `_normalise`).


def _key(*words: int) -> int:
  """A 32-bit stream key from integers (seed, epoch, ...), well mixed."""
  return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def _check_config(data_cfg: Config, channels: int) -> None:
  """Rejects settings the transforms cannot honour, before building graphs."""
  if data_cfg.augment not in AUGMENTATIONS:
    raise ValueError(f'Unknown augment {data_cfg.augment!r}; allowed: {", ".join(AUGMENTATIONS)}.')
  if data_cfg.get('eval_interpolation', 'bilinear') not in INTERPOLATIONS:
    raise ValueError(f'eval_interpolation {data_cfg.eval_interpolation!r} is not one of '
                     f'{", ".join(INTERPOLATIONS)}.')
  if data_cfg.get('eval_backend', 'tensorflow') not in EVAL_BACKENDS:
    raise ValueError(f'eval_backend {data_cfg.eval_backend!r} is not one of {", ".join(EVAL_BACKENDS)}.')
  if data_cfg.eval_resize < data_cfg.image_size:
    raise ValueError(f'eval_resize {data_cfg.eval_resize} must be >= image_size '
                     f'{data_cfg.image_size}.')
  for field in ('mean', 'std'):
    if len(data_cfg[field]) != channels:
      raise ValueError(f'{field} {tuple(data_cfg[field])} must have {channels} values '
                       f'(channels of {data_cfg.name!r}).')


def _centre_view(image: tf.Tensor, short_side: int, size: int, method: str = 'bilinear',
                 antialias: bool = False) -> tf.Tensor:
  """Resize the short side to `short_side`, centre crop `size`, with torchvision's (so timm's)
  arithmetic: long side `int(short_side * long / short)` in float64, crop offsets
  `round((side - size) / 2)` rounding halves to even."""
  static_hw = image.shape.as_list()[:2]
  if None in static_hw or min(static_hw) != short_side:
    hw = tf.cast(tf.shape(image)[:2], tf.float64)
    new_hw = tf.cast(tf.floor(hw * short_side / tf.reduce_min(hw)), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_hw, short_side), method=method, antialias=antialias)
    if method == 'bicubic':  # overshoots; PIL clips to the pixel range
      image = tf.clip_by_value(image, 0.0, 255.0)
  offsets = tf.cast(tf.round(tf.cast(tf.shape(image)[:2] - size, tf.float64) / 2.0), tf.int32)
  image = tf.image.crop_to_bounding_box(image, offsets[0], offsets[1], size, size)
  return tf.cast(image, tf.float32)


def _decoder(encoded: bool, channels: int) -> Callable[[tf.Tensor], tf.Tensor]:
  """Stored example -> uint8 image: JPEG bytes (streaming) or identity."""
  if encoded:
    return lambda data: tf.io.decode_jpeg(data, channels=channels, dct_method=JPEG_DCT)
  return lambda data: data


def _eval_transform(data_cfg: Config, encoded: bool, channels: int) -> Transform:
  """Stored example -> float32 [S, S, C] in 0..255, no randomness (TensorFlow ops)."""
  decode = _decoder(encoded, channels)
  method = data_cfg.get('eval_interpolation', 'bilinear')
  antialias = bool(data_cfg.get('eval_antialias', False))
  return lambda data: _centre_view(decode(data), data_cfg.eval_resize, data_cfg.image_size, method,
                                   antialias)


def _pil_eval_transform(data_cfg: Config, channels: int) -> Transform:
  """Stored example (JPEG bytes or uint8 image) -> float32 [S, S, C] in 0..255: `pil_eval.view`,
  timm's eval transform (PIL decode, resize, centre crop) in `tf.numpy_function`."""
  size = data_cfg.image_size
  view = functools.partial(pil_eval.view, short_side=data_cfg.eval_resize, size=size,
                           interpolation=data_cfg.eval_interpolation, channels=channels)

  def transform(data: tf.Tensor) -> tf.Tensor:
    image = tf.numpy_function(view, [data], tf.uint8, stateful=False)
    return tf.cast(tf.ensure_shape(image, [size, size, channels]), tf.float32)

  return transform


def _cifar_crop(data_cfg: Config, encoded: bool, channels: int) -> Transform:
  """Zero-pad the eval view by `crop_padding`, then a random `image_size` crop."""
  size, pad = data_cfg.image_size, data_cfg.crop_padding
  view = _eval_transform(data_cfg, encoded, channels)

  def crop(data: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.image.pad_to_bounding_box(view(data), pad, pad, size + 2 * pad, size + 2 * pad)
    return tf.image.stateless_random_crop(image, [size, size, channels], seed)

  return crop


def _inception_crop(data_cfg: Config, encoded: bool, channels: int) -> Transform:
  """Random-resized crop (bilinear); JPEGs decode only the crop window."""
  size = data_cfg.image_size
  fallback = _eval_transform(data_cfg, encoded, channels)
  whole = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])

  def crop(data: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    shape = tf.io.extract_jpeg_shape(data) if encoded else tf.shape(data)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=whole, seed=seed, min_object_covered=0.0,
        aspect_ratio_range=tuple(data_cfg.rrc_ratio), area_range=tuple(data_cfg.rrc_scale),
        max_attempts=_INCEPTION_ATTEMPTS, use_image_if_no_bounding_boxes=True)

    def sampled() -> tf.Tensor:
      if encoded:
        window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
        patch = tf.io.decode_and_crop_jpeg(data, window, channels=channels, dct_method=JPEG_DCT)
      else:
        patch = tf.slice(data, begin, extent)
      return tf.image.resize(patch, [size, size], method='bilinear')

    # The sampler returns the whole image when all attempts fail.
    failed = tf.reduce_all(tf.equal(extent[:2], shape[:2]))
    return tf.cond(failed, lambda: fallback(data), sampled)

  return crop


def _train_transform(data_cfg: Config, encoded: bool, channels: int) -> Transform:
  """`(data, seed [2] int64) -> float32 [S, S, C]` in 0..255 for `augment`."""
  if data_cfg.augment == 'none':
    view = _eval_transform(data_cfg, encoded, channels)
    return lambda data, seed: view(data)
  make_crop = _cifar_crop if data_cfg.augment == 'cifar' else _inception_crop
  crop = make_crop(data_cfg, encoded, channels)

  def transform(data: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = crop(data, crop_seed)
    if not data_cfg.random_flip:  # e.g. digits: a mirrored 2 is no longer a 2
      return image
    return tf.image.stateless_random_flip_left_right(image, flip_seed)

  return transform


def _normalise(data_cfg: Config, image: tf.Tensor) -> tf.Tensor:
  """(x - mean) / std per channel in float32, with the static batchable shape."""
  size, channels = data_cfg.image_size, len(data_cfg.mean)
  image = tf.ensure_shape(image, [size, size, channels])
  return (image - tf.constant(data_cfg.mean, tf.float32)) / tf.constant(data_cfg.std, tf.float32)


def _per_example(data_cfg: Config, fn: Callable[..., tf.Tensor],
                 elems: tuple[tf.Tensor, ...]) -> tf.Tensor:
  """`fn` on each example of a batch, normalised: float32 [B, S, S, C].

  The in-memory paths gather whole batches and loop here, which is about
  twice as fast as a tf.data map per example.
  """
  size = data_cfg.image_size
  return tf.map_fn(lambda args: _normalise(data_cfg, fn(*args)), elems,
                   fn_output_signature=tf.TensorSpec([size, size, len(data_cfg.mean)], tf.float32))


def _finish(ds: tf.data.Dataset) -> Iterator[dict]:
  """Prefetch and hand out numpy batches, order-deterministically."""
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_read_options())
  return ds.as_numpy_iterator()


def _local_batch(global_batch_size: int, process_index: int, process_count: int) -> int:
  """Per-process batch size, validating the process layout."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} must be in [0, {process_count}).')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size {global_batch_size} must be a positive multiple '
                     f'of process_count {process_count}.')
  return global_batch_size // process_count


# ----------------------------------------------------------------------------
# Iterators.


def train_iterator(data_cfg: Config, *, global_batch_size: int, seed: int,
                   start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict]:
  """Endless train batches from global step `start_step` (see module doc).

  Yields {'image': float32 [L, S, S, C] normalised, 'label': int32 [L]} with
  L = global_batch_size // process_count.
  """
  spec = get_spec(data_cfg.name)
  channels = spec.image_shape[-1]
  _check_config(data_cfg, channels)
  local = _local_batch(global_batch_size, process_index, process_count)
  steps = steps_per_epoch(data_cfg, global_batch_size)
  epoch, skip = divmod(start_step, steps)
  transform = _train_transform(data_cfg, not spec.in_memory, channels)
  if spec.in_memory:
    return _memory_train(data_cfg, transform, global_batch_size, local, steps, seed, epoch,
                         skip, process_index)
  return _stream_train(data_cfg, transform, local, steps, seed, epoch, skip, process_index,
                       process_count)


def _memory_train(data_cfg: Config, transform: Transform, global_batch: int, local: int,
                  steps: int, seed: int, first_epoch: int, skip: int,
                  process_index: int) -> Iterator[dict]:
  """In-memory train stream: a numpy index plan per epoch, gathered in TF."""
  images, labels = _split_arrays(data_cfg, data_cfg.train_split)
  n = len(labels)
  columns = slice(process_index * local, (process_index + 1) * local)

  def plans() -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per epoch: this process's example indices [steps, L] and seeds [steps, L, 2]."""
    for epoch in itertools.count(first_epoch):
      rows = slice(skip if epoch == first_epoch else 0, steps)
      perm = np.random.default_rng([seed, epoch]).permutation(n)[: steps * global_batch]
      index = perm.reshape(steps, global_batch)[rows, columns]
      position = np.arange(steps * global_batch).reshape(steps, global_batch)[rows, columns]
      seeds = np.stack([np.full(index.shape, _key(seed, epoch)), position], axis=-1)
      yield index.astype(np.int64), seeds.astype(np.int64)

  images_t, labels_t = tf.constant(images), tf.constant(labels)

  def batch(index: tf.Tensor, seeds: tf.Tensor) -> dict:
    return {'image': _per_example(data_cfg, transform, (tf.gather(images_t, index), seeds)),
            'label': tf.gather(labels_t, index)}

  ds = tf.data.Dataset.from_generator(
      plans, output_signature=(tf.TensorSpec([None, local], tf.int64),
                               tf.TensorSpec([None, local, 2], tf.int64))).unbatch()
  return _finish(ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _stream_train(data_cfg: Config, transform: Transform, local: int, steps: int, seed: int,
                  first_epoch: int, skip: int, process_index: int,
                  process_count: int) -> Iterator[dict]:
  """Streaming train: epoch after epoch of this process's share."""
  builder = _builder(data_cfg.name, data_cfg.data_dir)
  share = tfds.even_splits(data_cfg.train_split, n=process_count)[process_index]
  for epoch in itertools.count(first_epoch):
    key = _key(seed, epoch, process_index)
    skip_records = (skip if epoch == first_epoch else 0) * local
    ds = _stream_epoch(data_cfg, builder, share, transform, key, steps * local, skip_records)
    yield from _finish(ds.batch(local, drop_remainder=True))


def _stream_epoch(data_cfg: Config, builder: tfds.core.DatasetBuilder, share: str,
                  transform: Transform, key: int, length: int,
                  skip_records: int) -> tf.data.Dataset:
  """One epoch: `key`-seeded file order and shuffle, first `length` records.

  The first `skip_records` are read but neither decoded nor augmented.
  """
  read_config = tfds.ReadConfig(shuffle_seed=key, options=_read_options())
  ds = builder.as_dataset(split=share, shuffle_files=True, read_config=read_config,
                          decoders={'image': tfds.decode.SkipDecoding()})
  ds = ds.shuffle(data_cfg.shuffle_buffer, seed=key).take(length).enumerate().skip(skip_records)
  key_t = tf.constant(key, tf.int64)

  def example(position: tf.Tensor, ex: dict) -> dict:
    image = transform(ex['image'], tf.stack([key_t, position]))
    return {'image': _normalise(data_cfg, image), 'label': tf.cast(ex['label'], tf.int32)}

  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_iterator(data_cfg: Config, *, split: str | None = None,
                  global_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """One pass over `split` (default `eval_split`), padded to full batches.

  Yields {'image', 'label', 'mask': bool [L]}; padding has zero image and
  label and mask False. Every example appears exactly once over all processes
  and batches, and every process yields the same number of batches.
  """
  spec = get_spec(data_cfg.name)
  channels = spec.image_shape[-1]
  _check_config(data_cfg, channels)
  local = _local_batch(global_batch_size, process_index, process_count)
  split = split or data_cfg.eval_split
  if data_cfg.get('eval_backend', 'tensorflow') == 'pil':
    transform = _pil_eval_transform(data_cfg, channels)
  else:
    transform = _eval_transform(data_cfg, not spec.in_memory, channels)
  if spec.in_memory:
    return _memory_eval(data_cfg, transform, split, global_batch_size, local, process_index)
  return _stream_eval(data_cfg, transform, split, local, process_index, process_count)


def _memory_eval(data_cfg: Config, transform: Transform, split: str, global_batch: int,
                 local: int, process_index: int) -> Iterator[dict]:
  """Global batch i is examples [i*G, (i+1)*G); this process takes its slice."""
  images, labels = _split_arrays(data_cfg, split)
  n = len(labels)
  batches = math.ceil(n / global_batch)
  start = process_index * local
  position = np.arange(batches * global_batch).reshape(batches, global_batch)
  images_t, labels_t = tf.constant(images), tf.constant(labels)

  def batch(pos: tf.Tensor) -> dict:
    valid = pos < n
    index = tf.minimum(pos, n - 1)
    images = _per_example(data_cfg, transform, (tf.gather(images_t, index),))
    return {'image': tf.where(valid[:, None, None, None], images, 0.0),
            'label': tf.where(valid, tf.gather(labels_t, index), 0), 'mask': valid}

  ds = tf.data.Dataset.from_tensor_slices(position[:, start:start + local])
  return _finish(ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _stream_eval(data_cfg: Config, transform: Transform, split: str, local: int,
                 process_index: int, process_count: int) -> Iterator[dict]:
  """This process's `even_splits` share in order, padded to the common batch count."""
  builder = _builder(data_cfg.name, data_cfg.data_dir)
  shares = tfds.even_splits(split, n=process_count)
  counts = [_split_size(builder, share) for share in shares]
  batches = max(math.ceil(count / local) for count in counts)
  count = counts[process_index]
  ds = builder.as_dataset(split=shares[process_index], shuffle_files=False,
                          read_config=tfds.ReadConfig(options=_read_options()),
                          decoders={'image': tfds.decode.SkipDecoding()})

  def example(ex: dict) -> dict:
    return {'image': _normalise(data_cfg, transform(ex['image'])),
            'label': tf.cast(ex['label'], tf.int32), 'mask': tf.constant(True)}

  ds = ds.take(count).map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  size = data_cfg.image_size
  padding = tf.data.Dataset.from_tensors({
      'image': tf.zeros([size, size, len(data_cfg.mean)], tf.float32),
      'label': tf.constant(0, tf.int32), 'mask': tf.constant(False)})
  ds = ds.concatenate(padding.repeat(batches * local - count))
  return _finish(ds.batch(local, drop_remainder=True))
