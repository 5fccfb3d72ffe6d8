"""True Pose Similarity (TPS): does a transferred video move like its target?

A pose oracle estimates camera poses for the target video and for the
transferred video; `camera.camera_metrics` then compares the transfer's poses
(prediction) with the target's (reference) on the frames the oracle registered
in both. See docs/ARCHITECTURE.md, "Measuring transfer: TPS".

Command line (`main`):

  python -m xfactor_core.metrics.true_pose_similarity --target DIR_OR_VIDEO \
      --transfer DIR_OR_VIDEO [--oracle colmap] [--json OUT.json] \
      [--plot OUT.png] [--max-frames N] [--oracle-kwargs '{"num_trials": 1}']
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tqdm

from xfactor_core.metrics import camera
from xfactor_core.metrics import clips
from xfactor_core.metrics import oracles as oracles_lib

_LOG = logging.getLogger(__name__)

FramesLike = np.ndarray | str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class TpsReport:
  """Everything a TPS evaluation produced.

  Attributes:
    metrics: flat dict of `camera.camera_metrics` keys (NaN when fewer than
      `MIN_REGISTERED_FRAMES` frames are registered in both videos) plus
      num_input_frames, num_registered_target, num_registered_transfer.
    target: the oracle's result on the target video.
    transfer: the oracle's result on the transferred video.
    common: (N,) bool, frames registered in both (the ones evaluated).
  """
  metrics: dict[str, float]
  target: oracles_lib.OracleResult
  transfer: oracles_lib.OracleResult
  common: np.ndarray


def _as_frames(frames: FramesLike, name: str,
               max_frames: int | None) -> np.ndarray:
  if isinstance(frames, (str, os.PathLike)):
    return clips.read_frames(frames, max_frames)
  frames = clips.validate_frames(frames, name)
  return frames[:max_frames] if max_frames is not None else frames


def _as_oracle(oracle: str | oracles_lib.PoseOracle,
               oracle_kwargs: Mapping[str, Any] | None
              ) -> oracles_lib.PoseOracle:
  if isinstance(oracle, str):
    return oracles_lib.get_oracle(oracle, **dict(oracle_kwargs or {}))
  if oracle_kwargs:
    raise ValueError("oracle_kwargs only apply when the oracle is given by name.")
  if not isinstance(oracle, oracles_lib.PoseOracle):
    raise TypeError(
        f"oracle must be a registered name or have an estimate(frames) "
        f"method, got {type(oracle).__name__}.")
  return oracle


def evaluate_tps(target_frames: FramesLike,
                 transfer_frames: FramesLike,
                 oracle: str | oracles_lib.PoseOracle = "colmap",
                 *,
                 transfer_oracle: str | oracles_lib.PoseOracle | None = None,
                 oracle_kwargs: Mapping[str, Any] | None = None,
                 max_frames: int | None = None,
                 show_progress: bool = False) -> TpsReport:
  """Runs the oracle on both videos and compares the poses.

  Args:
    target_frames: (N, H, W, 3) uint8 frames, or a folder / video path.
    transfer_frames: (N, H', W', 3) uint8 frames of the transferred video, or
      a path; frame i must correspond to target frame i.
    oracle: an oracle or the registered name of one (see `get_oracle`).
    transfer_oracle: a different oracle for the transferred video (e.g. when
      `oracle` is a `GroundTruthOracle` holding the target's known poses);
      defaults to `oracle`.
    oracle_kwargs: keyword arguments for oracles given by name.
    max_frames: evaluate only the first this many frames of each video.
    show_progress: show a tqdm bar over the two videos.

  Returns:
    TpsReport; its `metrics` are computed on the frames registered in both.
  """
  target_frames = _as_frames(target_frames, "target_frames", max_frames)
  transfer_frames = _as_frames(transfer_frames, "transfer_frames", max_frames)
  if target_frames.shape[0] != transfer_frames.shape[0]:
    raise ValueError(
        f"the target has {target_frames.shape[0]} frames but the transfer has "
        f"{transfer_frames.shape[0]}; frame i of both must show the same "
        "camera pose, so pass clips of equal length (or set max_frames).")
  target_oracle = _as_oracle(oracle, oracle_kwargs)
  second_oracle = (target_oracle if transfer_oracle is None else
                   _as_oracle(transfer_oracle, oracle_kwargs))
  jobs = (("target", target_oracle, target_frames),
          ("transfer", second_oracle, transfer_frames))
  results = {}
  for name, job_oracle, job_frames in tqdm.tqdm(
      jobs, desc="estimating poses", unit="video", disable=not show_progress):
    results[name] = job_oracle.estimate(job_frames)
    _LOG.info("%s: %s", name, results[name].message)
  target, transfer = results["target"], results["transfer"]
  common = target.registered & transfer.registered
  metrics: dict[str, float] = {}
  if common.sum() >= oracles_lib.MIN_REGISTERED_FRAMES:
    metrics.update(camera.camera_metrics(target.camera_from_world[common],
                                         transfer.camera_from_world[common]))
  else:
    _LOG.warning(
        "only %d frames registered in both videos (need %d): metrics are NaN",
        common.sum(), oracles_lib.MIN_REGISTERED_FRAMES)
    metrics.update({name: math.nan for name in camera.metric_names()})
    metrics["num_frames"] = int(common.sum())
    metrics["num_pairs"] = 0
  metrics["num_input_frames"] = int(target_frames.shape[0])
  metrics["num_registered_target"] = target.num_registered
  metrics["num_registered_transfer"] = transfer.num_registered
  return TpsReport(metrics, target, transfer, common)


def tps(target_frames: FramesLike,
        transfer_frames: FramesLike,
        oracle: str | oracles_lib.PoseOracle = "colmap",
        **kwargs: Any) -> dict[str, float]:
  """TPS metrics of a transferred video against its target.

  Args:
    target_frames: (N, H, W, 3) uint8 frames or a folder / video path.
    transfer_frames: (N, H', W', 3) uint8 frames or a path.
    oracle: an oracle or a registered oracle name.
    **kwargs: further arguments of `evaluate_tps`.

  Returns:
    Flat dict: Rac_*, Tac_*, Rot_Auc_*, Trans_Auc_*, SE3_Auc_*,
    traj_err_unscaled, traj_err_scale_invariant, num_frames (frames
    registered in both and evaluated), num_pairs, num_input_frames,
    num_registered_target, num_registered_transfer, ...
  """
  return evaluate_tps(target_frames, transfer_frames, oracle, **kwargs).metrics


def format_table(metrics: Mapping[str, float]) -> str:
  """Formats TPS metrics as a small text table."""
  thresholds = camera.THRESHOLDS_DEG
  lines = ["".join([f"{'threshold (deg)':<16}"] +
                   [f"{k:>8d}" for k in thresholds])]
  for prefix in ("Rac", "Tac", "Rot_Auc", "Trans_Auc", "SE3_Auc"):
    values = [metrics.get(f"{prefix}_{k}", math.nan) for k in thresholds]
    lines.append("".join([f"{prefix:<16}"] + [f"{v:8.3f}" for v in values]))
  lines.append("")
  for name in ("traj_err_scale_invariant", "traj_err_unscaled",
               "mean_rot_err_deg", "mean_trans_err_deg"):
    lines.append(f"{name:<26}{metrics.get(name, math.nan):10.4f}")
  lines.append(
      f"frames evaluated {metrics.get('num_frames', 0)} of "
      f"{metrics.get('num_input_frames', 0)} (registered: target "
      f"{metrics.get('num_registered_target', 0)}, transfer "
      f"{metrics.get('num_registered_transfer', 0)}), pairs "
      f"{metrics.get('num_pairs', 0)}")
  return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m xfactor_core.metrics.true_pose_similarity",
      description="True Pose Similarity of a transferred video against its "
      "target video.")
  parser.add_argument("--target", required=True,
                      help="folder of frames (natural sort) or video file")
  parser.add_argument("--transfer", required=True,
                      help="folder of frames or video file, same length")
  parser.add_argument("--oracle", default="colmap",
                      help=f"registered oracle name "
                      f"({', '.join(oracles_lib.available_oracles())})")
  parser.add_argument("--oracle-kwargs", default="{}",
                      help='JSON keyword arguments for the oracle, e.g. '
                      '\'{"num_trials": 1, "matching": "sequential"}\'')
  parser.add_argument("--max-frames", type=int, default=None,
                      help="evaluate only the first N frames")
  parser.add_argument("--json", type=pathlib.Path, default=None,
                      help="write metrics and oracle messages to this file")
  parser.add_argument("--plot", type=pathlib.Path, default=None,
                      help="write a trajectory plot (PNG) to this file")
  parser.add_argument("--verbose", action="store_true", help="log more")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  args = _parse_args(argv)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(levelname)s %(name)s: %(message)s")
  try:
    oracle_kwargs = json.loads(args.oracle_kwargs)
  except json.JSONDecodeError as error:
    raise SystemExit(f"--oracle-kwargs is not valid JSON: {error}") from error
  if not isinstance(oracle_kwargs, dict):
    raise SystemExit("--oracle-kwargs must be a JSON object, e.g. '{}'")
  report = evaluate_tps(args.target, args.transfer, args.oracle,
                        oracle_kwargs=oracle_kwargs, max_frames=args.max_frames,
                        show_progress=True)
  print(f"target:   {report.target.message}")
  print(f"transfer: {report.transfer.message}")
  print(format_table(report.metrics))
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "metrics": {key: (None if isinstance(value, float) and math.isnan(value)
                          else value) for key, value in report.metrics.items()},
        "oracle": args.oracle,
        "oracle_kwargs": oracle_kwargs,
        "target": str(args.target),
        "transfer": str(args.transfer),
        "target_message": report.target.message,
        "transfer_message": report.transfer.message,
        "evaluated_frames": np.flatnonzero(report.common).tolist(),
    }
    args.json.write_text(json.dumps(document, indent=2))
  if args.plot is not None:
    if report.common.sum() >= 2:
      from xfactor_core.metrics import plots  # pylint: disable=g-import-not-at-top
      title = (f"Rac_10 {report.metrics['Rac_10']:.3f}   Tac_30 "
               f"{report.metrics['Tac_30']:.3f}   SE3_Auc_30 "
               f"{report.metrics['SE3_Auc_30']:.3f}   ({args.oracle}, "
               f"{int(report.common.sum())} frames)")
      plots.plot_trajectories(
          report.target.camera_from_world[report.common],
          report.transfer.camera_from_world[report.common], args.plot,
          title=title)
    else:
      print("no plot: fewer than 2 frames registered in both videos",
            file=sys.stderr)
  return 0 if report.common.sum() >= oracles_lib.MIN_REGISTERED_FRAMES else 1


if __name__ == "__main__":
  sys.exit(main())
