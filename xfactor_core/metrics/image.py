"""Image quality metrics: PSNR and SSIM for images in [-1, 1] (or any range).

Both are pure JAX functions over ``... x H x W x C`` arrays, usable in jitted
training steps (SSIM also serves as the perceptual stand-in loss) and on numpy
arrays in evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(a: jax.Array, b: jax.Array, data_range: float = 2.0) -> jax.Array:
  """PSNR in dB per image of ``... x H x W x C`` arrays; returns ``...``."""
  mse = jnp.mean(jnp.square(jnp.asarray(a, jnp.float32)
                            - jnp.asarray(b, jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-12))


def _gaussian_kernel(size: int, sigma: float) -> jax.Array:
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
  k = jnp.exp(-0.5 * jnp.square(x / sigma))
  return k / jnp.sum(k)


def _blur(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filter over H and W of ``N x H x W x C``."""
  k = kernel.shape[0]
  c = x.shape[-1]
  kh = jnp.tile(kernel.reshape(k, 1, 1, 1), (1, 1, 1, c))
  kw = jnp.tile(kernel.reshape(1, k, 1, 1), (1, 1, 1, c))
  dims = ("NHWC", "HWIO", "NHWC")
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID",
                                   dimension_numbers=dims,
                                   feature_group_count=c)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID",
                                      dimension_numbers=dims,
                                      feature_group_count=c)


def ssim_map(a: jax.Array, b: jax.Array, data_range: float = 2.0,
             window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Per-pixel SSIM (Wang et al. 2004, Gaussian window) of ``... x H x W x C``.

  Returns ``... x (H-window+1) x (W-window+1) x C``. Images smaller than the
  window use a window of their size.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  lead = a.shape[:-3]
  h, w, c = a.shape[-3:]
  window = min(window, h, w)
  kernel = _gaussian_kernel(window, sigma)
  a = a.reshape((-1, h, w, c))
  b = b.reshape((-1, h, w, c))
  c1 = (0.01 * data_range) ** 2
  c2 = (0.03 * data_range) ** 2
  mu_a, mu_b = _blur(a, kernel), _blur(b, kernel)
  var_a = _blur(a * a, kernel) - mu_a ** 2
  var_b = _blur(b * b, kernel) - mu_b ** 2
  cov = _blur(a * b, kernel) - mu_a * mu_b
  num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
  den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
  out = num / den
  return out.reshape(lead + out.shape[1:])


def ssim(a: jax.Array, b: jax.Array, data_range: float = 2.0,
         window: int = 11, sigma: float = 1.5) -> jax.Array:
  """Mean SSIM per image of ``... x H x W x C`` arrays; returns ``...``."""
  return jnp.mean(ssim_map(a, b, data_range, window, sigma), axis=(-3, -2, -1))
