"""Facts about the datasets se_flax trains on, and the `data` config section: no TensorFlow.

Configs and the model code read these (class counts, default image size, mean/std) without
importing TensorFlow or TFDS; `input_pipeline` reads the data themselves.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

Config = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static facts about a dataset; `image_shape` is the default network input."""

  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  in_memory: bool
  train_split: str
  eval_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]


DATASETS: dict[str, DatasetSpec] = {
    # Mean/std of all pixels of the 1,437-image train split (0..255 units).
    'digits': DatasetSpec('se_flax_digits', 10, (8, 8, 1), True, 'train', 'test',
                          (78.12,), (96.12,)),
    'cifar10': DatasetSpec('cifar10', 10, (32, 32, 3), True, 'train', 'test',
                           (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    'cifar100': DatasetSpec('cifar100', 100, (32, 32, 3), True, 'train', 'test',
                            (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    'imagenet2012': DatasetSpec('imagenet2012', 1000, (224, 224, 3), False, 'train',
                                'validation', (123.675, 116.28, 103.53),
                                (58.395, 57.12, 57.375)),
}

_DEFAULT_AUGMENT = {'digits': 'none', 'cifar10': 'cifar', 'cifar100': 'cifar',
                    'imagenet2012': 'inception'}


def get_spec(name: str) -> DatasetSpec:
  """The spec of an se_flax dataset name."""
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset name {name!r}; allowed: {", ".join(DATASETS)}.')
  return DATASETS[name]


def default_data_config(name: str = 'digits') -> Config:
  """The `data` config section with the usual settings for dataset `name`."""
  spec = get_spec(name)
  size = spec.image_shape[0]
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.data_dir = config_dict.placeholder(str)  # None: the TFDS default
  cfg.train_split = spec.train_split
  cfg.eval_split = spec.eval_split
  cfg.image_size = size
  cfg.augment = _DEFAULT_AUGMENT.get(name, 'none' if spec.in_memory else 'inception')
  cfg.crop_padding = 1 if name == 'digits' else 4
  cfg.random_flip = name != 'digits'  # horizontal flips with the 'cifar' / 'inception' crops
  cfg.rrc_scale = (0.08, 1.0)
  cfg.rrc_ratio = (3 / 4, 4 / 3)
  cfg.eval_resize = 256 if name == 'imagenet2012' else size
  cfg.eval_interpolation = 'bilinear'  # eval resize: 'bilinear' | 'bicubic' (timm tags name theirs)
  cfg.eval_antialias = False  # area-average when shrinking, as PIL (timm's eval) does
  cfg.eval_backend = 'tensorflow'  # 'pil': decode, resize and crop as timm does (pretrained tags)
  cfg.keep_labels = ()  # () all classes; e.g. (0, 1, 2, 3, 4): only these, relabelled 0..K-1
  cfg.mean = spec.mean
  cfg.std = spec.std
  cfg.shuffle_buffer = 16_384
  return cfg


def num_classes(data_cfg: Config) -> int:
  """Classes the network predicts: the dataset's, or len(keep_labels)."""
  spec = get_spec(data_cfg.name)
  keep = tuple(data_cfg.get('keep_labels') or ())
  if not keep:
    return spec.num_classes
  if not spec.in_memory:
    raise ValueError(f'data.keep_labels works on in-memory datasets only '
                     f'({", ".join(n for n, s in DATASETS.items() if s.in_memory)}), not {data_cfg.name!r}')
  if len(set(keep)) != len(keep) or not all(isinstance(k, int) and 0 <= k < spec.num_classes for k in keep):
    raise ValueError(f'data.keep_labels={keep} must be distinct class ids in [0, {spec.num_classes})')
  return len(keep)
