"""Validating and reading what users upload.

Every problem raises :class:`InputError` with a message that names the
problem and the fix; the UI shows it as a ``gr.Error``. Files are checked
(type by :data:`media.IMAGE_SUFFIXES` / :data:`media.VIDEO_SUFFIXES`, size,
pixels from the header) before they are decoded, and decoded by
:mod:`xfactor_core.inference.media`, the project's one media path: a target
video by :func:`media.iter_video`, which decodes only the selected frames and
crops and resizes each to the model's size as it is decoded, so a long or
high-resolution upload never sits in memory whole. Target frames come back
as uint8; the pipeline prepares them once.

:class:`UploadPolicy` says which files a caller may name at all: uploads and
the shipped presets, never other paths on the server (``gate`` applies it to
every event before anything is read).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import warnings
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import media

PathLike = Union[str, os.PathLike]
# Saved camera paths: the .npz record (mode, renderer, latents) and the plain
# .npy of reference latents that older exports wrote.
PATH_SUFFIXES = (".npz", ".npy")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


REFUSAL = "files must be uploaded; server paths are not accepted"


class InputError(ValueError):
  """Input the app cannot use, with what to do instead."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Bounds that keep one request from exhausting a small server.

  Attributes:
    max_file_mb: largest accepted file.
    max_image_pixels: largest accepted image / video frame (width x height).
    max_frames: most target frames per transfer.
    max_output_size: largest output side in pixels of models that render at
      any size (the flow renderer; models with the RGB head render at most
      at ``registry.MAX_IMAGE_SIZE``).
    max_decoded_frames: most video frames decoded to reach the selection.
    max_files: most files named in one request (all its widgets together).
    max_text_chars: longest text value (a preset name, a choice).
  """
  max_file_mb: float = 200.0
  max_image_pixels: int = 40_000_000
  max_frames: int = 120
  max_output_size: int = 1024
  max_decoded_frames: int = 3000
  max_files: int = 500
  max_text_chars: int = 1000


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class UploadPolicy:
  """Which files a caller may name: uploads and the shipped presets.

  Attributes:
    upload_root: the folder where this server's uploads are stored (Gradio's:
      ``GRADIO_TEMP_DIR``, else ``<temp dir>/gradio``).
    shipped_roots: folders of files the app ships (the presets).
  """
  upload_root: pathlib.Path
  shipped_roots: tuple[pathlib.Path, ...] = ()

  def check(self, value: Any, what: str = "file") -> pathlib.Path:
    """The resolved path of a file value a caller may have read.

    Symlinks and ``..`` are resolved first: the file itself, not the name it
    was given under, must lie in the upload folder or a shipped folder.

    Raises:
      InputError: anything else (logged; nothing of it is read), or a file
        of the upload folder that no longer exists.
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value):
      raise self._refuse(value, what, "not a path")
    text = str(value)
    if _URL.match(text) or "\x00" in text:
      raise self._refuse(value, what, "a URL or not a file name")
    resolved = pathlib.Path(os.path.abspath(text)).resolve()
    roots = (self.upload_root, *self.shipped_roots)
    if not any(resolved.is_relative_to(pathlib.Path(root).resolve())
               for root in roots):
      raise self._refuse(value, what, "outside the upload and preset folders")
    if not resolved.is_file():
      raise InputError(f"{what} {display_name(text)} was not found on the "
                       "server (uploads expire after a while); upload it again")
    return resolved

  @staticmethod
  def _refuse(value: Any, what: str, why: str) -> InputError:
    logging.warning("refused %s %r: %s", what, value, why)
    shown = (f" ({display_name(value)})" if isinstance(value, str) and value
             else "")
    return InputError(f"{REFUSAL}: {what}{shown} is not an upload of this "
                      "app; upload the file through the page or with "
                      "gradio_client's handle_file")


def file_path(value: Any) -> Optional[pathlib.Path]:
  """A path from whatever a UI or client passes for a file (str, Path, dict
  with ``path``, or an object with ``.path`` / ``.name``); None if empty."""
  if value is None or value == "":
    return None
  if isinstance(value, (str, os.PathLike)):
    return pathlib.Path(value)
  if isinstance(value, dict):
    for key in ("path", "name"):
      if value.get(key):
        return pathlib.Path(value[key])
    return None
  for attribute in ("path", "name"):
    if isinstance(getattr(value, attribute, None), str):
      return pathlib.Path(getattr(value, attribute))
  raise InputError(f"cannot use {type(value).__name__} as a file; upload a "
                   "file instead")


def file_paths(values: Any) -> list[pathlib.Path]:
  """A list of paths from a multi-file value (None -> [])."""
  if values is None:
    return []
  if not isinstance(values, (list, tuple)):
    values = [values]
  paths = [file_path(v) for v in values]
  return [p for p in paths if p is not None]


def display_name(path: PathLike) -> str:
  """The file name a user recognises (uploads keep it as the last part)."""
  return pathlib.Path(path).name


def suffix_names(suffixes: Sequence[str]) -> str:
  """``(".mp4", ".gif")`` -> ``"mp4, gif"``, for messages and labels."""
  return ", ".join(s.lstrip(".") for s in suffixes)


def check_file(path: pathlib.Path, suffixes: Sequence[str], what: str,
               limits: Limits = DEFAULT_LIMITS) -> pathlib.Path:
  """Existence, type by suffix and size of one file."""
  if not path.is_file():
    raise InputError(f"{what} {display_name(path)} was not found; upload it "
                     "again")
  suffix = path.suffix.lower()
  if suffix not in suffixes:
    raise InputError(f"{what} {display_name(path)} has the wrong type "
                     f"({suffix or 'no extension'}); use "
                     f"{suffix_names(suffixes)}")
  size_mb = path.stat().st_size / 2 ** 20
  if size_mb > limits.max_file_mb:
    raise InputError(f"{what} {display_name(path)} is {size_mb:.0f} MB, above "
                     f"the limit of {limits.max_file_mb:.0f} MB; trim or "
                     "downscale it first")
  if path.stat().st_size == 0:
    raise InputError(f"{what} {display_name(path)} is empty; upload it again")
  return path


def _check_pixels(width: int, height: int, what: str, limits: Limits) -> None:
  if width * height > limits.max_image_pixels:
    raise InputError(
        f"{what} is {width} x {height} pixels, above the limit of "
        f"{limits.max_image_pixels / 1e6:g} megapixels; downscale it first")


def read_image_checked(path: pathlib.Path, what: str,
                       limits: Limits = DEFAULT_LIMITS,
                       size: Optional[int] = None) -> np.ndarray:
  """One image file -> ``H x W x 3`` uint8 (``size x size x 3``, centre-cropped
  and resized, with ``size``), with type, size and pixel checks first."""
  check_file(path, media.IMAGE_SUFFIXES, what, limits)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as image:
        width, height = image.size
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
          Image.DecompressionBombError) as e:
    raise InputError(f"{what} {display_name(path)} cannot be read as an image "
                     f"({e}); use a PNG, JPEG or WebP file") from e
  _check_pixels(width, height, f"{what} {display_name(path)}", limits)
  try:
    return media.read_image(path, size)
  except media.MediaError as e:
    raise InputError(str(e).replace(str(path), display_name(path))) from e


def read_context(files: Any, max_views: int, kind: str,
                 limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
  """Context images -> list of ``H x W x 3`` uint8 (1..max_views of them)."""
  paths = file_paths(files)
  if not paths:
    raise InputError("no context image given; upload one (or pick an "
                     "example) to render the motion in")
  if len(paths) > max(max_views, 1):
    raise InputError(
        f"{len(paths)} context images given but this {kind} model takes at "
        f"most {max_views}; remove {len(paths) - max_views} or pick a "
        "multi-view model")
  return [read_image_checked(p, f"context image {i + 1}", limits)
          for i, p in enumerate(paths)]


@dataclasses.dataclass(frozen=True)
class ClipSelection:
  """Which target frames to use: ``start, start+stride, ...`` (``count``)."""
  start: int = 0
  stride: int = 1
  count: int = 24

  def validate(self, limits: Limits = DEFAULT_LIMITS) -> "ClipSelection":
    if self.start < 0:
      raise InputError(f"start frame {self.start} is negative; use 0 or more")
    if self.stride < 1:
      raise InputError(f"frame stride {self.stride} is below 1; use 1 to "
                       "take every frame")
    if self.count < 2:
      raise InputError(f"number of frames {self.count} is below 2; camera "
                       "motion needs at least two frames")
    if self.count > limits.max_frames:
      raise InputError(f"number of frames {self.count} is above the limit of "
                       f"{limits.max_frames}; use fewer frames or a larger "
                       "stride")
    return self

  def indices(self, available: Optional[int] = None) -> list[int]:
    last = self.start + self.stride * self.count
    if available is not None:
      last = min(last, available)
    return list(range(self.start, last, self.stride))


def probe_video(path: pathlib.Path,
                limits: Limits = DEFAULT_LIMITS) -> media.VideoInfo:
  """Type, size and pixel checks of a target video, then its header
  (:func:`media.probe_video`: size, fps and, when the container says, the
  frame count), without decoding a frame."""
  check_file(path, media.VIDEO_SUFFIXES, "target video", limits)
  name = display_name(path)
  try:
    info = media.probe_video(path)
  except media.MediaError as e:
    reason = re.search(r"\((.*?)\);", str(e))
    raise InputError(f"target video {name} cannot be opened"
                     f"{f' ({reason.group(1)})' if reason else ''}; use an "
                     "MP4 (H.264), MOV, WebM or GIF that plays in a "
                     "browser") from e
  _check_pixels(info.width, info.height, f"target video {name}", limits)
  return info


def read_target_video(path: pathlib.Path, selection: ClipSelection, size: int,
                      limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
  """Selected frames of a video -> ``N x size x size x 3`` uint8.

  The header is probed first (type, pixels, frame count); then only the
  selected frames are decoded (:func:`media.iter_video` seeks over the gaps),
  each centre-cropped and resized to ``size`` as it is decoded. The frames
  stay uint8: the pipeline's ``prepare`` makes the model input of them once.
  A selection that runs past the end of the video keeps the frames it has.

  Raises:
    InputError: unreadable, too large, or fewer than two frames selected.
  """
  selection.validate(limits)
  name = display_name(path)
  last = selection.indices()[-1]
  if last >= limits.max_decoded_frames:
    raise InputError(f"the selection reaches frame {last} of {name}; the app "
                     f"decodes at most {limits.max_decoded_frames} frames: "
                     "lower the start frame or the stride")
  info = probe_video(path, limits)
  if info.num_frames is not None and selection.start >= info.num_frames:
    raise InputError(f"start frame {selection.start} is past the end of "
                     f"{name} ({info.num_frames} frames); lower the start")
  wanted = selection.indices(info.num_frames)
  kept: list[np.ndarray] = []
  try:
    for _, frame in media.iter_video(path, wanted, size=size):
      kept.append(frame)
  except media.MediaError as e:
    detail = str(e).replace(str(path), name)
    raise InputError(f"target video {name} cannot be read ({detail}); "
                     "re-export it as an MP4 (H.264)") from e
  except (cv2.error, OSError) as e:  # decoding errors of damaged files
    raise InputError(f"target video {name} is corrupt after frame "
                     f"{len(kept)} of the selection ({type(e).__name__}); "
                     "re-export it") from e
  if len(kept) < len(wanted):
    logging.warning("target video %s: %d of the %d selected frames decoded "
                    "(the header says %s frames)", name, len(kept),
                    len(wanted), info.num_frames)
  if len(kept) < 2:
    truncated = (" (the file seems truncated or corrupt: its header promises "
                 "more; re-export it)" if len(kept) < len(wanted) else "")
    total = ("" if info.num_frames is None
             else f" ({info.num_frames} frames)")
    raise InputError(
        f"only {len(kept)} frame of {name}{total} is selected with start "
        f"{selection.start} and stride {selection.stride}{truncated}; camera "
        "motion needs at least two: lower the start frame or the stride")
  return np.stack(kept)


def read_target_images(files: Any, selection: Optional[ClipSelection],
                       size: int, what: str = "target frame",
                       limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
  """Image files (sorted by name) -> selected ``N x size x size x 3`` uint8
  (each centre-cropped and resized as it is read, like video frames).

  ``selection=None`` keeps every file in the given order (an image pair).
  """
  paths = file_paths(files)
  if selection is None:
    chosen = paths
  else:
    selection.validate(limits)
    paths = sorted(paths, key=lambda p: media.natural_sort_key(display_name(p)))
    chosen = [paths[i] for i in selection.indices(len(paths))]
  if len(chosen) < 2:
    raise InputError(
        f"{len(chosen)} {what}(s) selected from {len(paths)} uploaded; camera "
        "motion needs at least two: upload more frames or lower the start "
        "frame / stride")
  return np.stack([read_image_checked(p, what, limits, size) for p in chosen])


def read_camera_path(file: Any, pose_dim: int,
                     limits: Limits = DEFAULT_LIMITS,
                     render_output: Optional[str] = None
                     ) -> camera_paths.CameraPath:
  """A camera path saved by an export or by ``/transfer`` -> its record.

  An ``.npz`` record replays in its own mode; a plain ``.npy`` of latents is
  a reference path. ``render_output``: the renderer head of the model that
  will replay it (None: not checked), which must be able to replay the
  record's mode (a composed path needs the warp renderer).

  Raises:
    InputError: an unreadable file, latents of the wrong size, or a mode the
      model cannot replay; the message names the problem and the fix.
  """
  path = file_path(file)
  if path is None:
    raise InputError("no camera path file given; upload the camera_path.npz "
                     "(or .npy) of an earlier export")
  check_file(path, PATH_SUFFIXES, "camera path", limits)
  name = display_name(path)
  try:
    record = camera_paths.load(path)
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"camera path {name} is not a readable saved camera "
                     f"path ({e}); use the camera_path.npz or .npy of an "
                     "export zip") from e
  latents = record.latents
  if latents.shape[1] != pose_dim:
    raise InputError(f"camera path {name} holds N x {latents.shape[1]} "
                     f"latents, but this model needs N x {pose_dim} latents; "
                     "replay it with the model that exported it"
                     + (f" (a {record.render_output!r} model)"
                        if record.render_output else ""))
  if not np.all(np.isfinite(latents)):
    raise InputError(f"camera path {name} holds non-finite values; export it "
                     "again")
  if len(latents) < 2:
    raise InputError(f"camera path {name} has {len(latents)} latent; at least "
                     "two are needed")
  if (render_output is not None
      and record.mode not in camera_paths.modes_for(render_output)):
    raise InputError(
        f"camera path {name} is a {record.mode!r} path, which chains the "
        "warps of consecutive steps: only a model with the warp renderer "
        f"(render_output {', '.join(camera_paths.COMPOSABLE_OUTPUTS)}) can "
        f"replay it, and this model has {render_output!r}; pick the warp "
        "model that exported it, or export a reference path")
  return record
