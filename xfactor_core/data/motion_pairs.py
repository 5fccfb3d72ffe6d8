"""Frame pairs of the synthetic world, labelled with their global motion.

The data of the motion probe (``benchmarks/pose_probe.py`` and the trainer's
probe of latent poses, ``training.evaluation``): pairs of frames of one clip
with the terms of ``metrics.global_motion`` (shift, rotation and scale of a
robust similarity fit to the true flow, ``data.true_flow``, and the parallax
the fit leaves). Every pair is a pure function of (seed, clip, gap).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core.data import scene_sampling, synthetic, true_flow
from xfactor_core.metrics import global_motion

MIN_VISIBLE = 0.25  # Pairs that share less of the view are left out.


@jax.jit
def pair_terms(depth: jax.Array, camera_from_world: jax.Array,
               intrinsics: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Global-motion terms of frame pairs from their depth and cameras.

  Args:
    depth: ``B x 2 x S x S`` (frame 0, frame g).
    camera_from_world: ``B x 2 x 4 x 4``.
    intrinsics: ``B x 3 x 3``.

  Returns:
    ``(terms B x 5 in global_motion.TERMS order, visible fraction B)`` of
    the flow from frame g (the target) to frame 0.
  """
  offset, visible = true_flow.ground_truth_flow(depth, camera_from_world,
                                                intrinsics)
  return global_motion.fit_similarity(offset[:, 0], visible[:, 0])


def motion_dataset(seed: int, num_clips: int, size: int,
                   gaps: Sequence[int] = (1, 2, 3), motion_factor: float = 1.0,
                   chunk: int = 32) -> dict[str, np.ndarray]:
  """Frame pairs of the synthetic world with their global-motion terms.

  Clips of ``max(gaps) + 1`` frames from world ``seed`` (camera baselines
  scaled by ``motion_factor``, rendered ``chunk`` clips at a time) give the
  pairs (frame 0, frame g) for every gap g; pairs that share less than
  ``MIN_VISIBLE`` of the view are dropped.

  Returns:
    ``frames`` ``N x 2 x S x S x 3`` uint8, ``terms`` ``N x 5`` float32
    (``global_motion.TERMS``), ``gap`` ``N`` int32, ``visible`` ``N``
    float32 and ``clip`` ``N`` int32 (the clip each pair came from).
  """
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
      terms, visible = pair_terms(batch["depth"][:, pick],
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
