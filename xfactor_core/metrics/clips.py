"""Clips for evaluation: reading (through the project's media I/O) and checks."""

import os

import numpy as np

from xfactor_core.inference import media


def read_frames(path: str | os.PathLike[str],
                max_frames: int | None = None) -> np.ndarray:
  """A folder of frames (natural order) or a video file -> (N, H, W, 3) uint8.

  Raises ``media.MediaError`` (a ValueError) naming the file and the fix.
  """
  return media.read_clip(path, num_frames=max_frames)


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
