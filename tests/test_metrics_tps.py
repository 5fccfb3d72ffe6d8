"""TPS: oracle poses of target and transfer compared; frame reading; plots; CLI."""

import json
import math
import time

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from xfactor_core import metrics as metrics_api
from xfactor_core.metrics import camera
from xfactor_core.metrics import clips
from xfactor_core.metrics import oracles
from xfactor_core.metrics import plots
from xfactor_core.metrics import textured_room
from xfactor_core.metrics import true_pose_similarity as tps_lib


def blank_frames(num_frames: int, size: int = 16) -> np.ndarray:
  return np.zeros((num_frames, size, size, 3), dtype=np.uint8)


def wobbly_path(num_frames: int, seed: int) -> np.ndarray:
  """A path inside the room with some random jitter."""
  rng = np.random.default_rng(seed)
  poses = textured_room.orbit_path(num_frames)
  jitter = np.eye(4)
  for index in range(num_frames):
    jitter[:3, 3] = rng.normal(scale=0.05, size=3)
    poses[index] = jitter @ poses[index]
  return poses


class _PartialOracle:
  """Returns the given poses but registers only the frames in `mask`."""

  def __init__(self, poses, mask):
    self.poses = np.asarray(poses, dtype=np.float64).copy()
    self.mask = np.asarray(mask, dtype=bool)

  def estimate(self, frames):
    poses = self.poses.copy()
    poses[~self.mask] = np.nan
    return oracles.OracleResult(poses, self.mask, "partial")


def test_tps_with_ground_truth_oracles_equals_camera_metrics():
  target_poses = wobbly_path(7, seed=0)
  transfer_poses = wobbly_path(7, seed=1)
  result = metrics_api.tps(
      blank_frames(7), blank_frames(7),
      oracle=oracles.GroundTruthOracle(target_poses),
      transfer_oracle=oracles.GroundTruthOracle(transfer_poses))
  expected = camera.camera_metrics(target_poses, transfer_poses)
  for key, value in expected.items():
    assert result[key] == pytest.approx(value), key
  assert result["num_input_frames"] == 7
  assert result["num_registered_target"] == result["num_registered_transfer"] == 7
  assert result["num_pairs"] == 21
  assert result["Tac_3"] < 1.0  # the two paths do differ


def test_tps_uses_frames_registered_in_both():
  target_poses = wobbly_path(8, seed=2)
  transfer_poses = wobbly_path(8, seed=3)
  target_mask = np.array([1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
  transfer_mask = np.array([1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
  report = tps_lib.evaluate_tps(
      blank_frames(8), blank_frames(8),
      oracle=_PartialOracle(target_poses, target_mask),
      transfer_oracle=_PartialOracle(transfer_poses, transfer_mask))
  common = target_mask & transfer_mask
  np.testing.assert_array_equal(report.common, common)
  expected = camera.camera_metrics(target_poses[common], transfer_poses[common])
  assert report.metrics["SE3_Auc_30"] == pytest.approx(expected["SE3_Auc_30"])
  assert report.metrics["traj_err_scale_invariant"] == pytest.approx(
      expected["traj_err_scale_invariant"])
  assert report.metrics["num_frames"] == 5
  assert report.metrics["num_registered_target"] == 7
  assert report.metrics["num_registered_transfer"] == 6


def test_tps_with_too_few_common_frames_is_nan_not_an_error():
  poses = wobbly_path(5, seed=4)
  report = tps_lib.evaluate_tps(
      blank_frames(5), blank_frames(5),
      oracle=_PartialOracle(poses, [1, 1, 0, 0, 0]),
      transfer_oracle=_PartialOracle(poses, [1, 1, 1, 1, 1]))
  assert math.isnan(report.metrics["SE3_Auc_30"])
  assert math.isnan(report.metrics["traj_err_unscaled"])
  assert report.metrics["num_frames"] == 2
  assert report.metrics["num_pairs"] == 0
  assert "nan" in tps_lib.format_table(report.metrics)


def test_tps_input_errors_are_named():
  poses = wobbly_path(4, seed=5)
  with pytest.raises(ValueError, match="4 frames but the transfer has 3"):
    metrics_api.tps(blank_frames(4), blank_frames(3),
                    oracle=oracles.GroundTruthOracle(poses))
  with pytest.raises(ValueError, match="uint8"):
    metrics_api.tps(blank_frames(4).astype(np.float32), blank_frames(4),
                    oracle=oracles.GroundTruthOracle(poses))
  with pytest.raises(KeyError, match="no oracle named"):
    metrics_api.tps(blank_frames(4), blank_frames(4), oracle="no_such_oracle")
  with pytest.raises(ValueError, match="oracle_kwargs"):
    metrics_api.tps(blank_frames(4), blank_frames(4),
                    oracle=oracles.GroundTruthOracle(poses),
                    oracle_kwargs={"seed": 1})


def test_read_frames_from_a_folder_in_natural_order(tmp_path):
  for value in (10, 2, 1):
    Image.fromarray(np.full((8, 6, 3), value, dtype=np.uint8)).save(
        tmp_path / f"frame{value}.png")
  (tmp_path / "notes.txt").write_text("not a frame")
  frames = clips.read_frames(tmp_path)
  assert frames.shape == (3, 8, 6, 3)
  assert frames.dtype == np.uint8
  assert frames[:, 0, 0, 0].tolist() == [1, 2, 10]
  assert clips.read_frames(tmp_path, max_frames=2).shape[0] == 2


def test_read_frames_from_a_video(tmp_path):
  clip = np.zeros((5, 64, 64, 3), dtype=np.uint8)
  clip[:, :, :32] = 200
  clip[2] = 60
  iio.imwrite(tmp_path / "clip.mp4", clip, fps=10)
  frames = clips.read_frames(tmp_path / "clip.mp4")
  assert frames.shape == (5, 64, 64, 3)
  assert abs(float(frames[2].mean()) - 60) < 5  # lossy codec
  assert abs(float(frames[0, :, :32].mean()) - 200) < 5
  assert clips.read_frames(tmp_path / "clip.mp4", max_frames=3).shape[0] == 3


def test_read_frames_errors(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    clips.read_frames(tmp_path / "missing")
  with pytest.raises(ValueError, match="no image frames"):
    clips.read_frames(tmp_path)
  (tmp_path / "table.csv").write_text("1,2")
  with pytest.raises(ValueError, match="neither a video"):
    clips.read_frames(tmp_path / "table.csv")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a1.png")
  Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "a2.png")
  with pytest.raises(ValueError, match="different sizes"):
    clips.read_frames(tmp_path)


def test_plot_trajectories_returns_an_image_and_writes_a_png(tmp_path):
  target = wobbly_path(12, seed=6)
  transfer = wobbly_path(12, seed=7)
  image = plots.plot_trajectories(target, transfer, tmp_path / "paths.png",
                                  title="test")
  assert image.dtype == np.uint8
  assert image.ndim == 3 and image.shape[2] == 3
  assert image.shape[0] > 200 and image.shape[1] > 400
  assert image.std() > 10  # something was drawn
  with Image.open(tmp_path / "paths.png") as saved:
    assert saved.size == (image.shape[1], image.shape[0])
  assert plots.plot_trajectories(target, transfer, None).shape == image.shape
  with pytest.raises(ValueError, match="12 poses but transfer has 5"):
    plots.plot_trajectories(target, transfer[:5])


def test_aligned_centres_start_together_and_share_scale():
  target = wobbly_path(6, seed=8)
  transfer = target.copy()
  transfer[:, :3, 3] *= 3.0
  other_world = textured_room.look_at_camera_from_world(np.array([1.0, 2.0, 3.0]),
                                                    np.array([0.0, 0.5, -1.0]))
  transfer = transfer @ other_world  # same cameras, other world frame
  target_centres, transfer_centres, target_view, _ = plots.aligned_centres(
      target, transfer)
  np.testing.assert_allclose(target_centres[0], 0.0, atol=1e-12)
  np.testing.assert_allclose(transfer_centres, target_centres, atol=1e-9)
  np.testing.assert_allclose(target_view[0], [0.0, 0.0, 1.0], atol=1e-12)


def _write_clip(folder, frames):
  folder.mkdir()
  for index, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / f"{index}.png")


def test_cli_on_two_renderings_of_the_room(tmp_path, capsys):
  poses = textured_room.orbit_path(num_frames=8)
  _write_clip(tmp_path / "target", textured_room.render_textured_room(poses, seed=0))
  # Another room (other textures) seen along the same path: a perfect transfer.
  _write_clip(tmp_path / "transfer", textured_room.render_textured_room(poses, seed=1))
  status = tps_lib.main([
      "--target", str(tmp_path / "target"), "--transfer",
      str(tmp_path / "transfer"), "--oracle", "colmap", "--oracle-kwargs",
      '{"num_trials": 1}', "--json", str(tmp_path / "out" / "tps.json"),
      "--plot", str(tmp_path / "out" / "tps.png")
  ])
  assert status == 0
  printed = capsys.readouterr().out
  assert "Rac" in printed and "SE3_Auc" in printed
  assert "frames evaluated 8 of 8" in printed
  document = json.loads((tmp_path / "out" / "tps.json").read_text())
  assert document["metrics"]["num_frames"] == 8
  assert document["metrics"]["Rac_5"] == 1.0
  assert document["metrics"]["Tac_10"] >= 0.9
  assert document["evaluated_frames"] == list(range(8))
  assert "colmap" in document["target_message"]
  with Image.open(tmp_path / "out" / "tps.png") as plot:
    assert plot.size[0] > 400


def test_cli_rejects_bad_oracle_kwargs(tmp_path):
  with pytest.raises(SystemExit, match="not valid JSON"):
    tps_lib.main(["--target", str(tmp_path), "--transfer", str(tmp_path),
                  "--oracle-kwargs", "{num_trials: 1}"])


# Figures for target/ and transfer/ in ../shared/reference/example_videos
# (see its README): the published VGGT oracle, and a COLMAP oracle set up as
# ours is (SIMPLE_PINHOLE, exhaustive matching, best of three seeds).
README_VGGT = {"Rac_10": 1.000, "Tac_30": 0.989, "SE3_Auc_30": 0.759}
README_COLMAP = {"Rac_10": 1.000, "Tac_10": 0.89, "Tac_30": 0.995,
                 "Rot_Auc_30": 0.976, "SE3_Auc_30": 0.83}
README_MOTIONLESS_COLMAP = {"Rac_10": 0.956, "Tac_30": 0.0, "SE3_Auc_30": 0.0}


@pytest.mark.slow
def test_colmap_tps_on_the_reference_example_videos(real_example_dir):
  # About 45 s of CPU with one thread (90 s wall when the 2 cores are shared).
  videos = real_example_dir
  started = time.perf_counter()
  report = tps_lib.evaluate_tps(videos / "target", videos / "transfer",
                                oracle="colmap")
  elapsed = time.perf_counter() - started
  assert report.common.all(), (report.target.message, report.transfer.message)
  result = report.metrics
  print(f"COLMAP TPS on 2 x 30 frames took {elapsed:.1f} s: "
        + ", ".join(f"{k} {result[k]:.3f}" for k in README_COLMAP))
  # The same oracle setting as the README's COLMAP figures (0.830 and 0.834
  # measured independently): close agreement. An unlucky seed (SE3_Auc_30
  # 0.1 to 0.2) or the SIMPLE_RADIAL camera (about 0.64) falls outside it.
  for key, expected in README_COLMAP.items():
    assert abs(result[key] - expected) <= 0.05, (key, result[key])
  # Another oracle (VGGT, as published): the same picture, looser agreement.
  for key, expected in README_VGGT.items():
    assert abs(result[key] - expected) <= 0.1, (key, result[key])
  # A motionless "transfer" under the same oracle.
  target_poses = report.target.camera_from_world
  still = camera.camera_metrics(target_poses,
                                np.tile(np.eye(4), (len(target_poses), 1, 1)))
  assert abs(still["Rac_10"] - README_MOTIONLESS_COLMAP["Rac_10"]) <= 0.1
  assert still["Tac_30"] == README_MOTIONLESS_COLMAP["Tac_30"]
  assert still["SE3_Auc_30"] == README_MOTIONLESS_COLMAP["SE3_Auc_30"]
