"""Camera metrics on trajectories whose errors are known by construction."""

import numpy as np
import pytest

from xfactor_core.metrics import camera

THRESHOLDS = camera.THRESHOLDS_DEG


def rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
  """(3, 3) rotation by `angle_deg` about `axis` (Rodrigues)."""
  axis = np.asarray(axis, dtype=np.float64)
  axis = axis / np.linalg.norm(axis)
  angle = np.radians(angle_deg)
  skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                   [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def random_rotation(rng: np.random.Generator) -> np.ndarray:
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def poses_from(rotations: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """(N, 4, 4) camera-from-world poses from (N, 3, 3) rotations and centres."""
  poses = np.tile(np.eye(4), (len(rotations), 1, 1))
  poses[:, :3, :3] = rotations
  poses[:, :3, 3] = -np.einsum("nij,nj->ni", rotations, centres)
  return poses


def random_trajectory(rng: np.random.Generator, num_frames: int = 7) -> np.ndarray:
  rotations = np.stack([random_rotation(rng) for _ in range(num_frames)])
  centres = np.cumsum(rng.normal(size=(num_frames, 3)), axis=0)
  return poses_from(rotations, centres)


def random_rigid(rng: np.random.Generator) -> np.ndarray:
  transform = np.eye(4)
  transform[:3, :3] = random_rotation(rng)
  transform[:3, 3] = rng.normal(size=3) * 5
  return transform


def test_metric_keys_are_the_documented_flat_dict():
  rng = np.random.default_rng(0)
  poses = random_trajectory(rng)
  metrics = camera.camera_metrics(poses, poses)
  assert set(metrics) == set(camera.metric_names())
  for prefix in ("Rac", "Tac", "Rot_Auc", "Trans_Auc", "SE3_Auc"):
    for threshold in (3, 5, 10, 15, 20, 30):
      assert f"{prefix}_{threshold}" in metrics
  for key in ("traj_err_unscaled", "traj_err_scale_invariant", "num_frames",
              "num_pairs"):
    assert key in metrics


def test_identical_trajectories_score_perfectly():
  rng = np.random.default_rng(1)
  poses = random_trajectory(rng, num_frames=9)
  metrics = camera.camera_metrics(poses, poses)
  for threshold in THRESHOLDS:
    for prefix in ("Rac", "Tac", "Rot_Auc", "Trans_Auc", "SE3_Auc"):
      assert metrics[f"{prefix}_{threshold}"] == pytest.approx(1.0)
  assert metrics["traj_err_unscaled"] == pytest.approx(0.0, abs=1e-12)
  assert metrics["traj_err_scale_invariant"] == pytest.approx(0.0, abs=1e-12)
  assert metrics["num_frames"] == 9
  assert metrics["num_pairs"] == 9 * 8 // 2


def test_pairs_are_all_i_less_than_j():
  first, second = camera.frame_pairs(4)
  assert list(zip(first.tolist(), second.tolist())) == [
      (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_change_of_world_frame_changes_nothing():
  rng = np.random.default_rng(2)
  poses = random_trajectory(rng)
  moved = poses @ random_rigid(rng)  # same cameras, other world coordinates
  rotation_errors, translation_errors = camera.pairwise_pose_errors(poses, moved)
  np.testing.assert_allclose(rotation_errors, 0.0, atol=1e-5)
  np.testing.assert_allclose(translation_errors, 0.0, atol=1e-5)
  metrics = camera.camera_metrics(poses, moved)
  assert metrics["traj_err_unscaled"] == pytest.approx(0.0, abs=1e-9)
  # Without the first-camera alignment the world frames differ.
  raw = camera.trajectory_errors(poses, moved, alignment="none")
  assert raw["traj_err_unscaled"] > 0.1


def test_pure_rotations_with_known_extra_angle():
  rng = np.random.default_rng(3)
  num_frames, step_deg = 5, 4.0
  axis = np.array([0.3, -0.5, 0.8])
  gt_rotations = np.stack([random_rotation(rng) for _ in range(num_frames)])
  extra = np.stack([rotation_about(axis, i * step_deg) for i in range(num_frames)])
  origin = np.zeros((num_frames, 3))  # all cameras at the origin
  gt = poses_from(gt_rotations, origin)
  pred = poses_from(gt_rotations @ extra, origin)
  rotation_errors, translation_errors = camera.pairwise_pose_errors(gt, pred)
  first, second = camera.frame_pairs(num_frames)
  np.testing.assert_allclose(rotation_errors, (second - first) * step_deg,
                             atol=1e-6)
  # Both relative translations are zero: the defined error is 0 degrees.
  np.testing.assert_array_equal(translation_errors, 0.0)
  metrics = camera.camera_metrics(gt, pred)
  # Errors 4, 8, 12, 16 degrees for 4, 3, 2, 1 of the 10 pairs.
  assert metrics["Rac_3"] == 0.0
  assert metrics["Rac_5"] == pytest.approx(0.4)
  assert metrics["Rac_10"] == pytest.approx(0.7)
  assert metrics["Rac_15"] == pytest.approx(0.9)
  assert metrics["Rac_20"] == pytest.approx(1.0)
  assert metrics["Tac_3"] == 1.0


def test_rotation_angle_is_accurate_near_zero_and_half_turn():
  axis = np.array([1.0, 2.0, -0.5])
  for angle in (1e-6, 0.01, 37.0, 179.999, 180.0):
    assert camera.rotation_angle_deg(rotation_about(axis, angle)) == pytest.approx(
        angle, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("direction_error_deg, expected_error_deg",
                         [(12.0, 12.0), (170.0, 10.0), (90.0, 90.0)])
def test_pure_translations_with_known_direction_error(direction_error_deg,
                                                      expected_error_deg):
  rng = np.random.default_rng(4)
  num_frames = 6
  shared_rotation = np.broadcast_to(random_rotation(rng), (num_frames, 3, 3))
  planar_path = np.cumsum(rng.normal(size=(num_frames, 3)) * [1, 1, 0], axis=0)
  turn = rotation_about([0, 0, 1], direction_error_deg)
  gt = poses_from(shared_rotation, planar_path)
  pred = poses_from(shared_rotation, planar_path @ turn.T)
  rotation_errors, translation_errors = camera.pairwise_pose_errors(gt, pred)
  np.testing.assert_allclose(rotation_errors, 0.0, atol=1e-6)
  np.testing.assert_allclose(translation_errors, expected_error_deg, atol=1e-6)


def test_translation_direction_error_of_12_degrees_gives_known_aucs():
  rng = np.random.default_rng(5)
  num_frames = 6
  shared_rotation = np.broadcast_to(random_rotation(rng), (num_frames, 3, 3))
  planar_path = np.cumsum(rng.normal(size=(num_frames, 3)) * [1, 1, 0], axis=0)
  gt = poses_from(shared_rotation, planar_path)
  pred = poses_from(shared_rotation,
                    planar_path @ rotation_about([0, 0, 1], 12.0).T)
  metrics = camera.camera_metrics(gt, pred)
  assert metrics["Tac_10"] == 0.0
  assert metrics["Tac_15"] == 1.0
  assert metrics["Rac_3"] == 1.0
  # 12 degrees lands in bin floor(12 * 31 / 30) = 12 of the 31 bins.
  assert metrics["Trans_Auc_10"] == 0.0
  assert metrics["Trans_Auc_15"] == pytest.approx(3 / 15)
  assert metrics["Trans_Auc_30"] == pytest.approx(18 / 30)
  assert metrics["SE3_Auc_30"] == pytest.approx(18 / 30)
  assert metrics["Rot_Auc_30"] == pytest.approx(1.0)


def test_scaled_trajectory_only_changes_the_unscaled_error():
  rng = np.random.default_rng(6)
  gt = random_trajectory(rng, num_frames=8)
  scaled = gt.copy()
  scaled[:, :3, 3] *= 2.5  # centres scaled by 2.5 about the world origin
  metrics = camera.camera_metrics(gt, scaled)
  assert metrics["Rac_3"] == 1.0
  assert metrics["Tac_3"] == 1.0
  assert metrics["SE3_Auc_3"] == pytest.approx(1.0)
  assert metrics["traj_err_scale_invariant"] == pytest.approx(0.0, abs=1e-9)
  assert metrics["traj_scale"] == pytest.approx(1 / 2.5)
  aligned_gt = camera.camera_centres(camera.relative_to_first(gt))
  assert metrics["traj_err_unscaled"] == pytest.approx(
      1.5 * np.mean(np.abs(aligned_gt)))
  assert metrics["traj_err_unscaled"] > 0.1


def test_translation_sign_flip_is_not_an_error():
  rng = np.random.default_rng(7)
  num_frames = 7
  shared_rotation = np.broadcast_to(random_rotation(rng), (num_frames, 3, 3))
  centres = np.cumsum(rng.normal(size=(num_frames, 3)), axis=0)
  gt = poses_from(shared_rotation, centres)
  flipped = poses_from(shared_rotation, -centres)
  _, translation_errors = camera.pairwise_pose_errors(gt, flipped)
  np.testing.assert_allclose(translation_errors, 0.0, atol=1e-6)
  metrics = camera.camera_metrics(gt, flipped)
  assert metrics["Tac_3"] == 1.0
  assert metrics["SE3_Auc_30"] == pytest.approx(1.0)
  # The trajectory itself is mirrored: the best scale is -1.
  assert metrics["traj_scale"] == pytest.approx(-1.0)
  assert metrics["traj_err_scale_invariant"] == pytest.approx(0.0, abs=1e-9)


def test_zero_translation_conventions():
  moving = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
  still = np.zeros((3, 3))
  # Both zero: 0 degrees. One zero: 90 degrees.
  np.testing.assert_array_equal(
      camera.translation_angle_deg(moving, moving), [0.0, 0.0, 0.0])
  np.testing.assert_array_equal(
      camera.translation_angle_deg(moving, still), [90.0, 90.0, 0.0])
  np.testing.assert_array_equal(
      camera.translation_angle_deg(still, still), [0.0, 0.0, 0.0])


def test_motionless_prediction_scores_zero_translation_accuracy():
  rng = np.random.default_rng(8)
  gt = random_trajectory(rng)
  still = np.tile(np.eye(4), (gt.shape[0], 1, 1))
  metrics = camera.camera_metrics(gt, still)
  assert metrics["Tac_30"] == 0.0
  assert metrics["SE3_Auc_30"] == 0.0
  assert metrics["traj_scale"] == 0.0


def test_hand_checked_histogram_and_aucs():
  # Bin width is 30/31 deg: 0.96 -> bin 0, 0.98 -> bin 1, 2.5 -> bin 2,
  # 29.99 and 30.0 -> bin 30, 45 -> no bin (but still counted in the total).
  errors = np.array([0.5, 0.96, 0.98, 2.5, 29.99, 30.0, 45.0])
  histogram = camera.normalized_error_histogram(errors)
  expected = np.zeros(31)
  expected[[0, 1, 2, 30]] = [2, 1, 1, 2]
  np.testing.assert_allclose(histogram, expected / 7)
  assert camera.error_auc(errors, 3) == pytest.approx(3 / 7)  # (2+3+4)/3/7
  assert camera.error_auc(errors, 5) == pytest.approx(17 / 35)  # (2+3+4+4+4)/5/7
  assert camera.error_auc(errors, 30) == pytest.approx(117 / 210)
  metrics = camera.metrics_from_errors(errors, np.zeros_like(errors))
  assert metrics["Rot_Auc_3"] == pytest.approx(3 / 7)
  assert metrics["SE3_Auc_30"] == pytest.approx(117 / 210)
  assert metrics["Trans_Auc_30"] == pytest.approx(1.0)
  assert metrics["Rac_3"] == pytest.approx(4 / 7)
  assert metrics["Rac_30"] == pytest.approx(5 / 7)  # strictly below 30


def test_se3_uses_the_per_pair_maximum():
  metrics = camera.metrics_from_errors(np.array([1.0, 20.0]),
                                       np.array([20.0, 1.0]))
  assert metrics["Rac_10"] == 0.5
  assert metrics["Tac_10"] == 0.5
  assert metrics["Rot_Auc_10"] > 0.4
  assert metrics["SE3_Auc_10"] == 0.0


def test_bad_inputs_are_named():
  rng = np.random.default_rng(9)
  poses = random_trajectory(rng, num_frames=4)
  with pytest.raises(ValueError, match="shape"):
    camera.camera_metrics(poses[:, :2], poses[:, :2])
  with pytest.raises(ValueError, match="4 poses but pred has 3"):
    camera.camera_metrics(poses, poses[:3])
  with pytest.raises(ValueError, match="at least 2 frames"):
    camera.camera_metrics(poses[:1], poses[:1])
  broken = poses.copy()
  broken[1, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    camera.camera_metrics(poses, broken)
  scaled_rotation = poses.copy()
  scaled_rotation[:, :3, :3] *= 2
  with pytest.raises(ValueError, match="not rotations"):
    camera.camera_metrics(poses, scaled_rotation)
  with pytest.raises(ValueError, match="alignment"):
    camera.trajectory_errors(poses, poses, alignment="procrustes")


def test_three_by_four_poses_are_accepted():
  rng = np.random.default_rng(10)
  poses = random_trajectory(rng, num_frames=5)
  full = camera.camera_metrics(poses, poses @ random_rigid(rng))
  short = camera.camera_metrics(poses[:, :3], (poses @ random_rigid(rng))[:, :3])
  assert full["Rac_3"] == short["Rac_3"] == 1.0
