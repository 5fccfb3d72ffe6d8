"""The image motion a viewer sees between two frames of the synthetic world.

A camera pose is a poor target for a small pose encoder: pan and truck move
the image alike, and so do tilt and pedestal, so a probe that asks for one of
them alone can fail while the encoder knows the image motion. This module
describes a frame pair by what is visible instead: a robust fit of a
similarity transform (shift, rotation, scale) to the true flow, computed
from the world's depth and cameras, and the parallax that the fit leaves.

  ``TERMS``: shift_x, shift_y (where the image centre's content moved, in
  normalised image units: the image spans [-1, 1]), rotation (radians,
  image plane), log_scale (log of the zoom), parallax (RMS residual flow of
  the visible pixels after the fit, normalised units).

``data.motion_pairs`` renders frame pairs labelled with these terms;
``r2_scores`` and ``ridge_r2`` score predictions of them (used by
``benchmarks/pose_probe.py`` and the trainer's probe of latent poses).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TERMS = ("shift_x", "shift_y", "rotation", "log_scale", "parallax")
FIT_STRIDE = 4  # Fit on every 4th pixel of each axis.
ROBUST_SCALE = 0.05  # Cauchy weight scale of the residual (normalised units).
FIT_ITERATIONS = 4  # Re-weighted least-squares rounds.


def fit_similarity(offset: jax.Array, visible: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Robust similarity fit to a flow field.

  Args:
    offset: ``B x S x S x 2``: where each target pixel lies in the other
      frame, minus its own position (normalised coordinates, x then y), as
      ``data.true_flow.ground_truth_flow`` gives it.
    visible: ``B x S x S`` bool, the pixels seen in both frames.

  Returns:
    ``(terms B x 5 in TERMS order, visible fraction B)``. The fit maps
    ``p -> s R p + t`` (p the target pixel, image centre at 0) by iteratively
    re-weighted least squares with Cauchy weights; frames with no visible
    pixel give zeros.
  """
  s = offset.shape[1]
  from xfactor_core.models import flow  # pylint: disable=g-import-not-at-top
  grid = flow.pixel_grid(s, s)[::FIT_STRIDE, ::FIT_STRIDE].reshape(-1, 2)
  moved = grid + offset[:, ::FIT_STRIDE, ::FIT_STRIDE].reshape(
      offset.shape[0], -1, 2)
  mask = visible[:, ::FIT_STRIDE, ::FIT_STRIDE].reshape(
      visible.shape[0], -1).astype(jnp.float32)
  gx, gy = grid[:, 0], grid[:, 1]
  zeros, ones = jnp.zeros_like(gx), jnp.ones_like(gx)
  # Rows for x' = a x - b y + tx and y' = b x + a y + ty.
  design = jnp.concatenate([jnp.stack([gx, -gy, ones, zeros], -1),
                            jnp.stack([gy, gx, zeros, ones], -1)])  # 2N 4
  target = jnp.concatenate([moved[..., 0], moved[..., 1]], axis=1)  # B 2N

  def solve(weights):  # weights B N
    w2 = jnp.concatenate([weights, weights], axis=1)  # B 2N
    normal = jnp.einsum("bn,ni,nj->bij", w2, design, design)
    rhs = jnp.einsum("bn,ni,bn->bi", w2, design, target)
    return jnp.linalg.solve(normal + 1e-6 * jnp.eye(4), rhs[..., None])[..., 0]

  def residual(params):
    r = target - jnp.einsum("ni,bi->bn", design, params)
    n = grid.shape[0]
    return jnp.sqrt(r[:, :n] ** 2 + r[:, n:] ** 2)  # B N

  params = solve(mask)
  for _ in range(FIT_ITERATIONS):
    r = residual(params)
    params = solve(mask / (1.0 + (r / ROBUST_SCALE) ** 2))
  count = jnp.maximum(mask.sum(1), 1.0)
  parallax = jnp.sqrt(jnp.sum(mask * residual(params) ** 2, axis=1) / count)
  a, b, tx, ty = (params[:, i] for i in range(4))
  terms = jnp.stack([tx, ty, jnp.arctan2(b, a),
                     0.5 * jnp.log(jnp.maximum(a * a + b * b, 1e-8)),
                     parallax], axis=-1)
  fraction = mask.mean(1)
  return jnp.where(fraction[:, None] > 0, terms, 0.0), fraction


def flip_terms(terms: np.ndarray) -> np.ndarray:
  """The terms of the horizontally mirrored pair: shift_x and rotation change
  sign."""
  return terms * np.array([-1.0, 1.0, -1.0, 1.0, 1.0], terms.dtype)


def r2_scores(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
  """Coefficient of determination per term (``N x 5`` each): 1 is perfect,
  0 is as good as predicting the mean, below 0 is worse."""
  prediction = np.asarray(prediction, np.float64)
  target = np.asarray(target, np.float64)
  residual = np.sum((prediction - target) ** 2, axis=0)
  total = np.sum((target - target.mean(0)) ** 2, axis=0)
  return {name: float(1.0 - r / max(t, 1e-12))
          for name, r, t in zip(TERMS, residual, total)}


def ridge_predict(train_x: np.ndarray, train_y: np.ndarray,
                  test_x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
  """Predictions for ``test_x`` of a ridge regression (with a bias) fitted to
  ``train_x -> train_y`` on features standardised by the training set."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  a = np.concatenate([(train_x - mean) / std, np.ones((len(train_x), 1))], 1)
  b = np.concatenate([(test_x - mean) / std, np.ones((len(test_x), 1))], 1)
  w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ train_y)
  return b @ w


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
             test_y: np.ndarray, alpha: float = 1.0) -> dict[str, float]:
  """R2 per term of :func:`ridge_predict` on the test set."""
  return r2_scores(ridge_predict(train_x, train_y, test_x, alpha), test_y)
