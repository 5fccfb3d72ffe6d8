"""The appearance-flow output of the renderer (``Render(..., output="flow")``).

Instead of painting the target's pixels, the renderer predicts where each
target pixel can be found in the context views and copies it from there (the
idea of Zhou et al., "View Synthesis by Appearance Flow", ECCV 2016). For every
pixel of a target patch the head predicts

* per context view: a sampling offset (2 values, in normalised image
  coordinates, where [-1, 1] spans the image) and a confidence logit;
* an RGB fallback colour (for what no context view shows) and its logit.

The rendered pixel is the softmax-weighted blend of the bilinearly sampled
context views and the fallback. Copied pixels are as sharp as the context, and
because the offset field is smooth it can be upsampled: the same prediction
samples a context photo at any resolution (:func:`compose`).

The per-view part of the head reads the target token together with the token
of that context view at the same grid position, with weights shared across
views, so one set of weights serves any number of context views (a multi-view
model can start from a stereo-monocular one).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from xfactor_core.models.layers import LN_EPSILON, unpatchify

Dtype = Any
# One unit of the raw offset output moves the sample by half the image side.
OFFSET_SCALE = 0.5
# The fallback starts unlikely (weight ~0.12 beside one context view at
# logit 0), so that the renderer learns to move pixels rather than paint them.
FALLBACK_LOGIT_INIT = -2.0


class FlowField(NamedTuple):
  """The head's prediction at the model's resolution ``h x w``.

  Attributes:
    offset: ``B x N x h x w x 2`` sampling offsets (x, y) into each context
      view, normalised coordinates (the image spans [-1, 1]).
    view_logit: ``B x N x h x w`` confidence logits of the context views.
    rgb: ``B x h x w x 3`` fallback colour in [-1, 1].
    rgb_logit: ``B x h x w`` confidence logit of the fallback.
  """
  offset: jax.Array
  view_logit: jax.Array
  rgb: jax.Array
  rgb_logit: jax.Array


class _HeadMLP(nn.Module):
  """Dense(4C) -> gelu -> Dense(C) -> gelu -> Dense(out), the last layer
  zero-initialised (with a given bias), so the head starts at a known output."""
  features: int
  out_features: int
  bias_init: Any = nn.initializers.zeros
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.gelu(nn.Dense(4 * self.features, dtype=self.dtype)(x))
    x = jax.nn.gelu(nn.Dense(self.features, dtype=self.dtype)(x))
    return nn.Dense(self.out_features, kernel_init=nn.initializers.zeros,
                    bias_init=self.bias_init, dtype=self.dtype)(x)


def _fallback_bias(patch_pixels: int):
  """Bias of the fallback output: RGB 0 (grey), logit FALLBACK_LOGIT_INIT."""

  def init(key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype).reshape(patch_pixels, 4)
    return bias.at[:, 3].set(FALLBACK_LOGIT_INIT).reshape(shape)

  return init


class AppearanceFlowHead(nn.Module):
  """Target and context tokens -> :class:`FlowField` (at the model resolution).

  Attributes:
    features: token width C.
    patch_size: p; every token predicts its p x p pixels.
    dtype: compute dtype.
  """
  features: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, target: jax.Array, context: jax.Array, height: int,
               width: int) -> FlowField:
    """target ``B x T x C``, context ``B x N x T x C`` (after the layers)."""
    p = self.patch_size
    pixels = p * p
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype,
                                     name=name)
    t = jax.nn.gelu(norm("target_norm")(target))
    c = jax.nn.gelu(norm("context_norm")(context))
    pair = jnp.concatenate([jnp.broadcast_to(t[:, None], c.shape), c], axis=-1)
    per_view = _HeadMLP(self.features, pixels * 3, dtype=self.dtype,
                        name="view_head")(pair).astype(jnp.float32)
    fallback = _HeadMLP(self.features, pixels * 4,
                        bias_init=_fallback_bias(pixels), dtype=self.dtype,
                        name="fallback_head")(t).astype(jnp.float32)

    per_view = unpatchify(per_view, p, height, width)  # B N h w 3
    fallback = unpatchify(fallback, p, height, width)  # B h w 4
    return FlowField(
        offset=OFFSET_SCALE * per_view[..., :2],
        view_logit=per_view[..., 2],
        rgb=2.0 * (jax.nn.sigmoid(fallback[..., :3]) - 0.5),
        rgb_logit=fallback[..., 3])


class GlobalWarpHead(nn.Module):
  """A homography per context view from the target's and the view's latents.

  The global part of the flow: the latents alone (a short path from the pose
  encoder) move the whole view coherently, and the per-pixel head adds the
  parallax. Zero-initialised: the identity.

  Attributes:
    features: hidden width.
  """
  features: int

  @nn.compact
  def __call__(self, target_pose: jax.Array,
               context_pose: jax.Array) -> jax.Array:
    """``... x D`` latents (broadcast together) -> ``... x 8`` homography
    parameters (see :func:`homography_offsets`)."""
    shape = jnp.broadcast_shapes(target_pose.shape, context_pose.shape)
    x = jnp.concatenate([jnp.broadcast_to(target_pose, shape),
                         jnp.broadcast_to(context_pose, shape)], axis=-1)
    x = jax.nn.gelu(nn.Dense(self.features)(x.astype(jnp.float32)))
    x = jax.nn.gelu(nn.Dense(self.features)(x))
    return nn.Dense(8, kernel_init=nn.initializers.zeros)(x)


def homography_offsets(warp: jax.Array, height: int, width: int) -> jax.Array:
  """Sampling offsets of homographies at the pixel centres.

  Args:
    warp: ``... x 8`` parameters a: the homography maps normalised (x, y) to
      ``((1 + a0) x + a1 y + a2, a3 x + (1 + a4) y + a5) / (0.1 (a6 x + a7 y)
      + 1)``; zeros are the identity.
    height, width: the pixel grid.

  Returns:
    ``... x height x width x 2`` offsets (mapped minus original position).
  """
  grid = pixel_grid(height, width)  # h w 2
  x, y = grid[..., 0], grid[..., 1]
  a = [warp[..., i, None, None] for i in range(8)]
  denominator = 0.1 * (a[6] * x + a[7] * y) + 1.0
  denominator = jnp.where(denominator >= 0, 1.0, -1.0) * jnp.maximum(
      jnp.abs(denominator), 0.2)
  mapped_x = ((1.0 + a[0]) * x + a[1] * y + a[2]) / denominator
  mapped_y = (a[3] * x + (1.0 + a[4]) * y + a[5]) / denominator
  return jnp.stack([mapped_x - x, mapped_y - y], axis=-1)


# --------------------------------------------------------------- sampling --


def pixel_grid(height: int, width: int) -> jax.Array:
  """Normalised (x, y) of the pixel centres of an ``height x width`` image:
  ``height x width x 2``, the image spanning [-1, 1] on both axes."""
  x = (jnp.arange(width, dtype=jnp.float32) + 0.5) * (2.0 / width) - 1.0
  y = (jnp.arange(height, dtype=jnp.float32) + 0.5) * (2.0 / height) - 1.0
  return jnp.stack(jnp.meshgrid(x, y, indexing="xy"), axis=-1)


BORDERS = ("clamp", "reflect")


def _border_coordinate(x: jax.Array, size: int, border: str) -> jax.Array:
  """A pixel coordinate (centres at 0 .. size-1) brought inside the image:
  ``"clamp"`` repeats the edge pixel, ``"reflect"`` mirrors the image about
  its edges (cv2's BORDER_REFLECT: ``... b a | a b c ... z | z y ...``)."""
  if border == "reflect":
    period = 2.0 * size
    x = jnp.mod(x + 0.5, period)
    x = jnp.where(x >= size, period - x, x) - 0.5
  elif border != "clamp":
    raise ValueError(f"border {border!r}: use one of {BORDERS}")
  return jnp.clip(x, 0.0, size - 1.0)


def sample_bilinear(image: jax.Array, coords: jax.Array,
                    border: str = "clamp") -> jax.Array:
  """Bilinear lookup; outside the image, ``border`` (:data:`BORDERS`).

  Args:
    image: ``H x W x C``.
    coords: ``... x 2`` normalised (x, y), the image spanning [-1, 1].
    border: ``"clamp"`` (the flow renderer's, and the default) or
      ``"reflect"`` (the warp renderer's: no stretched edge pixels).

  Returns:
    ``... x C`` (differentiable in ``coords`` and ``image``).
  """
  h, w, channels = image.shape
  x = _border_coordinate((coords[..., 0] + 1.0) * (0.5 * w) - 0.5, w, border)
  y = _border_coordinate((coords[..., 1] + 1.0) * (0.5 * h) - 0.5, h, border)
  x0 = jnp.floor(jax.lax.stop_gradient(x))
  y0 = jnp.floor(jax.lax.stop_gradient(y))
  wx = (x - x0)[..., None]
  wy = (y - y0)[..., None]
  ix0 = x0.astype(jnp.int32)
  iy0 = y0.astype(jnp.int32)
  ix1 = jnp.minimum(ix0 + 1, w - 1)
  iy1 = jnp.minimum(iy0 + 1, h - 1)
  flat = image.reshape(h * w, channels)
  at = lambda iy, ix: jnp.take(flat, iy * w + ix, axis=0)
  top = at(iy0, ix0) * (1.0 - wx) + at(iy0, ix1) * wx
  bottom = at(iy1, ix0) * (1.0 - wx) + at(iy1, ix1) * wx
  return top * (1.0 - wy) + bottom * wy


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of ``B x ... x h x w x C`` (the two axes before the
  last); the identity when the size already matches."""
  if x.shape[-3:-1] == (height, width):
    return x
  shape = x.shape[:-3] + (height, width, x.shape[-1])
  return jax.image.resize(x, shape, method="linear", antialias=False)


def upsample(field: FlowField, height: int, width: int) -> FlowField:
  """The field at ``height x width`` (offsets are resolution-independent)."""
  return FlowField(
      offset=_resize(field.offset, height, width),
      view_logit=_resize(field.view_logit[..., None], height, width)[..., 0],
      rgb=_resize(field.rgb, height, width),
      rgb_logit=_resize(field.rgb_logit[..., None], height, width)[..., 0])


def compose(field: FlowField, sources: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  """Renders the target from a flow field and the context views.

  Args:
    field: at any resolution; it is upsampled to the sources' size.
    sources: ``B x N x H x W x 3`` context views to sample, in [-1, 1], at the
      output resolution.

  Returns:
    ``(image B x H x W x 3, weights B x (N+1) x H x W)``: the blend and its
    softmax weights (context views first, the fallback last).
  """
  b, n, height, width, _ = sources.shape
  field = upsample(field, height, width)
  coords = pixel_grid(height, width) + field.offset  # B N H W 2
  sample = jax.vmap(jax.vmap(sample_bilinear))  # over B, then N
  sampled = sample(sources.astype(jnp.float32), coords)  # B N H W 3
  logits = jnp.concatenate([field.view_logit, field.rgb_logit[:, None]],
                           axis=1)  # B (N+1) H W
  weights = jax.nn.softmax(logits, axis=1)
  colours = jnp.concatenate([sampled, field.rgb[:, None]], axis=1)
  image = jnp.sum(weights[..., None] * colours, axis=1)
  return image, weights
