"""The XFactor training objective (docs/ARCHITECTURE.md, "The training
objective").

One training example is a clip of V frames of one video, ``frames: B x V x S x S
x 3`` (uint8), plus the index of its reference view (the frame nearest the
middle of the clip, ``xfactor_core.data.sampling.reference_view``). The
objective, per example:

1. Views are ordered ``[reference, other context views..., target]``: the
   target is drawn uniformly among the non-reference views, the other context
   views keep their clip order. Stereo-monocular (V = 2): context = the
   reference, target = the other frame.
2. Self-decoding: with probability ``self_decode_prob`` (published 5% stereo,
   2% multi-view) the target is replaced by a context frame drawn uniformly
   (for one context view: the reference).
3. The pose encoder sees colour-jittered and blurred copies of the views, with
   the same augmentation parameters for every frame of an example; the renderer
   sees the clean frames (see :func:`augment`).
4. Quadrant masks: two random quadrants of the patch grid get mask 1, the
   other two 0; with probability ``all_zero_mask_prob`` (5%) all are 0.
5. Pose latents, two halves per view (``B x V x 2 x pose_dim``), then the halves
   are swapped, so the latent estimated from half 1 drives the rendering of
   half 0 and vice versa; with an all-zero mask both halves use half 0's latent.
6. Render the target with the swapped latents and the same mask; loss =
   ``l1_weight * L1 + perceptual_weight * perceptual`` against the clean target
   (published 1.0 and 0.5, perceptual = LPIPS-VGG).

Why a pose cannot smuggle content
---------------------------------
A pose latent has pose_dim numbers (256 published), room enough to carry a
description of the target's pixels instead of a camera motion; the renderer
would then copy that description rather than move the context, and nothing
would transfer to another scene. The quadrant mask closes that route because it holds on both
sides of the bottleneck. In the pose encoder, each half's global tokens attend
only to the patches of their own half, so the half-1 latent is estimated from
half-1 tokens alone. In the renderer, each half of the target attends only to
the same half of the context. After the swap (step 5), the half-1 latent
drives the rendering of half 0, pixels it never saw: whatever it might carry
about half 1's content is of no use there. The one thing that helps the
rendering of both halves is what both halves share, the motion of the camera
from the reference to the target, so that is what the latent learns to hold.

How the pose encoder is batched for several context views
---------------------------------------------------------
docs/ARCHITECTURE.md defines every latent as a pair latent: context view i gets
``PoseEnc((ref, view_i))[:, 1]`` and the target ``PoseEnc((ref, target))[:, 1]``,
and the inference pipeline (``TransferPipeline``) computes them exactly so. The
default ``pose_encoding="pairs"`` trains the same function: the V - 1 pairs
``(ref, view_i)`` of an example run as a batch of ``B * (V-1)`` two-view calls
(every pair with the example's mask), so what is trained is what inference
runs. ``pose_encoding="joint"`` instead runs one PoseEnc call over all V views
with view 0 = the reference (latents relative to view 0, but each one also sees
the other views through the global attention; cheaper: ``V`` instead of
``2(V-1)`` views per example). For one context view the two are identical.

Everything here is a pure function of its inputs and an explicit PRNG key.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core import models
from xfactor_core.data import true_flow
from xfactor_core.metrics import image as image_metrics

Params = Any
POSE_ENCODINGS = ("pairs", "joint")
# The six ways to pick two of the four quadrants.
_QUADRANT_PAIRS = np.array([[a in pair for a in range(4)] for pair in
                            ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))],
                           dtype=np.int32)
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """Settings of the objective; the defaults are the published values and
  the ``objective`` section of every training config
  (``xfactor_core/configs/common.py``)."""
  # Probability that the target is replaced by a context frame (published:
  # 0.05 stereo-monocular, 0.02 multi-view).
  self_decode_prob: float = 0.05
  all_zero_mask_prob: float = 0.05  # Probability of the unsplit mask.
  l1_weight: float = 1.0
  perceptual_weight: float = 0.5
  augment: bool = True  # False: the pose encoder sees the clean views.
  # Colour-jitter strengths: a factor drawn in [1 - s, 1 + s].
  brightness: float = 0.2
  contrast: float = 0.2
  saturation: float = 0.2
  hue: float = 0.05  # Hue shift in [-hue, hue] turns of the colour wheel.
  jitter_prob: float = 0.9  # Probability of the colour jitter per example.
  blur_prob: float = 0.3  # Probability of the Gaussian blur per example.
  # The blur's sigma is uniform in [blur_sigma_min, blur_sigma_max] pixels,
  # its kernel blur_kernel taps wide (odd).
  blur_sigma_min: float = 0.1
  blur_sigma_max: float = 2.0
  blur_kernel: int = 7
  pose_encoding: str = "pairs"  # "pairs" or "joint" (the module docstring).
  # Weight of an L1 term on the image gradients (finite differences) of
  # prediction vs target, which rewards sharp views over blurry averages
  # (0: off, the published objective).
  gradient_weight: float = 0.0
  # Weight of an auxiliary term fitting a flow renderer's sampling offsets to
  # the ground-truth flow of the synthetic world (needs batches with depth,
  # camera_from_world and intrinsics, and Render(output="flow"); 0: off, the
  # published objective). It decays linearly to 0 over
  # flow_supervision_steps optimiser steps (0: no decay), so that the end of
  # training is self-supervised alone.
  flow_supervision: float = 0.0
  flow_supervision_steps: int = 0  # The decay's length (0: no decay).
  # Weight of the mean blend weight of a flow renderer's RGB fallback, which
  # keeps the renderer from hedging with a blurry fallback instead of moving
  # the context's pixels (0: off).
  fallback_penalty: float = 0.0
  # Photometric loss of a warp (or flow) renderer's warped photo against the
  # target: photometric_ssim_alpha * (1 - SSIM) / 2 + (1 - alpha) * L1 per
  # pixel (photometric_loss; 0: off, the published objective).
  photometric_weight: float = 0.0
  photometric_ssim_alpha: float = 0.85
  # First-order edge-aware smoothness of the renderer's residual offsets
  # (warp: the upsampled coarse residual; flow: the per-pixel offsets),
  # weighted by exp(-smoothness_edge_scale * |target gradient|) (0: off).
  smoothness_weight: float = 0.0
  smoothness_edge_scale: float = 10.0

  def __post_init__(self):
    problems = []
    for name in ("self_decode_prob", "all_zero_mask_prob", "jitter_prob",
                 "blur_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        problems.append(f"{name}={getattr(self, name)} must lie in [0, 1]")
    for name in ("l1_weight", "perceptual_weight", "brightness", "contrast",
                 "saturation", "hue", "gradient_weight", "flow_supervision",
                 "fallback_penalty", "photometric_weight",
                 "smoothness_weight", "smoothness_edge_scale",
                 "flow_supervision_steps"):
      if getattr(self, name) < 0:
        problems.append(f"{name}={getattr(self, name)} must be >= 0")
    if not 0.0 <= self.photometric_ssim_alpha <= 1.0:
      problems.append(f"photometric_ssim_alpha={self.photometric_ssim_alpha} "
                      "must lie in [0, 1]")
    if not 0 < self.blur_sigma_min <= self.blur_sigma_max:
      problems.append(f"blur sigma range [{self.blur_sigma_min}, "
                      f"{self.blur_sigma_max}] must be positive and ordered")
    if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
      problems.append(f"blur_kernel={self.blur_kernel} must be a positive odd "
                      "number of taps")
    if self.pose_encoding not in POSE_ENCODINGS:
      problems.append(f"pose_encoding={self.pose_encoding!r} must be one of "
                      f"{POSE_ENCODINGS}")
    if problems:
      raise ValueError("invalid objective settings: " + "; ".join(problems))


# ------------------------------------------------------------------ masks --


def quadrant_ids(grid_h: int, grid_w: int) -> np.ndarray:
  """Quadrant (0..3, row-major: top-left, top-right, bottom-left,
  bottom-right) of every patch token of a ``grid_h x grid_w`` grid: ``(T,)``."""
  if grid_h % 2 or grid_w % 2 or grid_h < 2 or grid_w < 2:
    raise ValueError(
        f"quadrant masks need an even patch grid, got {grid_h} x {grid_w} "
        "patches; use an image size that is an even multiple of the patch size")
  rows = np.arange(grid_h)[:, None] >= grid_h // 2
  cols = np.arange(grid_w)[None, :] >= grid_w // 2
  return (2 * rows + cols).reshape(-1).astype(np.int32)


def quadrant_masks(key: jax.Array, batch: int, grid_h: int, grid_w: int,
                   all_zero_prob: float) -> tuple[jax.Array, jax.Array]:
  """Random quadrant masks.

  Args:
    key: PRNG key.
    batch: B.
    grid_h, grid_w: patch grid (both even).
    all_zero_prob: probability of an all-zero mask.

  Returns:
    ``(pmask B x T int32, all_zero B bool)``: two random quadrants of each
    mask are 1, the other two 0, except where ``all_zero`` (all 0).
  """
  quadrants = jnp.asarray(quadrant_ids(grid_h, grid_w))
  pair_key, zero_key = jax.random.split(key)
  pair = jax.random.randint(pair_key, (batch,), 0, len(_QUADRANT_PAIRS))
  chosen = jnp.asarray(_QUADRANT_PAIRS)[pair]  # B x 4
  pmask = chosen[:, quadrants]  # B x T
  all_zero = jax.random.uniform(zero_key, (batch,)) < all_zero_prob
  return jnp.where(all_zero[:, None], 0, pmask).astype(jnp.int32), all_zero


def swap_halves(poses: jax.Array, all_zero: jax.Array) -> jax.Array:
  """Swaps the two mask halves of pose latents.

  Args:
    poses: ``B x V x 2 x D`` latents, half 0 estimated from mask-0 tokens.
    all_zero: ``B`` bool, examples whose mask is all zeros.

  Returns:
    ``B x V x 2 x D``: ``[half 1, half 0]``, or ``[half 0, half 0]`` where
    ``all_zero`` (half 1 then saw no image tokens).
  """
  swapped = poses[:, :, ::-1]
  unsplit = jnp.broadcast_to(poses[:, :, :1], poses.shape)
  return jnp.where(all_zero[:, None, None, None], unsplit, swapped)


# ----------------------------------------------------------- augmentation --


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """``... x 3`` RGB in [0, 1] -> HSV in [0, 1] (hue in turns)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = jnp.max(rgb, axis=-1)
  minc = jnp.min(rgb, axis=-1)
  delta = maxc - minc
  safe_delta = jnp.where(delta > 0, delta, 1.0)
  saturation = jnp.where(maxc > 0, delta / jnp.where(maxc > 0, maxc, 1.0), 0.0)
  rc, gc, bc = ((maxc - c) / safe_delta for c in (r, g, b))
  hue = jnp.where(maxc == r, bc - gc,
                  jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  hue = jnp.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
  return jnp.stack([hue, saturation, maxc], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """Inverse of :func:`rgb_to_hsv`."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = jnp.floor(h * 6.0)
  f = h * 6.0 - sector
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  sector = sector.astype(jnp.int32) % 6
  r = jnp.choose(sector, [v, q, p, p, t, v], mode="clip")
  g = jnp.choose(sector, [t, v, v, q, p, p], mode="clip")
  b = jnp.choose(sector, [p, p, t, v, v, q], mode="clip")
  return jnp.stack([r, g, b], axis=-1)


def _grayscale(x: jax.Array) -> jax.Array:
  return jnp.sum(x * jnp.asarray(_GRAY), axis=-1, keepdims=True)


def color_jitter(images: jax.Array, brightness: jax.Array, contrast: jax.Array,
                 saturation: jax.Array, hue: jax.Array) -> jax.Array:
  """Brightness, contrast, saturation and hue, in this order.

  Args:
    images: ``B x V x H x W x 3`` in [0, 1].
    brightness, contrast, saturation: ``B`` multiplicative factors (1 = none).
    hue: ``B`` hue shifts in turns (0 = none).

  Returns:
    ``B x V x H x W x 3`` in [0, 1]; every view of an example gets the same
    factors. Contrast blends with the mean grey level of each frame.
  """
  per = lambda a: a[:, None, None, None, None]
  x = jnp.clip(images * per(brightness), 0.0, 1.0)
  mean = jnp.mean(_grayscale(x), axis=(2, 3, 4), keepdims=True)
  x = jnp.clip((x - mean) * per(contrast) + mean, 0.0, 1.0)
  gray = _grayscale(x)
  x = jnp.clip((x - gray) * per(saturation) + gray, 0.0, 1.0)
  hsv = rgb_to_hsv(x)
  hsv = hsv.at[..., 0].set((hsv[..., 0] + per(hue)[..., 0]) % 1.0)
  return jnp.clip(hsv_to_rgb(hsv), 0.0, 1.0)


def gaussian_blur(images: jax.Array, sigma: jax.Array, taps: int) -> jax.Array:
  """Separable Gaussian blur with reflected borders.

  Args:
    images: ``B x V x H x W x C``.
    sigma: ``B`` standard deviations in pixels (one per example).
    taps: odd kernel width.

  Returns:
    ``B x V x H x W x C``.
  """
  radius = taps // 2
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
  weights = weights / jnp.sum(weights, axis=1, keepdims=True)  # B x taps
  h, w = images.shape[2:4]

  def blur_axis(x, axis, size):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="reflect")
    out = jnp.zeros_like(x)
    for i in range(taps):
      window = jax.lax.slice_in_dim(padded, i, i + size, axis=axis)
      out = out + window * weights[:, i, None, None, None, None]
    return out

  return blur_axis(blur_axis(images, 2, h), 3, w)


def augment(key: jax.Array, views: jax.Array,
            settings: ObjectiveSettings) -> jax.Array:
  """The pose encoder's augmentation: colour jitter (p = jitter_prob) and
  Gaussian blur (p = blur_prob), the same for every view of an example.

  Args:
    key: PRNG key.
    views: ``B x V x H x W x 3`` in [-1, 1].
    settings: strengths and probabilities.

  Returns:
    ``B x V x H x W x 3`` in [-1, 1]; exactly ``views`` when
    ``settings.augment`` is False, and for examples that drew neither.
  """
  if not settings.augment:
    return views
  b = views.shape[0]
  keys = jax.random.split(key, 7)
  factor = lambda k, s: jax.random.uniform(k, (b,), minval=1 - s, maxval=1 + s)
  brightness = factor(keys[0], settings.brightness)
  contrast = factor(keys[1], settings.contrast)
  saturation = factor(keys[2], settings.saturation)
  hue = jax.random.uniform(keys[3], (b,), minval=-settings.hue,
                           maxval=settings.hue)
  do_jitter = jax.random.uniform(keys[4], (b,)) < settings.jitter_prob
  sigma = jax.random.uniform(keys[5], (b,), minval=settings.blur_sigma_min,
                             maxval=settings.blur_sigma_max)
  do_blur = jax.random.uniform(keys[6], (b,)) < settings.blur_prob

  x = (views.astype(jnp.float32) + 1.0) * 0.5
  jittered = color_jitter(x, brightness, contrast, saturation, hue)
  x = jnp.where(do_jitter[:, None, None, None, None], jittered, x)
  blurred = gaussian_blur(x, sigma, settings.blur_kernel)
  x = jnp.where(do_blur[:, None, None, None, None], blurred, x)
  out = x * 2.0 - 1.0
  changed = (do_jitter | do_blur)[:, None, None, None, None]
  return jnp.where(changed, out, views).astype(views.dtype)


# ------------------------------------------------------ views and targets --


def order_views(key: jax.Array, views: jax.Array,
                reference: jax.Array) -> jax.Array:
  """Reorders each clip to ``[reference, other context views..., target]``.

  Args:
    key: PRNG key (draws the target among the non-reference views).
    views: ``B x V x ...`` frames in clip order.
    reference: ``B`` int, the reference view of each clip.

  Returns:
    ``B x V x ...``: reference first, the target last, the rest in clip order.
  """
  b, v = views.shape[:2]
  draw = jax.random.randint(key, (b,), 0, v - 1)
  target = draw + (draw >= reference)
  position = jnp.arange(v)[None, :]
  sort_key = jnp.where(position == reference[:, None], -1,
                       jnp.where(position == target[:, None], v, position))
  order = jnp.argsort(sort_key, axis=1)
  index = order.reshape(order.shape + (1,) * (views.ndim - 2))
  return jnp.take_along_axis(views, index, axis=1)


def self_decode(key: jax.Array, views: jax.Array,
                prob: float) -> tuple[jax.Array, jax.Array]:
  """With probability ``prob`` replaces the target (last view) by a context
  view.

  Args:
    key: PRNG key.
    views: ``B x V x ...`` ordered ``[reference, context..., target]``.
    prob: self-decoding probability.

  Returns:
    ``(views, replaced B bool)``.
  """
  b, v = views.shape[:2]
  which_key, coin_key = jax.random.split(key)
  source = jax.random.randint(which_key, (b,), 0, v - 1)
  replaced = jax.random.uniform(coin_key, (b,)) < prob
  index = source.reshape((b, 1) + (1,) * (views.ndim - 2))
  chosen = jnp.take_along_axis(views, index, axis=1)[:, 0]
  target = jnp.where(replaced.reshape((b,) + (1,) * (views.ndim - 2)), chosen,
                     views[:, -1])
  return views.at[:, -1].set(target), replaced


# ------------------------------------------------------------ the latents --


def pose_latents(pose_apply: Callable[..., jax.Array], views: jax.Array,
                 pmask: Optional[jax.Array], pose_encoding: str) -> jax.Array:
  """Latent poses of all views relative to view 0.

  Args:
    pose_apply: ``(x, pmask) -> PoseEnc output`` (params bound).
    views: ``B x V x H x W x 3`` ordered ``[reference, ..., target]``.
    pmask: ``B x T`` or None.
    pose_encoding: "pairs" (each view paired with the reference) or "joint".

  Returns:
    ``B x V x 2 x D`` with a pmask, else ``B x V x D``; view 0 is zero.
  """
  b, v = views.shape[:2]
  if pose_encoding == "joint" or v == 2:
    return pose_apply(views, pmask)
  reference = jnp.broadcast_to(views[:, :1], views[:, 1:].shape)
  pairs = jnp.stack([reference, views[:, 1:]], axis=2)  # B (V-1) 2 H W 3
  pairs = pairs.reshape((b * (v - 1),) + pairs.shape[2:])
  pair_mask = None if pmask is None else jnp.repeat(pmask, v - 1, axis=0)
  latents = pose_apply(pairs, pair_mask)[:, 1]  # B(V-1) [2] D
  latents = latents.reshape((b, v - 1) + latents.shape[1:])
  return jnp.concatenate([jnp.zeros_like(latents[:, :1]), latents], axis=1)


# ------------------------------------------------------------------- loss --


def to_float_images(frames: jax.Array) -> jax.Array:
  """uint8 frames -> float32 in [-1, 1] (float input is passed through)."""
  if frames.dtype == jnp.uint8:
    return frames.astype(jnp.float32) / 127.5 - 1.0
  return frames.astype(jnp.float32)


def gradient_l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute difference of horizontal and vertical finite differences
  of two ``B x H x W x 3`` images: ``B``."""
  dx = lambda x: x[:, :, 1:] - x[:, :, :-1]
  dy = lambda x: x[:, 1:] - x[:, :-1]
  return 0.5 * (jnp.mean(jnp.abs(dx(prediction) - dx(target)), axis=(1, 2, 3))
                + jnp.mean(jnp.abs(dy(prediction) - dy(target)), axis=(1, 2, 3)))


def _box3(x: jax.Array) -> jax.Array:
  """3 x 3 mean of ``B x H x W x C`` (valid: ``B x H-2 x W-2 x C``)."""
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1),
                               (1, 1, 1, 1), "VALID") / 9.0


def ssim_3x3(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-pixel SSIM over 3 x 3 windows of ``B x H x W x C`` images in
  [-1, 1] (as Monodepth2's, with the constants of a value range of 2):
  ``B x H-2 x W-2 x C``, 1 where the images agree."""
  c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
  mu_a, mu_b = _box3(a), _box3(b)
  var_a = _box3(a * a) - mu_a ** 2
  var_b = _box3(b * b) - mu_b ** 2
  cov = _box3(a * b) - mu_a * mu_b
  return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
      (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def photometric_loss(prediction: jax.Array, target: jax.Array,
                     alpha: float = 0.85) -> jax.Array:
  """The photometric error of a warped photo: ``B``.

  ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |prediction - target|`` per pixel
  (3 x 3 SSIM, the L1 on the same interior pixels), averaged; images ``B x H
  x W x 3`` in [-1, 1].

  Why L1 + SSIM rather than census: the renderer samples the clean context
  views (the colour jitter and blur touch only what the pose encoder sees),
  so brightness constancy holds between the warped photo and the target and
  the census transform's invariance to illumination buys nothing; SSIM adds
  what L1 lacks, a structural term whose gradient follows edges and texture
  rather than flat colour, and both are smooth and cheap (a soft census is a
  7 x 7 neighbourhood per pixel). It is the loss of Monodepth2 (Godard et
  al. 2019) with its alpha of 0.85.
  """
  dssim = jnp.clip((1.0 - ssim_3x3(prediction, target)) / 2.0, 0.0, 1.0)
  l1 = jnp.abs(prediction - target)[:, 1:-1, 1:-1]
  return jnp.mean(alpha * dssim + (1.0 - alpha) * l1, axis=(1, 2, 3))


def edge_aware_smoothness(offset: jax.Array, image: jax.Array,
                          edge_scale: float = 10.0) -> jax.Array:
  """First-order edge-aware smoothness of offset fields: ``B``.

  Args:
    offset: ``B x N x H x W x 2`` offsets (one field per context view).
    image: ``B x H x W x 3`` the image they are defined on (the target), in
      [-1, 1]: steps across its edges are cheaper by ``exp(-edge_scale *
      mean_channels |gradient|)``.
    edge_scale: how much an edge discounts a step.
  """
  def term(axis):
    d_offset = jnp.abs(jnp.diff(offset, axis=axis + 1))  # B N ... 2
    d_image = jnp.mean(jnp.abs(jnp.diff(image, axis=axis)), axis=-1)
    weight = jnp.exp(-edge_scale * d_image)[:, None, ..., None]
    return jnp.mean(weight * d_offset, axis=(1, 2, 3, 4))
  return 0.5 * (term(1) + term(2))  # along y, along x


def flow_supervision_weight(settings: ObjectiveSettings,
                            step: jax.Array) -> jax.Array:
  """The auxiliary flow term's weight at optimiser step ``step``."""
  if settings.flow_supervision_steps <= 0:
    return jnp.float32(settings.flow_supervision)
  left = 1.0 - step.astype(jnp.float32) / settings.flow_supervision_steps
  return settings.flow_supervision * jnp.clip(left, 0.0, 1.0)


def xfactor_loss(params: Params, batch: dict[str, jax.Array], key: jax.Array,
                 *, pose_enc: nn.Module, render: nn.Module,
                 settings: ObjectiveSettings,
                 perceptual_distance: Callable[[jax.Array, jax.Array],
                                               jax.Array],
                 step: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training loss of one batch.

  Args:
    params: ``{"PoseEnc": ..., "Render": ...}``.
    batch: ``frames`` ``B x V x S x S x 3`` (uint8 or float in [-1, 1]) in clip
      order and ``reference`` ``B`` int32; for the flow supervision also
      ``depth`` ``B x V x S x S``, ``camera_from_world`` ``B x V x 4 x 4`` and
      ``intrinsics`` ``B x 3 x 3``.
    key: PRNG key for every random choice of the objective.
    pose_enc, render: the two modules.
    settings: the objective settings.
    perceptual_distance: ``(prediction, target) -> B`` distances of
      ``B x S x S x 3`` images in [-1, 1].
    step: the optimiser step (int32 scalar), for the decaying flow
      supervision (None: step 0).

  Returns:
    ``(loss, metrics)`` with per-batch means: loss, l1, perceptual, psnr,
    self_decoded and all_zero_mask (fractions of the batch), plus
    gradient_l1 when gradient_weight > 0; fallback_weight (the RGB
    fallback's mean blend weight) for flow and warp renderers; photometric
    and smoothness when their weights are > 0; flow_error (mean
    end-point error of the visible pixels, in pixels), flow_error_still (the
    same for zero offsets) and flow_weight with the flow supervision.
  """
  frames = to_float_images(batch["frames"])
  b, v, s = frames.shape[:3]
  if v < 2:
    raise ValueError(f"a training clip needs at least 2 views, got {v}")
  supervise_flow = settings.flow_supervision > 0
  output = getattr(render, "output", "rgb")
  flow_renderer = output in models.SAMPLING_OUTPUTS
  if (supervise_flow or settings.fallback_penalty > 0
      or settings.photometric_weight > 0
      or settings.smoothness_weight > 0) and not flow_renderer:
    raise ValueError("flow_supervision, fallback_penalty, photometric_weight "
                     "and smoothness_weight need a flow renderer or a warp "
                     "renderer (config.model.render_output='flow' or "
                     "'warp')")
  if supervise_flow and "depth" not in batch:
    raise ValueError("flow_supervision needs depth and cameras in the batch "
                     "(the synthetic world provides them)")
  p = pose_enc.patch_size
  order_key, decode_key, aug_key, mask_key = jax.random.split(key, 4)
  views = order_views(order_key, frames, batch["reference"])
  views, replaced = self_decode(decode_key, views, settings.self_decode_prob)
  target = views[:, -1]
  pmask, all_zero = quadrant_masks(mask_key, b, s // p, s // p,
                                   settings.all_zero_mask_prob)

  pose_apply = lambda x, m: pose_enc.apply({"params": params["PoseEnc"]}, x, m)
  latents = pose_latents(pose_apply, augment(aug_key, views, settings), pmask,
                         settings.pose_encoding)
  latents = swap_halves(latents, all_zero)
  render_apply = functools.partial(render.apply, {"params": params["Render"]},
                                   views[:, :-1], latents, pmask)
  if flow_renderer:
    prediction, aux = render_apply(return_flow=True)
  else:
    prediction = render_apply()

  l1 = jnp.mean(jnp.abs(prediction - target))
  perceptual = jnp.mean(perceptual_distance(prediction, target))
  loss = settings.l1_weight * l1 + settings.perceptual_weight * perceptual
  metrics = {
      "l1": l1,
      "perceptual": perceptual,
      "psnr": jnp.mean(image_metrics.psnr(prediction, target)),
      "self_decoded": jnp.mean(replaced.astype(jnp.float32)),
      "all_zero_mask": jnp.mean(all_zero.astype(jnp.float32)),
  }
  if flow_renderer:
    metrics["fallback_weight"] = jnp.mean(aux["weights"][:, -1])
    loss = loss + settings.fallback_penalty * metrics["fallback_weight"]
    # The warp F (flow: the per-pixel offsets, which hold the homography),
    # and its residual part, at the model resolution.
    offset = aux["offset"] if output == "warp" else aux["field"].offset
    residual = aux["residual"] if output == "warp" else aux["field"].offset
  if settings.photometric_weight > 0:
    metrics["photometric"] = jnp.mean(photometric_loss(
        prediction, target, settings.photometric_ssim_alpha))
    loss = loss + settings.photometric_weight * metrics["photometric"]
  if settings.smoothness_weight > 0:
    metrics["smoothness"] = jnp.mean(edge_aware_smoothness(
        residual, target, settings.smoothness_edge_scale))
    loss = loss + settings.smoothness_weight * metrics["smoothness"]
  if settings.gradient_weight > 0:
    metrics["gradient_l1"] = jnp.mean(gradient_l1(prediction, target))
    loss = loss + settings.gradient_weight * metrics["gradient_l1"]
  if supervise_flow:
    # The cameras and depth follow the views through the same reordering
    # and self-decoding (same keys, same choices).
    ordered = lambda x: self_decode(decode_key, order_views(
        order_key, x, batch["reference"]), settings.self_decode_prob)[0]
    true_offset, visible = true_flow.ground_truth_flow(
        ordered(batch["depth"]), ordered(batch["camera_from_world"]),
        batch["intrinsics"])
    error = jnp.linalg.norm(offset - true_offset, axis=-1)
    visible = visible.astype(jnp.float32)
    flow_error = jnp.sum(error * visible) / jnp.maximum(jnp.sum(visible), 1.0)
    weight = flow_supervision_weight(
        settings, jnp.zeros((), jnp.int32) if step is None else step)
    loss = loss + weight * flow_error
    still = jnp.linalg.norm(true_offset, axis=-1)  # the error of not moving
    still = jnp.sum(still * visible) / jnp.maximum(jnp.sum(visible), 1.0)
    metrics.update(flow_error=flow_error * (0.5 * s),
                   flow_error_still=still * (0.5 * s), flow_weight=weight)
  metrics["loss"] = loss
  return loss, metrics
