"""The true flow of the synthetic world, from its depth and cameras.

Where each pixel of a target frame lies in another frame of the same scene,
in the convention of the flow head (``models.flow``: sampling offsets in
normalised image coordinates, the image spanning [-1, 1]). Two users sit
above this module: the objective's flow supervision
(``training.objective``) and the labelled frame pairs of the motion probe
(``data.motion_pairs``), whose targets are a fit to this flow
(``metrics.global_motion``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xfactor_core.models import flow


def ground_truth_flow(depth: jax.Array, camera_from_world: jax.Array,
                      intrinsics: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Where every target pixel lies in each context view (synthetic world).

  Args:
    depth: ``B x V x S x S`` camera-frame depth of every pixel, views ordered
      ``[context..., target]``.
    camera_from_world: ``B x V x 4 x 4`` (OpenCV cameras).
    intrinsics: ``B x 3 x 3`` pixel intrinsics (pixel centres at integers).

  Returns:
    ``(offset B x (V-1) x S x S x 2, visible B x (V-1) x S x S)``: the
    sampling offsets of the flow head (normalised coordinates, the image
    spanning [-1, 1]) that bring each target pixel's surface point from each
    context view, and whether that point is in front of the context camera,
    inside its image and not hidden there (its depth agrees with the context
    view's depth map to 3%). The offsets carry no gradient.
  """
  size = depth.shape[-1]
  grid = flow.pixel_grid(size, size)  # S S 2 normalised
  pixels = (grid + 1.0) * (0.5 * size) - 0.5  # pixel coordinates (u, v)
  fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
  cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
  per = lambda a: a[:, None, None]
  d = depth[:, -1]  # B S S
  camera = jnp.stack([(pixels[..., 0] - per(cx)) / per(fx) * d,
                      (pixels[..., 1] - per(cy)) / per(fy) * d, d], -1)
  target_pose = camera_from_world[:, -1]
  world = jnp.einsum("bji,bhwj->bhwi", target_pose[:, :3, :3],
                     camera - target_pose[:, None, None, :3, 3])
  context_pose = camera_from_world[:, :-1]  # B N 4 4
  in_context = (jnp.einsum("bnij,bhwj->bnhwi", context_pose[..., :3, :3],
                           world) + context_pose[:, :, None, None, :3, 3])
  z = in_context[..., 2]
  safe_z = jnp.where(z > 1e-3, z, 1.0)
  u = per(fx)[:, None] * in_context[..., 0] / safe_z + per(cx)[:, None]
  v = per(fy)[:, None] * in_context[..., 1] / safe_z + per(cy)[:, None]
  coords = jnp.stack([(u + 0.5) * (2.0 / size) - 1.0,
                      (v + 0.5) * (2.0 / size) - 1.0], -1)  # B N S S 2
  sample = jax.vmap(jax.vmap(flow.sample_bilinear))
  seen_depth = sample(depth[:, :-1, ..., None], coords)[..., 0]
  visible = ((z > 0.05) & jnp.all(jnp.abs(coords) < 1.0, axis=-1)
             & (jnp.abs(seen_depth - z) < 0.03 * z))
  return jax.lax.stop_gradient(coords - grid), visible
