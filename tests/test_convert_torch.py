"""se_flax.weights.convert against live timm, for layouts the golden files do not cover.

Skipped where torch or timm is missing (CI's jax environment); runs where both are installed next
to jax. Torch tensors are passed to `from_timm` as they are, through `__array__`.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from se_flax.weights import convert

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

GOLDEN = pathlib.Path(__file__).resolve().parent / 'golden'
_spec = importlib.util.spec_from_file_location('golden_weights', GOLDEN / 'weights.py')
weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weights)


@functools.partial(jax.jit, static_argnums=0)
def _logits(module, variables, images):
  return module.apply(variables, images, train=False)


def _reference(name: str):
  """timm's model, or for bninception the pretrainedmodels port (skipped where that is missing)."""
  if name == 'bninception':
    pretrainedmodels = pytest.importorskip('pretrainedmodels')
    return pretrainedmodels.bninception(num_classes=1000, pretrained=None)
  return timm.create_model(name, pretrained=False)


# Small inputs keep compile and run short. 68 px (timm layout): even stem and max-pool inputs,
# then odd stages (ceil-mode avg-down); 64 px (legacy): stem output 32, where the ceil-mode
# max-pool gives 16 and floor mode 15. Inception-v3 / Inception-ResNet-v2 at 75 px, their
# smallest input (odd maps throughout: 75, 37, 17, 7, 3) and 79 px (even 18 into the second stem
# pool); BN-Inception at 230 px, the largest its 7x7 classifier pool takes (floor and ceil mode
# differ at 3c and 4e only).
@pytest.mark.parametrize('name, size', [
    ('seresnet18', 68),  # timm basic block, SE width 8 at 64 channels
    ('resnet26d', 68),  # no SE, deep stem, avg-down
    ('senet154', 68),  # timm layout, 3x3 strided projection, cardinality 64
    ('legacy_seresnet50', 64),  # stride on the first 1x1
    ('legacy_seresnext26_32x4d', 64),
    ('ecaresnetlight', 68),  # 7x7 stem with the avg-down shortcut, ECA with 5 and 7 taps
    ('ecaresnet26t', 68),  # tiered stem, ECA
    ('skresnet34', 68),  # selective kernel with the input split, 3-4-6-3 basic blocks
    ('mobilenetv1_100', 68),  # stride-2 depthwise convs on 34, 17, 9, 5 (odd) maps
    ('vgg16_bn', 260),  # fc6 (7x7) slides over an 8x8 map: 2x2 outputs averaged; 65 -> 32 floor-mode pool
    ('inception_v3', 75),
    ('inception_resnet_v2', 79),
    ('bninception', 230),
])
def test_matches_live_timm(name, size):
  model = _reference(name).eval()
  keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  state_dict = {k: torch.from_numpy(v)
                for k, v in weights.make_state_dict(keys, seed=3, **weights.draw_options(name)).items()}
  model.load_state_dict(state_dict, strict=True)
  images = weights.make_inputs(seed=4, size=size)
  with torch.no_grad():
    expected = model(torch.from_numpy(images)).numpy()
  module, variables = convert.from_timm(name, state_dict)
  logits = np.asarray(_logits(module, variables, images.transpose(0, 2, 3, 1)))
  error = float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))
  print(f'{name} at {size} px: relative L2 error {error:.2e}')
  assert error < 1e-5
