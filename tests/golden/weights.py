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
# mode, count_include_pad=False). The same 204 px gives stage 3's stride-2 selective-kernel conv an
# even map (26), where its dilation-2 branch pads 2 on both sides and flax 'SAME' would pad 1 and 2;
# the tiered stem sees the deep stem's sizes. Legacy layout, 192 px: stem 192 -> 96, and the ceil-mode
# max-pool gives 48 where floor mode gives 47; stages then see 48, 24, 12 (padding).
# vgg16_bn, 196 px: the 2x2 max-pools see 196, 98, 49 (odd: floor mode drops a row), 24, 12, and
# the 6x6 map is smaller than fc6's 7x7 kernel, so timm's ConvMlp first average-pools it up to 7x7
# (F.adaptive_avg_pool2d, overlapping windows); inputs of 224 px and more skip that step
# (tests/test_convert_torch.py checks 260 px, where fc6 sees 8x8 and slides). mobilenetv1_100,
# 200 px: the stride-2 3x3 convs (padding 1) see even inputs (200, 100, 50) and odd ones (25, 13).
# Inception-v3 and Inception-ResNet-v2, 170 px: every stride-2 'valid' layer (the first conv,
# both stem max-pools, the strided convs and pools of Mixed_6a and Mixed_7a) sees an even map
# (170, 82, 38, 18, 8), so each leaves its last row and column unused, where 'SAME' padding or
# ceil mode would not. BN-Inception, 223 px: the port's 7x7 classifier pool takes 223..230 px
# only; at 223 all four ceil-mode max-pools (stem 112 -> 56 -> 28, 3c 28 -> 14, 4e 14 -> 7) give
# one more row than floor mode would, and the stem conv sees an odd size.
GOLDEN_SIZES = {
    'legacy_seresnet18': 192,
    'legacy_senet154': 192,
    'mobilenetv1_100': 200,
    'seresnet50': 204,
    'seresnext26d_32x4d': 204,
    'seresnext50_32x4d': 204,
    'seresnext26t_32x4d': 204,
    'skresnet18': 204,
    'skresnext50_32x4d': 204,
    'ecaresnet50d': 204,
    'vgg16_bn': 196,
    'inception_v3': 170,
    'inception_resnet_v2': 170,
    'bninception': 223,
}

# Conv weights ~ N(0, gain / fan_in). He's gain 2 keeps the logits O(1..10) and 75-90% of their norm
# input-dependent; gain 1 lets senet154's signal fade (4% input-dependent), gain 4 explodes (1e3).
CONV_GAIN = 2.0
# Per-model drawing options (`draw_options(name)`, passed to `make_state_dict`):
# conv_gain: mobilenetv1_100 has no shortcuts and its BatchNorms do not renormalise (random running
#   statistics), so at gain 2 its logits differ between the two inputs by 0.04% of their norm and
#   no activation reaches ReLU6's clip; at 4: 6%, and 0.1-1% of every block's outputs are clipped
#   at 6 (so ReLU6 is checked, not only ReLU).
# float32: draw in float32 (numpy's float32 generators, another stream than the float64 default):
#   vgg16_bn has 138M parameters (fc6 alone 103M), drawn about twice as fast and without a float64 copy.
DRAW_OPTIONS = {'mobilenetv1_100': dict(conv_gain=4.0), 'vgg16_bn': dict(float32=True)}


def draw_options(name: str) -> dict:
  return DRAW_OPTIONS.get(name, {})


class _Sampler:
  """normal/uniform draws as float32 arrays: from float64 draws (the default) or float32 ones."""

  def __init__(self, rng: np.random.Generator, float32: bool):
    self.rng, self.float32 = rng, float32

  def normal(self, std: float, shape: tuple[int, ...]) -> np.ndarray:
    if self.float32:
      out = self.rng.standard_normal(shape, dtype=np.float32)
      out *= np.float32(std)
      return out
    return self.rng.normal(0.0, std, shape).astype(np.float32)

  def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
    if self.float32:
      return (self.rng.random(shape, dtype=np.float32) * np.float32(high - low) + np.float32(low)).astype(np.float32)
    return self.rng.uniform(low, high, shape).astype(np.float32)


def _draw(sample: _Sampler, key: str, shape: tuple[int, ...], conv_gain: float) -> np.ndarray:
  """One tensor, chosen by its timm role (read from the key suffix and the rank)."""
  leaf = key.rsplit('.', 1)[-1]
  if leaf == 'num_batches_tracked':
    return np.array(0, dtype=np.int64)
  if leaf == 'running_mean':
    return sample.normal(0.1, shape)
  if leaf == 'running_var':
    return sample.uniform(0.5, 1.5, shape)
  if leaf == 'bias':
    return sample.normal(0.1, shape)
  if leaf == 'weight' and len(shape) == 1:  # BatchNorm scale
    return sample.uniform(0.5, 1.0, shape)
  if leaf == 'weight' and len(shape) in (2, 3, 4):  # Linear (out, in), Conv1d (out, in/groups, k), Conv2d
    fan_in = int(np.prod(shape[1:]))
    gain = conv_gain if len(shape) > 2 else 1.0
    return sample.normal(np.sqrt(gain / fan_in), shape)
  raise ValueError(f'no synthetic value for {key!r} with shape {shape}; known leaves: weight, bias, '
                   'running_mean, running_var, num_batches_tracked')


def make_state_dict(keys_and_shapes: Iterable[tuple[str, Sequence[int]]], seed: int = WEIGHT_SEED,
                    conv_gain: float = CONV_GAIN, float32: bool = False) -> dict[str, np.ndarray]:
  """A timm-style state dict, deterministic in (seed, key order, options): one generator drawn in order."""
  sample = _Sampler(np.random.default_rng(seed), float32)
  return {key: _draw(sample, key, tuple(shape), conv_gain) for key, shape in keys_and_shapes}


def make_inputs(seed: int = INPUT_SEED, size: int = 224, batch: int = 2) -> np.ndarray:
  """Normalised-image-like float32 inputs in NCHW (torch layout); transpose for se_flax."""
  return np.random.default_rng(seed).normal(0.0, 1.0, (batch, 3, size, size)).astype(np.float32)


# Attention modules alone (make_attention_golden.py): timm's module on 32 channels, input
# (2, 32, 3, 5) NCHW from this seed: odd, unequal sides for CBAM's 7x7 padding and GC's softmax.
ATTENTION_MODULE_INPUT = (2, 32, 3, 5)
ATTENTION_MODULE_SEED = 5


def make_module_input(seed: int = ATTENTION_MODULE_SEED, shape: tuple[int, ...] = ATTENTION_MODULE_INPUT) -> np.ndarray:
  """N(0, 1) float32 input of an attention module, NCHW."""
  return np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)
