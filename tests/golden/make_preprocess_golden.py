"""Regenerate timm's eval-transform references used by tests/test_pretrained.py (needs torch + timm, no jax).

    python tests/golden/make_preprocess_golden.py [--images DIR] [--full OUT_DIR] [--out DIR]

For every tag of se_flax/models/facts.py's table (read from the source, not imported): timm's data
config exactly as a user gets it (`resolve_data_config({}, model=timm.create_model(tag,
pretrained=False), use_test_size=True)`), written to preprocess/timm_eval.json. Tags sharing a
config share one set of references: timm's `create_transform(**config)` applied to each photo of
photos.py, stored as the 0..255 levels behind timm's normalised output (exact: timm computes
(level / 255 - mean) / std), sampled every 23rd row and column from (5, 9), plus each channel's
sum over the whole crop (preprocess/timm_eval.npz: per config, [photo, row, column, channel] in
photos.NAMES order and [photo, channel]). --full also saves the whole normalised arrays.
--images: the folder holding china.jpg and flower.jpg (default: scikit-learn's datasets/images).
--out: where the two reference files go (default: preprocess/ next to this file). tests/test_pretrained.py
runs this script with --out and --full in a subprocess where torch and timm are installed (torch and
TensorFlow in one process can crash).
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib

import numpy as np
import PIL
from PIL import Image
import timm
import timm.data
import torch
import torchvision

import photos

HERE = pathlib.Path(__file__).resolve().parent
FACTS_PY = HERE.parent.parent / 'se_flax' / 'models' / 'facts.py'
STRIDE, OFFSET = 23, (5, 9)


def table_tags() -> list[str]:
  """The tags of se_flax.models.facts._ROWS, parsed from the source."""
  tree = ast.parse(FACTS_PY.read_text())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_ROWS' for t in node.targets):
      return [row[0] for row in ast.literal_eval(node.value)]
  raise SystemExit(f'no _ROWS table in {FACTS_PY}')


def config_key(cfg: dict) -> str:
  """One name per distinct eval transform, e.g. '288_1.0_bicubic_0.485'."""
  return f'{cfg["input_size"][-1]}_{cfg["crop_pct"]}_{cfg["interpolation"]}_{cfg["mean"][0]}'


def timm_levels(transform, data: bytes, mean, std) -> tuple[np.ndarray, np.ndarray]:
  """(normalised HWC float32 array, uint8 levels) of timm's transform on the image PIL decodes."""
  import io
  with Image.open(io.BytesIO(data)) as image:
    out = transform(image.convert('RGB')).permute(1, 2, 0).numpy()
  levels = np.rint((out * np.float32(std) + np.float32(mean)) * 255.0)
  assert levels.min() >= 0 and levels.max() <= 255
  levels = levels.astype(np.uint8)
  back = (levels.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
  assert np.abs(back - out).max() < 1e-5, np.abs(back - out).max()
  return out, levels


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', default=None)
  parser.add_argument('--full', default=None, help='also save the whole normalised arrays here (timm_eval_full.npz)')
  parser.add_argument('--out', default=str(HERE / 'preprocess'), help='folder for timm_eval.json and timm_eval.npz')
  args = parser.parse_args()
  configs, tags = {}, {}
  for tag in table_tags():
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(tag, pretrained=False), use_test_size=True)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    assert cfg['crop_mode'] == 'center', (tag, cfg)
    key = config_key(cfg)
    assert configs.setdefault(key, cfg) == cfg, (tag, cfg, configs[key])
    tags[tag] = key
    print(f'{tag}: {key}', flush=True)
  arrays, full = {}, {}
  for key, cfg in configs.items():
    transform = timm.data.create_transform(**cfg)
    samples, sums = [], []
    for name in photos.NAMES:
      out, levels = timm_levels(transform, photos.encoded(name, args.images), cfg['mean'], cfg['std'])
      samples.append(levels[OFFSET[0]::STRIDE, OFFSET[1]::STRIDE])
      sums.append(levels.reshape(-1, 3).sum(0, dtype=np.int64))
      full[f'{key}/{name}'] = out
    arrays[key], arrays[f'{key}/sum'] = np.stack(samples), np.stack(sums)
    print(f'{key}: {transform}'.replace('\n', ' '), flush=True)
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  versions = {'timm': timm.__version__, 'torch': torch.__version__, 'torchvision': torchvision.__version__,
              'Pillow': PIL.__version__}
  (out_dir / 'timm_eval.json').write_text(json.dumps(
      {'versions': versions, 'stride': STRIDE, 'offset': list(OFFSET), 'configs': configs, 'tags': tags},
      indent=1) + '\n')
  np.savez_compressed(out_dir / 'timm_eval.npz', **arrays)
  if args.full:
    np.savez_compressed(pathlib.Path(args.full) / 'timm_eval_full.npz', **full)
  print(f'{len(tags)} tags, {len(configs)} distinct eval transforms, {len(full)} references')


if __name__ == '__main__':
  main()
