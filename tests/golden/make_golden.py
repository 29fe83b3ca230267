"""Regenerate the timm golden files used by tests/test_convert.py (needs torch + timm, no jax).

    python tests/golden/make_golden.py [NAME ...]   (in a venv with: pip install torch==2.14.1
        torchvision==0.29.1 timm safetensors pretrainedmodels; names: all of GOLDEN_SIZES by default)

Names (default: all of weights.GOLDEN_SIZES) regenerate only those files.

For each name of weights.GOLDEN_SIZES: the timm state-dict key list (keys/<name>.json) and timm's
eval-mode logits on synthetic weights and inputs (logits/<name>.npy). The weights are not stored;
both sides rebuild them from the key list and the seed with weights.py. For the names of KEYS_ONLY,
the key list alone (tests/test_attention_nets.py fits it with convert.timm_shapes).
Names given (default: all of both) limit the run to those models.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import timm
import torch

import weights

HERE = pathlib.Path(__file__).resolve().parent
# Exact parameter counts of timm 1.0.31, docs/reference.md section 1.
REFERENCE_PARAMS = {
    'legacy_senet154': 115_088_984,
    'legacy_seresnet18': 11_778_592,
    'mobilenetv1_100': 4_231_976,
    'seresnet50': 28_088_024,
    'seresnext26d_32x4d': 16_809_512,
    'seresnext50_32x4d': 27_559_896,
    'seresnext26t_32x4d': 16_806_976,
    'skresnet18': 11_958_056,
    'skresnext50_32x4d': 27_479_784,
    'skresnet34': 22_282_376,
    'ecaresnet50d': 25_576_350,
    'ecaresnet26t': 16_011_916,
    'ecaresnet50t': 25_573_814,
    'ecaresnet101d': 44_568_563,
    'ecaresnetlight': 30_162_046,
    'vgg16_bn': 138_365_992,
    'inception_v3': 23_834_568,
    'inception_resnet_v2': 55_843_464,
    'bninception': 11_295_240,  # pretrainedmodels 0.7.4
}
# Names whose converter is checked by key-list fit and parameter count only (no logits stored).
KEYS_ONLY = ('skresnet34', 'ecaresnet26t', 'ecaresnet50t', 'ecaresnet101d', 'ecaresnetlight')


def _pretrainedmodels_bninception() -> torch.nn.Module:
  import pretrainedmodels  # pylint: disable=import-outside-toplevel
  return pretrainedmodels.bninception(num_classes=1000, pretrained=None)


# References that are not timm models (se_flax.weights.convert maps their state dicts alike).
REFERENCE_BUILDERS = {'bninception': _pretrainedmodels_bninception}


def reference_model(name: str) -> torch.nn.Module:
  builder = REFERENCE_BUILDERS.get(name)
  return builder() if builder else timm.create_model(name, pretrained=False)


def write_keys(name: str, state_dict: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
  """Key list in state_dict order, one JSON entry a line (diffable, ~60 KB for senet154)."""
  keys = [(k, list(v.shape)) for k, v in state_dict.items()]
  lines = ',\n'.join(json.dumps(entry) for entry in keys)
  (HERE / 'keys' / f'{name}.json').write_text(f'[\n{lines}\n]\n')
  return keys


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def golden(name: str, size: int) -> None:
  """Key list, parameter check, logits; also reports float32 vs float64 timm as a conditioning check."""
  model = reference_model(name)
  params = sum(p.numel() for p in model.parameters())
  if params != REFERENCE_PARAMS[name]:
    raise SystemExit(f'{name}: timm has {params:,} parameters, the reference table says {REFERENCE_PARAMS[name]:,}')
  keys = write_keys(name, model.state_dict())
  state_dict = {k: torch.from_numpy(v)
                for k, v in weights.make_state_dict(keys, weights.WEIGHT_SEED, **weights.draw_options(name)).items()}
  model.load_state_dict(state_dict, strict=True)
  model.eval()
  x = torch.from_numpy(weights.make_inputs(weights.INPUT_SEED, size))
  logits = model(x).numpy()
  np.save(HERE / 'logits' / f'{name}.npy', logits.astype(np.float32))
  logits64 = model.double()(x.double()).numpy()
  print(f'{name}: {params:,} params, {len(keys)} keys, input {size} px, logits {logits.shape} '
        f'mean {logits.mean():+.3f} std {logits.std():.3f} max|.| {np.abs(logits).max():.3f}, '
        f'float32 vs float64 rel L2 {rel_l2(logits, logits64):.2e}')


def keys_only(name: str) -> None:
  """The key list alone, after the parameter check."""
  model = timm.create_model(name, pretrained=False)
  params = sum(p.numel() for p in model.parameters())
  if params != REFERENCE_PARAMS[name]:
    raise SystemExit(f'{name}: timm has {params:,} parameters, the reference table says {REFERENCE_PARAMS[name]:,}')
  keys = write_keys(name, model.state_dict())
  print(f'{name}: {params:,} params, {len(keys)} keys (key list only)')


def main(names: list[str]) -> None:
  known = [*weights.GOLDEN_SIZES, *KEYS_ONLY]
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise SystemExit(f'no golden size or key list for {", ".join(unknown)}; known: {", ".join(known)}')
  torch.set_grad_enabled(False)
  (HERE / 'keys').mkdir(exist_ok=True)
  (HERE / 'logits').mkdir(exist_ok=True)
  print(f'timm {timm.__version__}, torch {torch.__version__}, '
        f'weight seed {weights.WEIGHT_SEED}, input seed {weights.INPUT_SEED}')
  for name, size in weights.GOLDEN_SIZES.items():
    if not names or name in names:
      golden(name, size)
  for name in KEYS_ONLY:
    if not names or name in names:
      keys_only(name)


if __name__ == '__main__':
  main(sys.argv[1:])
