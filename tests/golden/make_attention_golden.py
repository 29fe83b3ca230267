"""Regenerate the golden files of timm's attention modules used by tests/test_attention.py
(needs torch + timm, no jax).

    python tests/golden/make_attention_golden.py [KIND ...]   (same venv as make_golden.py)

For each kind timm 1.0.31 shares with se_flax (se, ese, eca, gc, cbam), on synthetic weights from
weights.py: timm's module `get_attn(KIND)(MODULE_CHANNELS)` alone (its key list and its eval-mode
output on weights.make_module_input()), and timm's `resnet18` with `block_args=dict(attn_layer=KIND)` and
10 classes (its key list and eval-mode logits at NETWORK_SIZE px). Files: attention/<kind>.json
(both key lists), attention/<kind>_module.npy, attention/<kind>_resnet18.npy.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import timm
from timm.layers import get_attn
import torch

import weights

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / 'attention'
KINDS = ('se', 'ese', 'eca', 'gc', 'cbam')
MODULE_CHANNELS = weights.ATTENTION_MODULE_INPUT[1]
# 68 px: stages see 17, 9, 5, 3 (odd maps for CBAM's padding and GC's pooling), channels 64..512
# (ECA kernels 3 and 5).
NETWORK_SIZE = 68
NUM_CLASSES = 10


def _loaded(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
  keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  state = {k: torch.from_numpy(v) for k, v in weights.make_state_dict(keys, weights.WEIGHT_SEED).items()}
  model.load_state_dict(state, strict=True)
  return keys


def golden(kind: str) -> None:
  module = get_attn(kind)(MODULE_CHANNELS).eval()
  module_keys = _loaded(module)
  out = module(torch.from_numpy(weights.make_module_input())).numpy()
  np.save(OUT / f'{kind}_module.npy', out.astype(np.float32))

  net = timm.create_model('resnet18', num_classes=NUM_CLASSES, block_args=dict(attn_layer=kind)).eval()
  net_keys = _loaded(net)
  logits = net(torch.from_numpy(weights.make_inputs(weights.INPUT_SEED, NETWORK_SIZE))).numpy()
  np.save(OUT / f'{kind}_resnet18.npy', logits.astype(np.float32))
  lines = lambda keys: ',\n'.join('    ' + json.dumps(entry) for entry in keys)
  (OUT / f'{kind}.json').write_text(f'{{"module_keys": [\n{lines(module_keys)}\n],\n'
                                    f'"resnet18_keys": [\n{lines(net_keys)}\n]}}\n')
  print(f'{kind}: module {type(module).__name__} {len(module_keys)} keys, output std {out.std():.3f}; '
        f'resnet18 {sum(p.numel() for p in net.parameters()):,} params, logits std {logits.std():.3f}')


def main(kinds: list[str]) -> None:
  torch.set_grad_enabled(False)
  OUT.mkdir(exist_ok=True)
  print(f'timm {timm.__version__}, torch {torch.__version__}')
  for kind in kinds or KINDS:
    if kind not in KINDS:
      raise SystemExit(f'kind {kind!r} is not one of {", ".join(KINDS)}')
    golden(kind)


if __name__ == '__main__':
  main(sys.argv[1:])
