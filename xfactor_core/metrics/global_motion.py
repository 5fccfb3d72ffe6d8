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

``motion_dataset`` renders frame pairs with these targets; ``r2_scores`` and
``ridge_r2`` score predictions of them (used by ``benchmarks/pose_probe.py``
and the trainer's probe of latent poses).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

TERMS = ("shift_x", "shift_y", "rotation", "log_scale", "parallax")
FIT_STRIDE = 4  # Fit on every 4th pixel of each axis.
ROBUST_SCALE = 0.05  # Cauchy weight scale of the residual (normalised units).
FIT_ITERATIONS = 4  # Re-weighted least-squares rounds.
MIN_VISIBLE = 0.25  # Pairs that share less of the view are left out.


def fit_similarity(offset: jax.Array, visible: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Robust similarity fit to a flow field.

  Args:
    offset: ``B x S x S x 2``: where each target pixel lies in the other
      frame, minus its own position (normalised coordinates, x then y), as
      ``training.objective.ground_truth_flow`` gives it.
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


def _pair_terms(depth, camera_from_world, intrinsics):
  from xfactor_core.training import objective  # pylint: disable=g-import-not-at-top
  offset, visible = objective.ground_truth_flow(depth, camera_from_world,
                                                intrinsics)
  return fit_similarity(offset[:, 0], visible[:, 0])


_pair_terms_jit = jax.jit(_pair_terms)


def motion_dataset(seed: int, num_clips: int, size: int,
                   gaps: Sequence[int] = (1, 2, 3), motion_factor: float = 1.0,
                   chunk: int = 32) -> dict[str, np.ndarray]:
  """Frame pairs of the synthetic world with their global-motion terms.

  Clips of ``max(gaps) + 1`` frames from world ``seed`` give the pairs
  (frame 0, frame g) for every gap g; pairs that share less than
  ``MIN_VISIBLE`` of the view are dropped.

  Returns:
    ``frames`` ``N x 2 x S x S x 3`` uint8, ``terms`` ``N x 5`` float32
    (``TERMS``), ``gap`` ``N`` int32, ``visible`` ``N`` float32 and
    ``clip`` ``N`` int32 (the clip each pair came from).
  """
  from xfactor_core.data import scene_sampling, synthetic  # pylint: disable=g-import-not-at-top
  world = scene_sampling.WorldSettings(motion_factor=float(motion_factor))
  num_frames = max(gaps) + 1
  out = {k: [] for k in ("frames", "terms", "gap", "visible", "clip")}
  key = jax.random.key(seed)
  for start in range(0, num_clips, chunk):
    count = min(chunk, num_clips - start)
    batch = synthetic.sample_batch(jax.random.fold_in(key, start), count,
                                   num_frames, size, world=world,
                                   with_depth=True)
    for gap in gaps:
      pick = jnp.array([0, gap])
      terms, visible = _pair_terms_jit(batch["depth"][:, pick],
                                       batch["camera_from_world"][:, pick],
                                       batch["intrinsics"][:, 0])
      out["frames"].append(np.asarray(batch["frames"][:, pick]))
      out["terms"].append(np.asarray(terms, np.float32))
      out["gap"].append(np.full(count, gap, np.int32))
      out["visible"].append(np.asarray(visible, np.float32))
      out["clip"].append(np.arange(start, start + count, dtype=np.int32))
  data = {k: np.concatenate(v) for k, v in out.items()}
  keep = data["visible"] >= MIN_VISIBLE
  return {k: v[keep] for k, v in data.items()}


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
