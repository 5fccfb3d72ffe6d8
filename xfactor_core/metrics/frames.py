"""Reading a clip for evaluation: a folder of frames or a video file.

Kept deliberately small; the main frame I/O of the project lives in
`xfactor_core.inference`.
"""

import os
import pathlib
import re

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v")


def natural_sort_key(name: str) -> list[int | str]:
  """Sort key that orders "frame2" before "frame10"."""
  return [int(part) if part.isdigit() else part.lower()
          for part in re.split(r"(\d+)", name)]


def _stack(frames: list[np.ndarray], source: str) -> np.ndarray:
  if not frames:
    raise ValueError(f"no frames found in {source}.")
  shapes = {frame.shape for frame in frames}
  if len(shapes) != 1:
    raise ValueError(
        f"frames in {source} have different sizes {sorted(shapes)}; resize "
        "them to one size first.")
  return np.stack(frames).astype(np.uint8)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim == 2:
    frame = np.repeat(frame[..., None], 3, axis=-1)
  if frame.shape[-1] == 4:
    frame = frame[..., :3]
  if frame.dtype != np.uint8:
    raise ValueError(f"expected 8-bit frames, got dtype {frame.dtype}.")
  return frame


def read_frames(path: str | os.PathLike[str],
                max_frames: int | None = None) -> np.ndarray:
  """Reads a clip as RGB frames.

  Args:
    path: a folder of images (read in natural sort order of their file names)
      or a video file (decoded with imageio / ffmpeg).
    max_frames: keep only the first this many frames when given.

  Returns:
    (N, H, W, 3) uint8 array.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist; pass a folder of frames or a video file.")
  if path.is_dir():
    names = sorted((p.name for p in path.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_sort_key)
    if not names:
      raise ValueError(
          f"{path} holds no images with suffixes {', '.join(IMAGE_SUFFIXES)}.")
    names = names[:max_frames] if max_frames is not None else names
    frames = []
    for name in names:
      with Image.open(path / name) as image:
        frames.append(np.asarray(image.convert("RGB")))
    return _stack(frames, str(path))
  if path.suffix.lower() in VIDEO_SUFFIXES:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
    frames = []
    for frame in iio.imiter(path):
      if max_frames is not None and len(frames) >= max_frames:
        break
      frames.append(_to_rgb(frame))
    return _stack(frames, str(path))
  raise ValueError(
      f"cannot read {path}: expected a folder of images or a video with suffix "
      f"in {', '.join(VIDEO_SUFFIXES)}.")


def validate_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
  """Checks that `frames` is an (N, H, W, 3) uint8 array and returns it."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(
        f"{name} must have shape (N, H, W, 3), got {frames.shape}; stack RGB "
        "frames along the first axis.")
  if frames.dtype != np.uint8:
    raise ValueError(
        f"{name} must be uint8 in [0, 255], got {frames.dtype}; convert with "
        "np.clip(x * 255, 0, 255).round().astype(np.uint8) for [0, 1] floats.")
  return frames
