"""Pose oracles: interface, registry, ground truth, learned adapters, COLMAP."""

import tempfile

import numpy as np
import pytest

from xfactor_core.metrics import camera
from xfactor_core.metrics import oracles
from xfactor_core.metrics import textured_room


@pytest.fixture(scope="module")
def room_clip():
  """8 frames of 128 x 128 of the textured room and their true poses."""
  poses = textured_room.orbit_path(num_frames=8)
  return textured_room.render_textured_room(poses, seed=0), poses


def blank_frames(num_frames: int, size: int = 32) -> np.ndarray:
  return np.zeros((num_frames, size, size, 3), dtype=np.uint8)


def test_ground_truth_oracle_returns_its_poses(room_clip):
  _, poses = room_clip
  oracle = oracles.get_oracle("ground_truth", camera_from_world=poses)
  result = oracle.estimate(blank_frames(len(poses)))
  np.testing.assert_array_equal(result.camera_from_world, poses)
  assert result.registered.all()
  assert result.ok
  assert "8 of 8" in result.message
  with pytest.raises(ValueError, match="holds 8 poses but got 3 frames"):
    oracle.estimate(blank_frames(3))


def test_oracles_satisfy_the_protocol(room_clip):
  _, poses = room_clip
  assert isinstance(oracles.GroundTruthOracle(poses), oracles.PoseOracle)
  assert isinstance(oracles.ColmapOracle(), oracles.PoseOracle)
  assert isinstance(oracles.CallableOracle(lambda f: poses), oracles.PoseOracle)


def test_registry_by_name():
  registry = oracles.OracleRegistry()
  registry.register("fixed", lambda num_frames=3: oracles.GroundTruthOracle(
      np.tile(np.eye(4), (num_frames, 1, 1))))
  assert registry.names() == ["fixed"]
  result = registry.create("fixed", num_frames=4).estimate(blank_frames(4))
  assert result.num_registered == 4
  with pytest.raises(ValueError, match="already registered"):
    registry.register("fixed", oracles.GroundTruthOracle)
  registry.register("fixed", oracles.ColmapOracle, overwrite=True)
  assert isinstance(registry.create("fixed"), oracles.ColmapOracle)
  with pytest.raises(KeyError, match="no oracle named 'vggt'.*fixed"):
    registry.create("vggt")
  registry.register("broken", lambda: object())
  with pytest.raises(TypeError, match="no estimate"):
    registry.create("broken")
  with pytest.raises(TypeError, match="callable"):
    registry.register("not_callable", 3)


def test_default_registry_has_builtins_and_accepts_new_oracles():
  assert {"colmap", "ground_truth"} <= set(oracles.available_oracles())
  assert isinstance(oracles.get_oracle("colmap", num_trials=1),
                    oracles.ColmapOracle)
  still = lambda frames: np.tile(np.eye(4), (frames.shape[0], 1, 1))
  oracles.register_oracle("test_still", lambda: oracles.CallableOracle(still))
  try:
    result = oracles.get_oracle("test_still").estimate(blank_frames(5))
    assert result.num_registered == 5
  finally:
    oracles.DEFAULT_REGISTRY.unregister("test_still")
  assert "test_still" not in oracles.available_oracles()


class _ShiftingOracle(oracles.LearnedPoseOracle):
  """A stand-in for a learned network: returns 3x4 poses moving along x."""

  def predict_camera_from_world(self, frames):
    poses = np.tile(np.eye(4)[:3], (frames.shape[0], 1, 1))
    poses[:, 0, 3] = -np.arange(frames.shape[0], dtype=np.float64)
    return poses


def test_learned_oracle_adapter_validates_and_completes_poses():
  result = _ShiftingOracle().estimate(blank_frames(4))
  assert result.camera_from_world.shape == (4, 4, 4)
  np.testing.assert_array_equal(result.camera_from_world[:, 3], [[0, 0, 0, 1]] * 4)
  np.testing.assert_allclose(camera.camera_centres(result.camera_from_world)[:, 0],
                             [0, 1, 2, 3])
  assert result.registered.all()
  wrong_count = oracles.CallableOracle(lambda frames: np.tile(np.eye(4), (2, 1, 1)))
  with pytest.raises(ValueError, match="returned 2 poses for 4 frames"):
    wrong_count.estimate(blank_frames(4))
  not_rigid = oracles.CallableOracle(lambda frames: np.tile(2 * np.eye(4), (4, 1, 1)))
  with pytest.raises(ValueError, match="not rotations"):
    not_rigid.estimate(blank_frames(4))
  with pytest.raises(ValueError, match="uint8"):
    _ShiftingOracle().estimate(np.zeros((4, 8, 8, 3), dtype=np.float32))


def test_oracle_result_checks_shapes():
  with pytest.raises(ValueError, match=r"\(N, 4, 4\)"):
    oracles.OracleResult(np.zeros((3, 3, 4)), np.ones(3, dtype=bool))
  with pytest.raises(ValueError, match="registered must have shape"):
    oracles.OracleResult(np.zeros((3, 4, 4)), np.ones(2, dtype=bool))
  result = oracles.OracleResult(np.zeros((3, 4, 4)), [True, True, False])
  assert result.num_registered == 2
  assert not result.ok


def test_colmap_recovers_the_synthetic_room_poses(room_clip, tmp_path,
                                                   monkeypatch):
  frames, poses = room_clip
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  result = oracles.ColmapOracle(num_trials=1).estimate(frames)
  assert result.registered.all(), result.message
  assert "8 of 8 frames registered" in result.message
  metrics = camera.camera_metrics(poses, result.camera_from_world)
  assert metrics["Rac_3"] == 1.0
  assert metrics["Tac_5"] >= 0.9
  path_length = np.abs(camera.camera_centres(camera.relative_to_first(poses))).mean()
  assert metrics["traj_err_scale_invariant"] < 0.1 * path_length
  # The working directory is removed afterwards.
  assert list(tmp_path.iterdir()) == []


def test_colmap_is_repeatable(room_clip):
  frames, _ = room_clip
  oracle = oracles.ColmapOracle(num_trials=2, seed=7)
  first = oracle.estimate(frames)
  second = oracle.estimate(frames)
  assert first.message == second.message
  np.testing.assert_allclose(first.camera_from_world, second.camera_from_world,
                             atol=1e-9)


def test_colmap_reports_failure_instead_of_raising():
  textureless = np.full((4, 64, 64, 3), 128, dtype=np.uint8)
  result = oracles.ColmapOracle(num_trials=1).estimate(textureless)
  assert result.num_registered == 0
  assert not result.ok
  assert np.isnan(result.camera_from_world).all()
  assert "0 of 4" in result.message or "failed" in result.message
  single = oracles.ColmapOracle().estimate(blank_frames(1))
  assert "at least 2 frames" in single.message
  assert single.num_registered == 0


def test_colmap_options_are_checked():
  with pytest.raises(ValueError, match="matching must be"):
    oracles.ColmapOracle(matching="vocab_tree")
  with pytest.raises(ValueError, match="num_trials"):
    oracles.ColmapOracle(num_trials=0)
  oracle = oracles.ColmapOracle(exhaustive_max_frames=20)
  assert oracle.matching_for(20) == "exhaustive"
  assert oracle.matching_for(21) == "sequential"


def test_colmap_sequential_matching_on_the_room(room_clip):
  frames, poses = room_clip
  result = oracles.ColmapOracle(matching="sequential", sequential_overlap=3,
                                num_trials=1).estimate(frames)
  assert "sequential matching" in result.message
  assert result.num_registered >= 6, result.message
  metrics = camera.camera_metrics(poses[result.registered],
                                  result.camera_from_world[result.registered])
  assert metrics["Rac_5"] == 1.0
