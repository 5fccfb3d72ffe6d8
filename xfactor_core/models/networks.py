"""The two XFactor networks, PoseEnc and Render, as Flax linen modules.

Weight-compatible with the published checkpoints (parameter paths and shapes of
``official_param_tree.json``) and numerically equal to the published networks
(golden files in ``tests/data/parity``). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from xfactor_core.models import flow
from xfactor_core.models import pair_stems
from xfactor_core.models import warp as warp_lib
from xfactor_core.models.layers import (LN_EPSILON, MLP2, MLP3, MultiViewLayer,
                                        patchify, rotary_angles, unpatchify)

Dtype = Any
RENDER_OUTPUTS = ("rgb", "flow", "warp")
# The outputs that copy the target from the context views: they sample a
# context photo at any output resolution (``sample_from``).
SAMPLING_OUTPUTS = ("flow", "warp")


def _check_images(name: str, x: jax.Array, patch_size: int) -> None:
  if x.ndim != 5 or x.shape[-1] != 3:
    raise ValueError(f"{name} must be B x V x H x W x 3 (RGB, channels last), "
                     f"got shape {tuple(x.shape)}")
  h, w = x.shape[2:4]
  if h % patch_size or w % patch_size:
    raise ValueError(
        f"{name} frames are {h}x{w}, not a multiple of the patch size "
        f"{patch_size}; resize them (xfactor_core.inference.prepare_frames does)")


def _check_pmask(pmask: Optional[jax.Array], batch: int, tokens: int) -> None:
  if pmask is not None and tuple(pmask.shape) != (batch, tokens):
    raise ValueError(f"pmask must be B x T = ({batch}, {tokens}) (one 0/1 value "
                     f"per patch token), got shape {tuple(pmask.shape)}")


def _run_layers(parent: nn.Module, x: jax.Array, cos: jax.Array, sin: jax.Array,
                segment_ids: Optional[jax.Array]) -> jax.Array:
  layer_cls = nn.remat(MultiViewLayer) if parent.remat else MultiViewLayer
  for i in range(parent.num_layers):
    x = layer_cls(parent.features, parent.num_heads,
                  attention_impl=parent.attention_impl,
                  attention_dtype=parent.attention_dtype, dtype=parent.dtype,
                  name=f"layers_{i}")(x, cos, sin, segment_ids)
  return x


class PoseHead(nn.Module):
  """P = MLP3(concat(z, z0)) - MLP3(concat(z0, z0)); view 0 is exactly zero."""
  features: int
  pose_dim: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z: ``B x V x 2 x C`` -> ``B x V x 2 x pose_dim``."""
    mlp = MLP3(self.features, self.pose_dim, dtype=self.dtype)
    z0 = jnp.broadcast_to(z[:, :1], z.shape)
    return (mlp(jnp.concatenate([z, z0], axis=-1))
            - mlp(jnp.concatenate([z0, z0], axis=-1)))


class PoseEnc(nn.Module):
  """Latent pose encoder.

  Call ``apply({"params": p}, x, pmask=None, return_probe=False)`` with
  ``x: B x V x H x W x 3`` in [-1, 1] and ``pmask: B x T`` (0/1 per patch token).
  Returns ``B x V x 2 x pose_dim`` (one latent per mask half) or, without a
  pmask, ``B x V x pose_dim``; view 0 (the reference) is exactly zero. With
  ``return_probe`` also returns the probe features ``concat(z0, z)``
  (``... x 2*features``) reduced the same way.
  """
  features: int
  num_heads: int
  patch_size: int
  num_layers: int
  pose_dim: int
  num_global_tokens: int = 32
  remat: bool = False
  attention_impl: str = "auto"
  attention_dtype: Optional[Dtype] = None
  dtype: Optional[Dtype] = None
  pair_input: str = "views"

  @nn.compact
  def __call__(self, x: jax.Array, pmask: Optional[jax.Array] = None,
               return_probe: bool = False):
    _check_images("PoseEnc input", x, self.patch_size)
    if self.pair_input not in pair_stems.PAIR_INPUTS:
      raise ValueError(f"PoseEnc pair_input={self.pair_input!r}: use one of "
                       f"{pair_stems.PAIR_INPUTS}")
    b, v, h, w, _ = x.shape
    p, c, g = self.patch_size, self.features, self.num_global_tokens
    gh, gw = h // p, w // p
    t = gh * gw
    _check_pmask(pmask, b, t)

    tokens = nn.Dense(c, dtype=self.dtype)(patchify(x, p))  # B V T C
    paired = pair_stems.pair_embedding(self.pair_input, c, p, x, pmask,
                                       dtype=self.dtype)
    if paired is not None:
      tokens = tokens + paired.astype(tokens.dtype)
    global_embed = self.param("global_embed", nn.initializers.normal(0.02),
                              (g, c), jnp.float32)
    extra = jnp.broadcast_to(
        jnp.concatenate([global_embed, global_embed]).astype(tokens.dtype),
        (b, v, 2 * g, c))
    tokens = jnp.concatenate([tokens, extra], axis=2)  # B V (T+2G) C

    patch_seg = (jnp.zeros((b, t), jnp.int32) if pmask is None
                 else pmask.astype(jnp.int32))
    segment_ids = jnp.concatenate(
        [patch_seg, jnp.zeros((b, g), jnp.int32), jnp.ones((b, g), jnp.int32)],
        axis=1)
    angles = rotary_angles(gh, gw, c // self.num_heads, num_extra=2 * g)
    tokens = _run_layers(self, tokens, jnp.cos(angles), jnp.sin(angles),
                         segment_ids)

    z = tokens[:, :, jnp.array([t, t + g])]  # B V 2 C
    z = jax.nn.gelu(nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype)(z))
    pose = PoseHead(c, self.pose_dim, dtype=self.dtype)(z).astype(jnp.float32)
    probe = None
    if return_probe:
      z0 = jnp.broadcast_to(z[:, :1], z.shape)
      probe = jnp.concatenate([z0, z], axis=-1).astype(jnp.float32)
    if pmask is None:
      pose = pose[:, :, 0]
      probe = None if probe is None else probe[:, :, 0]
    return (pose, probe) if return_probe else pose


class Render(nn.Module):
  """Renderer: context views + latent poses -> target view.

  Call ``apply({"params": p}, x, P, pmask=None)`` with context
  ``x: B x (V-1) x H x W x 3`` in [-1, 1], poses ``P: B x V x pose_dim`` or
  ``B x V x 2 x pose_dim`` (index V-1 is the target), ``pmask: B x T``.
  Returns the target ``B x H x W x 3`` in [-1, 1].

  ``output="rgb"`` is the published network: the target tokens are decoded to
  pixels. ``output="flow"`` replaces that head by an appearance-flow head
  (:mod:`xfactor_core.models.flow`): the target is copied from the context
  views through predicted per-pixel offsets and confidences, blended with an
  RGB fallback. Flow renderers take two more keywords:

  * ``sample_from``: ``B x (V-1) x H' x W' x 3``, the same context views at
    any output resolution (e.g. the user's full-resolution photo); the flow
    predicted at ``H x W`` is upsampled and samples them, and the output is
    ``B x H' x W' x 3``. Default: ``x`` itself.
  * ``return_flow``: also return ``{"field": FlowField at H x W, "weights":
    B x V x H' x W' blend weights}``.

  ``output="warp"`` (:mod:`xfactor_core.models.warp`) samples each context
  view at p + F(p), F = the view's homography (``GlobalWarpHead``, at the
  output grid) + a residual predicted on the token grid and upsampled
  bilinearly: continuous everywhere. It takes ``sample_from`` as the flow
  renderer does; ``return_flow`` returns ``{"field": WarpField (token grid),
  "warp": Warp at H' x W', "homography": B x N [x 2] x 8, "weights",
  "offset": B x N x H' x W' x 2 (F), "residual": the same for R}``.
  ``global_warp`` is always on for it.
  """
  features: int
  num_heads: int
  patch_size: int
  num_layers: int
  remat: bool = False
  attention_impl: str = "auto"
  attention_dtype: Optional[Dtype] = None
  dtype: Optional[Dtype] = None
  output: str = "rgb"
  global_warp: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, poses: jax.Array,
               pmask: Optional[jax.Array] = None, *,
               sample_from: Optional[jax.Array] = None,
               return_flow: bool = False):
    if self.output not in RENDER_OUTPUTS:
      raise ValueError(f"Render output={self.output!r}: use one of "
                       f"{RENDER_OUTPUTS}")
    if self.output == "rgb" and (sample_from is not None or return_flow):
      raise ValueError(
          "sample_from and return_flow need a flow renderer; this Render has "
          "output='rgb' (the published head), which paints pixels at the "
          "model resolution: drop them, or use a checkpoint trained with "
          "output='flow'")
    _check_images("Render context", x, self.patch_size)
    b, n_ctx, h, w, _ = x.shape
    p, c = self.patch_size, self.features
    gh, gw = h // p, w // p
    t = gh * gw
    _check_pmask(pmask, b, t)
    if poses.ndim not in (3, 4) or poses.shape[:2] != (b, n_ctx + 1):
      raise ValueError(
          f"Render poses must be B x V x pose_dim or B x V x 2 x pose_dim with "
          f"V = context views + 1 = {n_ctx + 1} and B = {b}, got shape "
          f"{tuple(poses.shape)}")
    if sample_from is not None and (
        sample_from.ndim != 5 or sample_from.shape[:2] != (b, n_ctx)
        or sample_from.shape[-1] != 3):
      raise ValueError(
          f"sample_from must hold the same {n_ctx} context view(s) as "
          f"B x (V-1) x H' x W' x 3 with B = {b}, got shape "
          f"{tuple(sample_from.shape)}")

    if poses.ndim == 4:
      if pmask is None:
        token_pose = jnp.broadcast_to(poses[:, :, None, 0],
                                      (b, n_ctx + 1, t, poses.shape[-1]))
      else:
        half = pmask.astype(bool)[:, None, :, None]
        token_pose = jnp.where(half, poses[:, :, None, 1], poses[:, :, None, 0])
    else:
      token_pose = jnp.broadcast_to(poses[:, :, None],
                                    (b, n_ctx + 1, t, poses.shape[-1]))
    token_pose = token_pose.astype(self.dtype or jnp.float32)

    patches = patchify(x, p).astype(token_pose.dtype)
    context = MLP2(c, c, dtype=self.dtype)(
        jnp.concatenate([patches, token_pose[:, :-1]], axis=-1))
    target = MLP2(c, c, dtype=self.dtype)(token_pose[:, -1:])
    tokens = jnp.concatenate([context, target], axis=1)  # B V T C

    segment_ids = None if pmask is None else pmask.astype(jnp.int32)
    angles = rotary_angles(gh, gw, c // self.num_heads)
    tokens = _run_layers(self, tokens, jnp.cos(angles), jnp.sin(angles),
                         segment_ids)

    if self.output == "warp":
      sources = x if sample_from is None else sample_from
      out_h, out_w = sources.shape[2:4]
      field = warp_lib.CoarseWarpHead(c, dtype=self.dtype)(
          tokens[:, -1], tokens[:, :-1], gh, gw)
      homography = self._homography(poses)
      warp = warp_lib.warp_at(field, self._offsets_of(
          homography, pmask, out_h, out_w, (gh, gw)))
      image = warp_lib.render_warp(warp, sources)
      if return_flow:
        return image, {"field": field, "warp": warp, "homography": homography,
                       "weights": warp.weights, "offset": warp.offset,
                       "residual": warp.residual}
      return image

    if self.output == "flow":
      field = flow.AppearanceFlowHead(c, p, dtype=self.dtype)(
          tokens[:, -1], tokens[:, :-1], h, w)
      if self.global_warp:
        field = field._replace(offset=field.offset + self._global_offsets(
            poses, pmask, h, w))
      image, weights = flow.compose(
          field, x if sample_from is None else sample_from)
      if return_flow:
        return image, {"field": field, "weights": weights}
      return image

    out = jax.nn.gelu(nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype)(
        tokens[:, -1]))
    out = MLP3(c, p * p * 3, dtype=self.dtype)(out).astype(jnp.float32)
    out = 2.0 * (jax.nn.sigmoid(out) - 0.5)
    return unpatchify(out, p, h, w)

  def _global_offsets(self, poses: jax.Array, pmask: Optional[jax.Array],
                      h: int, w: int) -> jax.Array:
    """``B x N x h x w x 2``: each context view's homography (from the target
    latent and the view's) at every pixel, using each pixel's mask half."""
    p = self.patch_size
    return self._offsets_of(self._homography(poses), pmask, h, w,
                            (h // p, w // p))

  def _homography(self, poses: jax.Array) -> jax.Array:
    """``B x N x K x 8`` homography parameters (K = 1, or 2 mask halves)."""
    halves = poses if poses.ndim == 4 else poses[:, :, None]  # B V K D
    return flow.GlobalWarpHead(self.features)(halves[:, -1:], halves[:, :-1])

  def _offsets_of(self, warp: jax.Array, pmask: Optional[jax.Array],
                  h: int, w: int, grid: tuple[int, int]) -> jax.Array:
    """``B x N x h x w x 2`` offsets of ``B x N x K x 8`` homographies at an
    ``h x w`` grid, each pixel taking its mask half's (nearest token)."""
    offsets = flow.homography_offsets(warp, h, w)  # B N K h w 2
    if warp.shape[2] == 1 or pmask is None:
      return offsets[:, :, 0]
    grid_h, grid_w = grid
    half = pmask.reshape(warp.shape[0], grid_h, grid_w)
    rows = (jnp.arange(h) * grid_h) // h
    cols = (jnp.arange(w) * grid_w) // w
    half = half[:, rows][:, :, cols]  # B h w
    return jnp.where(half[:, None, :, :, None] == 1, offsets[:, :, 1],
                     offsets[:, :, 0])
