"""Trajectory plots: top and side views of two camera paths."""

import os
import pathlib

import numpy as np

from xfactor_core.metrics import camera


def aligned_centres(target_camera_from_world: np.ndarray,
                    transfer_camera_from_world: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Centres and viewing directions of both paths in a common frame.

  Each path is expressed relative to its own first camera, and the transfer
  centres are multiplied by the least-squares scale that best matches the
  target's (the alignment of `camera.trajectory_errors`).

  Args:
    target_camera_from_world: (N, 4, 4) poses.
    transfer_camera_from_world: (N, 4, 4) poses of the same frames.

  Returns:
    target centres (N, 3), transfer centres (N, 3), target viewing directions
    (N, 3) and transfer viewing directions (N, 3), in the first camera's
    axes (x right, y down, z forward).
  """
  target = camera.relative_to_first(
      camera.validate_poses(target_camera_from_world, "target_camera_from_world"))
  transfer = camera.relative_to_first(
      camera.validate_poses(transfer_camera_from_world,
                            "transfer_camera_from_world"))
  if target.shape[0] != transfer.shape[0]:
    raise ValueError(
        f"target has {target.shape[0]} poses but transfer has "
        f"{transfer.shape[0]}; pass the poses of the same frames.")
  scale = camera.trajectory_errors(target, transfer, "none")["traj_scale"]
  target_centres = camera.camera_centres(target)
  transfer_centres = scale * camera.camera_centres(transfer)
  # The optical axis in world coordinates is the third row of R.
  return (target_centres, transfer_centres, target[:, 2, :3],
          transfer[:, 2, :3])


def plot_trajectories(target_camera_from_world: np.ndarray,
                      transfer_camera_from_world: np.ndarray,
                      path: str | os.PathLike[str] | None = None,
                      title: str | None = None,
                      labels: tuple[str, str] = ("target", "transfer"),
                      dpi: int = 100) -> np.ndarray:
  """Draws both camera paths seen from above and from the side.

  Both paths start at the origin, looking along +z (their first cameras are
  aligned) and the transfer path is scaled to the target (least squares).
  Arrows show the viewing direction of some cameras; a circle marks the start.

  Args:
    target_camera_from_world: (N, 4, 4) camera-from-world poses, N >= 2.
    transfer_camera_from_world: (N, 4, 4) poses of the same frames.
    path: where to save a PNG, or None.
    title: figure title (e.g. a few metric values).
    labels: legend names of the two paths.
    dpi: resolution of the returned image (the figure is 10 x 4.6 inches).

  Returns:
    (H, W, 3) uint8 RGB image of the figure.
  """
  try:
    from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
    from matplotlib import figure as figure_lib  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        "plot_trajectories needs matplotlib: pip install matplotlib") from error
  target, transfer, target_view, transfer_view = aligned_centres(
      target_camera_from_world, transfer_camera_from_world)
  extent = max(float(np.ptp(np.concatenate([target, transfer]), axis=0).max()),
               1e-9)
  arrow_length = 0.08 * extent
  arrow_every = max(1, target.shape[0] // 10)

  fig = figure_lib.Figure(figsize=(10, 4.6), dpi=dpi)
  backend_agg.FigureCanvasAgg(fig)
  # Views: (horizontal axis, vertical axis, sign of vertical) in camera axes.
  views = (("top view", 0, 2, 1.0, "x (right)", "z (forward)"),
           ("side view", 2, 1, -1.0, "z (forward)", "-y (up)"))
  styles = ((target, target_view, "tab:blue", "-", labels[0]),
            (transfer, transfer_view, "tab:orange", "--", labels[1]))
  for index, (view_name, horizontal, vertical, sign, x_label, y_label) in enumerate(views):
    axes = fig.add_subplot(1, 2, index + 1)
    for centres, directions, colour, line_style, label in styles:
      xs, ys = centres[:, horizontal], sign * centres[:, vertical]
      axes.plot(xs, ys, line_style, color=colour, marker=".", markersize=4,
                linewidth=1.8, label=label)
      axes.plot(xs[0], ys[0], "o", color=colour, markersize=9,
                markerfacecolor="none", markeredgewidth=2)
      axes.plot(xs[-1], ys[-1], "s", color=colour, markersize=6)
      picked = slice(None, None, arrow_every)
      axes.quiver(xs[picked], ys[picked],
                  arrow_length * directions[picked, horizontal],
                  arrow_length * sign * directions[picked, vertical],
                  color=colour, angles="xy", scale_units="xy", scale=1,
                  width=0.004, alpha=0.7)
    axes.set_title(view_name)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_aspect("equal", adjustable="datalim")
    axes.grid(True, alpha=0.3)
    if index == 0:
      axes.legend(loc="best", fontsize=9,
                  title="o start, \u25a0 end", title_fontsize=8)
  fig.suptitle(title or "camera paths (first cameras aligned, transfer "
               "scaled to target)", fontsize=11)
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  if path is not None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
  return image
