"""Synthetic timm state dicts and inputs for the converter's golden tests. Pure numpy.

Imported both by `make_golden.py` (torch venv) and by `tests/test_convert.py` (jax venv, no
torch), so the golden logits can be checked without storing 100 MB of weights: each side
rebuilds the same state dict from the key list and the seed.

Values are realistic rather than i.i.d. noise: BatchNorm has non-trivial running statistics
(so a swapped mean/var or scale/bias shows up), convolutions are scaled by 1/fan_in so that
activations stay O(1) through 50 residual blocks, and SE gates stay away from saturation.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

WEIGHT_SEED = 0
INPUT_SEED = 1
# Input sizes chosen so that every padding and pooling convention changes the logits. A stride-2
# conv or pool with padding k // 2 equals flax 'SAME' on odd sizes, so it is only tested on even
# ones; ceil-mode pooling only differs from floor mode on some sizes. timm layout, 204 px: stem
# 204 -> max-pool 102 -> 51 -> 26 -> 13 -> 7, i.e. even inputs to the stem conv, the padded
# max-pool and stage 3 (padding), odd inputs to the avg-down shortcuts of stages 2 and 4 (ceil
# mode, count_include_pad=False). Legacy layout, 192 px: stem 192 -> 96, and the ceil-mode
# max-pool gives 48 where floor mode gives 47; stages then see 48, 24, 12 (padding).
# Inception-v3 and Inception-ResNet-v2, 170 px: every stride-2 'valid' layer (the first conv,
# both stem max-pools, the strided convs and pools of Mixed_6a and Mixed_7a) sees an even map
# (170, 82, 38, 18, 8), so each leaves its last row and column unused, where 'SAME' padding or
# ceil mode would not. BN-Inception, 223 px: the port's 7x7 classifier pool takes 223..230 px
# only; at 223 all four ceil-mode max-pools (stem 112 -> 56 -> 28, 3c 28 -> 14, 4e 14 -> 7) give
# one more row than floor mode would, and the stem conv sees an odd size.
GOLDEN_SIZES = {
    'legacy_seresnet18': 192,
    'legacy_senet154': 192,
    'seresnet50': 204,
    'seresnext26d_32x4d': 204,
    'seresnext50_32x4d': 204,
    'inception_v3': 170,
    'inception_resnet_v2': 170,
    'bninception': 223,
}

# Conv weights ~ N(0, gain / fan_in). He's gain 2 keeps the logits O(1..10) and 75-90% of their norm
# input-dependent; gain 1 lets senet154's signal fade (4% input-dependent), gain 4 explodes (1e3).
CONV_GAIN = 2.0


def _draw(rng: np.random.Generator, key: str, shape: tuple[int, ...]) -> np.ndarray:
  """One tensor, chosen by its timm role (read from the key suffix and the rank)."""
  leaf = key.rsplit('.', 1)[-1]
  if leaf == 'num_batches_tracked':
    return np.array(0, dtype=np.int64)
  if leaf == 'running_mean':
    return rng.normal(0.0, 0.1, shape).astype(np.float32)
  if leaf == 'running_var':
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if leaf == 'bias':
    return rng.normal(0.0, 0.1, shape).astype(np.float32)
  if leaf == 'weight' and len(shape) == 1:  # BatchNorm scale
    return rng.uniform(0.5, 1.0, shape).astype(np.float32)
  if leaf == 'weight' and len(shape) in (2, 4):  # Linear (out, in) or Conv2d (out, in/groups, kh, kw)
    fan_in = int(np.prod(shape[1:]))
    gain = CONV_GAIN if len(shape) == 4 else 1.0
    return rng.normal(0.0, np.sqrt(gain / fan_in), shape).astype(np.float32)
  raise ValueError(f'no synthetic value for {key!r} with shape {shape}; known leaves: weight, bias, '
                   'running_mean, running_var, num_batches_tracked')


def make_state_dict(keys_and_shapes: Iterable[tuple[str, Sequence[int]]], seed: int = WEIGHT_SEED,
                    ) -> dict[str, np.ndarray]:
  """A timm-style state dict, deterministic in (seed, key order): one generator drawn in order."""
  rng = np.random.default_rng(seed)
  return {key: _draw(rng, key, tuple(shape)) for key, shape in keys_and_shapes}


def make_inputs(seed: int = INPUT_SEED, size: int = 224, batch: int = 2) -> np.ndarray:
  """Normalised-image-like float32 inputs in NCHW (torch layout); transpose for se_flax."""
  return np.random.default_rng(seed).normal(0.0, 1.0, (batch, 3, size, size)).astype(np.float32)
