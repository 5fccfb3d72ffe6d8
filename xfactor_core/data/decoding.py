"""Frame decoding for the training loader, on the project's media readers.

Every reader returns RGB uint8 frames, centre-cropped to a square and resized
to ``size x size`` (:mod:`xfactor_core.inference.media` reads,
:func:`~xfactor_core.inference.model_frames.center_crop_resize` resamples,
as at inference). Frames that cannot be decoded raise
:class:`UnreadableFrameError`, which the sources turn into a counted warning
and a resampled clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xfactor_core.inference import media


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
    return media.read_image(path, size)
  except media.MediaError as e:
    raise UnreadableFrameError(position, path, str(e)) from e


def read_video_frames(path: str, positions: Sequence[int],
                      size: int) -> np.ndarray:
  """Decodes the given frames of a video file, seeking between them.

  Args:
    path: video file (mp4, mov, webm, gif, ...).
    positions: frame indices, in any order, repeats allowed.
    size: output side length.

  Returns:
    len(positions) x size x size x 3 uint8, in the order of `positions`.

  Raises:
    UnreadableFrameError: the file cannot be opened or a frame cannot be
      decoded (its `position` is the first frame that failed).
  """
  try:
    return media.read_video(path, positions, size=size)
  except media.MissingFrameError as e:
    raise UnreadableFrameError(e.index, path, str(e)) from e
  except media.MediaError as e:
    raise UnreadableFrameError(int(min(positions)), path, str(e)) from e
