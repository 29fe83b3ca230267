"""Attention kinds against live timm: timm's `resnet50` built with `block_args=dict(attn_layer=KIND)`
converts with `convert.from_timm('resnet50', state_dict, attn=KIND)` and gives timm's logits.

Skipped where torch or timm is missing (CI's jax environment); the golden-file checks in
tests/test_attention.py cover the same names without torch (resnet18).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from se_flax import models
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


# 68 px: stages see 17, 9, 5, 3 (odd maps for CBAM's padding and GC's attention pooling).
@pytest.mark.parametrize('kind', ['se', 'ese', 'eca', 'gc', 'cbam'])
def test_resnet50_attn_layer_matches_live_timm(kind):
  model = timm.create_model('resnet50', pretrained=False, block_args=dict(attn_layer=kind)).eval()
  assert sum(p.numel() for p in model.parameters()) == models.count_params(
      jax.eval_shape(lambda: models.create('resnet50', attn=kind).init(
          jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))['params'])
  keys = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  state_dict = {k: torch.from_numpy(v) for k, v in weights.make_state_dict(keys, seed=3).items()}
  model.load_state_dict(state_dict, strict=True)
  images = weights.make_inputs(seed=4, size=68)
  with torch.no_grad():
    expected = model(torch.from_numpy(images)).numpy()
  module, variables = convert.from_timm('resnet50', state_dict, attn=kind)
  with jax.default_matmul_precision('highest'):
    logits = np.asarray(_logits(module, variables, images.transpose(0, 2, 3, 1)))
  error = float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))
  print(f'resnet50 with {kind} at 68 px: relative L2 error {error:.2e}')
  assert error < 1e-5
