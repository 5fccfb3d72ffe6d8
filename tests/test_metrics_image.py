"""Tests of xfactor_core.metrics.image (PSNR, SSIM)."""

import numpy as np
from skimage.metrics import structural_similarity

from xfactor_core.metrics import image


def test_psnr_known_values():
  a = np.zeros((2, 8, 8, 3), np.float32)
  b = a.copy()
  b[0] += 0.2  # mse 0.04 on a range of 2 -> 10 log10(4 / 0.04) = 20 dB
  b[1] += 0.02
  np.testing.assert_allclose(image.psnr(a, b), [20.0, 40.0], rtol=1e-5)
  assert float(image.psnr(a[0], a[0])) > 100


def test_ssim_matches_scikit_image():
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (32, 32, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
  ours = float(image.ssim(a, b))
  # SSIM of the intensities in [0, 1] (the luminance term is not offset-free).
  ref = structural_similarity((a + 1) / 2, (b + 1) / 2, data_range=1.0,
                              channel_axis=-1,
                              gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
  np.testing.assert_allclose(ours, ref, atol=2e-3)
  np.testing.assert_allclose(float(image.ssim(a, a)), 1.0, atol=1e-5)
  unrelated = rng.uniform(-1, 1, a.shape).astype(np.float32)
  assert abs(float(image.ssim(a, unrelated))) < 0.1
  batch = image.ssim(np.stack([a, a]), np.stack([a, b]))
  assert batch.shape == (2,) and batch[0] > batch[1]
