"""The speed-motivated implementations of models.layers compute what the plain code computes.

  * 1x1 convolutions as 2-D dots (CPU): outputs and both gradients equal lax.conv_general_dilated's,
    stride 1 and 2;
  * the stem max-pool's custom gradient: every output's cotangent goes to the first maximum of its
    window in row-major order (PyTorch's rule), checked against a NumPy loop with many ties, and
    equals JAX's gradient of the slice-based pool where there are no ties;
  * `fast_paths.disabled` switches each off and rejects unknown names; on CPU the steps are
    compiled with convolutions outside XLA's YNNPACK fusions unless 'eigen_conv' is off.
The BatchNorm fast path has its own file (test_batch_norm.py).
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from se_flax import fast_paths
from se_flax.models import layers

DN = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('stride', [1, 2])
def test_pointwise_conv_as_dot_matches_convolution(stride):
  rng = np.random.default_rng(stride)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(1, 1, 5, 4)), jnp.float32)
  dn = lax.conv_dimension_numbers(x.shape, kernel.shape, DN)
  assert dn == layers._NHWC

  def loss(conv, x, kernel):
    y = conv(x, kernel, (stride, stride), 'VALID', dimension_numbers=dn, precision='highest')
    return jnp.sum(y * jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape) / y.size), y

  want = jax.value_and_grad(lambda *a: loss(lax.conv_general_dilated, *a), (0, 1), has_aux=True)(x, kernel)
  got = jax.value_and_grad(lambda *a: loss(layers.conv_general_dilated, *a), (0, 1), has_aux=True)(x, kernel)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  # It is a dot on CPU (the form whose kernel gradient needs no layout copy) and a convolution when off.
  assert 'dot_general' in str(jax.make_jaxpr(lambda x: loss(layers.conv_general_dilated, x, kernel))(x))
  with fast_paths.disabled(['dot_1x1']):
    assert 'dot_general' not in str(jax.make_jaxpr(lambda x: loss(layers.conv_general_dilated, x, kernel))(x))


def first_max_gradient(x: np.ndarray, dy: np.ndarray, pads) -> np.ndarray:
  """Each window's cotangent to its first maximum in row-major order; windows clipped to x."""
  (top, _), (left, _) = pads
  dx = np.zeros_like(x)
  n, h, w, c = x.shape
  for b in range(n):
    for ch in range(c):
      for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
          best, where = -np.inf, None
          for r in range(2 * i - top, 2 * i - top + 3):
            for col in range(2 * j - left, 2 * j - left + 3):
              if 0 <= r < h and 0 <= col < w and x[b, r, col, ch] > best:
                best, where = x[b, r, col, ch], (r, col)
          dx[b, where[0], where[1], ch] += dy[b, i, j, ch]
  return dx


@pytest.mark.parametrize('mode', ['pad', 'ceil'])
@pytest.mark.parametrize('h,w', [(8, 8), (9, 7)])
def test_stem_pool_gradient_goes_to_the_first_maximum(mode, h, w):
  rng = np.random.default_rng(h * 10 + w)
  x = rng.integers(0, 3, size=(2, h, w, 3)).astype(np.float32)  # many ties
  pool = lambda x: layers.max_pool_stem(x, mode)
  dy = rng.normal(size=pool(jnp.asarray(x)).shape).astype(np.float32)
  got = jax.jit(jax.grad(lambda x: jnp.sum(pool(x) * dy)))(jnp.asarray(x))
  pads = ((1, 1), (1, 1)) if mode == 'pad' else ((0, 0), (0, 0))
  np.testing.assert_allclose(got, first_max_gradient(x, dy, pads), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('mode', ['pad', 'ceil'])
def test_stem_pool_gradient_equals_autodiff_without_ties(mode):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 13, 12, 4)), jnp.float32)
  dy = jnp.asarray(rng.normal(size=layers.max_pool_stem(x, mode).shape), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.max_pool_stem(x, mode) * dy)))
  fast = grad(x)
  with fast_paths.disabled(['pool_vjp']):
    plain = jax.jit(jax.grad(lambda x: jnp.sum(layers.max_pool_stem(x, mode) * dy)))(x)
  np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-6)
  assert fast_paths.enabled('pool_vjp')  # switched back on after the block


def test_unknown_fast_path_is_named():
  with pytest.raises(ValueError, match=r"\['pool'\] are not among dot_1x1, pool_vjp, bn_vjp, eigen_conv"):
    with fast_paths.disabled(['pool']):
      pass


def test_cpu_steps_compile_convolutions_outside_ynnpack():
  """'eigen_conv': on CPU the steps' compiler options leave convolutions to Eigen (no YNNPACK fusion
  around them); with it off, XLA's defaults put this convolution in a YNNPACK fusion."""
  if jax.default_backend() != 'cpu':
    pytest.skip('an XLA CPU option')
  x, kernel = jnp.ones((2, 32, 32, 32)), jnp.ones((3, 3, 32, 32))
  conv = lambda x, kernel: lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=DN)
  compiled = lambda: jax.jit(conv, compiler_options=fast_paths.compiler_options()).lower(x, kernel).compile()
  assert 'convolution(' in compiled().as_text() and '__ynn_fusion' not in compiled().as_text()
  with fast_paths.disabled(['eigen_conv']):
    assert fast_paths.compiler_options() is None
    assert '__ynn_fusion' in compiled().as_text()
