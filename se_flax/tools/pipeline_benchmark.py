"""Throughput of the input pipeline alone (no model): images/s, per CPU core, and per CPU-second.

  python -m se_flax.tools.pipeline_benchmark --dataset=cifar|imagenet-jpeg [--batch=256] [--seconds=10]
      [--tag=legacy_seresnet50.in1k] [--json]

cifar: synthetic uint8 32x32x3 arrays through input_pipeline's in-memory train path (batch gather,
'cifar' augment, normalisation). imagenet-jpeg: ~200 synthetic JPEGs of about 500x375 encoded in
memory, through the streaming path's 'inception' train transform, the same crops as the flax
repository's ImageNet example makes them (`flax_example_train`, the reference), the recipe's eval transform
(TensorFlow: resize 256, centre crop 224) and `eval.py --pretrained=TAG`'s (`--tag`: timm's eval
transform in PIL, `eval_backend='pil'`). All reuse input_pipeline's own transform functions, so a
change there shows up here; no TFDS files are needed. With `--json` the last line is a JSON object.
Images per CPU-second (this process's user + system time) is the steadier figure on a machine that
other jobs share: it does not count the time the pipeline waits for a core.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Callable, Iterator

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from se_flax.weights import pretrained
from se_flax.data import input_pipeline as ip

DATASETS = ('cifar', 'imagenet-jpeg')
_DATASET = flags.DEFINE_enum('dataset', 'cifar', DATASETS, 'Which input path to time.')
_BATCH = flags.DEFINE_integer('batch', 256, 'Images per batch.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'Timed duration per transform (after one warm-up batch).')
_NUM_JPEGS = flags.DEFINE_integer('num-jpegs', 200, 'Synthetic JPEGs to cycle through.')
_JSON = flags.DEFINE_boolean('json', False, 'Print the figures as one JSON object on the last line.')
_TAG = flags.DEFINE_string('tag', 'legacy_seresnet50.in1k', 'Pretrained tag whose eval transform (PIL, as '
                           'eval.py --pretrained) is timed as pretrained_eval.')


def cpu_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def images_per_second(batches: Iterator[dict], seconds: float) -> tuple[float, float]:
  """(images per wall second, images per CPU-second) of an iterator over `seconds`, after one
  untimed batch (graph building, warm-up)."""
  next(batches)
  count, start, cpu_start = 0, time.perf_counter(), cpu_seconds()
  while time.perf_counter() - start < seconds:
    count += len(next(batches)['image'])
  return count / (time.perf_counter() - start), count / max(cpu_seconds() - cpu_start, 1e-9)


def cifar_batches(batch: int, n: int = 4096) -> Iterator[dict]:
  """The in-memory train path of input_pipeline (`_memory_train`) on random uint8 images."""
  cfg = ip.default_data_config('cifar10')
  rng = np.random.default_rng(0)
  images = tf.constant(rng.integers(0, 256, (n, 32, 32, 3), np.uint8))
  transform = ip._train_transform(cfg, False, 3)

  def make_batch(step: tf.Tensor) -> dict:
    index = tf.random.stateless_uniform([batch], [0, step], maxval=n, dtype=tf.int64)
    seeds = tf.stack([tf.fill([batch], tf.constant(7, tf.int64)), step * batch + tf.range(batch, dtype=tf.int64)], -1)
    return {'image': ip._per_example(cfg, transform, (tf.gather(images, index), seeds))}

  ds = tf.data.Dataset.range(1 << 62).map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ip._finish(ds)


def synthetic_jpegs(count: int, height: int = 375, width: int = 500) -> list[bytes]:
  """Smooth random photos (upsampled noise, so sizes are photo-like, not incompressible noise)."""
  rng = np.random.default_rng(0)
  jpegs = []
  for _ in range(count):
    coarse = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.float32)
    fine = tf.image.resize(coarse, [height, width], method='bicubic') + rng.normal(0, 8, (height, width, 3))
    jpegs.append(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(fine, 0, 255), tf.uint8), quality=90).numpy())
  return jpegs


def jpeg_batches(jpegs: list[bytes], batch: int, train: bool, tag: str | None = None) -> Iterator[dict]:
  """input_pipeline's streaming example function (`_stream_epoch` / `_stream_eval`) over `jpegs`;
  with `tag`, evaluation with the tag's preprocessing (`pretrained.data_fields`, PIL)."""
  cfg = ip.default_data_config('imagenet2012')
  if tag:
    cfg.update(pretrained.data_fields(pretrained.eval_preprocessing(tag)))
    transform: Callable[..., tf.Tensor] = ip._pil_eval_transform(cfg, 3)
  else:
    make = ip._train_transform if train else ip._eval_transform
    transform = make(cfg, True, 3)
  key = tf.constant(7, tf.int64)

  def example(position: tf.Tensor, data: tf.Tensor) -> dict:
    image = transform(data, tf.stack([key, position])) if train else transform(data)
    return {'image': ip._normalise(cfg, image)}

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ip._finish(ds.batch(batch, drop_remainder=True))


def flax_example_train_batches(jpegs: list[bytes], batch: int, size: int = 224) -> Iterator[dict]:
  """The reference: the train transform of the flax repository's ImageNet example
  (examples/imagenet/input_pipeline.py), restated here. A distorted bounding box (area 8-100%,
  aspect 3/4-4/3, 10 attempts, at least 10% of the whole image) read by a fused decode-and-crop
  with TensorFlow's default DCT; the centre crop (224/256 of the short side) when no box was found;
  bicubic resize to `size`, random flip, mean/std normalisation. Its random ops are stateful, as there."""
  mean = tf.constant([0.485 * 255, 0.456 * 255, 0.406 * 255], shape=[1, 1, 3])
  std = tf.constant([0.229 * 255, 0.224 * 255, 0.225 * 255], shape=[1, 1, 3])

  def centre(data: tf.Tensor) -> tf.Tensor:
    shape = tf.image.extract_jpeg_shape(data)
    side = tf.cast(size / (size + 32) * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    window = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def example(data: tf.Tensor) -> dict:
    shape = tf.image.extract_jpeg_shape(data)
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    whole = tf.reduce_all(tf.equal(extent[:2], shape[:2]))
    image = tf.cond(whole, lambda: centre(data), lambda: tf.image.decode_and_crop_jpeg(data, window, channels=3))
    image = tf.image.resize([image], [size, size], method='bicubic')[0]
    image = tf.image.random_flip_left_right(tf.reshape(image, [size, size, 3]))
    return {'image': (image - mean) / std}

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat()
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ip._finish(ds.batch(batch, drop_remainder=True))


def run(dataset: str, batch: int, seconds: float, num_jpegs: int, tag: str = 'legacy_seresnet50.in1k') -> dict:
  """{transform: images/s} plus per-core figures."""
  cores = cpu_cores()
  if dataset == 'cifar':
    rates = {'cifar_train': images_per_second(cifar_batches(batch), seconds)}
    extra = {}
  else:
    jpegs = synthetic_jpegs(num_jpegs)
    rates = {'inception_train': images_per_second(jpeg_batches(jpegs, batch, True), seconds),
             'flax_example_train': images_per_second(flax_example_train_batches(jpegs, batch), seconds),
             'eval': images_per_second(jpeg_batches(jpegs, batch, False), seconds),
             'pretrained_eval': images_per_second(jpeg_batches(jpegs, batch, False, tag), seconds)}
    extra = {'mean_jpeg_bytes': float(np.mean([len(j) for j in jpegs])), 'tag': tag}
  result = {'dataset': dataset, 'batch': batch, 'seconds': seconds, 'cpu_cores': cores, **extra}
  for name, (rate, per_cpu_second) in rates.items():
    result[f'{name}_img_s'] = rate
    result[f'{name}_img_s_per_core'] = rate / cores
    result[f'{name}_img_per_cpu_s'] = per_cpu_second
  return result


def main(argv: list[str] | None = None) -> dict:
  """Parses flags from argv (default sys.argv), prints the figures, returns them."""
  flags.FLAGS(argv or sys.argv)
  result = run(_DATASET.value, _BATCH.value, _SECONDS.value, _NUM_JPEGS.value, _TAG.value)
  for key, value in result.items():
    if key.endswith('img_s'):
      print(f'{key[:-6]:>16s}: {value:9.1f} img/s  {result[key + "_per_core"]:9.1f} img/s per core '
            f'{result[key[:-6] + "_img_per_cpu_s"]:9.1f} img per CPU-second ({result["cpu_cores"]} cores, '
            f'batch {result["batch"]})')
  if _JSON.value:
    print(json.dumps(result))
  return result


def _app_main(argv: list[str]) -> None:
  main(argv)


if __name__ == '__main__':
  app.run(_app_main)
