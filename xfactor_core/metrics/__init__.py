"""xfactor_core.metrics: camera metrics, TPS and pose oracles.

Public API:
  camera_metrics(gt_camera_from_world, pred_camera_from_world) -> dict
      Rac/Tac accuracies, rotation/translation/SE3 AUCs and trajectory errors
      of a predicted trajectory against a reference one ((N, 4, 4)
      camera-from-world poses). Definitions: `xfactor_core.metrics.camera`.
  tps(target_frames, transfer_frames, oracle="colmap") -> dict
      True Pose Similarity: the camera metrics between an oracle's poses of the
      target video and of the transferred video. `evaluate_tps` also returns
      the poses and oracle messages. CLI:
      python -m xfactor_core.metrics.true_pose_similarity.
  get_oracle(name, **kwargs) / register_oracle(name, factory)
      Pose oracles by name: "colmap", "ground_truth", or your own (see
      `LearnedPoseOracle` / `CallableOracle` for learned ones such as VGGT).
  plot_trajectories(target_camera_from_world, transfer_camera_from_world,
                    path=None) -> (H, W, 3) uint8 image
      Top and side views of both camera paths.
  read_frames(path) -> (N, H, W, 3) uint8
      Frames from a folder (natural sort) or a video file.

Heavy dependencies (pycolmap, matplotlib) are imported on first use.
"""

from xfactor_core.metrics.camera import camera_metrics
from xfactor_core.metrics.clips import read_frames
from xfactor_core.metrics.oracles import available_oracles
from xfactor_core.metrics.oracles import CallableOracle
from xfactor_core.metrics.oracles import ColmapOracle
from xfactor_core.metrics.oracles import get_oracle
from xfactor_core.metrics.oracles import GroundTruthOracle
from xfactor_core.metrics.oracles import LearnedPoseOracle
from xfactor_core.metrics.oracles import OracleResult
from xfactor_core.metrics.oracles import PoseOracle
from xfactor_core.metrics.oracles import register_oracle
from xfactor_core.metrics.plots import plot_trajectories
from xfactor_core.metrics.true_pose_similarity import evaluate_tps
from xfactor_core.metrics.true_pose_similarity import TpsReport
from xfactor_core.metrics.true_pose_similarity import tps

__all__ = [
    "available_oracles",
    "CallableOracle",
    "camera_metrics",
    "ColmapOracle",
    "evaluate_tps",
    "get_oracle",
    "GroundTruthOracle",
    "LearnedPoseOracle",
    "OracleResult",
    "PoseOracle",
    "plot_trajectories",
    "read_frames",
    "register_oracle",
    "TpsReport",
    "tps",
]
