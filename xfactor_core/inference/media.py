"""Reading images, frame folders and videos; writing MP4, GIF and PNG frames.

Readers return uint8 RGB arrays (``H x W x 3``); 16-bit, grayscale and RGBA
images are converted by :func:`xfactor_core.inference.model_frames.to_float_rgb`
rules. Every failure raises :class:`MediaError` naming the file and the fix.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Iterable, Optional, Sequence, Union

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageOps

from xfactor_core.data import decoding
from xfactor_core.inference.model_frames import FrameError, to_float_rgb

PathLike = Union[str, os.PathLike]

IMAGE_SUFFIXES = tuple(sorted(decoding.IMAGE_EXTENSIONS))
VIDEO_SUFFIXES = tuple(sorted(decoding.VIDEO_EXTENSIONS | {".gif"}))


class MediaError(ValueError):
  """A file cannot be read or written as an image or video."""


natural_key = decoding.natural_sort_key


def _as_uint8_rgb(image: np.ndarray, name: str) -> np.ndarray:
  if np.asarray(image).dtype == np.uint8 and np.ndim(image) == 3 and np.shape(image)[-1] == 3:
    return np.asarray(image)
  return np.clip(np.rint(to_float_rgb(image, name) * 255), 0, 255).astype(np.uint8)


def read_image(path: PathLike) -> np.ndarray:
  """An image file -> ``H x W x 3`` uint8 RGB.

  Any PIL mode is accepted (16-bit scaled, alpha over white, palette, CMYK) and
  the EXIF orientation is applied, with the data loader's conversion.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"image not found: {path}")
  try:
    with Image.open(path) as im:
      im.load()
      if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation
        im = ImageOps.exif_transpose(im)
      return decoding.to_rgb_uint8(im)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise MediaError(f"cannot read image {path} ({e}); is it a PNG/JPEG/WebP "
                     "image and not truncated?") from e


def list_frame_files(directory: PathLike) -> list[pathlib.Path]:
  """Image files of a folder in natural order (``frames/`` subfolder too)."""
  directory = pathlib.Path(directory)
  if (directory / "frames").is_dir():
    directory = directory / "frames"
  files = sorted((p for p in directory.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                 key=lambda p: natural_key(p.name))
  if not files:
    raise MediaError(f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in "
                     f"{directory}")
  return files


def count_video_frames(path: PathLike) -> int:
  """Number of decodable frames of a video (decodes it once)."""
  return sum(1 for _ in _iter_video(pathlib.Path(path)))


def _iter_video(path: pathlib.Path) -> Iterable[np.ndarray]:
  if not path.is_file():
    raise MediaError(f"video not found: {path}")
  suffix = path.suffix.lower()
  try:
    if suffix == ".gif":
      for frame in imageio.mimread(path, memtest=False):
        yield frame
      return
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="os.fork",
                              category=RuntimeWarning)
      reader = imageio.get_reader(path, format="FFMPEG")
  except Exception as e:  # imageio raises many types for bad files
    raise MediaError(f"cannot open video {path} ({type(e).__name__}: {e}); "
                     "use an MP4/MOV/WebM/GIF file that plays in a browser") from e
  try:
    for frame in reader:
      yield frame
  except Exception as e:
    raise MediaError(f"video {path} is corrupt or truncated ({e}); re-export "
                     "or re-download it") from e
  finally:
    reader.close()


def read_video(path: PathLike, indices: Optional[Sequence[int]] = None,
               max_frames: Optional[int] = None) -> np.ndarray:
  """Frames of a video file (MP4, MOV, WebM, GIF, ...) -> ``N x H x W x 3`` uint8.

  Args:
    indices: the frame numbers to keep (increasing); None keeps all.
    max_frames: stop after this many frames were kept.
  """
  path = pathlib.Path(path)
  wanted = None if indices is None else set(indices)
  last = None if indices is None else max(indices, default=-1)
  frames = []
  for i, frame in enumerate(_iter_video(path)):
    if last is not None and i > last:
      break
    if wanted is None or i in wanted:
      frames.append(_as_uint8_rgb(frame, f"{path} frame {i}"))
      if max_frames is not None and len(frames) >= max_frames:
        break
  if not frames:
    raise MediaError(f"video {path} has no decodable frames"
                     + ("" if indices is None else f" at {sorted(wanted)[:5]}..."))
  return np.stack(frames)


def read_frames(source: Union[PathLike, Sequence[PathLike]],
                indices: Optional[Sequence[int]] = None) -> np.ndarray:
  """A video file, a folder of frames, or a list of image files -> uint8 frames."""
  if isinstance(source, (list, tuple)):
    files = [pathlib.Path(p) for p in source]
    if len(files) == 1 and (files[0].is_dir() or
                            files[0].suffix.lower() in VIDEO_SUFFIXES):
      return read_frames(files[0], indices)
  else:
    path = pathlib.Path(source)
    if path.is_dir():
      files = list_frame_files(path)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
      return read_video(path, indices)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
      files = [path]
    elif not path.exists():
      raise MediaError(f"not found: {path}")
    else:
      raise MediaError(
          f"{path} is neither a video ({', '.join(VIDEO_SUFFIXES)}), an image "
          f"({', '.join(IMAGE_SUFFIXES)}) nor a folder of frames")
  if indices is not None:
    files = [files[i] for i in indices if i < len(files)]
  if not files:
    raise MediaError("no frames to read")
  images = [read_image(f) for f in files]
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise MediaError(f"frames have different sizes {sorted(shapes)[:3]}; all "
                     "frames of one clip must have the same size")
  return np.stack(images)


def read_clip(source: Union[PathLike, Sequence[PathLike]], *,
              num_frames: Optional[int] = None, stride: int = 1,
              start: int = 0) -> np.ndarray:
  """Frames ``start, start+stride, ...`` (at most ``num_frames``) of a clip given
  as a video file, a folder of frames or a list of image files."""
  if stride < 1 or start < 0 or (num_frames is not None and num_frames < 1):
    raise MediaError(f"invalid frame selection (start {start}, stride {stride}, "
                     f"frames {num_frames}): need start >= 0, stride >= 1, "
                     "frames >= 1")
  wanted = None
  if num_frames is not None:
    wanted = list(range(start, start + num_frames * stride, stride))
  frames = read_frames(source, wanted)
  if wanted is None:
    frames = frames[start::stride]
  if len(frames) == 0:
    raise MediaError(f"no frames left after skipping to frame {start}")
  return frames


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
