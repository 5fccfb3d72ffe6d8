"""Check a transfer: TPS of the generated clip against its target.

A pose oracle (COLMAP by default) estimates the camera poses of the target
clip and of the generated clip; TPS compares them (``xfactor_core.metrics``).
The report holds a table for the UI, the trajectory plot and a summary line.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

import numpy as np

from xfactor_core.app import jobs
from xfactor_core.app.uploads import InputError

HEADLINE_METRICS = ("Rac_10", "Tac_10", "Rac_30", "Tac_30", "Rot_Auc_30",
                    "Trans_Auc_30", "SE3_Auc_30", "traj_err_scale_invariant")


@dataclasses.dataclass(frozen=True)
class CheckReport:
  """What the TPS check shows.

  Attributes:
    table: ``[[metric, value], ...]`` rows (values rounded, NaN as "n/a").
    figure: ``H x W x 3`` uint8 trajectory plot, or None when too few frames
      were registered in both clips.
    summary: one markdown line.
    metrics: the raw metric dict.
  """
  table: list[list[Any]]
  figure: Optional[np.ndarray]
  summary: str
  metrics: dict[str, float]


def _cell(value: Any) -> Any:
  if isinstance(value, float):
    return "n/a" if math.isnan(value) else round(value, 4)
  return value


def check_transfer(result: jobs.TransferResult,
                   oracle: Union[str, Any] = "colmap",
                   **oracle_kwargs: Any) -> CheckReport:
  """Runs the TPS check on a finished transfer.

  Args:
    result: a transfer with a target clip.
    oracle: an oracle name (``"colmap"``) or an object with
      ``estimate(frames)`` (see ``xfactor_core.metrics.PoseOracle``).
    **oracle_kwargs: options of an oracle given by name.

  Raises:
    InputError: the transfer has no target clip (a replayed camera path).
  """
  from xfactor_core import metrics  # pycolmap and matplotlib load on use
  if result.target is None:
    raise InputError("the TPS check compares the generated clip with its "
                     "target clip, and this transfer replayed a saved camera "
                     "path; transfer from a video, frames or a preset")
  report = metrics.evaluate_tps(result.target, result.generated, oracle,
                                oracle_kwargs=oracle_kwargs or None)
  values = dict(report.metrics)
  ordered = [k for k in HEADLINE_METRICS if k in values]
  ordered += [k for k in values if k not in ordered]
  table = [[name, _cell(values[name])] for name in ordered]
  common = np.asarray(report.common, bool)
  figure = None
  if common.sum() >= 2:
    headline = ", ".join(f"{k} {values[k]:.3f}" for k in HEADLINE_METRICS[:3]
                         if k in values and not math.isnan(values[k]))
    figure = metrics.plot_trajectories(
        report.target.camera_from_world[common],
        report.transfer.camera_from_world[common],
        title=headline or None, labels=("target", "generated"))
  evaluated = int(common.sum())
  if evaluated >= 3:
    summary = (f"TPS on {evaluated} of {len(common)} frames registered in "
               f"both clips: SE3_Auc_30 {_cell(values.get('SE3_Auc_30'))}, "
               f"Rac_10 {_cell(values.get('Rac_10'))}, Tac_10 "
               f"{_cell(values.get('Tac_10'))}.")
  else:
    summary = (f"The oracle registered only {evaluated} frame(s) in both "
               f"clips (target: {report.target.message}; generated: "
               f"{report.transfer.message}); TPS needs 3. Try more frames, a "
               "higher resolution or a more textured scene.")
  return CheckReport(table, figure, summary, values)
