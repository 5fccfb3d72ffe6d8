"""Frame decoding: still images with PIL, video files with OpenCV.

Every reader returns RGB uint8 frames, centre-cropped to a square and resized
to `size x size`. Frames that cannot be decoded raise `UnreadableFrameError`,
which the sources turn into a counted warning and a resampled clip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image
from PIL import ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})

# A forward jump of at most this many frames is decoded through instead of
# seeking: cheaper than a seek, which restarts decoding at a key frame.
_MAX_DECODE_THROUGH = 16

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


class UnreadableFrameError(Exception):
  """A frame of a video could not be decoded.

  Attributes:
    position: index of the frame in its video.
    path: the image or video file.
  """

  def __init__(self, position: int, path: str, reason: str):
    super().__init__(f"frame {position} of {path} is unreadable: {reason}")
    self.position = position
    self.path = path


def natural_sort_key(name: str) -> tuple:
  """Sort key that orders embedded numbers by value (2 before 10)."""
  parts = re.split(r"(\d+)", name)
  return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_video_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
  """Converts a PIL image of any common mode to RGB uint8.

  16-bit (and 32-bit integer) grayscale is scaled from [0, 65535] to [0, 255]
  (value / 257, rounded), never clipped. Float images in [0, 1] are scaled by
  255. Images with an alpha channel are composited over white (as
  `xfactor_core.inference.model_frames.to_float_rgb` does for arrays). Palette, 1-bit,
  grayscale, CMYK and YCbCr images go through PIL's own RGB conversion.

  Args:
    image: a loaded PIL image.

  Returns:
    H x W x 3 uint8 array.
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


def center_square(frame: np.ndarray) -> np.ndarray:
  """The largest centred square of an H x W (x C) frame (a view, no copy)."""
  height, width = frame.shape[:2]
  side = min(height, width)
  top = (height - side) // 2
  left = (width - side) // 2
  return frame[top:top + side, left:left + side]


def center_crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops an H x W x C frame to a square and resizes it.

  The one resampling of the project: the training data and the frames given
  to a model at inference both come through here, so a model sees the same
  filter in both. The area filter when shrinking (each output pixel averages
  the input pixels it covers: no aliasing), bicubic when enlarging.

  Args:
    frame: H x W x C, uint8 or float32 in [0, 1].
    size: output side length in pixels.

  Returns:
    size x size x C of the input's dtype (floats clipped to [0, 1], since
    bicubic overshoots at edges).
  """
  square = center_square(frame)
  side = square.shape[0]
  if side == size:
    return np.ascontiguousarray(square)
  interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
  resized = cv2.resize(np.ascontiguousarray(square), (size, size),
                       interpolation=interpolation)
  if resized.ndim == 2:  # OpenCV drops a single channel axis
    resized = resized[..., None]
  if np.issubdtype(resized.dtype, np.floating):
    resized = np.clip(resized, 0.0, 1.0)
  return resized


def read_image_frame(path: str, size: int, position: int = 0) -> np.ndarray:
  """Reads one still-image frame.

  Args:
    path: image file (PNG, JPEG, ...).
    size: output side length.
    position: the frame's index in its video (only for error messages).

  Returns:
    size x size x 3 uint8.

  Raises:
    UnreadableFrameError: missing, truncated or undecodable file.
  """
  try:
    with Image.open(path) as image:
      if image.format == "JPEG":
        # Decode at the smallest 1/2, 1/4 or 1/8 scale that still covers
        # size x size: several times faster for large JPEGs.
        image.draft("RGB", (size, size))
      image.load()
      if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
      rgb = to_rgb_uint8(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UnreadableFrameError(position, path,
                               f"{type(e).__name__}: {e}") from e
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise UnreadableFrameError(position, path, f"empty image {rgb.shape}")
  return center_crop_resize(rgb, size)


def count_video_frames(path: str) -> int:
  """Number of frames of a video file (container metadata, else decoded).

  Args:
    path: video file.

  Returns:
    frame count; 0 when the file cannot be opened.
  """
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      return 0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if count > 0:
      return count
    count = 0
    while capture.grab():
      count += 1
    return count
  finally:
    capture.release()


def read_video_frames(path: str, positions: Sequence[int],
                      size: int) -> np.ndarray:
  """Decodes the given frames of a video file, seeking between them.

  Args:
    path: video file (mp4, mov, webm, ...).
    positions: frame indices, in any order, repeats allowed.
    size: output side length.

  Returns:
    len(positions) x size x size x 3 uint8, in the order of `positions`.

  Raises:
    UnreadableFrameError: the file cannot be opened or a frame cannot be
      decoded (its `position` is the first frame that failed).
  """
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise UnreadableFrameError(int(min(positions)), path,
                                 "OpenCV cannot open the video file")
    decoded = {}
    next_position = 0
    for position in sorted(set(int(p) for p in positions)):
      gap = position - next_position
      if gap < 0 or gap > _MAX_DECODE_THROUGH:
        capture.set(cv2.CAP_PROP_POS_FRAMES, position)
      else:
        for _ in range(gap):
          if not capture.grab():
            raise UnreadableFrameError(position, path, "video ends early")
      ok, bgr = capture.read()
      if not ok or bgr is None:
        raise UnreadableFrameError(position, path, "frame cannot be decoded")
      next_position = position + 1
      decoded[position] = center_crop_resize(
          cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)
  finally:
    capture.release()
  return np.stack([decoded[int(p)] for p in positions])
