"""The project's one media path: reading and writing images and videos, and
tiling frames into one image.

Readers return RGB uint8 (``H x W x 3`` images, ``N x H x W x 3`` clips).
Image files of any PIL mode are converted by :func:`to_rgb_uint8` (16-bit
scaled, alpha over white, EXIF orientation applied). Video files are decoded
by OpenCV (FFmpeg inside), which seeks, and GIFs by PIL; :func:`iter_video`
is the one video decoder, and :func:`probe_video` / :func:`count_video_frames`
the one look at a video's size, rate and length. Readers given a ``size``
centre-crop and resize each frame as it is decoded
(:func:`~xfactor_core.inference.model_frames.center_crop_resize`, the
resampling of the training data), so a long or large video never sits in
memory whole. Every failure raises :class:`MediaError` naming the file and
the fix; the data loader turns it into its own unreadable-frame error.

The tiling helpers (:func:`side_by_side`, :func:`contact_sheet`,
:func:`eval_grid`) build the images and videos the transfer CLI, the app
and the trainer write.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import pathlib
import re
import warnings
from typing import Iterator, Mapping, Optional, Sequence, Union

import cv2
import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageOps

from xfactor_core.inference.model_frames import center_crop_resize, to_uint8

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".webm")

# A forward jump of at most this many frames is decoded through instead of
# seeking: cheaper than a seek, which restarts decoding at a key frame.
_MAX_DECODE_THROUGH = 16

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class MediaError(ValueError):
  """A file cannot be read or written as an image or video."""


class MissingFrameError(MediaError):
  """A video has no decodable frame at a requested index.

  Attributes:
    path: the video file.
    index: the first requested frame the video does not deliver (it ends
      earlier, or is corrupt from there on).
  """

  def __init__(self, path: PathLike, index: int, message: str):
    super().__init__(message)
    self.path = str(path)
    self.index = index


# ------------------------------------------------------------------ names --


def natural_sort_key(name: str) -> tuple:
  """Sort key that orders embedded numbers by value (2 before 10)."""
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def is_image_file(name: PathLike) -> bool:
  """Whether a file name has one of :data:`IMAGE_SUFFIXES` (any case)."""
  return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_video_file(name: PathLike) -> bool:
  """Whether a file name has one of :data:`VIDEO_SUFFIXES` (any case)."""
  return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


# ----------------------------------------------------------------- images --


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
  """Converts a PIL image of any common mode to ``H x W x 3`` uint8 RGB.

  16-bit (and 32-bit integer) grayscale is scaled from [0, 65535] to [0, 255]
  (value / 257, rounded), never clipped. Float images in [0, 1] are scaled by
  255. Images with an alpha channel are composited over white (as
  :func:`~xfactor_core.inference.model_frames.to_float_rgb` does for arrays).
  Palette, 1-bit, grayscale, CMYK and YCbCr images go through PIL's own RGB
  conversion.
  """
  mode = image.mode
  if mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.int64)
    gray = ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == "F":
    values = np.asarray(image, dtype=np.float64)
    finite_max = np.nanmax(values) if values.size else 0.0
    scale = 255.0 if finite_max <= 1.0 else 1.0
    gray = np.clip(np.nan_to_num(values) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
    alpha = rgba[..., 3:]
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
            ).astype(np.uint8)
  if mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image, dtype=np.uint8)


def read_image(path: PathLike, size: Optional[int] = None) -> np.ndarray:
  """An image file -> ``H x W x 3`` uint8 RGB (``size x size x 3`` with size).

  Any PIL mode is accepted and the EXIF orientation is applied. With ``size``
  the image is centre-cropped and resized, and a JPEG is decoded at the
  smallest 1/2, 1/4 or 1/8 scale that still covers ``size x size`` (several
  times faster for large photos).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"image not found: {path}")
  try:
    with Image.open(path) as image:
      if size is not None and image.format == "JPEG":
        image.draft("RGB", (size, size))
      image.load()
      if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
      rgb = to_rgb_uint8(image)
  except _IMAGE_ERRORS as e:
    raise MediaError(f"cannot read image {path} ({type(e).__name__}: {e}); is "
                     "it a PNG/JPEG/WebP image and not truncated?") from e
  if rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise MediaError(f"image {path} is empty ({rgb.shape[1]} x {rgb.shape[0]} "
                     "pixels)")
  return rgb if size is None else center_crop_resize(rgb, size)


def list_frame_files(directory: PathLike) -> list[pathlib.Path]:
  """Image files of a folder in natural order (``frames/`` subfolder too)."""
  directory = pathlib.Path(directory)
  if (directory / "frames").is_dir():
    directory = directory / "frames"
  files = sorted((p for p in directory.iterdir()
                  if is_image_file(p.name) and p.is_file()),
                 key=lambda p: natural_sort_key(p.name))
  if not files:
    raise MediaError(f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in "
                     f"{directory}")
  return files


# ----------------------------------------------------------------- videos --


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a video's container says, without decoding it.

  Attributes:
    width, height: frame size in pixels (as decoded, rotation applied).
    fps: frames per second, or None when the container does not say.
    num_frames: frame count the container gives, or None when it gives none
      (it can be off for damaged files; decoding is the final word).
  """
  width: int
  height: int
  fps: Optional[float]
  num_frames: Optional[int]


def _check_video_file(path: pathlib.Path) -> None:
  if not path.is_file():
    raise MediaError(f"video not found: {path}")


def _cannot_open(path: pathlib.Path, reason: str) -> MediaError:
  return MediaError(f"cannot open video {path} ({reason}); use an MP4 (H.264), "
                    "MOV, WebM or GIF file that plays in a browser")


def _open_capture(path: pathlib.Path) -> cv2.VideoCapture:
  # FFmpeg only: OpenCV's image-sequence backend would read a '%' in a file
  # name as a pattern.
  capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
  if not capture.isOpened():
    capture.release()
    raise _cannot_open(path, "no decodable video stream")
  return capture


def probe_video(path: PathLike) -> VideoInfo:
  """Size, frame rate and (when the container says) frame count of a video.

  Reads the container's header only; cheap for any length.

  Raises:
    MediaError: missing file, or no readable video stream.
  """
  path = pathlib.Path(path)
  _check_video_file(path)
  if path.suffix.lower() == ".gif":
    try:
      with Image.open(path) as image:
        width, height = image.size
        count = int(getattr(image, "n_frames", 1))
        duration = image.info.get("duration") or 0
    except _IMAGE_ERRORS as e:
      raise _cannot_open(path, f"{type(e).__name__}: {e}") from e
    return VideoInfo(width, height, 1000.0 / duration if duration else None,
                     count)
  capture = _open_capture(path)
  try:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  finally:
    capture.release()
  if width <= 0 or height <= 0:
    raise _cannot_open(path, "no video stream with pictures")
  return VideoInfo(width, height, fps if math.isfinite(fps) and fps > 0 else None,
                   count if count > 0 else None)


def count_video_frames(path: PathLike) -> int:
  """Number of frames of a video: the container's count, else decoded."""
  info = probe_video(path)
  if info.num_frames is not None:
    return info.num_frames
  return sum(1 for _ in iter_video(path))


def _wanted(indices: Optional[Sequence[int]]) -> Optional[list[int]]:
  if indices is None:
    return None
  wanted = sorted({int(i) for i in indices})
  if wanted and wanted[0] < 0:
    raise MediaError(f"frame index {wanted[0]} is negative; frames count from 0")
  return wanted


def _decode_opencv(path: pathlib.Path, wanted: Optional[list[int]]
                   ) -> Iterator[tuple[int, np.ndarray]]:
  capture = _open_capture(path)
  try:
    next_index = 0  # the frame the next read() returns
    for index in (itertools.count() if wanted is None else wanted):
      gap = index - next_index
      if gap > _MAX_DECODE_THROUGH:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
      else:
        for _ in range(gap):
          if not capture.grab():
            return
      ok, bgr = capture.read()
      if not ok or bgr is None:
        return  # the end, or a frame FFmpeg cannot decode: the end for us
      next_index = index + 1
      yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  finally:
    capture.release()


def _decode_gif(path: pathlib.Path, wanted: Optional[list[int]]
                ) -> Iterator[tuple[int, np.ndarray]]:
  try:
    image = Image.open(path)
  except _IMAGE_ERRORS as e:
    raise _cannot_open(path, f"{type(e).__name__}: {e}") from e
  with image:
    count = int(getattr(image, "n_frames", 1))
    for index in (range(count) if wanted is None else wanted):
      if index >= count:
        return
      try:
        image.seek(index)
        frame = to_rgb_uint8(image)
      except (*_IMAGE_ERRORS, EOFError):
        return  # a truncated GIF ends here
      yield index, frame


def iter_video(path: PathLike, indices: Optional[Sequence[int]] = None, *,
               size: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
  """Decodes a video frame by frame: the project's one video decoder.

  Only the wanted frames are converted; long forward gaps are seeked over, so
  a few frames of a long video cost a few seeks, not a full decode. The file
  stays open until the iterator is exhausted or closed.

  Args:
    path: a video file (:data:`VIDEO_SUFFIXES`; GIFs through PIL, the rest
      through OpenCV's FFmpeg).
    indices: frame numbers to decode, in any order, repeats ignored; None
      decodes every frame.
    size: centre-crop and resize each frame to ``size x size`` as it is
      decoded; None keeps the video's size.

  Yields:
    ``(index, frame)`` in increasing index order, ``frame`` ``H x W x 3``
    uint8 RGB, for each wanted frame the video has. Iteration ends quietly
    at the end of the video (or where it stops being decodable): requested
    indices past it are simply not yielded.

  Raises:
    MediaError: a missing file, one that is no video, or a negative index.
  """
  path = pathlib.Path(path)
  _check_video_file(path)
  wanted = _wanted(indices)
  decode = _decode_gif if path.suffix.lower() == ".gif" else _decode_opencv
  for index, frame in decode(path, wanted):
    yield index, frame if size is None else center_crop_resize(frame, size)


def read_video(path: PathLike, indices: Optional[Sequence[int]] = None, *,
               size: Optional[int] = None) -> np.ndarray:
  """Frames of a video file -> ``N x H x W x 3`` uint8 (see :func:`iter_video`).

  Args:
    path: a video file (MP4, MOV, WebM, GIF, ...).
    indices: frame numbers, in any order, repeats allowed; None reads every
      frame.
    size: centre-crop and resize each frame to ``size x size``.

  Returns:
    The frames in the order of ``indices`` (all frames in order for None).

  Raises:
    MissingFrameError: the video has no frame at one of ``indices``.
    MediaError: the file cannot be read as a video, or has no frames.
  """
  path = pathlib.Path(path)
  if indices is not None and len(indices) == 0:
    raise MediaError(f"no frames of {path} requested")
  decoded = dict(iter_video(path, indices, size=size))
  if indices is None:
    if not decoded:
      raise MediaError(f"video {path} has no decodable frames; re-export or "
                       "re-download it")
    return np.stack(list(decoded.values()))
  missing = sorted({int(i) for i in indices} - decoded.keys())
  if missing:
    raise MissingFrameError(
        path, missing[0],
        f"video {path} has no frame {missing[0]} (of the {len(set(indices))} "
        f"requested, {len(decoded)} were decoded): it ends earlier or is "
        "corrupt from there on")
  return np.stack([decoded[int(i)] for i in indices])


# ------------------------------------------------------------------ clips --


def read_frames(source: Union[PathLike, Sequence[PathLike]]) -> np.ndarray:
  """Every frame of a video file, a folder of frames, or a list of image
  files -> ``N x H x W x 3`` uint8."""
  return read_clip(source)


def _check_same_size(images: Sequence[np.ndarray]) -> np.ndarray:
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise MediaError(f"frames have different sizes {sorted(shapes)[:3]}; all "
                     "frames of one clip must have the same size")
  return np.stack(images)


def read_clip(source: Union[PathLike, Sequence[PathLike]], *,
              num_frames: Optional[int] = None, stride: int = 1,
              start: int = 0) -> np.ndarray:
  """Frames ``start, start+stride, ...`` (at most ``num_frames``, fewer when
  the clip ends first) of a video file, a folder of frames or a list of
  image files -> ``N x H x W x 3`` uint8."""
  if stride < 1 or start < 0 or (num_frames is not None and num_frames < 1):
    raise MediaError(f"invalid frame selection (start {start}, stride {stride}, "
                     f"frames {num_frames}): need start >= 0, stride >= 1, "
                     "frames >= 1")
  if isinstance(source, (list, tuple)) and len(source) == 1:
    source = source[0]
  if isinstance(source, (list, tuple)):
    files = [pathlib.Path(p) for p in source]
  else:
    path = pathlib.Path(source)
    if path.is_dir():
      files = list_frame_files(path)
    elif is_video_file(path.name):
      stop = None if num_frames is None else start + num_frames * stride
      wanted = None if stop is None else range(start, stop, stride)
      frames = [frame for index, frame in iter_video(path, wanted)
                if wanted is not None or (index >= start
                                          and (index - start) % stride == 0)]
      if not frames:
        raise MediaError(f"video {path} has no decodable frames from frame "
                         f"{start} on")
      return np.stack(frames)
    elif is_image_file(path.name):
      files = [path]
    elif not path.exists():
      raise MediaError(f"not found: {path}")
    else:
      raise MediaError(
          f"{path} is neither a video ({', '.join(VIDEO_SUFFIXES)}), an image "
          f"({', '.join(IMAGE_SUFFIXES)}) nor a folder of frames")
  files = files[start::stride][:num_frames]
  if not files:
    raise MediaError(f"no frames left after skipping to frame {start}")
  return _check_same_size([read_image(f) for f in files])


# ---------------------------------------------------------------- writing --


def write_video(path: PathLike, frames: Sequence[np.ndarray], fps: float = 12.0) -> pathlib.Path:
  """uint8 frames -> MP4 (H.264, yuv420p, plays in browsers) or GIF by suffix."""
  path = pathlib.Path(path)
  if path.suffix.lower() not in (".mp4", ".gif"):
    raise MediaError(f"cannot write {path}: videos are written as .mp4 or .gif")
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = [np.asarray(f, np.uint8) for f in frames]
  if not frames:
    raise MediaError("no frames to write")
  if fps <= 0:
    raise MediaError(f"fps must be positive, got {fps}")
  if path.suffix.lower() == ".gif":
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=max(int(round(1000 / fps)), 20), loop=0)
    return path
  h, w = frames[0].shape[:2]
  if h % 2 or w % 2:  # yuv420p needs even sizes
    frames = [f[: h - h % 2, : w - w % 2] for f in frames]
  with warnings.catch_warnings():
    # ffmpeg runs as fork+exec; JAX's warning about forking threads does not
    # apply to a process that immediately execs.
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264",
                                pixelformat="yuv420p", quality=8,
                                macro_block_size=1)
    try:
      for f in frames:
        writer.append_data(f)
    finally:
      writer.close()
  return path


def write_frames(directory: PathLike, frames: Sequence[np.ndarray],
                 prefix: str = "") -> list[pathlib.Path]:
  """uint8 frames -> ``directory/<prefix>00000.png ...``."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, f in enumerate(frames):
    p = directory / f"{prefix}{i:05d}.png"
    Image.fromarray(np.asarray(f, np.uint8)).save(p)
    paths.append(p)
  return paths


def write_output(out: PathLike, frames: Sequence[np.ndarray], fps: float = 12.0):
  """By the suffix of ``out``: .mp4 or .gif video, else a PNG folder."""
  out = pathlib.Path(out)
  if out.suffix.lower() in (".mp4", ".gif"):
    return write_video(out, frames, fps)
  if out.suffix:
    raise MediaError(f"cannot write {out}: use .mp4, .gif or a folder path")
  return write_frames(out, frames)


# ----------------------------------------------------------------- tiling --


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray],
                 gap: int = 4) -> np.ndarray:
  """Pairs of uint8 frames -> ``N x H x (W_left + gap + W_right) x 3``.

  Each pair is scaled to the taller frame's height; a white gap separates
  them.
  """
  out = []
  for a, b in zip(left, right):
    h = max(a.shape[0], b.shape[0])
    if a.shape[0] != h:
      a = cv2.resize(a, (round(a.shape[1] * h / a.shape[0]), h))
    if b.shape[0] != h:
      b = cv2.resize(b, (round(b.shape[1] * h / b.shape[0]), h))
    spacer = np.full((h, gap, 3), 255, np.uint8)
    out.append(np.concatenate([a, spacer, b], axis=1))
  return np.stack(out)


def contact_sheet(clips: Sequence[np.ndarray], max_frames: int = 8,
                  gap: int = 4) -> np.ndarray:
  """Tiles clips into one image: one row per clip, columns are frames.

  Args:
    clips: ``F x H x W x 3`` uint8 clips (sizes may differ; every frame is
      resized to the first clip's frame size).
    max_frames: at most this many columns, evenly spaced through each clip.
    gap: white pixels between tiles.

  Returns:
    ``(rows * (H + gap) - gap) x (columns * (W + gap) - gap) x 3`` uint8.
  """
  if not len(clips):
    raise ValueError("contact_sheet needs at least one clip")
  if max_frames < 1:
    raise ValueError(f"max_frames must be at least 1, got {max_frames}")
  height, width = np.asarray(clips[0]).shape[1:3]
  columns = min(max_frames, max(len(clip) for clip in clips))
  sheet = np.full((len(clips) * (height + gap) - gap,
                   columns * (width + gap) - gap, 3), 255, np.uint8)
  for row, clip in enumerate(clips):
    frames = np.asarray(clip)
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1,
                                           min(columns, len(frames)))).astype(int))
    for column, pick in enumerate(picks):
      frame = frames[pick]
      if frame.shape[:2] != (height, width):
        frame = np.asarray(Image.fromarray(frame).resize((width, height),
                                                         Image.BILINEAR))
      top = row * (height + gap)
      left = column * (width + gap)
      sheet[top:top + height, left:left + width] = frame
  return sheet


def eval_grid(images: Mapping[str, np.ndarray], rows: int,
              gap: int = 4) -> np.ndarray:
  """The trainer's evaluation picture, one row per example.

  Each row shows the context views, the target and its reconstruction, then,
  after a triple gap, the motion source's reference and target frames and
  the transfer.

  Args:
    images: float images in [-1, 1]: ``context`` ``B x V x S x S x 3``;
      ``target``, ``reconstruction``, ``motion_reference``, ``motion_target``
      and ``transfer`` ``B x S x S x 3``.
    rows: at most this many examples.
    gap: white pixels between tiles.

  Returns:
    ``H x W x 3`` uint8.
  """
  lines = []
  for i in range(min(rows, len(images["target"]))):
    left = list(images["context"][i]) + [images["target"][i],
                                         images["reconstruction"][i]]
    right = [images["motion_reference"][i], images["motion_target"][i],
             images["transfer"][i]]
    spacer = np.ones((left[0].shape[0], gap, 3), np.float32)
    cells = []
    for tile in left:
      cells += [tile, spacer]
    cells += [spacer, spacer]
    for tile in right:
      cells += [tile, spacer]
    line = np.concatenate(cells[:-1], axis=1)
    lines += [line, np.ones((gap, line.shape[1], 3), np.float32)]
  return to_uint8(np.concatenate(lines[:-1], axis=0))
