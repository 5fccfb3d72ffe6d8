"""Tests of the classical homography chain (xfactor_core.metrics.classical_warp)."""

import cv2
import numpy as np
import pytest

from xfactor_core.metrics import classical_warp, motion


def _photo(size=320, seed=0):
  """A textured photo: coarse random colours, upsampled, with sharp blobs."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (size // 10, size // 10, 3), dtype=np.uint8)
  image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
  for _ in range(60):
    centre = tuple(int(c) for c in rng.integers(0, size, 2))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cv2.circle(image, centre, int(rng.integers(3, 12)), colour, -1)
  return image


def _similarity(dx, dy, degrees=0.0, scale=1.0, px=0.0):
  """A homography in normalised coordinates about the image centre."""
  a = np.radians(degrees)
  c = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
  m = np.array([[scale * np.cos(a), -scale * np.sin(a), dx],
                [scale * np.sin(a), scale * np.cos(a), dy],
                [px, 0.0, 1.0]])
  return c @ m @ np.linalg.inv(c)


def _chain(steps):
  out = [np.eye(3)]
  for s in steps:
    out.append(out[-1] @ s)
  return np.stack(out)


def test_a_known_chain_is_recovered():
  steps = [_similarity(0.02, 0.0), _similarity(0.01, -0.015, degrees=1.5),
           _similarity(-0.01, 0.01, scale=1.03), _similarity(0.015, 0.005, px=0.02),
           _similarity(0.0, 0.02, degrees=-1.0, scale=0.98)]
  truth = _chain(steps)
  photo = _photo()
  frames = classical_warp.warp_photo(photo, truth, 256)
  chain = classical_warp.homography_chain(frames)
  assert chain.homographies.shape == (6, 3, 3)
  assert chain.num_failed == 0
  # Where each chain sends a grid of points, in normalised units.
  grid = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 5),
                              np.linspace(0.2, 0.8, 5)), -1).reshape(-1, 2)
  points = np.concatenate([grid, np.ones((len(grid), 1))], axis=1)
  def project(h):
    p = points @ h.T
    return p[:, :2] / p[:, 2:]
  for k in range(1, 6):
    error = np.abs(project(chain.homographies[k]) - project(truth[k])).max()
    assert error < 0.01, (k, error)  # under 1 % of the side
  # The warped photo matches the frames it was read from.
  rewarped = classical_warp.warp_photo(photo, chain.homographies, 256)
  inner = (slice(None), slice(32, -32), slice(32, -32))
  diff = np.abs(rewarped[inner].astype(float) - frames[inner].astype(float))
  assert diff.mean() < 6.0, diff.mean()


def test_identical_frames_give_the_identity():
  frames = np.repeat(_photo(256)[None], 4, axis=0)
  chain = classical_warp.homography_chain(frames)
  assert chain.num_failed == 0
  np.testing.assert_allclose(chain.homographies,
                             np.broadcast_to(np.eye(3), (4, 3, 3)), atol=2e-3)
  out = classical_warp.warp_photo(frames[0], chain.homographies, 256)
  assert np.abs(out.astype(float) - frames.astype(float)).mean() < 1.0


def test_featureless_steps_fall_back_to_the_identity_and_are_counted():
  photo = _photo(256)
  flat = np.full_like(photo, 128)
  chain = classical_warp.homography_chain(np.stack([photo, flat, photo]))
  assert chain.failed_steps == (1, 2)
  np.testing.assert_array_equal(chain.homographies[1], np.eye(3))
  np.testing.assert_array_equal(chain.homographies[2], np.eye(3))


def test_warp_matches_opencv_on_a_known_pixel_matrix():
  photo = _photo(128)
  shift = _similarity(0.125, 0.0)  # 16 px at 128 px
  out = classical_warp.warp_photo(photo, shift[None], 128)[0]
  expected = cv2.warpAffine(photo, np.float32([[1, 0, 16], [0, 1, 0]]),
                            (128, 128), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
  np.testing.assert_array_equal(out, expected)


def test_rebase_and_the_flow_of_a_warped_pan():
  truth = _chain([_similarity(0.02, 0.01)] * 5)
  rebased = classical_warp.rebase(truth, 2)
  np.testing.assert_allclose(rebased[2], np.eye(3), atol=1e-12)
  np.testing.assert_allclose(rebased[4], truth[2], atol=1e-12)
  # A photo warped along a pan moves like the pan (the motion yardstick).
  frames = classical_warp.warp_photo(_photo(), truth, 128)
  again = classical_warp.warp_photo(
      _photo(seed=1), classical_warp.homography_chain(frames).homographies, 128)
  assert motion.motion_scores(again, frames)["flow_magnitude_ratio"] == \
      pytest.approx(1.0, abs=0.25)


def test_bad_input_is_refused():
  with pytest.raises(TypeError, match="uint8"):
    classical_warp.homography_chain(np.zeros((2, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="at least one frame"):
    classical_warp.homography_chain(np.zeros((0, 64, 64, 3), np.uint8))
