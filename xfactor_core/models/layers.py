"""Building blocks shared by PoseEnc and Render (see docs/ARCHITECTURE.md).

Parameter names match the published checkpoints: a multi-view layer holds
``Dense_0`` (fused qkv), ``Dense_1`` (output), ``LayerNorm_0/1``,
``RMSNorm_0..3``, ``LayerScale_0/1`` and ``MLP2_0``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core.models import attention

Dtype = Any
LN_EPSILON = 1e-6
RMS_EPSILON = 1e-5


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """``... x H x W x 3`` -> ``... x T x (p*p*3)``, row-major windows."""
  *lead, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(
        f"image size {h}x{w} is not a multiple of the patch size {patch_size}; "
        f"crop or resize the frames to a multiple of {patch_size}")
  gh, gw = h // patch_size, w // patch_size
  x = images.reshape(*lead, gh, patch_size, gw, patch_size, c)
  x = jnp.swapaxes(x, -4, -3)  # ... gh gw p p c
  return x.reshape(*lead, gh * gw, patch_size * patch_size * c)


def unpatchify(tokens: jax.Array, patch_size: int, height: int,
               width: int) -> jax.Array:
  """Exact inverse of :func:`patchify`: ``... x T x (p*p*3)`` -> ``... x H x W x 3``."""
  *lead, t, d = tokens.shape
  gh, gw = height // patch_size, width // patch_size
  c = d // (patch_size * patch_size)
  if t != gh * gw:
    raise ValueError(f"{t} tokens do not tile a {height}x{width} image with "
                     f"patch size {patch_size}")
  x = tokens.reshape(*lead, gh, gw, patch_size, patch_size, c)
  x = jnp.swapaxes(x, -4, -3)  # ... gh p gw p c
  return x.reshape(*lead, height, width, c)


def rotary_angles(grid_h: int, grid_w: int, head_dim: int,
                  num_extra: int = 0) -> np.ndarray:
  """2-D rotary angles, ``(grid_h*grid_w + num_extra) x head_dim``.

  Frequencies ``w_k = 10000^(-k/(D/4))``, each repeated twice; the angle of the
  patch in row i, column j is ``concat(w*i, w*j)``. Extra tokens get angle 0.
  """
  if head_dim % 4:
    raise ValueError(f"head_dim {head_dim} must be divisible by 4 for 2-D "
                     "rotary embeddings; pick features/num_heads accordingly")
  quarter = head_dim // 4
  freqs = 10000.0 ** (-np.arange(quarter, dtype=np.float64) / quarter)
  freqs = np.repeat(freqs, 2)
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
  angles = np.concatenate([rows.reshape(-1, 1) * freqs,
                           cols.reshape(-1, 1) * freqs], axis=-1)
  angles = np.concatenate([angles, np.zeros((num_extra, head_dim))], axis=0)
  return angles.astype(np.float32)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """``x * cos + rot(x) * sin``; x is ``... x N x H x D``, cos/sin ``N x D``."""
  pairs = x.reshape(*x.shape[:-1], -1, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  cos = cos[:, None, :].astype(x.dtype)
  sin = sin[:, None, :].astype(x.dtype)
  return x * cos + rotated * sin


class MLP2(nn.Module):
  """Dense(4*features) -> gelu -> Dense(out)."""
  features: int
  out_features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(4 * self.features, dtype=self.dtype)(x)
    x = jax.nn.gelu(x)
    return nn.Dense(self.out_features, dtype=self.dtype)(x)


class MLP3(nn.Module):
  """Dense(4*features) -> gelu -> Dense(features) -> gelu -> Dense(out)."""
  features: int
  out_features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(4 * self.features, dtype=self.dtype)(x)
    x = jax.nn.gelu(x)
    x = nn.Dense(self.features, dtype=self.dtype)(x)
    x = jax.nn.gelu(x)
    return nn.Dense(self.out_features, dtype=self.dtype)(x)


class RMSNorm(nn.Module):
  """RMS norm over the last axis of ``... x heads x head_dim``; stats in f32."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.ones, x.shape[-2:], jnp.float32)
    x32 = x.astype(jnp.float32)
    scale = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True)
                          + RMS_EPSILON)
    return (x32 * scale * alpha).astype(x.dtype)


class LayerScale(nn.Module):
  """Elementwise learned scale ``alpha`` (features,), initialised to 0.01."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(0.01), x.shape[-1:],
                       jnp.float32)
    return x * alpha.astype(x.dtype)


class MultiViewLayer(nn.Module):
  """Global (all views) plus per-view self attention, then an MLP.

  Attributes:
    features: token width C.
    num_heads: attention heads; head_dim = C / heads.
    attention_impl: see :mod:`xfactor_core.models.attention`.
    attention_dtype: round q, k, v to this dtype for attention (published:
      bfloat16), None keeps the compute dtype.
    dtype: compute dtype (None: float32 params and compute).
  """
  features: int
  num_heads: int
  attention_impl: str = "auto"
  attention_dtype: Optional[Dtype] = None
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               segment_ids: Optional[jax.Array]) -> jax.Array:
    """Args: x ``B x V x N x C``; cos, sin ``N x D``; segment_ids ``B x N`` or None."""
    b, v, n, c = x.shape
    heads = self.num_heads
    head_dim = c // heads
    h = nn.LayerNorm(epsilon=LN_EPSILON, use_bias=False, dtype=self.dtype)(x)
    qkv = nn.Dense(6 * c, use_bias=False, dtype=self.dtype)(h)
    qkv = qkv.reshape(b, v, n, 6, heads, head_dim)
    q, k, val, q_self, k_self, v_self = (qkv[:, :, :, i] for i in range(6))
    q, k, q_self, k_self = (
        apply_rotary(RMSNorm()(t), cos, sin) for t in (q, k, q_self, k_self))

    attend = lambda q_, k_, v_, seg: attention.segment_attention(
        q_, k_, v_, seg, implementation=self.attention_impl,
        qkv_dtype=self.attention_dtype)
    global_seg = None if segment_ids is None else jnp.tile(segment_ids, (1, v))
    global_out = attend(*(t.reshape(b, v * n, heads, head_dim)
                          for t in (q, k, val)), global_seg)
    self_seg = None if segment_ids is None else jnp.repeat(segment_ids, v, 0)
    self_out = attend(*(t.reshape(b * v, n, heads, head_dim)
                        for t in (q_self, k_self, v_self)), self_seg)
    mixed = jnp.concatenate([global_out.reshape(b, v, n, c),
                             self_out.reshape(b, v, n, c)], axis=-1)
    x = x + LayerScale()(nn.Dense(c, dtype=self.dtype)(mixed))
    h = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype)(x)
    h = MLP2(c, c, dtype=self.dtype)(jax.nn.gelu(h))
    return x + LayerScale()(h)
