"""Frames as the models take and give them: preparation and conversion back.

Model inputs are float32 in [-1, 1], channels last, square, of the model's
size. Any RGB, RGBA, grayscale, 16-bit or float image is accepted:

* 16-bit images are scaled by 1/65535 (not clipped), floats are taken as [0, 1]
  (or [0, 255] when their maximum exceeds 1), booleans as 0/1;
* grayscale is replicated to three channels; RGBA is composited over white;
* the largest centred square is cropped, then resized by
  :func:`center_crop_resize`, the project's one resampling: the training data
  and the media readers use it too (area filter when shrinking, bicubic when
  enlarging).

This module depends on no other part of the project, so the media readers and
the data loader can build on it.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np


class FrameError(ValueError):
  """An image or video frame cannot be used as model input."""


def to_float_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
  """Any supported image array -> ``H x W x 3`` float32 in [0, 1]."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
    raise FrameError(
        f"{name} has shape {image.shape}; expected H x W (grayscale), "
        "H x W x 3 (RGB) or H x W x 4 (RGBA)")
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise FrameError(f"{name} is empty (shape {image.shape})")
  if image.dtype == np.uint8:
    x = image.astype(np.float32) / 255.0
  elif image.dtype == np.uint16:
    x = image.astype(np.float32) / 65535.0
  elif image.dtype == bool:
    x = image.astype(np.float32)
  elif np.issubdtype(image.dtype, np.integer):
    info = np.iinfo(image.dtype)
    x = np.clip(image.astype(np.float64) / max(info.max, 1), 0, 1).astype(np.float32)
  elif np.issubdtype(image.dtype, np.floating):
    x = image.astype(np.float32)
    if not np.all(np.isfinite(x)):
      raise FrameError(f"{name} contains NaN or infinite values")
    if x.max(initial=0.0) > 1.0:
      x = x / 255.0
    x = np.clip(x, 0.0, 1.0)
  else:
    raise FrameError(f"{name} has unsupported dtype {image.dtype}; use uint8, "
                     "uint16 or float images")
  if x.ndim == 2:
    x = np.repeat(x[..., None], 3, axis=-1)
  elif x.shape[-1] == 4:
    alpha = x[..., 3:]
    x = x[..., :3] * alpha + (1.0 - alpha)  # over white
  return np.ascontiguousarray(x)


def center_square(frame: np.ndarray) -> np.ndarray:
  """The largest centred square of an ``H x W (x C)`` frame (a view, no copy)."""
  height, width = frame.shape[:2]
  side = min(height, width)
  top = (height - side) // 2
  left = (width - side) // 2
  return frame[top:top + side, left:left + side]


def center_crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops an ``H x W x C`` frame to a square and resizes it.

  The one resampling of the project: the training data and the frames given
  to a model at inference both come through here, so a model sees the same
  filter in both. The area filter when shrinking (each output pixel averages
  the input pixels it covers: no aliasing), bicubic when enlarging.

  Args:
    frame: ``H x W x C``, uint8 or float in [0, 1].
    size: output side length in pixels.

  Returns:
    ``size x size x C`` of the input's dtype (floats clipped to [0, 1], since
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


def prepare_frame(image: np.ndarray, size: int, name: str = "image") -> np.ndarray:
  """One image -> ``size x size x 3`` float32 in [-1, 1]."""
  if size < 1:
    raise FrameError(f"output size must be positive, got {size}")
  square = center_crop_resize(to_float_rgb(image, name), size)
  return square * 2.0 - 1.0


def prepare_frames(images: Iterable[np.ndarray], size: int,
                   name: str = "frames") -> np.ndarray:
  """A sequence of images -> ``N x size x size x 3`` float32 in [-1, 1]."""
  prepared = [prepare_frame(im, size, f"{name}[{i}]")
              for i, im in enumerate(images)]
  if not prepared:
    raise FrameError(f"no {name} given: at least one image is needed")
  return np.stack(prepared).astype(np.float32)


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """Model output in [-1, 1] (any leading shape) -> uint8 RGB."""
  x = (np.asarray(frames, np.float32) + 1.0) * 127.5
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def select_frames(num_available: int, *, num_frames: int | None = None,
                  stride: int = 1, start: int = 0) -> list[int]:
  """Indices ``start, start+stride, ...`` (at most ``num_frames``) of a clip."""
  if stride < 1:
    raise FrameError(f"frame stride must be at least 1, got {stride}")
  if not 0 <= start < max(num_available, 1):
    raise FrameError(f"start frame {start} is outside the clip of "
                     f"{num_available} frames")
  indices = list(range(start, num_available, stride))
  if num_frames is not None:
    if num_frames < 1:
      raise FrameError(f"number of frames must be at least 1, got {num_frames}")
    indices = indices[:num_frames]
  return indices


def crop_note(images: Iterable[np.ndarray], name: str = "context") -> str:
  """A note for non-square images ("" when all are square): the models work
  on square frames, so only the centre square of each is used."""
  notes = []
  for i, image in enumerate(images):
    h, w = np.shape(image)[:2]
    if h != w:
      side = min(h, w)
      notes.append(f"{name}[{i}] is {w} x {h}, not square: the model sees its "
                   f"centre {side} x {side}")
  if not notes:
    return ""
  return ("; ".join(notes) + ". Crop the image to a square yourself to choose "
          "which part is used.")
