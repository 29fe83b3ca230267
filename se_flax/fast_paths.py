"""Numerically equivalent implementations chosen for training speed, each on by default.

  dot_1x1     ungrouped 1x1 convolutions as 2-D dots on CPU (models.layers.conv_general_dilated)
  pool_vjp    the stem max-pool's gradient from the tap that won, recorded in the forward pass
              (models.layers.max_pool_stem)
  bn_vjp      BatchNorm's closed-form training gradient (models.batch_norm.BatchNorm)
  eigen_conv  XLA CPU runs convolutions with Eigen rather than YNNPACK (`compiler_options`)

Each was kept because an interleaved A/B of the real train step showed it (docs/speed_notes.md
s.8). `disabled(names)` turns some off while models are traced and steps are built, so that a
benchmark can measure what each gives, or a suspected numerical difference can be ruled out.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import jax

NAMES = ('dot_1x1', 'pool_vjp', 'bn_vjp', 'eigen_conv')
_disabled: set[str] = set()

# XLA CPU's default library fusions (jaxlib 0.10.2) minus INDIVIDUAL_CONVOLUTION: dots and
# reductions stay with YNNPACK; convolutions go to Eigen, whose kernel gradients of 3x3
# convolutions were 3-4x faster on the 2-core CPU of docs/speed_notes.md.
_CPU_LIBRARY_FUSIONS = ','.join(f'LIBRARY_FUSION_TYPE_{t}' for t in ('INDIVIDUAL_DOT', 'DOT', 'REDUCE'))


def enabled(name: str) -> bool:
  """Whether fast path `name` is on; read when a model is traced or a step is built."""
  return name not in _disabled


def check(names: Iterable[str]) -> list[str]:
  """The names, or a ValueError naming the unknown ones and what is allowed."""
  names = list(names)
  unknown = sorted(set(names) - set(NAMES))
  if unknown:
    raise ValueError(f'fast paths {unknown} are not among {", ".join(NAMES)}')
  return names


@contextlib.contextmanager
def disabled(names: Iterable[str]) -> Iterator[None]:
  """Build models and steps inside this block with the named fast paths off (plain JAX/flax/XLA)."""
  names = check(names)
  before = set(_disabled)
  _disabled.update(names)
  try:
    yield
  finally:
    _disabled.clear()
    _disabled.update(before)


def compiler_options() -> dict[str, str] | None:
  """XLA options for `jax.jit(..., compiler_options=...)` of the train and eval steps."""
  if jax.default_backend() != 'cpu' or not enabled('eigen_conv'):
    return None
  return {'xla_cpu_experimental_ynn_fusion_type': _CPU_LIBRARY_FUSIONS}
