"""Packing results into one zip: single transfers and batch grids.

A single export holds::

    transfer.mp4          generated clip (H.264)
    side_by_side.mp4      target | generated (when there is a target clip)
    transfer.gif          generated clip as an animated GIF
    frames/00000.png ...  every generated frame
    camera_path.npz       the latent camera path as a record of its mode and
                          renderer (camera_path.save); a reference path of a
                          model without the warp renderer stays the plain
                          camera_path.npy (N x pose_dim float32) older
                          versions wrote and read
    settings.json         model, motion, settings, frame count, timings,
                          and the camera path's file and mode

A batch export holds one MP4 per (context, motion) combination, a contact
sheet (one row per combination) and ``batch.json`` describing each file.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import zipfile
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from xfactor_core import __version__
from xfactor_core.app import jobs, uploads
from xfactor_core.app.presets import PresetLibrary, slugify
from xfactor_core.app.registry import ModelRegistry
from xfactor_core.app.uploads import InputError
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import media

MAX_BATCH_COMBINATIONS = 12
MAX_SHEET_TILE = 512  # contact sheet tiles at most this many pixels a side
STORED_SUFFIXES = (".mp4", ".gif", ".png", ".jpg")


def camera_path_name(result: jobs.TransferResult) -> str:
  """The file name of ``result``'s saved camera path: ``camera_path.npy`` (a
  plain array, as older versions wrote) for a reference path of a model
  without the warp renderer, else ``camera_path.npz`` (a record of the mode
  and the renderer, which a composed path needs to replay)."""
  record = result.path_record()
  if (record.mode == "reference"
      and record.render_output not in camera_paths.COMPOSABLE_OUTPUTS):
    return "camera_path.npy"
  return "camera_path.npz"


def write_camera_path(result: jobs.TransferResult, folder: pathlib.Path
                      ) -> pathlib.Path:
  """Writes ``result``'s camera path into ``folder`` as
  :func:`camera_path_name` says; returns the file. The app's upload (and the
  CLI's ``--camera-path``) replays it in its own mode."""
  file = pathlib.Path(folder) / camera_path_name(result)
  if file.suffix == ".npy":
    np.save(file, result.path.astype(np.float32))
    return file
  return camera_paths.save(file, result.path_record())


def settings_record(result: jobs.TransferResult) -> dict[str, Any]:
  """The JSON written beside an export: enough to reproduce it."""
  request = result.request
  return {
      "xfactor_studio_version": __version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "model": result.model_info,
      "context": [uploads.display_name(f) for f in request.context_files],
      "motion": {"source": request.motion.source,
                 "preset": request.motion.preset,
                 "files": [uploads.display_name(f)
                           for f in request.motion.files],
                 "description": request.motion.describe()},
      "settings": request.settings.to_dict(),
      "image_size": result.image_size,
      "output_size": result.output_size,
      "num_frames": result.num_frames,
      "camera_path_shape": list(result.path.shape),
      "camera_path": {"file": camera_path_name(result),
                      "mode": result.path_mode,
                      "render_output": result.path_record().render_output},
      "seconds": round(result.seconds, 3),
  }


def _zip(out: pathlib.Path, files: Sequence[tuple[pathlib.Path, str]]
         ) -> pathlib.Path:
  with zipfile.ZipFile(out, "w") as archive:
    for path, name in files:
      compress = (zipfile.ZIP_STORED if path.suffix.lower() in STORED_SUFFIXES
                  else zipfile.ZIP_DEFLATED)
      archive.write(path, name, compress_type=compress)
  return out


def export_result(result: jobs.TransferResult, workdir: pathlib.Path
                  ) -> pathlib.Path:
  """Writes every export file of ``result`` and packs them into one zip.

  Returns:
    The zip's path (inside ``workdir``).
  """
  if result is None:
    raise InputError("nothing to export yet; run a transfer first")
  folder = workdir / "export"
  folder.mkdir(parents=True, exist_ok=True)
  fps = float(result.settings.fps)
  files = [(media.write_video(folder / "transfer.mp4", result.generated, fps),
            "transfer.mp4")]
  if result.target is not None:
    both = media.side_by_side(result.target, result.generated)
    files.append((media.write_video(folder / "side_by_side.mp4", both, fps),
                  "side_by_side.mp4"))
  files.append((media.write_video(folder / "transfer.gif", result.generated,
                                  fps), "transfer.gif"))
  for path in media.write_frames(folder / "frames", result.generated):
    files.append((path, f"frames/{path.name}"))
  path_file = write_camera_path(result, folder)
  files.append((path_file, path_file.name))
  (folder / "settings.json").write_text(json.dumps(settings_record(result),
                                                   indent=1))
  files.append((folder / "settings.json", "settings.json"))
  name = f"xfactor_{slugify(result.request.motion.short_name())}.zip"
  return _zip(workdir / name, files)


def context_label(path: str) -> str:
  """A short name for a context file (the folder name for preset views)."""
  path = pathlib.Path(path)
  return path.parent.name if path.stem.startswith("view_") else path.stem


def contact_sheet(rows: Sequence[np.ndarray], max_frames: int = 8
                  ) -> np.ndarray:
  """Rows of uint8 clips (``F x H x W x 3``) -> one image (rows x frames).

  Tiles take the first clip's frame size, at most ``MAX_SHEET_TILE`` a side
  (large outputs of flow models are shown smaller).
  """
  rows = list(rows)
  if not rows:
    return media.contact_sheet(rows)  # raises: nothing to tile
  first = np.asarray(rows[0])
  side = max(first.shape[1:3])
  if side > MAX_SHEET_TILE:
    scale = MAX_SHEET_TILE / side
    size = (max(1, round(first.shape[2] * scale)),
            max(1, round(first.shape[1] * scale)))
    rows[0] = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                        for frame in first])
  return media.contact_sheet(rows, max_frames=max_frames)


def batch_export(registry: ModelRegistry, presets: PresetLibrary,
                 model_id: Optional[str], contexts: Sequence[Sequence[str]],
                 motions: Sequence[jobs.MotionRequest],
                 settings: jobs.TransferSettings, workdir: pathlib.Path,
                 progress: Optional[Callable[[int, int, str], None]] = None,
                 limits: uploads.Limits = uploads.DEFAULT_LIMITS
                 ) -> tuple[pathlib.Path, np.ndarray]:
  """Every motion onto every context: one MP4 each, a contact sheet, a zip.

  Args:
    contexts: each entry is the file list of one context (one image for
      stereo-monocular models).
    motions: the motions to transfer.
    progress: ``progress(done, total, name)`` after each combination.

  Returns:
    ``(zip path, contact sheet uint8 image)``.
  """
  contexts = [tuple(c) for c in contexts if c]
  if not contexts:
    raise InputError("batch export needs at least one context image")
  if not motions:
    raise InputError("batch export needs at least one motion (pick presets or "
                     "upload target videos)")
  total = len(contexts) * len(motions)
  if total > MAX_BATCH_COMBINATIONS:
    raise InputError(
        f"{len(contexts)} contexts x {len(motions)} motions = {total} "
        f"transfers, above the batch limit of {MAX_BATCH_COMBINATIONS}; use "
        "fewer contexts or motions")
  files, rows, entries = [], [], []
  for c_index, context in enumerate(contexts):
    for m_index, motion in enumerate(motions):
      name = (f"{c_index + 1:02d}_{slugify(context_label(context[0]))}"
              f"__{slugify(motion.short_name())}")
      job_dir = workdir / name
      job_dir.mkdir(parents=True, exist_ok=True)
      request = jobs.TransferRequest(model_id, context, motion, settings)
      result = jobs.transfer(registry, presets, request, job_dir, limits)
      files.append((result.video, f"{name}.mp4"))
      rows.append(result.generated)
      entries.append({"file": f"{name}.mp4", "row": len(rows),
                      "context": [uploads.display_name(f) for f in context],
                      "motion": motion.describe(),
                      "num_frames": result.num_frames})
      if progress is not None:
        progress(len(rows), total, name)
  sheet = contact_sheet(rows)
  Image.fromarray(sheet).save(workdir / "contact_sheet.png")
  files.append((workdir / "contact_sheet.png", "contact_sheet.png"))
  (workdir / "batch.json").write_text(json.dumps({
      "xfactor_studio_version": __version__, "model": result.model_info,
      "settings": settings.to_dict(), "transfers": entries,
      "contact_sheet": "one row per transfer, in the order of 'transfers'"},
      indent=1))
  files.append((workdir / "batch.json", "batch.json"))
  return _zip(workdir / "xfactor_batch.zip", files), sheet
