"""Camera metrics: how well one camera trajectory reproduces another.

Definitions follow docs/ARCHITECTURE.md ("Measuring transfer: TPS") and the
published XFactor evaluation code; every choice they leave open is fixed here
and noted.

Conventions:
  * A pose is a 4x4 camera-from-world matrix T (OpenCV camera axes: x right,
    y down, z forward). The camera centre is c = -R^T t.
  * Pairs: all unordered pairs i < j of the N frames, N (N - 1) / 2 of them
    (the published code uses `torch.combinations`, i.e. i < j). For each pair
    the relative pose is T_i @ inverse(T_j).
  * Rotation error of a pair: the angle of R_gt^T R_pred in degrees, where R
    is the rotation block of the relative pose.
  * Translation error of a pair: the angle between the two relative
    translations with the sign ignored, acos(|cos|), in [0, 90] degrees.
    Zero-length translations (norm <= `zero_translation_tol` times the largest
    relative-translation norm of the same trajectory, or exactly zero when the
    whole trajectory is motionless) have no direction: when both are zero the
    error is 0 degrees (both agree there is no motion); when only one is zero
    the error is 90 degrees, the maximum, which is what the published code
    produces for a zero vector.
  * Accuracies Rac_k / Tac_k: fraction of pairs with error strictly below k
    degrees, k in 3, 5, 10, 15, 20, 30.
  * AUCs: a histogram of the errors with 31 equal bins over [0, 30] degrees
    (bin width 30/31 degrees, errors above 30 degrees fall in no bin, an error
    of exactly 30 falls in the last one, as `torch.histc` does), divided by the
    number of pairs; AUC@k is the mean of the cumulative sum of its first k
    bins. So AUC@k integrates the accuracy curve up to k * 30 / 31 degrees,
    a quirk of the published definition kept for comparability. SE3 uses the
    per-pair maximum of the rotation and translation errors.
  * Trajectory errors: both trajectories are first expressed relative to their
    own first camera (T_i @ inverse(T_0), so camera 0 is the identity and its
    centre the origin), which is the frame a VGGT oracle, used by the published
    notebook, returns its poses in. Then, over all frames and the three
    coordinates:
      traj_err_unscaled        = mean |c_gt - c_pred|
      traj_err_scale_invariant = mean |c_gt - s c_pred|, with the least-squares
                                 scale s = <c_gt, c_pred> / <c_pred, c_pred>
                                 (s = 0 when the prediction does not move).
    The "|.|" is the absolute value per coordinate (a mean L1 distance), as in
    the published code. Rotation and translation angle errors do not depend on
    this alignment (relative poses are invariant to a change of world frame).
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np

THRESHOLDS_DEG: tuple[int, ...] = (3, 5, 10, 15, 20, 30)
HISTOGRAM_BINS = 31
HISTOGRAM_MAX_DEG = 30.0

TrajectoryAlignment = Literal["first_camera", "none"]


def validate_poses(poses: np.ndarray, name: str = "poses") -> np.ndarray:
  """Checks and converts an array of camera-from-world poses.

  Args:
    poses: (N, 4, 4) or (N, 3, 4) camera-from-world matrices.
    name: how the array is called in error messages.

  Returns:
    (N, 4, 4) float64 array with last row [0, 0, 0, 1].
  """
  poses = np.asarray(poses, dtype=np.float64)
  if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
    raise ValueError(
        f"{name} must have shape (N, 4, 4) or (N, 3, 4) (camera-from-world "
        f"matrices), got {poses.shape}; stack one matrix per frame.")
  if not np.all(np.isfinite(poses)):
    raise ValueError(
        f"{name} contains NaN or infinite values; keep only the frames the "
        "oracle registered (see OracleResult.registered).")
  if poses.shape[1] == 3:
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (poses.shape[0], 1, 4))
    poses = np.concatenate([poses, bottom], axis=1)
  rotations = poses[:, :3, :3]
  gram = np.einsum("nji,njk->nik", rotations, rotations)
  if not np.allclose(gram, np.eye(3), atol=1e-4):
    raise ValueError(
        f"{name}: the 3x3 blocks are not rotations (R^T R != I); pass rigid "
        "camera-from-world poses without scale or shear.")
  return poses


def _validate_pose_pair(gt: np.ndarray, pred: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Both trajectories validated, with one pose per frame in each."""
  gt = validate_poses(gt, "gt_camera_from_world")
  pred = validate_poses(pred, "pred_camera_from_world")
  if gt.shape[0] != pred.shape[0]:
    raise ValueError(
        f"gt has {gt.shape[0]} poses but pred has {pred.shape[0]}; pass one "
        "pose per frame for the same frames in both.")
  return gt, pred


def invert_poses(poses: np.ndarray) -> np.ndarray:
  """Inverts rigid 4x4 transforms in closed form.

  Args:
    poses: (..., 4, 4) rigid transforms.

  Returns:
    (..., 4, 4) inverses.
  """
  rotations = poses[..., :3, :3]
  translations = poses[..., :3, 3]
  inverse = np.zeros_like(poses)
  inverse[..., :3, :3] = np.swapaxes(rotations, -1, -2)
  inverse[..., :3, 3] = -np.einsum("...ji,...j->...i", rotations, translations)
  inverse[..., 3, 3] = 1.0
  return inverse


def camera_centres(camera_from_world: np.ndarray) -> np.ndarray:
  """Camera centres in world coordinates.

  Args:
    camera_from_world: (N, 4, 4) poses.

  Returns:
    (N, 3) centres c = -R^T t.
  """
  rotations = camera_from_world[:, :3, :3]
  translations = camera_from_world[:, :3, 3]
  return -np.einsum("nji,nj->ni", rotations, translations)


def relative_to_first(camera_from_world: np.ndarray) -> np.ndarray:
  """Re-expresses poses in the frame of the first camera.

  Args:
    camera_from_world: (N, 4, 4) poses.

  Returns:
    (N, 4, 4) poses T_i @ inverse(T_0); the first one is the identity.
  """
  return camera_from_world @ invert_poses(camera_from_world[0])


def frame_pairs(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """All unordered frame pairs i < j, in row-major order.

  Args:
    num_frames: N.

  Returns:
    Two (N (N - 1) / 2,) int arrays with the first and second index.
  """
  first, second = np.triu_indices(num_frames, k=1)
  return first, second


def rotation_angle_deg(rotations: np.ndarray) -> np.ndarray:
  """Rotation angles of 3x3 rotation matrices, accurate near 0 and 180 degrees.

  Args:
    rotations: (..., 3, 3).

  Returns:
    (...) angles in degrees, in [0, 180].
  """
  cos_angle = (np.trace(rotations, axis1=-2, axis2=-1) - 1.0) / 2.0
  skew = rotations - np.swapaxes(rotations, -1, -2)
  sin_angle = np.sqrt(skew[..., 2, 1]**2 + skew[..., 0, 2]**2 +
                      skew[..., 1, 0]**2) / 2.0
  return np.degrees(np.arctan2(sin_angle, cos_angle))


def _zero_translation_mask(translations: np.ndarray, tolerance: float) -> np.ndarray:
  norms = np.linalg.norm(translations, axis=-1)
  scale = norms.max(initial=0.0)
  if scale == 0.0:
    return np.ones_like(norms, dtype=bool)
  return norms <= tolerance * scale


def translation_angle_deg(gt_translations: np.ndarray,
                          pred_translations: np.ndarray,
                          zero_translation_tol: float = 1e-6) -> np.ndarray:
  """Sign-agnostic angles between translation directions.

  Args:
    gt_translations: (P, 3).
    pred_translations: (P, 3).
    zero_translation_tol: a vector is zero when its norm is at most this
      fraction of the largest norm among its own P vectors.

  Returns:
    (P,) angles acos(|cos|) in degrees, in [0, 90]; 0 when both vectors are
    zero, 90 when exactly one is.
  """
  gt_zero = _zero_translation_mask(gt_translations, zero_translation_tol)
  pred_zero = _zero_translation_mask(pred_translations, zero_translation_tol)
  gt_norms = np.linalg.norm(gt_translations, axis=-1)
  pred_norms = np.linalg.norm(pred_translations, axis=-1)
  safe = ~(gt_zero | pred_zero)
  # |cos| through the cross and dot products: atan2 stays accurate for small
  # angles where acos of a rounded cosine would not.
  cross = np.linalg.norm(np.cross(gt_translations, pred_translations), axis=-1)
  dot = np.abs(np.sum(gt_translations * pred_translations, axis=-1))
  angles = np.full(gt_norms.shape, 90.0)
  angles[safe] = np.degrees(np.arctan2(cross[safe], dot[safe]))
  angles[gt_zero & pred_zero] = 0.0
  return angles


def pairwise_pose_errors(
    gt_camera_from_world: np.ndarray,
    pred_camera_from_world: np.ndarray,
    zero_translation_tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
  """Rotation and translation angle errors of all frame pairs i < j.

  Args:
    gt_camera_from_world: (N, 4, 4) reference poses.
    pred_camera_from_world: (N, 4, 4) poses to evaluate.
    zero_translation_tol: see `translation_angle_deg`.

  Returns:
    (P,) rotation errors and (P,) translation errors in degrees, P = N (N-1)/2,
    pairs ordered as `frame_pairs(N)`.
  """
  gt, pred = _validate_pose_pair(gt_camera_from_world, pred_camera_from_world)
  first, second = frame_pairs(gt.shape[0])
  relative_gt = gt[first] @ invert_poses(gt[second])
  relative_pred = pred[first] @ invert_poses(pred[second])
  rotation_difference = (
      np.swapaxes(relative_gt[:, :3, :3], -1, -2) @ relative_pred[:, :3, :3])
  rotation_errors = rotation_angle_deg(rotation_difference)
  translation_errors = translation_angle_deg(relative_gt[:, :3, 3],
                                             relative_pred[:, :3, 3],
                                             zero_translation_tol)
  return rotation_errors, translation_errors


def normalized_error_histogram(errors_deg: np.ndarray) -> np.ndarray:
  """Histogram of errors, 31 equal bins over [0, 30] degrees, over pair count.

  Args:
    errors_deg: (P,) errors in degrees, P >= 1.

  Returns:
    (31,) fractions of all P errors per bin; errors above 30 are in no bin.
  """
  errors_deg = np.asarray(errors_deg, dtype=np.float64).reshape(-1)
  if errors_deg.size == 0:
    raise ValueError("no errors to histogram: need at least one frame pair.")
  counts, _ = np.histogram(errors_deg, bins=HISTOGRAM_BINS,
                           range=(0.0, HISTOGRAM_MAX_DEG))
  return counts / float(errors_deg.size)


def error_auc(errors_deg: np.ndarray, num_bins: int) -> float:
  """AUC@k: mean of the cumulative sum of the first k histogram bins.

  Args:
    errors_deg: (P,) errors in degrees.
    num_bins: k, between 1 and 31.

  Returns:
    The AUC, in [0, 1].
  """
  if not 1 <= num_bins <= HISTOGRAM_BINS:
    raise ValueError(f"num_bins must be in [1, {HISTOGRAM_BINS}], got {num_bins}.")
  histogram = normalized_error_histogram(errors_deg)
  return float(np.mean(np.cumsum(histogram[:num_bins])))


def trajectory_errors(
    gt_camera_from_world: np.ndarray,
    pred_camera_from_world: np.ndarray,
    alignment: TrajectoryAlignment = "first_camera",
) -> dict[str, float]:
  """Mean absolute camera-centre errors, unscaled and after a scale fit.

  Args:
    gt_camera_from_world: (N, 4, 4) reference poses.
    pred_camera_from_world: (N, 4, 4) poses to evaluate.
    alignment: "first_camera" expresses each trajectory relative to its own
      first camera before comparing (the default, see module docstring);
      "none" compares the centres in the world frames as given.

  Returns:
    {"traj_err_unscaled": ..., "traj_err_scale_invariant": ...,
     "traj_scale": s}, s the least-squares scale applied to the prediction.
  """
  gt = validate_poses(gt_camera_from_world, "gt_camera_from_world")
  pred = validate_poses(pred_camera_from_world, "pred_camera_from_world")
  if alignment == "first_camera":
    gt, pred = relative_to_first(gt), relative_to_first(pred)
  elif alignment != "none":
    raise ValueError(
        f"alignment must be 'first_camera' or 'none', got {alignment!r}.")
  gt_centres = camera_centres(gt)
  pred_centres = camera_centres(pred)
  numerator = float(np.sum(gt_centres * pred_centres))
  denominator = float(np.sum(pred_centres * pred_centres))
  scale = numerator / denominator if denominator > 1e-24 else 0.0
  return {
      "traj_err_unscaled": float(np.mean(np.abs(gt_centres - pred_centres))),
      "traj_err_scale_invariant":
          float(np.mean(np.abs(gt_centres - scale * pred_centres))),
      "traj_scale": scale,
  }


def metrics_from_errors(rotation_errors: np.ndarray,
                        translation_errors: np.ndarray,
                        thresholds: Sequence[int] = THRESHOLDS_DEG) -> dict[str, float]:
  """Accuracies and AUCs from per-pair errors.

  Args:
    rotation_errors: (P,) degrees.
    translation_errors: (P,) degrees.
    thresholds: accuracy thresholds in degrees, also the AUC bin counts.

  Returns:
    Flat dict with Rac_k, Tac_k, Rot_Auc_k, Trans_Auc_k, SE3_Auc_k.
  """
  rotation_errors = np.asarray(rotation_errors, dtype=np.float64)
  translation_errors = np.asarray(translation_errors, dtype=np.float64)
  se3_errors = np.maximum(rotation_errors, translation_errors)
  metrics = {}
  for threshold in thresholds:
    metrics[f"Rac_{threshold}"] = float(np.mean(rotation_errors < threshold))
  for threshold in thresholds:
    metrics[f"Tac_{threshold}"] = float(np.mean(translation_errors < threshold))
  for prefix, errors in (("Rot", rotation_errors), ("Trans", translation_errors),
                         ("SE3", se3_errors)):
    for threshold in thresholds:
      metrics[f"{prefix}_Auc_{threshold}"] = error_auc(errors, threshold)
  return metrics


def camera_metrics(
    gt_camera_from_world: np.ndarray,
    pred_camera_from_world: np.ndarray,
    *,
    trajectory_alignment: TrajectoryAlignment = "first_camera",
    zero_translation_tol: float = 1e-6,
) -> dict[str, float]:
  """All camera metrics of a predicted trajectory against a reference one.

  Args:
    gt_camera_from_world: (N, 4, 4) reference camera-from-world poses, N >= 2.
    pred_camera_from_world: (N, 4, 4) poses of the same N frames.
    trajectory_alignment: see `trajectory_errors`.
    zero_translation_tol: see `translation_angle_deg`.

  Returns:
    Flat dict: Rac_{3,5,10,15,20,30}, Tac_*, Rot_Auc_*, Trans_Auc_*, SE3_Auc_*,
    traj_err_unscaled, traj_err_scale_invariant, traj_scale, num_frames,
    num_pairs, mean_rot_err_deg, mean_trans_err_deg.
  """
  gt, pred = _validate_pose_pair(gt_camera_from_world, pred_camera_from_world)
  if gt.shape[0] < 2:
    raise ValueError(
        f"camera metrics need at least 2 frames (one pair), got {gt.shape[0]}.")
  rotation_errors, translation_errors = pairwise_pose_errors(
      gt, pred, zero_translation_tol)
  metrics = metrics_from_errors(rotation_errors, translation_errors)
  metrics.update(trajectory_errors(gt, pred, trajectory_alignment))
  metrics["mean_rot_err_deg"] = float(np.mean(rotation_errors))
  metrics["mean_trans_err_deg"] = float(np.mean(translation_errors))
  metrics["num_frames"] = int(gt.shape[0])
  metrics["num_pairs"] = int(rotation_errors.size)
  return metrics


def metric_names(thresholds: Sequence[int] = THRESHOLDS_DEG) -> list[str]:
  """Keys of `camera_metrics`, in its order."""
  names = [f"Rac_{k}" for k in thresholds] + [f"Tac_{k}" for k in thresholds]
  for prefix in ("Rot", "Trans", "SE3"):
    names += [f"{prefix}_Auc_{k}" for k in thresholds]
  return names + [
      "traj_err_unscaled", "traj_err_scale_invariant", "traj_scale",
      "mean_rot_err_deg", "mean_trans_err_deg", "num_frames", "num_pairs"
  ]
