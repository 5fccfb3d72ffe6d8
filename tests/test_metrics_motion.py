"""Tests of the motion and sharpness scores (xfactor_core.metrics.motion)."""

import cv2
import numpy as np
import pytest

from xfactor_core.metrics import motion


def _scene(size=192, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
  image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
  return cv2.GaussianBlur(image, (3, 3), 0)


def _pan(shifts, size=128, seed=0):
  """Crops of a larger scene moving by ``shifts`` (dx, dy) pixels per frame."""
  scene = _scene(seed=seed)
  x = y = 32
  frames = []
  for dx, dy in [(0, 0)] + list(shifts):
    x, y = x + dx, y + dy
    frames.append(scene[y:y + size, x:x + size].copy())
  return np.stack(frames)


def _zoom(factors, size=128, seed=0):
  scene = _scene(seed=seed)
  frames = []
  for f in [1.0] + list(factors):
    side = int(round(size / f))
    top = (scene.shape[0] - side) // 2
    crop = scene[top:top + side, top:top + side]
    frames.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
  return np.stack(frames)


def test_the_same_motion_in_another_scene_correlates():
  shifts = [(2, 0), (3, 1), (1, -2), (0, -3), (-2, 0), (-3, 1)]
  a, b = _pan(shifts, seed=0), _pan(shifts, seed=1)
  scores = motion.motion_scores(a, b)
  assert scores["flow_corr"] > 0.9
  assert 0.8 < scores["flow_magnitude_ratio"] < 1.25
  reversed_motion = _pan([(-dx, -dy) for dx, dy in shifts], seed=1)
  assert motion.motion_scores(a, reversed_motion)["flow_corr"] < -0.8


def test_a_still_clip_has_no_motion_and_a_blur_no_detail():
  shifts = [(2, 1)] * 5
  moving = _pan(shifts)
  still = np.repeat(moving[:1], len(moving), axis=0)
  scores = motion.motion_scores(still, moving)
  assert scores["flow_corr"] == 0.0
  assert scores["flow_magnitude_ratio"] < 0.05
  assert scores["sharpness_ratio"] == pytest.approx(1.0, rel=0.1)
  blurred = np.stack([cv2.GaussianBlur(f, (13, 13), 4) for f in moving])
  assert motion.motion_scores(blurred, moving)["sharpness_ratio"] < 0.6


def test_zoom_shows_in_the_divergence():
  signal = motion.motion_signal(motion.optical_flows(_zoom([1.05, 1.1, 1.15])))
  assert np.all(signal[:, 2] > 1.0)  # radial pixels at half the side
  assert np.all(np.abs(signal[:, :2]) < 1.0)
  out = motion.motion_signal(motion.optical_flows(_zoom([0.95, 0.9, 0.85])))
  assert np.all(out[:, 2] < -1.0)


def test_bad_clips_have_clear_errors():
  clip = _pan([(1, 0)] * 3)
  with pytest.raises(ValueError, match="equal length"):
    motion.motion_scores(clip, clip[:3])
  with pytest.raises(ValueError, match="at least 2 frames"):
    motion.optical_flows(clip[:1])
  with pytest.raises(TypeError, match="uint8"):
    motion.sharpness(clip.astype(np.float32))
