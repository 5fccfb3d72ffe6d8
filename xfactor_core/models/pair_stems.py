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
PAIR_INPUTS = ("views", "fused", "conv", "correlation")
# Module names in PoseEnc's params that identify each stem.
STEM_MODULES = {"fused": "FusedPatchEmbed_0", "conv": "ConvPairStem_0",
                "correlation": "CorrelationStem_0"}
CORRELATION_RADIUS = 4  # Tokens each way: 9 x 9 displacements.
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


class _PatchConv(nn.Module):
  """Convolutions inside each ``p x p`` patch: ``N x p x p x c`` -> ``N x d``.

  Two 3x3 stride-2 convolutions with zero padding at the patch border, so no
  pixel of a neighbouring patch reaches the token."""
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    y = patches
    for channels in CONV_STEM_CHANNELS:
      y = jax.nn.gelu(nn.Conv(channels, (3, 3), strides=2, padding="SAME",
                              dtype=self.dtype)(y))
    return y.reshape(y.shape[0], -1)


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
    if self.patch_size % 4:
      raise ValueError(f"pair_input='conv' needs a patch size divisible by 4, "
                       f"got {self.patch_size}")
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
    if self.patch_size % 4:
      raise ValueError(f"pair_input='correlation' needs a patch size "
                       f"divisible by 4, got {self.patch_size}")
    b, v, h, w, _ = x.shape
    p = self.patch_size
    gh, gw = h // p, w // p
    patches = _patch_pixels(x, p)
    y = _PatchConv(dtype=self.dtype)(patches.reshape((-1,) + patches.shape[3:]))
    f = nn.Dense(self.match_features, dtype=self.dtype)(y).astype(jnp.float32)
    f = f * jax.lax.rsqrt(jnp.sum(f * f, axis=-1, keepdims=True) + 1e-6)
    f = f.reshape(b, v, gh, gw, -1)

    window = _shift_window(f[:, 0], self.radius, 0.0)  # B D gh gw K
    corr = jnp.einsum("bvijk,bdijk->bvijd", f, window)  # B V gh gw D
    seg = (jnp.zeros((b, gh, gw), jnp.int32) if segments is None
           else segments.reshape(b, gh, gw).astype(jnp.int32))
    seg_window = _shift_window(seg, self.radius, -1)  # B D gh gw
    valid = (seg_window == seg[:, None]).astype(jnp.float32)
    valid = jnp.moveaxis(valid, 1, -1)[:, None]  # B 1 gh gw D
    corr = corr * valid
    features = jnp.concatenate(
        [corr, jnp.broadcast_to(valid, corr.shape)], axis=-1)
    features = features.reshape(b, v, gh * gw, -1)
    return nn.Dense(self.features, dtype=self.dtype)(
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
  raise ValueError(f"pair_input={kind!r}: use one of {PAIR_INPUTS}")
