"""Pair inputs of PoseEnc: what each patch token sees of the reference view.

The published PoseEnc embeds every view's patches on their own
(``pair_input="views"``); the only way a token learns how its view moved
against the reference view (view 0) is attention across views. At CPU scale
that is slow to learn (benchmarks/README.md, "Pose probe"). The stems here
add, to each token's own patch embedding (``PoseEnc/Dense_0``, unchanged),
an embedding of the reference view at the same place:

* ``"fused"`` (:class:`FusedPatchEmbed`): a linear map of the reference
  patch and of the difference of the two patches (early fusion);
* ``"conv"`` (:class:`ConvPairStem`): a small convolutional stem on the view,
  the reference and their difference stacked as 9 channels;
* ``"correlation"`` (:class:`CorrelationStem`): a cost volume, as optical-flow
  networks use: each token's cosine similarity to the reference view's tokens
  within ``radius`` tokens, from learnt matching features.
* ``"fine_correlation"`` (:class:`FineCorrelationStem`): that token cost
  volume and a second one at a quarter of the patch (4 px cells at patch 16):
  each cell against the reference's cells within ``fine_radius`` cells, with
  each cell's expected displacement (a soft argmax). Motion of a pixel or two,
  what consecutive frames of a real 25 fps clip show at 128 px, and the
  spatial pattern of a zoom, are visible inside one token.

Every stem is local to its patch token (the convolutions never cross a patch
border) and the correlation compares a token only with reference tokens of its
own mask segment, so a latent of one mask half sees nothing of the other half,
as in the published encoder. The reference view gets the same embedding
against itself (zero difference, perfect correlation); its latent is exactly
zero anyway (``PoseHead``).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from xfactor_core.models.layers import patchify

Dtype = Any
PAIR_INPUTS = ("views", "fused", "conv", "correlation", "fine_correlation")
# Module names in PoseEnc's params that identify each stem.
STEM_MODULES = {"fused": "FusedPatchEmbed_0", "conv": "ConvPairStem_0",
                "correlation": "CorrelationStem_0",
                "fine_correlation": "FineCorrelationStem_0"}
CORRELATION_RADIUS = 4  # Tokens each way: 9 x 9 displacements.
FINE_CORRELATION_RADIUS = 3  # Cells each way: 7 x 7 displacements.
CELLS_PER_PATCH_SIDE = 4  # The patch conv's two stride-2 layers.
CONV_STEM_CHANNELS = (32, 64)


def _with_reference(patches: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``B x V x ...`` -> (view 0 broadcast to every view, the difference)."""
  reference = jnp.broadcast_to(patches[:, :1], patches.shape)
  return reference, patches - reference


class FusedPatchEmbed(nn.Module):
  """``B x V x H x W x 3`` -> ``B x V x T x features``: Dense of the reference
  patch and of the patch minus the reference patch."""
  features: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    patches = patchify(x, self.patch_size)
    reference, difference = _with_reference(patches)
    return nn.Dense(self.features, dtype=self.dtype)(
        jnp.concatenate([reference, difference], axis=-1))


def _check_patch_size(kind: str, patch_size: int) -> None:
  """The patch conv's two stride-2 layers need a patch side divisible by 4."""
  if patch_size % 4:
    raise ValueError(f"pair_input={kind!r} needs a patch size divisible by 4, "
                     f"got {patch_size}")


class _PatchConv(nn.Module):
  """Convolutions inside each ``p x p`` patch: ``N x p x p x c`` -> ``N x d``.

  Two 3x3 stride-2 convolutions with zero padding at the patch border, so no
  pixel of a neighbouring patch reaches the token. ``flatten=False`` keeps the
  ``N x p/4 x p/4 x d`` cells."""
  dtype: Optional[Dtype] = None
  flatten: bool = True

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    y = patches
    for channels in CONV_STEM_CHANNELS:
      y = jax.nn.gelu(nn.Conv(channels, (3, 3), strides=2, padding="SAME",
                              dtype=self.dtype)(y))
    return y.reshape(y.shape[0], -1) if self.flatten else y


def _patch_pixels(x: jax.Array, patch_size: int) -> jax.Array:
  """``B x V x H x W x c`` -> ``B x V x T x p x p x c``."""
  b, v = x.shape[:2]
  patches = patchify(x, patch_size)
  return patches.reshape(b, v, patches.shape[2], patch_size, patch_size, -1)


class ConvPairStem(nn.Module):
  """``B x V x H x W x 3`` -> ``B x V x T x features``: a patch-local conv
  stem on (view, reference, view - reference)."""
  features: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_patch_size("conv", self.patch_size)
    patches = _patch_pixels(x, self.patch_size)  # B V T p p 3
    reference, difference = _with_reference(patches)
    stacked = jnp.concatenate([patches, reference, difference], axis=-1)
    lead = stacked.shape[:3]
    y = _PatchConv(dtype=self.dtype)(stacked.reshape((-1,) + stacked.shape[3:]))
    return nn.Dense(self.features, dtype=self.dtype)(y.reshape(lead + (-1,)))


def _shift_window(grid: jax.Array, radius: int, fill: float) -> jax.Array:
  """``B x gh x gw x ...`` -> ``B x D x gh x gw x ...``: for every
  displacement (dy, dx) in the window (row-major, D = (2r+1)^2), the grid
  value at (i + dy, j + dx), ``fill`` outside the grid."""
  gh, gw = grid.shape[1:3]
  pad = [(0, 0), (radius, radius), (radius, radius)] + [(0, 0)] * (grid.ndim - 3)
  padded = jnp.pad(grid, pad, constant_values=fill)
  side = 2 * radius + 1
  return jnp.stack([padded[:, dy:dy + gh, dx:dx + gw]
                    for dy in range(side) for dx in range(side)], axis=1)


def _unit(f: jax.Array) -> jax.Array:
  """Unit vectors along the last axis (float32)."""
  f = f.astype(jnp.float32)
  return f * jax.lax.rsqrt(jnp.sum(f * f, axis=-1, keepdims=True) + 1e-6)


def _segment_grid(segments: Optional[jax.Array], b: int, gh: int, gw: int,
                  repeat: int = 1) -> jax.Array:
  """``B x T`` mask segments -> ``B x gh*repeat x gw*repeat`` int32 (every
  cell of a token in the token's segment)."""
  if segments is None:
    return jnp.zeros((b, gh * repeat, gw * repeat), jnp.int32)
  seg = segments.reshape(b, gh, gw).astype(jnp.int32)
  return jnp.repeat(jnp.repeat(seg, repeat, axis=1), repeat, axis=2)


def _correlate(f: jax.Array, seg: jax.Array, radius: int
               ) -> tuple[jax.Array, jax.Array]:
  """Cost volume of every view against view 0.

  Args:
    f: ``B x V x gh x gw x K`` unit matching features.
    seg: ``B x gh x gw`` mask segments.
    radius: displacements each way.

  Returns:
    ``(corr, valid)``, ``B x V x gh x gw x D`` and ``B x 1 x gh x gw x D``
    (D = (2r+1)^2, row-major (dy, dx)): the cosine similarity to the
    reference at each displacement, zero where invalid, and validity (inside
    the grid and in the same segment).
  """
  window = _shift_window(f[:, 0], radius, 0.0)  # B D gh gw K
  corr = jnp.einsum("bvijk,bdijk->bvijd", f, window)  # B V gh gw D
  seg_window = _shift_window(seg, radius, -1)  # B D gh gw
  valid = (seg_window == seg[:, None]).astype(jnp.float32)
  valid = jnp.moveaxis(valid, 1, -1)[:, None]  # B 1 gh gw D
  return corr * valid, valid


def _token_volume(f: jax.Array, segments: Optional[jax.Array], b: int, v: int,
                  gh: int, gw: int, radius: int) -> jax.Array:
  """Unit token features ``(B V T) x K`` -> ``B x V x T x 2D``: the cost
  volume against the reference view and the validity of each displacement."""
  corr, valid = _correlate(f.reshape(b, v, gh, gw, -1),
                           _segment_grid(segments, b, gh, gw), radius)
  features = jnp.concatenate(
      [corr, jnp.broadcast_to(valid, corr.shape)], axis=-1)
  return features.reshape(b, v, gh * gw, -1)


class CorrelationStem(nn.Module):
  """``B x V x H x W x 3`` (and the ``B x T`` mask segments) ->
  ``B x V x T x features``: each token's cosine similarity to the reference
  view's tokens within ``radius`` tokens, and which of those displacements
  are valid (inside the image and in the token's own mask segment)."""
  features: int
  patch_size: int
  radius: int = CORRELATION_RADIUS
  match_features: int = 64
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, segments: Optional[jax.Array]) -> jax.Array:
    _check_patch_size("correlation", self.patch_size)
    b, v, h, w, _ = x.shape
    p = self.patch_size
    gh, gw = h // p, w // p
    patches = _patch_pixels(x, p)
    y = _PatchConv(dtype=self.dtype)(patches.reshape((-1,) + patches.shape[3:]))
    f = _unit(nn.Dense(self.match_features, dtype=self.dtype)(y))
    features = _token_volume(f, segments, b, v, gh, gw, self.radius)
    return nn.Dense(self.features, dtype=self.dtype)(
        features.astype(self.dtype or jnp.float32))


def window_offsets(radius: int) -> jax.Array:
  """``D x 2`` (dx, dy) of :func:`_shift_window`'s displacements, in cells."""
  r = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  dy, dx = jnp.meshgrid(r, r, indexing="ij")
  return jnp.stack([dx.reshape(-1), dy.reshape(-1)], axis=-1)


def expected_displacement(corr: jax.Array, valid: jax.Array,
                          temperature: jax.Array, radius: int) -> jax.Array:
  """Soft argmax of a cost volume ``... x D`` over its valid displacements:
  ``... x 2`` (dx, dy) in cells, sub-cell where the peak is shared."""
  logits = jnp.where(valid > 0, corr * temperature, -1e9)
  probs = jax.nn.softmax(logits, axis=-1)
  return probs @ window_offsets(radius)


class FineCorrelationStem(nn.Module):
  """``B x V x H x W x 3`` (and the ``B x T`` mask segments) ->
  ``B x V x T x features``: the token cost volume of :class:`CorrelationStem`
  and a fine one, coarse-to-fine as optical-flow networks do.

  The fine volume compares each of a token's ``(p/4)^2`` cells (the patch
  conv's output grid: 4 px cells at patch 16) with the reference view's cells
  within ``fine_radius`` cells, and adds each cell's expected displacement
  (soft argmax, learnt temperature). A token thus sees motions of a pixel or
  two and how displacement varies across it (a zoom's divergence). Cells
  compare only with cells of their own mask segment, and the convolutions
  never cross a patch border.
  """
  features: int
  patch_size: int
  radius: int = CORRELATION_RADIUS
  fine_radius: int = FINE_CORRELATION_RADIUS
  match_features: int = 64
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, segments: Optional[jax.Array]) -> jax.Array:
    _check_patch_size("fine_correlation", self.patch_size)
    b, v, h, w, _ = x.shape
    p = self.patch_size
    gh, gw = h // p, w // p
    c = p // CELLS_PER_PATCH_SIDE
    patches = _patch_pixels(x, p)
    cells = _PatchConv(dtype=self.dtype, flatten=False)(
        patches.reshape((-1,) + patches.shape[3:]))  # (B V T) c c d
    coarse = _unit(nn.Dense(self.match_features, dtype=self.dtype,
                            name="match")(cells.reshape(cells.shape[0], -1)))
    coarse_features = _token_volume(coarse, segments, b, v, gh, gw,
                                    self.radius)

    fine = _unit(nn.Dense(self.match_features, dtype=self.dtype,
                          name="fine_match")(cells))  # (B V T) c c K
    fine = fine.reshape(b, v, gh, gw, c, c, -1).transpose(0, 1, 2, 4, 3, 5, 6)
    fine = fine.reshape(b, v, gh * c, gw * c, -1)  # the cell grid
    fine_corr, fine_valid = _correlate(
        fine, _segment_grid(segments, b, gh, gw, repeat=c), self.fine_radius)
    log_temperature = self.param("log_temperature",
                                 nn.initializers.constant(jnp.log(10.0)), ())
    shift = expected_displacement(fine_corr, fine_valid,
                                  jnp.exp(log_temperature), self.fine_radius)
    fine_features = jnp.concatenate([fine_corr, shift], axis=-1)
    fine_features = fine_features.reshape(b, v, gh, c, gw, c, -1).transpose(
        0, 1, 2, 4, 3, 5, 6)  # B V gh gw c c F: each token's cells
    features = jnp.concatenate(
        [coarse_features, fine_features.reshape(b, v, gh * gw, -1)], axis=-1)
    return nn.Dense(self.features, dtype=self.dtype, name="out")(
        features.astype(self.dtype or jnp.float32))


def pair_embedding(kind: str, features: int, patch_size: int, x: jax.Array,
                   segments: Optional[jax.Array],
                   dtype: Optional[Dtype] = None) -> Optional[jax.Array]:
  """The stem of ``kind`` applied inside a PoseEnc (None for "views")."""
  if kind == "views":
    return None
  if kind == "fused":
    return FusedPatchEmbed(features, patch_size, dtype=dtype)(x)
  if kind == "conv":
    return ConvPairStem(features, patch_size, dtype=dtype)(x)
  if kind == "correlation":
    return CorrelationStem(features, patch_size, dtype=dtype)(x, segments)
  if kind == "fine_correlation":
    return FineCorrelationStem(features, patch_size, dtype=dtype)(x, segments)
  raise ValueError(f"pair_input={kind!r}: use one of {PAIR_INPUTS}")
