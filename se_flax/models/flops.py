"""Parameter and multiply-add counts, the figures the paper and timm report.

Multiply-adds count convolutions and dense layers only (bias adds, BN, activations and
pooling excluded), as torch's FlopCounterMode / 2 does for timm's table.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def count_params(params) -> int:
  """Number of trainable parameters (BatchNorm running statistics not counted, as in timm)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def count_macs(module: nn.Module, image_size: int | tuple[int, int] = 224, channels: int = 3) -> int:
  """Multiply-adds of one forward pass on one image, from shapes alone (nothing is computed)."""
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  total = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if context.method_name != '__call__':
      return out
    if isinstance(mod, nn.Conv):
      kernel = int(np.prod(mod.kernel_size))
      in_ch = args[0].shape[-1] // mod.feature_group_count
      total.append(int(np.prod(out.shape[:-1])) * out.shape[-1] * kernel * in_ch)
    elif isinstance(mod, nn.Dense):
      total.append(int(np.prod(out.shape[:-1])) * out.shape[-1] * args[0].shape[-1])
    return out

  x = jax.ShapeDtypeStruct((1, h, w, channels), jnp.float32)
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
  return int(sum(total))
