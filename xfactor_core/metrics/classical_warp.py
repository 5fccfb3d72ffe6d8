"""A classical 2D warp: the yardstick that no training moves.

The motion of a target clip, read as feature homographies between consecutive
frames (ORB features, brute-force Hamming matching with a ratio test, RANSAC),
chained from frame 0, and applied to a photo. It is the reference row
``classical_homography`` of ``xfactor_core.evaluate``: a learnt warp of the
photo should move at least as much like the clip as this does.

Homographies here act on normalised image coordinates: ``u = (x + 0.5) / W``,
``v = (y + 0.5) / H`` for pixel ``(x, y)`` of a ``H x W`` image, so that one
chain, read from frames of any size, drives a photo and an output of any size.
``H[k]`` maps a point of frame ``k`` to the same scene point in frame 0.

>>> chain = homography_chain(target_frames)      # N x 3 x 3, chain[0] = I
>>> clip = warp_photo(photo, chain.homographies, out_size=256)  # N x 256 x 256 x 3
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import cv2
import numpy as np

DETECT_SIZE = 256  # frames are resized to this shorter side to find features
MIN_INLIERS = 10  # fewer RANSAC inliers than this: the step is the identity
RANSAC_THRESHOLD = 0.01  # reprojection threshold, in normalised units

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HomographyChain:
  """``homographies``: ``N x 3 x 3`` float64, frame k -> frame 0 (normalised
  coordinates; ``homographies[0]`` is the identity). ``failed_steps``: the
  steps (k-1, k) read as the identity because too few features matched."""
  homographies: np.ndarray
  failed_steps: tuple[int, ...]

  @property
  def num_failed(self) -> int:
    return len(self.failed_steps)


def _pixels_to_unit(height: int, width: int) -> np.ndarray:
  """3 x 3 matrix taking pixel coordinates to normalised ones."""
  return np.array([[1.0 / width, 0.0, 0.5 / width],
                   [0.0, 1.0 / height, 0.5 / height],
                   [0.0, 0.0, 1.0]])


def _grey_for_features(frame: np.ndarray, size: int) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    raise TypeError(f"frames must be uint8 RGB, got {frame.dtype}")
  grey = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)
  scale = size / min(grey.shape)
  if abs(scale - 1.0) > 1e-6:
    grey = cv2.resize(grey, (round(grey.shape[1] * scale),
                             round(grey.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
  return grey


def step_homography(frame_from: np.ndarray, frame_to: np.ndarray,
                    detect_size: int = DETECT_SIZE,
                    min_inliers: int = MIN_INLIERS) -> np.ndarray | None:
  """The homography taking normalised points of ``frame_from`` to
  ``frame_to`` (``H x W x 3`` uint8 each): ``3 x 3``, or None when fewer than
  ``min_inliers`` ORB matches survive RANSAC."""
  a = _grey_for_features(frame_from, detect_size)
  b = _grey_for_features(frame_to, detect_size)
  orb = cv2.ORB_create(nfeatures=2000, fastThreshold=10)
  kp_a, des_a = orb.detectAndCompute(a, None)
  kp_b, des_b = orb.detectAndCompute(b, None)
  if des_a is None or des_b is None or len(kp_a) < 4 or len(kp_b) < 4:
    return None
  matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
  good = [m[0] for m in matcher.knnMatch(des_a, des_b, k=2)
          if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
  if len(good) < min_inliers:
    return None
  to_unit_a = _pixels_to_unit(*a.shape)
  to_unit_b = _pixels_to_unit(*b.shape)
  def unit(points, to_unit):
    p = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (p @ to_unit.T)[:, :2].astype(np.float32)
  src = unit(np.array([kp_a[m.queryIdx].pt for m in good]), to_unit_a)
  dst = unit(np.array([kp_b[m.trainIdx].pt for m in good]), to_unit_b)
  h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_THRESHOLD,
                                  maxIters=2000, confidence=0.995)
  if h is None or inliers is None or int(inliers.sum()) < min_inliers:
    return None
  if not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-8:
    return None
  return h / h[2, 2]


def homography_chain(frames: Sequence[np.ndarray],
                     detect_size: int = DETECT_SIZE,
                     min_inliers: int = MIN_INLIERS) -> HomographyChain:
  """Homographies of every frame to frame 0, chained from consecutive steps.

  Args:
    frames: ``N x H x W x 3`` uint8 (N >= 1).
    detect_size: features are found on frames resized to this shorter side.
    min_inliers: a step with fewer RANSAC inliers is taken as the identity
      (and listed in ``failed_steps``).

  Returns:
    ``HomographyChain`` with ``N x 3 x 3`` matrices, ``H[k] = S_1 ... S_k``
    where ``S_k`` takes frame k to frame k-1.
  """
  if len(frames) < 1:
    raise ValueError("the homography chain needs at least one frame")
  chain = [np.eye(3)]
  failed = []
  for k in range(1, len(frames)):
    step = step_homography(frames[k], frames[k - 1], detect_size, min_inliers)
    if step is None:
      failed.append(k)
      step = np.eye(3)
    h = chain[-1] @ step
    chain.append(h / h[2, 2])
  if failed:
    log.warning("classical homography: %d of %d steps matched too few "
                "features and were taken as the identity", len(failed),
                len(frames) - 1)
  return HomographyChain(np.stack(chain), tuple(failed))


def rebase(homographies: np.ndarray, reference: int) -> np.ndarray:
  """``N x 3 x 3`` frame k -> frame 0 chains, re-expressed as frame k ->
  frame ``reference`` (``inv(H[reference]) @ H[k]``)."""
  out = np.linalg.inv(homographies[reference])[None] @ homographies
  return out / out[:, 2:3, 2:3]


def warp_photo(photo: np.ndarray, homographies: np.ndarray,
               out_size: int | tuple[int, int]) -> np.ndarray:
  """The photo as seen along the chain: output frame k samples the photo at
  ``H[k] p`` (the photo stands in for frame 0), with a reflected border.

  Args:
    photo: ``h x w x C`` image (any dtype OpenCV warps).
    homographies: ``N x 3 x 3`` in normalised coordinates (frame k -> 0).
    out_size: output side, or ``(height, width)``.

  Returns:
    ``N x height x width x C`` of the photo's dtype.
  """
  height, width = ((out_size, out_size) if isinstance(out_size, int)
                   else out_size)
  photo = np.ascontiguousarray(photo)
  out_to_unit = _pixels_to_unit(height, width)
  unit_to_photo = np.linalg.inv(_pixels_to_unit(*photo.shape[:2]))
  frames = []
  for h in homographies:
    m = unit_to_photo @ h @ out_to_unit  # output pixel -> photo pixel
    warped = cv2.warpPerspective(photo, m, (width, height),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
    if warped.ndim == 2 and photo.ndim == 3:
      warped = warped[..., None]
    frames.append(warped)
  return np.stack(frames)
