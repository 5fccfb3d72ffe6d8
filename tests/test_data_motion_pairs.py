"""Frame pairs of the synthetic world labelled with their global motion."""

import numpy as np

from xfactor_core.data import motion_pairs
from xfactor_core.metrics import global_motion

SIZE = 64


def test_the_data_set_pairs_frames_with_their_motion():
  data = motion_pairs.motion_dataset(3, 6, SIZE, gaps=(1, 3))
  n = len(data["frames"])
  assert data["frames"].shape == (n, 2, SIZE, SIZE, 3)
  assert data["frames"].dtype == np.uint8
  assert data["terms"].shape == (n, len(global_motion.TERMS))
  assert set(data["gap"]) <= {1, 3} and 6 <= n <= 12
  assert np.all(data["visible"] >= motion_pairs.MIN_VISIBLE)
  assert np.all(np.isfinite(data["terms"])) and np.all(data["terms"][:, 4] >= 0)
  # Farther frames move more: the shift grows with the gap on average.
  shift = np.hypot(data["terms"][:, 0], data["terms"][:, 1])
  assert shift[data["gap"] == 3].mean() > shift[data["gap"] == 1].mean()
  small = motion_pairs.motion_dataset(3, 6, SIZE, gaps=(1, 3),
                                      motion_factor=0.2)
  small_shift = np.hypot(small["terms"][:, 0], small["terms"][:, 1])
  assert small_shift.mean() < 0.5 * shift.mean()
