"""The global image motion of frame pairs: the robust fit and its scores."""

import jax.numpy as jnp
import numpy as np
import pytest

from xfactor_core.metrics import global_motion
from xfactor_core.models import flow

SIZE = 64


def _similarity_offset(shift, angle, log_scale):
  grid = np.asarray(flow.pixel_grid(SIZE, SIZE))
  s = np.exp(log_scale)
  c, n = s * np.cos(angle), s * np.sin(angle)
  moved = np.stack([c * grid[..., 0] - n * grid[..., 1] + shift[0],
                    n * grid[..., 0] + c * grid[..., 1] + shift[1]], -1)
  return (moved - grid).astype(np.float32)


def test_the_fit_recovers_a_similarity_despite_outliers():
  rng = np.random.default_rng(0)
  truth = np.array([0.3, -0.15, 0.1, 0.08])
  offset = _similarity_offset(truth[:2], truth[2], truth[3])
  outliers = rng.random((SIZE, SIZE)) < 0.2  # a fifth of pixels move wildly
  offset[outliers] += rng.normal(0, 0.5, (outliers.sum(), 2))
  visible = np.ones((SIZE, SIZE), bool)
  visible[:, :8] = False  # and some are not seen at all
  terms, fraction = global_motion.fit_similarity(offset[None], visible[None])
  terms = np.asarray(terms)[0]
  np.testing.assert_allclose(terms[:4], truth, rtol=0.05, atol=0.01)
  assert float(fraction[0]) == pytest.approx(56 / 64)
  clean, _ = global_motion.fit_similarity(
      _similarity_offset(truth[:2], truth[2], truth[3])[None], visible[None])
  assert float(clean[0, 4]) < 1e-3  # no parallax without outliers
  assert terms[4] > 10 * float(clean[0, 4])


def test_a_mirrored_flow_has_the_flipped_terms():
  rng = np.random.default_rng(1)
  offset = (_similarity_offset([0.2, 0.1], -0.2, 0.05)
            + rng.normal(0, 0.02, (SIZE, SIZE, 2)).astype(np.float32))
  mirrored = offset[:, ::-1] * np.array([-1.0, 1.0], np.float32)
  visible = np.ones((2, SIZE, SIZE), bool)
  terms, _ = global_motion.fit_similarity(jnp.stack([offset, mirrored]),
                                          visible)
  terms = np.asarray(terms)
  np.testing.assert_allclose(terms[1], global_motion.flip_terms(terms[0]),
                             rtol=0.0, atol=0.01)  # other noise samples


def test_r2_is_one_for_the_truth_and_zero_for_the_mean():
  rng = np.random.default_rng(2)
  target = rng.normal(size=(50, 5))
  assert all(v == pytest.approx(1.0)
             for v in global_motion.r2_scores(target, target).values())
  mean = np.broadcast_to(target.mean(0), target.shape)
  assert all(v == pytest.approx(0.0, abs=1e-9)
             for v in global_motion.r2_scores(mean, target).values())
  x = rng.normal(size=(200, 3))
  y = np.concatenate([x @ rng.normal(size=(3, 5))[:, :4],
                      rng.normal(size=(200, 1))], 1)
  scores = global_motion.ridge_r2(x[:150], y[:150], x[150:], y[150:], 1e-3)
  assert min(scores[t] for t in global_motion.TERMS[:4]) > 0.99
  assert scores["parallax"] < 0.2  # noise is not predictable
