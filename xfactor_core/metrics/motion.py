"""Does a generated clip move like its target, and is it sharp?

Three scores of a generated clip against a reference clip (the ground truth,
or the published model's transfer of the same motion):

* ``flow_correlation``: the Pearson correlation between the two clips' global
  motion signals. A clip's signal holds, for every pair of consecutive
  frames, the mean horizontal and vertical optical flow and the flow's
  divergence (zoom), all three in pixels at ``FLOW_SIZE`` (the divergence is
  expressed as the radial flow it causes at half the image side). Optical
  flow is OpenCV's DIS (medium preset) on grey frames resized to
  ``FLOW_SIZE``. 1: the same motion over time, 0: unrelated, < 0: opposite.
* ``flow_magnitude_ratio``: the generated clip's mean flow magnitude over
  the reference's (1: as much motion, 0: a still clip).
* ``sharpness_ratio``: the mean Sobel gradient magnitude of the generated
  frames over the reference's, both resized to ``SHARPNESS_SIZE`` (1: as much
  detail, near 0: a blur).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

FLOW_SIZE = 128
SHARPNESS_SIZE = 256


def _grey(frame: np.ndarray, size: int) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    raise TypeError(f"frames must be uint8 RGB, got {frame.dtype}")
  grey = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)
  interpolation = (cv2.INTER_AREA if grey.shape[0] > size
                   else cv2.INTER_CUBIC)
  return cv2.resize(grey, (size, size), interpolation=interpolation)


def optical_flows(frames: Sequence[np.ndarray],
                  size: int = FLOW_SIZE) -> np.ndarray:
  """Flows between consecutive frames: ``(N-1) x size x size x 2`` pixels.

  Args:
    frames: ``N x H x W x 3`` uint8 (N >= 2).
    size: frames are resized to ``size x size`` first.
  """
  if len(frames) < 2:
    raise ValueError(f"optical flow needs at least 2 frames, got {len(frames)}")
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  grey = [_grey(f, size) for f in frames]
  return np.stack([dis.calc(a, b, None) for a, b in zip(grey[:-1], grey[1:])])


def motion_signal(flows: np.ndarray) -> np.ndarray:
  """``(N-1) x 3``: mean dx, mean dy and divergence (as radial pixels at half
  the side) of every flow ``(N-1) x S x S x 2``."""
  size = flows.shape[1]
  du_dx = np.gradient(flows[..., 0], axis=2)
  dv_dy = np.gradient(flows[..., 1], axis=1)
  divergence = np.mean(du_dx + dv_dy, axis=(1, 2)) * (size / 4.0)
  return np.stack([flows[..., 0].mean(axis=(1, 2)),
                   flows[..., 1].mean(axis=(1, 2)), divergence], axis=-1)


def signal_correlation(generated: np.ndarray, reference: np.ndarray) -> float:
  """Pearson correlation of two motion signals (flattened); 0 when either is
  constant (a still clip carries no motion to correlate)."""
  a = np.asarray(generated, np.float64).reshape(-1)
  b = np.asarray(reference, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f"signals of different lengths: {a.shape} and {b.shape}; "
                     "compare clips with the same number of frames")
  a, b = a - a.mean(), b - b.mean()
  norm = np.linalg.norm(a) * np.linalg.norm(b)
  return float(a @ b / norm) if norm > 1e-12 else 0.0


def sharpness(frames: Sequence[np.ndarray],
              size: int = SHARPNESS_SIZE) -> float:
  """Mean Sobel gradient magnitude of grey frames resized to ``size``."""
  values = []
  for frame in frames:
    grey = _grey(frame, size).astype(np.float32) / 255.0
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    values.append(float(np.mean(np.sqrt(gx * gx + gy * gy))))
  return float(np.mean(values))


def motion_scores(generated: Sequence[np.ndarray],
                  reference: Sequence[np.ndarray]) -> dict[str, float]:
  """``flow_correlation``, ``flow_magnitude_ratio`` and ``sharpness_ratio``
  of a generated clip against a reference clip of as many frames (uint8)."""
  if len(generated) != len(reference):
    raise ValueError(f"the clips have {len(generated)} and {len(reference)} "
                     "frames; compare clips of equal length")
  flows_generated = optical_flows(generated)
  flows_reference = optical_flows(reference)
  magnitude = lambda f: float(np.mean(np.linalg.norm(f, axis=-1)))
  reference_magnitude = magnitude(flows_reference)
  reference_sharpness = sharpness(reference)
  return {
      "flow_corr": signal_correlation(motion_signal(flows_generated),
                                      motion_signal(flows_reference)),
      "flow_magnitude_ratio": (magnitude(flows_generated)
                               / max(reference_magnitude, 1e-6)),
      "sharpness_ratio": sharpness(generated) / max(reference_sharpness, 1e-6),
  }
