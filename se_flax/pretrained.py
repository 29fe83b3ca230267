"""Pretrained timm weights by name: the tag table, the preprocessing of each tag, and fetching.

    path, tag = pretrained.fetch(pretrained.resolve('seresnet50.ra2_in1k'))
    config.data.update(pretrained.data_fields(pretrained.eval_preprocessing('seresnet50.ra2_in1k')))
    image = pretrained.preprocess('seresnet50.ra2_in1k', open('photo.jpg', 'rb').read())  # timm's input

`resolve` accepts every form of `pretrained=`: True (timm's default tag of `name`), a tag
('seresnet50.ra2_in1k', or 'ra2_in1k' with `name`), a Hugging Face hub id
('hf-hub:timm/seresnet50.ra2_in1k') or a local .safetensors file. Hub files are fetched with
`huggingface_hub.hf_hub_download` into its normal cache (a cached file is used without any
network access); a tag is first looked up as `<SE_FLAX_PRETRAINED_DIR>/<tag>.safetensors`, the
place for files copied by hand and for the PyTorch-only legacy weights once converted
(`python -m se_flax.pretrained --convert FILE.pth --tag TAG`, needs torch).

`python -m se_flax.pretrained` prints the table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from se_flax import convert
from se_flax import errors
from se_flax.data import pil_eval
from se_flax.models import registry

HUB_PREFIX = 'hf-hub:'
HUB_FILENAME = 'model.safetensors'  # what timm publishes in every timm/<tag> hub repo
LOCAL_DIR_ENV = 'SE_FLAX_PRETRAINED_DIR'
DEFAULT_LOCAL_DIR = '~/.cache/se_flax/pretrained'

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm IMAGENET_DEFAULT_MEAN / STD, in 0..1 units
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Tag:
  """A published checkpoint of a timm model: how it was trained to be fed and how well it does.

  `input_size`/`crop_pct` are timm's train-resolution defaults; `test_size`/`test_crop_pct` the
  resolution timm reports `top1` at (its `test_input_size` where given). `top1`: ImageNet-1k
  validation top-1 (%) at test_size, None where timm publishes none.
  """

  tag: str
  input_size: int
  crop_pct: float
  test_size: int
  test_crop_pct: float
  interpolation: str
  top1: float | None
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD

  @property
  def name(self) -> str:
    return self.tag.split('.', 1)[0]

  @property
  def hub_id(self) -> str | None:
    return None if self.tag in PTH_ONLY else f'timm/{self.tag}'


# Every pretrained ImageNet-1k tag that timm 1.0.31 lists for the names of
# docs/reference.md section 1 (`timm.list_pretrained(name)`, `get_pretrained_cfg(tag)`:
# input_size, crop_pct, test_input_size, test_crop_pct, interpolation, mean/std; crop_mode is
# 'center' throughout). resnet50.bamboo (no classifier) is left out; seresnet18/34/101/152 have
# no weights. top1: timm's results/results-imagenet.csv (commit 0173a139), measured at the
# test resolution and crop listed here; resnet34.tv_in1k is missing there and comes from
# docs/reference.md (73.31). docs/reference.md lists some tags at 224 px instead (e.g. seresnet50.ra2:
# 80.26 at 224, 81.28 at 288 here).
# (tag, input_size, crop_pct, test_size, test_crop_pct, interpolation, top1)
_ROWS = (
    ('resnet18.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 73.158),
    ('resnet18.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 72.372),
    ('resnet18.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 68.254),
    ('resnet18.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 72.594),
    ('resnet18.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 73.282),
    ('resnet18.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 70.838),
    ('resnet18.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 69.76),
    ('resnet34.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 77.918),
    ('resnet34.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 77.158),
    ('resnet34.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 72.97),
    ('resnet34.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 76.48),
    ('resnet34.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 74.578),
    ('resnet34.ra4_e3600_r224_in1k', 224, 0.9, 288, 1.0, 'bicubic', None),
    ('resnet34.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 73.31),
    ('resnet50.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.214),
    ('resnet50.a1h_in1k', 176, 0.9, 224, 1.0, 'bicubic', 80.676),
    ('resnet50.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.772),
    ('resnet50.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 78.048),
    ('resnet50.am_in1k', 224, 0.875, 224, 0.875, 'bicubic', 78.998),
    ('resnet50.b1k_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.706),
    ('resnet50.b2k_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.454),
    ('resnet50.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.64),
    ('resnet50.c1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.912),
    ('resnet50.c2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.87),
    ('resnet50.d_in1k', 224, 0.95, 288, 1.0, 'bicubic', 80.972),
    ('resnet50.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 79.234),
    ('resnet50.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 81.182),
    ('resnet50.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 77.58),
    ('resnet50.ra_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.836),
    ('resnet50.ram_in1k', 224, 0.875, 288, 0.95, 'bicubic', 79.976),
    ('resnet50.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 80.85),
    ('resnet50.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 76.13),
    ('resnet101.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.322),
    ('resnet101.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.778),
    ('resnet101.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.236),
    ('resnet101.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 79.814),
    ('resnet101.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.31),
    ('resnet101.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 81.89),
    ('resnet101.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.376),
    ('resnet152.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.732),
    ('resnet152.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 83.45),
    ('resnet152.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.608),
    ('resnet152.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 80.546),
    ('resnet152.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.694),
    ('resnet152.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 82.288),
    ('resnet152.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.322),
    ('seresnet50.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.102),
    ('seresnet50.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.106),
    ('seresnet50.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 77.028),
    ('seresnet50.ra2_in1k', 224, 0.875, 288, 0.95, 'bicubic', 81.284),
    ('legacy_seresnet18.in1k', 224, 0.875, 224, 0.875, 'bicubic', 71.766),
    ('legacy_seresnet34.in1k', 224, 0.875, 224, 0.875, 'bilinear', 74.808),
    ('legacy_seresnet50.in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.644),
    ('legacy_seresnet101.in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.386),
    ('legacy_seresnet152.in1k', 224, 0.875, 224, 0.875, 'bilinear', 78.66),
    ('resnext50_32x4d.a1_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.466),
    ('resnext50_32x4d.a1h_in1k', 224, 0.95, 288, 1.0, 'bicubic', 82.014),
    ('resnext50_32x4d.a2_in1k', 224, 0.95, 288, 1.0, 'bicubic', 81.304),
    ('resnext50_32x4d.a3_in1k', 160, 0.95, 224, 0.95, 'bicubic', 79.268),
    ('resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.338),
    ('resnext50_32x4d.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 82.174),
    ('resnext50_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.36),
    ('resnext50_32x4d.ra_in1k', 224, 0.875, 288, 0.95, 'bicubic', 80.698),
    ('resnext50_32x4d.tv2_in1k', 176, 0.875, 224, 0.965, 'bilinear', 81.182),
    ('resnext50_32x4d.tv_in1k', 224, 0.875, 224, 0.875, 'bilinear', 77.618),
    ('resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.924),
    ('resnext101_32x4d.fb_swsl_ig1b_ft_in1k', 224, 0.875, 224, 0.875, 'bilinear', 83.232),
    ('resnext101_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 80.34),
    ('resnet26d.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 77.408),
    ('seresnext26d_32x4d.bt_in1k', 224, 0.875, 288, 0.95, 'bicubic', 78.814),
    ('seresnext50_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 79.91),
    ('seresnext50_32x4d.racm_in1k', 224, 0.875, 288, 0.95, 'bicubic', 82.196),
    ('seresnext101_32x4d.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 80.892),
    ('legacy_seresnext26_32x4d.in1k', 224, 0.875, 224, 0.875, 'bicubic', 77.108),
    ('legacy_seresnext50_32x4d.in1k', 224, 0.875, 224, 0.875, 'bilinear', 79.076),
    ('legacy_seresnext101_32x4d.in1k', 224, 0.875, 224, 0.875, 'bilinear', 80.23),
    ('senet154.gluon_in1k', 224, 0.875, 224, 0.875, 'bicubic', 81.226),
    ('legacy_senet154.in1k', 224, 0.875, 224, 0.875, 'bilinear', 81.308),
)
_MEAN_STD = {'resnet34.ra4_e3600_r224_in1k': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}

# timm's default tag per name (`get_pretrained_cfg(name).tag`): what pretrained=True loads.
DEFAULT_TAGS = {
    'resnet18': 'resnet18.a1_in1k', 'resnet34': 'resnet34.a1_in1k', 'resnet50': 'resnet50.a1_in1k',
    'resnet101': 'resnet101.a1h_in1k', 'resnet152': 'resnet152.a1h_in1k', 'seresnet50': 'seresnet50.a1_in1k',
    'legacy_seresnet18': 'legacy_seresnet18.in1k', 'legacy_seresnet34': 'legacy_seresnet34.in1k',
    'legacy_seresnet50': 'legacy_seresnet50.in1k', 'legacy_seresnet101': 'legacy_seresnet101.in1k',
    'legacy_seresnet152': 'legacy_seresnet152.in1k', 'resnext50_32x4d': 'resnext50_32x4d.a1h_in1k',
    'resnext101_32x4d': 'resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k', 'resnet26d': 'resnet26d.bt_in1k',
    'seresnext26d_32x4d': 'seresnext26d_32x4d.bt_in1k', 'seresnext50_32x4d': 'seresnext50_32x4d.racm_in1k',
    'seresnext101_32x4d': 'seresnext101_32x4d.gluon_in1k',
    'legacy_seresnext26_32x4d': 'legacy_seresnext26_32x4d.in1k',
    'legacy_seresnext50_32x4d': 'legacy_seresnext50_32x4d.in1k',
    'legacy_seresnext101_32x4d': 'legacy_seresnext101_32x4d.in1k', 'senet154': 'senet154.gluon_in1k',
    'legacy_senet154': 'legacy_senet154.in1k',
}

# Tags that timm (pretrained_cfg 'url', no 'hf_hub_id') publishes only as PyTorch files.
_V01 = 'https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-'
PTH_ONLY = {
    'legacy_seresnet18.in1k': _V01 + 'weights/seresnet18-4bb0ce65.pth',
    'legacy_seresnet34.in1k': _V01 + 'weights/seresnet34-a4004e63.pth',
    'legacy_seresnet50.in1k': _V01 + 'cadene/se_resnet50-ce0d4300.pth',
    'legacy_seresnet101.in1k': _V01 + 'cadene/se_resnet101-7e38fcc6.pth',
    'legacy_seresnet152.in1k': _V01 + 'cadene/se_resnet152-d17c99b7.pth',
    'legacy_seresnext26_32x4d.in1k': _V01 + 'weights/seresnext26_32x4d-65ebdb501.pth',
    'legacy_seresnext50_32x4d.in1k': _V01 + 'weights/legacy_se_resnext50_32x4d-f3651bad.pth',
    'legacy_seresnext101_32x4d.in1k': _V01 + 'weights/legacy_se_resnext101_32x4d-37725eac.pth',
    'legacy_senet154.in1k': _V01 + 'weights/legacy_senet154-e9eb9fe6.pth',
}

TAGS: dict[str, Tag] = {row[0]: Tag(*row, *_MEAN_STD.get(row[0], ())) for row in _ROWS}


class PretrainedNotFoundError(errors.UserError, FileNotFoundError):
  """The weights a `pretrained=` value names are neither on disk nor downloadable here."""


class Source(NamedTuple):
  """What a `pretrained=` value resolved to: the timm architecture and where its weights are."""

  name: str  # se_flax/timm model name, e.g. 'seresnet50'
  tag: str | None  # table entry, None for a hub id or file outside the table
  hub_id: str | None  # Hugging Face repo id, e.g. 'timm/seresnet50.ra2_in1k'
  path: str | None  # a local file

  def describe(self) -> str:
    return self.path or self.tag or f'{HUB_PREFIX}{self.hub_id}'


def tags(name: str | None = None) -> list[str]:
  """Tags in the table, all or those of model `name`."""
  return [t for t in TAGS if name is None or TAGS[t].name == name]


def get(tag: str) -> Tag:
  if tag not in TAGS:
    hint = registry.did_you_mean(tag, TAGS, n=4, cutoff=0.6)
    raise ValueError(f'unknown pretrained tag {tag!r}{hint} (`python -m se_flax.pretrained` lists all {len(TAGS)})')
  return TAGS[tag]


def _check_name(tag: str, name: str | None) -> None:
  if name is not None and TAGS[tag].name != name:
    raise ValueError(f'pretrained tag {tag!r} holds {TAGS[tag].name!r} weights, not {name!r}')


def resolve(pretrained: Any, name: str | None = None) -> Source:
  """A `pretrained=` value -> Source, without touching the network (see the module doc)."""
  if pretrained is True:
    if name is None:
      raise ValueError('pretrained=True needs the model name')
    if name not in DEFAULT_TAGS:
      with_weights = ', '.join(DEFAULT_TAGS)
      raise ValueError(f'timm publishes no pretrained weights for {name!r}; names with weights: {with_weights}')
    return Source(name, DEFAULT_TAGS[name], TAGS[DEFAULT_TAGS[name]].hub_id, None)
  if not isinstance(pretrained, (str, os.PathLike)) or not str(pretrained):
    raise ValueError(f'pretrained={pretrained!r} must be True, a tag, "hf-hub:<repo id>" or a .safetensors file')
  text = os.fspath(pretrained)
  if text.startswith(HUB_PREFIX):
    hub_id = text[len(HUB_PREFIX):]
    tag = hub_id.split('/', 1)[-1]
    arch = tag.split('.', 1)[0]
    if tag in TAGS:
      _check_name(tag, name)
      return Source(arch, tag, hub_id, None)
    if name is None and arch not in convert.TIMM_NAMES:
      raise ValueError(f'cannot tell the model of hub id {hub_id!r}: give the model name as well')
    return Source(name or arch, None, hub_id, None)
  if text.endswith('.pth') or text.endswith('.pt') or text.endswith('.bin'):
    raise ValueError(f'pretrained={text!r} is a PyTorch file: convert it once with `python -m se_flax.pretrained '
                     f'--convert {text} --out FILE.safetensors` (needs torch) and pass the .safetensors')
  if text.endswith('.safetensors') or os.path.sep in text or os.path.exists(text):
    if not os.path.isfile(text):
      raise PretrainedNotFoundError(f'pretrained weights file {text!r} does not exist')
    if name is None:
      raise ValueError(f'pretrained file {text!r} needs the model name it holds (e.g. name="seresnet50")')
    return Source(name, None, None, os.path.abspath(text))
  tag = text if text in TAGS or name is None else (f'{name}.{text}' if f'{name}.{text}' in TAGS else text)
  get(tag)
  _check_name(tag, name)
  return Source(TAGS[tag].name, tag, TAGS[tag].hub_id, None)


def local_dir() -> str:
  """Where tags are looked up as <tag>.safetensors before the hub ($SE_FLAX_PRETRAINED_DIR)."""
  return os.path.expanduser(os.environ.get(LOCAL_DIR_ENV) or DEFAULT_LOCAL_DIR)


def hub_cache_dir(cache_dir: str | None = None) -> str:
  if cache_dir:
    return cache_dir
  try:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE
  except ImportError:
    return os.path.expanduser(os.path.join(os.environ.get('HF_HOME', '~/.cache/huggingface'), 'hub'))


def _missing(source: Source, reason: str, cache_dir: str | None) -> PretrainedNotFoundError:
  """One line: which file was wanted, where it was looked for, how to place it by hand."""
  local = os.path.join(local_dir(), f'{source.tag}.safetensors') if source.tag else None
  if source.hub_id is None:  # a PyTorch-only legacy tag
    return PretrainedNotFoundError(
        f'pretrained weights {source.tag!r} are published only as a PyTorch file ({PTH_ONLY[source.tag]}) and '
        f'{local} does not exist: download that file, run `python -m se_flax.pretrained --convert FILE.pth '
        f'--tag {source.tag}` (needs torch) to write {local}, or pass any converted .safetensors path')
  cache = hub_cache_dir(cache_dir)
  folder = 'models--' + source.hub_id.replace('/', '--')
  url = f'https://huggingface.co/{source.hub_id}/resolve/main/{HUB_FILENAME}'
  also = f', or put it at {local}' if local else ''
  return PretrainedNotFoundError(
      f'pretrained weights {source.describe()!r}: {HUB_FILENAME} of hub repo {source.hub_id} is not in the '
      f'Hugging Face cache {cache} and could not be downloaded ({reason}). Place it by hand: download {url} '
      f'on a machine with network and pass its path as pretrained=FILE{also}; or copy that machine\'s '
      f'{os.path.join(cache, folder)} folder (filled by huggingface_hub.hf_hub_download) to the same place here')


def local_path(source: Source, cache_dir: str | None = None) -> str | None:
  """The weights' file on this machine, found without any network access, or None: the file,
  <local dir>/<tag>.safetensors, or huggingface_hub's cache (`cache_dir` overrides it)."""
  if source.path:
    return source.path
  if source.tag:
    local = os.path.join(local_dir(), f'{source.tag}.safetensors')
    if os.path.isfile(local):
      return local
  if source.hub_id is None:
    return None
  try:
    import huggingface_hub
    from huggingface_hub import errors as hub_errors
  except ImportError:
    return None
  try:  # a cached copy needs no network
    return huggingface_hub.hf_hub_download(source.hub_id, HUB_FILENAME, cache_dir=cache_dir,
                                           local_files_only=True)
  except (hub_errors.LocalEntryNotFoundError, OSError):
    return None


def fetch(source: Source, cache_dir: str | None = None) -> str:
  """A local .safetensors path for `source`: `local_path`, else a hub download (huggingface_hub's
  normal cache; `cache_dir` overrides it)."""
  path = local_path(source, cache_dir)
  if path:
    return path
  if source.hub_id is None:
    raise _missing(source, 'no hub copy', cache_dir)
  try:
    import huggingface_hub
    from huggingface_hub import errors as hub_errors
  except ImportError:
    raise _missing(source, 'huggingface_hub is not installed: pip install "huggingface_hub>=0.23"', cache_dir)
  try:
    return huggingface_hub.hf_hub_download(source.hub_id, HUB_FILENAME, cache_dir=cache_dir,
                                           library_name='se_flax')
  except (OSError, hub_errors.HfHubHTTPError, hub_errors.EntryNotFoundError) as e:
    raise _missing(source, f'{type(e).__name__}: {" ".join(str(e).split())[:200]}', cache_dir) from e


def load_state_dict(source: Source, cache_dir: str | None = None) -> dict:
  """The numpy state dict of `source` (fetched if needed)."""
  return convert.load_safetensors(fetch(source, cache_dir))


# ---------------------------------------------------------------------------------------------
# Preprocessing: a tag's resolution, crop, interpolation and normalisation as data config fields.


class Preprocessing(NamedTuple):
  image_size: int
  crop_pct: float
  interpolation: str
  mean: tuple[float, ...]  # 0..1 units, as timm gives them
  std: tuple[float, ...]


def eval_preprocessing(tag: str) -> Preprocessing:
  """The preprocessing the tag's reference top-1 was measured with (timm's test resolution)."""
  t = get(tag)
  return Preprocessing(t.test_size, t.test_crop_pct, t.interpolation, t.mean, t.std)


def train_preprocessing(tag: str) -> Preprocessing:
  """The tag's training resolution (timm's input_size, crop_pct), e.g. for fine-tuning."""
  t = get(tag)
  return Preprocessing(t.input_size, t.crop_pct, t.interpolation, t.mean, t.std)


def data_fields(prep: Preprocessing) -> dict[str, Any]:
  """`config.data` fields for timm's centre-crop eval transform, done with PIL as timm does
  (`eval_backend='pil'`, se_flax/data/pil_eval.py): decode, resize the short side to
  floor(size / crop_pct) with PIL's filter, centre crop size, normalise (0..255 units)."""
  return {'image_size': prep.image_size, 'eval_resize': int(math.floor(prep.image_size / prep.crop_pct)),
          'eval_interpolation': prep.interpolation, 'eval_antialias': True, 'eval_backend': 'pil',
          'mean': tuple(round(255 * m, 4) for m in prep.mean), 'std': tuple(round(255 * s, 4) for s in prep.std)}


def preprocess(tag: str, image: bytes) -> np.ndarray:
  """The float32 [size, size, 3] array `eval.py --pretrained=TAG` feeds the model for one encoded
  image: timm's eval transform of the tag (PIL decode, resize, centre crop, mean/std), bit for bit
  what the input pipeline computes with `data_fields(eval_preprocessing(tag))`."""
  fields = data_fields(eval_preprocessing(tag))
  pixels = pil_eval.view(image, fields['eval_resize'], fields['image_size'], fields['eval_interpolation'], 3)
  return pil_eval.normalise(pixels, fields['mean'], fields['std'])


def reference_line(tag: str) -> str:
  t = get(tag)
  figure = f'{t.top1:.2f}%' if t.top1 is not None else 'not published'
  return f'reference top-1 {figure} (timm, ImageNet-1k val, {t.test_size} px, crop_pct {t.test_crop_pct}, {t.interpolation})'


def table() -> str:
  """The tag table as markdown."""
  lines = ['| tag | default | hub | train px / crop | test px / crop | interp. | top-1 (%) |',
           '|---|:-:|:-:|---|---|---|---:|']
  for t in TAGS.values():
    lines.append(f'| `{t.tag}` | {"*" if DEFAULT_TAGS.get(t.name) == t.tag else ""} | '
                 f'{"yes" if t.hub_id else ".pth"} | {t.input_size} / {t.crop_pct} | {t.test_size} / '
                 f'{t.test_crop_pct} | {t.interpolation} | {t.top1 if t.top1 is not None else "-"} |')
  return '\n'.join(lines)


def convert_pth(pth_path: str, out_path: str) -> str:
  """A PyTorch state dict file -> .safetensors (needs torch; run once where torch is installed)."""
  import torch  # pylint: disable=import-outside-toplevel
  import safetensors.torch
  state_dict = torch.load(pth_path, map_location='cpu', weights_only=True)
  state_dict = state_dict.get('state_dict', state_dict)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, out_path)
  return out_path


def main(argv: list[str]) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog='python -m se_flax.pretrained', description=__doc__.split('\n')[0])
  parser.add_argument('--convert', metavar='FILE.pth', help='convert a PyTorch state dict to .safetensors')
  parser.add_argument('--tag', help=f'with --convert: write {DEFAULT_LOCAL_DIR}/<tag>.safetensors')
  parser.add_argument('--out', help='with --convert: output path')
  args = parser.parse_args(argv)
  if not args.convert:
    print(table())
    print(f'\n{len(TAGS)} tags; * = default (pretrained=True); ".pth": PyTorch file only, see --convert')
    return 0
  if not (args.tag or args.out):
    parser.error('--convert needs --tag or --out')
  if args.tag:
    get(args.tag)
  out = args.out or os.path.join(local_dir(), f'{args.tag}.safetensors')
  print(convert_pth(args.convert, out))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
