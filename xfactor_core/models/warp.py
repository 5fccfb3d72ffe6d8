"""The smooth-warp output of the renderer (``Render(..., output="warp")``).

The target view is each context view sampled at ``p + F(p)``, where the warp

  F(p) = H(p) + R(p)

is continuous everywhere by construction:

* ``H``: the homography per context view that :class:`flow.GlobalWarpHead`
  predicts from the target's and the view's latents, evaluated at the output
  pixel grid itself (not upsampled);
* ``R``: a residual offset field predicted on the token grid (one 2-vector per
  patch, not one per pixel as :class:`flow.AppearanceFlowHead` does), then
  upsampled bilinearly to the output resolution.

Per-view confidence logits and the fallback colour (with its logit) are
predicted on the same coarse grid and upsampled the same way. The blend is a
softmax over ``[views..., fallback]``, so the weights sum to one.

Nothing in F jumps at a patch border: a head that cannot paint a mosaic. At
any output resolution the same F samples the user's photo (``sample_from``),
so detail is the photo's own. Where F looks past the photo's edge, the photo
is mirrored about it (:data:`SOURCE_BORDER`) rather than its edge pixels
stretched.

At initialisation the homography and residual heads output zeros (F is the
identity), the view logits are 0 and the fallback logit is
:data:`FALLBACK_LOGIT_INIT` = -10: the fallback's weight is
``e^-10 / (N + e^-10)`` (4.5e-5 beside one view), so the photo comes back
unchanged to a relative 5e-5. The fallback stays trainable (with Adam, its
small gradient is no obstacle) for what no view shows.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from xfactor_core.models import flow
from xfactor_core.models.layers import LN_EPSILON

Dtype = Any
# One unit of the raw residual output moves the sample by half the image side.
OFFSET_SCALE = 0.5
# The fallback starts negligible: the warp model begins by moving pixels.
FALLBACK_LOGIT_INIT = -10.0
# How the views are read where the warp looks past their edges.
SOURCE_BORDER = "reflect"


class WarpField(NamedTuple):
  """The head's coarse prediction (``gh x gw``: the token grid).

  Attributes:
    residual: ``B x N x gh x gw x 2`` residual offsets (x, y) into each context
      view, normalised coordinates (the image spans [-1, 1]).
    view_logit: ``B x N x gh x gw`` confidence logits of the context views.
    rgb: ``B x gh x gw x 3`` fallback colour in [-1, 1].
    rgb_logit: ``B x gh x gw`` confidence logit of the fallback.
  """
  residual: jax.Array
  view_logit: jax.Array
  rgb: jax.Array
  rgb_logit: jax.Array


def _fallback_bias(key, shape, dtype=jnp.float32):
  """RGB 0 (grey), logit FALLBACK_LOGIT_INIT."""
  del key
  return jnp.zeros(shape, dtype).at[3].set(FALLBACK_LOGIT_INIT)


class CoarseWarpHead(nn.Module):
  """Target and context tokens -> :class:`WarpField` on the token grid.

  The per-view part reads the target token with the context view's token at
  the same grid position (weights shared across views, so one set of weights
  serves any number of context views).

  Attributes:
    features: token width C.
    dtype: compute dtype.
  """
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, target: jax.Array, context: jax.Array, grid_h: int,
               grid_w: int) -> WarpField:
    """target ``B x T x C``, context ``B x N x T x C`` with ``T = gh * gw``."""
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype,
                                     name=name)
    t = jax.nn.gelu(norm("target_norm")(target))
    c = jax.nn.gelu(norm("context_norm")(context))
    pair = jnp.concatenate([jnp.broadcast_to(t[:, None], c.shape), c], axis=-1)
    per_view = flow._HeadMLP(self.features, 3, dtype=self.dtype,  # pylint: disable=protected-access
                             name="view_head")(pair).astype(jnp.float32)
    fallback = flow._HeadMLP(self.features, 4, bias_init=_fallback_bias,  # pylint: disable=protected-access
                             dtype=self.dtype,
                             name="fallback_head")(t).astype(jnp.float32)
    b, n = per_view.shape[:2]
    per_view = per_view.reshape(b, n, grid_h, grid_w, 3)
    fallback = fallback.reshape(b, grid_h, grid_w, 4)
    return WarpField(
        residual=OFFSET_SCALE * per_view[..., :2],
        view_logit=per_view[..., 2],
        rgb=2.0 * (jax.nn.sigmoid(fallback[..., :3]) - 0.5),
        rgb_logit=fallback[..., 3])


class Warp(NamedTuple):
  """The warp and blend at an output resolution ``H x W``.

  Attributes:
    offset: ``B x N x H x W x 2`` F = homography + upsampled residual.
    residual: ``B x N x H x W x 2`` the upsampled residual alone.
    weights: ``B x (N+1) x H x W`` blend weights (views, then the fallback),
      summing to one.
    rgb: ``B x H x W x 3`` the upsampled fallback colour.
  """
  offset: jax.Array
  residual: jax.Array
  weights: jax.Array
  rgb: jax.Array


def upsample_coarse(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear upsampling of ``... x gh x gw x C`` (half-pixel centres, edges
  clamped): continuous across cell borders."""
  return flow._resize(x, height, width)  # pylint: disable=protected-access


def warp_at(field: WarpField, homography_offset: jax.Array) -> Warp:
  """The warp at the resolution of ``homography_offset``.

  Args:
    field: the coarse prediction.
    homography_offset: ``B x N x H x W x 2`` the homographies' offsets at the
      output pixel grid (``flow.homography_offsets``).
  """
  height, width = homography_offset.shape[-3:-1]
  residual = upsample_coarse(field.residual, height, width)
  view_logit = upsample_coarse(field.view_logit[..., None], height,
                               width)[..., 0]
  rgb_logit = upsample_coarse(field.rgb_logit[..., None], height, width)[..., 0]
  logits = jnp.concatenate([view_logit, rgb_logit[:, None]], axis=1)
  return Warp(offset=homography_offset + residual, residual=residual,
              weights=jax.nn.softmax(logits, axis=1),
              rgb=upsample_coarse(field.rgb, height, width))


def sample_views(sources: jax.Array, coords: jax.Array) -> jax.Array:
  """``B x N x H' x W' x 3`` views sampled at ``B x N x H x W x 2`` normalised
  coordinates (mirrored past the edges): ``B x N x H x W x 3``."""
  sample = jax.vmap(jax.vmap(functools.partial(flow.sample_bilinear,
                                               border=SOURCE_BORDER)))
  return sample(sources.astype(jnp.float32), coords)


def blend(sources: jax.Array, coords: jax.Array, weights: jax.Array,
          rgb: jax.Array) -> jax.Array:
  """The rendered view: ``sum_v weights_v * sources_v(coords_v) + weight_f *
  rgb``.

  Args:
    sources: ``B x N x H' x W' x 3`` context views.
    coords: ``B x N x H x W x 2`` where each output pixel samples each view.
    weights: ``B x (N+1) x H x W``.
    rgb: ``B x H x W x 3`` fallback colour.

  Returns:
    ``B x H x W x 3``.
  """
  colours = jnp.concatenate([sample_views(sources, coords), rgb[:, None]],
                            axis=1)
  return jnp.sum(weights[..., None] * colours, axis=1)


def render_warp(warp: Warp, sources: jax.Array) -> jax.Array:
  """The target from a :class:`Warp` at the sources' resolution."""
  height, width = sources.shape[2:4]
  coords = flow.pixel_grid(height, width) + warp.offset
  return blend(sources, coords, warp.weights, warp.rgb)


# ------------------------------------------------------ composed camera path --


class ChainState(NamedTuple):
  """A rendered frame as a warp of the context: what a composed camera path
  carries from one frame to the next (one output resolution ``H x W``).

  Attributes:
    coords: ``B x N x H x W x 2`` where each output pixel samples each view.
    weights: ``B x (N+1) x H x W`` blend weights.
    rgb: ``B x H x W x 3`` fallback colour.
  """
  coords: jax.Array
  weights: jax.Array
  rgb: jax.Array


def chain_start(warp: Warp) -> ChainState:
  """The state of frame 0 (the render at the reference latent)."""
  height, width = warp.offset.shape[-3:-1]
  return ChainState(coords=flow.pixel_grid(height, width) + warp.offset,
                    weights=warp.weights, rgb=warp.rgb)


def chain_step(state: ChainState, step_offset: jax.Array) -> ChainState:
  """Frame k from frame k-1 and the step's warp ``F_k`` (``B x H x W x 2``,
  normalised): frame k at p is frame k-1 at ``p + F_k(p)``, so every field of
  the state is sampled there. For the coordinates this is

    C_k(p) = C_{k-1}(p + F_k(p)),  i.e.  F_total = F_k + F_prev(p + F_k)

  and for pure homographies the product of the step matrices. Where
  ``p + F_k(p)`` leaves the frame, the coordinates continue past the edge
  with the edge's own warp (``C(q) = C(edge) + q - edge``: exact for a
  translation), instead of repeating the edge's coordinates, which would
  stretch one column of the photo across the uncovered band.
  """
  height, width = step_offset.shape[-3:-1]
  points = flow.pixel_grid(height, width) + step_offset  # B H W 2
  n = state.coords.shape[1]
  resample = jax.vmap(flow.sample_bilinear)  # over B
  stacked = jnp.concatenate(
      [state.coords.transpose(0, 2, 3, 1, 4).reshape(
          state.coords.shape[0], height, width, 2 * n),
       state.weights.transpose(0, 2, 3, 1), state.rgb], axis=-1)
  moved = resample(stacked, points)  # B H W (2N + N+1 + 3)
  b = moved.shape[0]
  inside = jnp.stack([1.0 - 1.0 / width, 1.0 - 1.0 / height])  # edge centres
  beyond = points - jnp.clip(points, -inside, inside)  # B H W 2
  coords = moved[..., :2 * n].reshape(b, height, width, n, 2).transpose(
      0, 3, 1, 2, 4) + beyond[:, None]
  weights = moved[..., 2 * n:3 * n + 1].transpose(0, 3, 1, 2)
  return ChainState(coords=coords, weights=weights, rgb=moved[..., 3 * n + 1:])
