"""Pretrained timm weights by name: the tag table (se_flax/models/facts.py), each tag's
preprocessing, and fetching.

    path, tag = pretrained.fetch(pretrained.resolve('seresnet50.ra2_in1k'))
    config.data.update(pretrained.data_fields(pretrained.eval_preprocessing('seresnet50.ra2_in1k')))
    image = pretrained.preprocess('seresnet50.ra2_in1k', open('photo.jpg', 'rb').read())  # timm's input

`resolve` accepts every form of `pretrained=`: True (timm's default tag of `name`), a tag
('seresnet50.ra2_in1k', or 'ra2_in1k' with `name`), a Hugging Face hub id
('hf-hub:timm/seresnet50.ra2_in1k') or a local .safetensors file. Hub files are fetched with
`huggingface_hub.hf_hub_download` into its normal cache (a cached file is used without any
network access); a tag is first looked up as `<SE_FLAX_PRETRAINED_DIR>/<tag>.safetensors`, the
place for files copied by hand and for the PyTorch-only legacy weights once converted
(`python -m se_flax.weights.pretrained --convert FILE.pth --tag TAG`, needs torch).

`python -m se_flax.weights.pretrained` prints the table.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, NamedTuple

import numpy as np

from se_flax import errors
from se_flax.data import pil_eval
from se_flax.models import facts
from se_flax.models import registry
from se_flax.weights import convert

HUB_PREFIX = 'hf-hub:'
HUB_FILENAME = 'model.safetensors'  # what timm publishes in every timm/<tag> hub repo
LOCAL_DIR_ENV = 'SE_FLAX_PRETRAINED_DIR'
DEFAULT_LOCAL_DIR = '~/.cache/se_flax/pretrained'

# The tag table, timm's default tags and the PyTorch-only tags come from the models' fact table.
IMAGENET_MEAN, IMAGENET_STD = facts.IMAGENET_MEAN, facts.IMAGENET_STD
Tag = facts.Tag
TAGS: dict[str, Tag] = facts.TAGS
DEFAULT_TAGS: dict[str, str] = facts.DEFAULT_TAGS
PTH_ONLY = {tag: t.pth_url for tag, t in TAGS.items() if t.pth_url}


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
    raise ValueError(f'unknown pretrained tag {tag!r}{hint} (`python -m se_flax.weights.pretrained` lists all {len(TAGS)})')
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
    raise ValueError(f'pretrained={text!r} is a PyTorch file: convert it once with `python -m se_flax.weights.pretrained '
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
        f'{local} does not exist: download that file, run `python -m se_flax.weights.pretrained --convert FILE.pth '
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
  parser = argparse.ArgumentParser(prog='python -m se_flax.weights.pretrained', description=__doc__.split('\n')[0])
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
