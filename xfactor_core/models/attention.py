"""Segment-masked multi-head attention that runs on every JAX backend.

Tokens attend only to tokens of the same segment (the XFactor patch mask splits
each image into two halves). Several implementations compute the same function:

* ``"xla"``: plain einsum + softmax. The lean path for CPUs (and the reference).
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, the fused
  flash-attention kernel of cuDNN (GPU only, bfloat16/float16 inputs).
* ``"split"``: when a row's two segments hold exactly half of the tokens each
  (the XFactor quadrant masks), sorts the tokens by segment and runs dense
  attention on each half: half the attention work. Other rows fall back to
  masked dense attention, so the result is always exact.
* ``"pallas"``: the fused flash-attention Pallas kernel that ships with JAX
  (Triton on GPU, with segment ids); on other backends it runs in Pallas'
  interpreter, which is slow but checks the same kernel on a CPU.
* ``"auto"``: ``cudnn`` on GPU when the dtype allows it, else ``xla``.

All take ``q, k, v`` shaped ``B x N x H x D`` and ``segment_ids`` shaped ``B x N``
(int, or ``None`` for a single segment) and return ``B x N x H x D``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "split", "pallas")


def _xla_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                   segment_ids: Optional[jax.Array]) -> jax.Array:
  """Reference attention: logits and softmax in float32, inputs as given."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                      preferred_element_type=jnp.float32) * scale
  if segment_ids is not None:
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    logits = jnp.where(same, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v,
                    preferred_element_type=jnp.float32)


def _cudnn_attention(q, k, v, segment_ids):
  mask = None
  if segment_ids is not None:
    mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask,
                                      implementation="cudnn")


def _block_size(n: int) -> int:
  for block in (128, 64, 32, 16):
    if n % block == 0:
      return block
  raise ValueError(f"the Pallas attention kernel needs a token count divisible "
                   f"by 16, got {n}; use implementation='xla'")


def _pallas_attention(q, k, v, segment_ids):
  from jax.experimental.pallas.ops.gpu import attention as pallas_attention
  n = q.shape[1]
  block = _block_size(n)
  sizes = pallas_attention.BlockSizes(
      block_q=block, block_k=block, block_q_dkv=block, block_kv_dkv=block,
      block_q_dq=block, block_kv_dq=block)
  seg = None if segment_ids is None else segment_ids.astype(jnp.int32)
  return pallas_attention.mha(q, k, v, seg, sm_scale=q.shape[-1] ** -0.5,
                              block_sizes=sizes,
                              interpret=jax.default_backend() != "gpu")


def _split_attention(q, k, v, segment_ids):
  """Dense attention within each half of a balanced two-way split.

  A row whose segment ids hold exactly n/2 ones (the XFactor quadrant masks)
  is sorted by segment and attended as two dense halves of n/2 tokens: half
  the work of masked attention. Other rows (one segment, or unbalanced) fall
  back to masked dense attention; under jit that pass runs only when such a
  row is present.
  """
  b, n, h, d = q.shape
  if segment_ids is None or n % 2:
    return _xla_attention(q, k, v, segment_ids)
  half = n // 2
  order = jnp.argsort(segment_ids, axis=1, stable=True)
  inverse = jnp.argsort(order, axis=1)
  gather = lambda x: jnp.take_along_axis(x, order[:, :, None, None], axis=1)
  to_halves = lambda x: gather(x).reshape(b * 2, half, h, d)
  out = _xla_attention(to_halves(q), to_halves(k), to_halves(v), None)
  out = jnp.take_along_axis(out.reshape(b, n, h, d),
                            inverse[:, :, None, None], axis=1)
  balanced = (jnp.sum(segment_ids != 0, axis=1) == half) & jnp.all(
      (segment_ids == 0) | (segment_ids == 1), axis=1)
  return jax.lax.cond(
      jnp.all(balanced), lambda: out,
      lambda: jnp.where(balanced[:, None, None, None], out,
                        _xla_attention(q, k, v, segment_ids)))


def segment_attention(q: jax.Array,
                      k: jax.Array,
                      v: jax.Array,
                      segment_ids: Optional[jax.Array] = None,
                      *,
                      implementation: str = "auto",
                      qkv_dtype: Optional[jnp.dtype] = None) -> jax.Array:
  """Scaled dot-product attention restricted to equal segment ids.

  Args:
    q, k, v: ``B x N x H x D``.
    segment_ids: ``B x N`` integer segment per token, or None (one segment).
    implementation: one of ``IMPLEMENTATIONS``.
    qkv_dtype: when set (e.g. ``jnp.bfloat16``), q, k and v are rounded to it
      before the products, which accumulate in float32, as the published Triton
      kernels do.

  Returns:
    ``B x N x H x D`` in the dtype of ``q``.
  """
  if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
    raise ValueError(
        f"attention expects q, k, v of equal shape B x N x H x D, got "
        f"{q.shape}, {k.shape}, {v.shape}")
  if segment_ids is not None and segment_ids.shape != q.shape[:2]:
    raise ValueError(f"segment_ids must be B x N = {q.shape[:2]}, got "
                     f"{segment_ids.shape}")
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"choose one of {IMPLEMENTATIONS}")
  out_dtype = q.dtype
  if implementation == "auto":
    on_gpu = jax.default_backend() == "gpu"
    dtype = qkv_dtype or q.dtype
    implementation = ("cudnn" if on_gpu and dtype in (jnp.bfloat16, jnp.float16)
                      else "xla")
  if implementation == "cudnn":
    if qkv_dtype is not None:
      q, k, v = q.astype(qkv_dtype), k.astype(qkv_dtype), v.astype(qkv_dtype)
    return _cudnn_attention(q, k, v, segment_ids).astype(out_dtype)
  if qkv_dtype is not None:
    # Emulate the published kernels: q, k, v rounded to qkv_dtype, products,
    # softmax and accumulation in float32, the output stored in qkv_dtype.
    q, k, v = (t.astype(qkv_dtype).astype(jnp.float32) for t in (q, k, v))
  attend = {"xla": _xla_attention, "split": _split_attention,
            "pallas": _pallas_attention}[implementation]
  out = attend(q, k, v, segment_ids)
  if qkv_dtype is not None:
    out = out.astype(qkv_dtype)
  return out.astype(out_dtype)
