"""Image quality metrics: PSNR and SSIM for images in [-1, 1] (the model range).

Both are pure JAX functions over ``... x H x W x C`` arrays, usable in jitted
training steps (SSIM also serves as the perceptual stand-in loss) and on numpy
arrays in evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def psnr(a: jax.Array, b: jax.Array, data_range: float = 2.0) -> jax.Array:
  """PSNR in dB per image of ``... x H x W x C`` arrays; returns ``...``."""
  mse = jnp.mean(jnp.square(jnp.asarray(a, jnp.float32)
                            - jnp.asarray(b, jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-12))


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  w = np.exp(-0.5 * np.square(x / sigma))
  return (w / w.sum()).astype(np.float32)


def _band_matrix(size: int, window: np.ndarray) -> np.ndarray:
  """``(size - taps + 1) x size`` matrix whose rows hold the shifted window."""
  taps = len(window)
  out = np.zeros((size - taps + 1, size), np.float32)
  for row in range(size - taps + 1):
    out[row, row:row + taps] = window
  return out


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
  """Separable 'valid' filtering of ``N x H x W x C`` over H and W.

  Written as two small matrix products, which (with their gradients) run far
  faster than shifted sums or depthwise convolutions on CPUs and GPUs.
  """
  rows = jnp.asarray(_band_matrix(x.shape[1], window))
  cols = jnp.asarray(_band_matrix(x.shape[2], window))
  x = jnp.einsum("ph,nhwc->npwc", rows, x)
  return jnp.einsum("qw,npwc->npqc", cols, x)


def ssim_map(a: jax.Array, b: jax.Array, value_range: tuple[float, float] = (-1.0, 1.0),
             window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Per-pixel SSIM (Wang et al. 2004, Gaussian window) of ``... x H x W x C``.

  The images are mapped from ``value_range`` to intensities in [0, 1] first:
  SSIM's luminance term is not invariant to an offset, so it is computed on
  non-negative intensities as everywhere else. Returns
  ``... x (H-window+1) x (W-window+1) x C``; images smaller than the window use
  a window of their size.
  """
  lo, hi = value_range
  a = (jnp.asarray(a, jnp.float32) - lo) / (hi - lo)
  b = (jnp.asarray(b, jnp.float32) - lo) / (hi - lo)
  lead = a.shape[:-3]
  h, w, c = a.shape[-3:]
  kernel = _gaussian_window(min(window, h, w), sigma)
  a = a.reshape((-1, h, w, c))
  b = b.reshape((-1, h, w, c))
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mu_a, mu_b = _filter_valid(a, kernel), _filter_valid(b, kernel)
  var_a = _filter_valid(a * a, kernel) - mu_a ** 2
  var_b = _filter_valid(b * b, kernel) - mu_b ** 2
  cov = _filter_valid(a * b, kernel) - mu_a * mu_b
  num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
  den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
  out = num / den
  return out.reshape(lead + out.shape[1:])


def ssim(a: jax.Array, b: jax.Array,
         value_range: tuple[float, float] = (-1.0, 1.0), window: int = 11,
         sigma: float = 1.5) -> jax.Array:
  """Mean SSIM per image of ``... x H x W x C`` arrays; returns ``...``."""
  return jnp.mean(ssim_map(a, b, value_range, window, sigma), axis=(-3, -2, -1))
