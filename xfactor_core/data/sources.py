"""A grain random-access source over the videos of one dataset.

`VideoFrameSource` follows the `grain.python.RandomAccessDataSource`
protocol: record i describes video i (id and frame count). Frames are not
part of the record: `read_clip(i, positions)` decodes only the frames a clip
needs, so a sample costs V image decodes (or V seeks in a video file).

Unreadable frames (missing, truncated, undecodable) raise
`UnreadableFrameError` after a logged warning that carries the running count
of unreadable frames of this source in this process. Each such frame is
remembered, so clips that contain it are skipped without another read; for a
video file, a frame that fails to decode shortens the video to the frames
before it (truncated files).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import numpy as np

from xfactor_core.data import decoding
from xfactor_core.data import dataset_layouts
from xfactor_core.data.decoding import UnreadableFrameError

__all__ = ["VideoFrameSource", "UnreadableFrameError"]


class VideoFrameSource:
  """Random access to the usable videos of one indexed dataset.

  Attributes:
    name: label used in log messages and errors.
    image_size: side length of the decoded square frames.
    min_frames: videos with fewer frames are left out.
    num_too_short: how many indexed videos were left out for that.
  """

  def __init__(self, index: dataset_layouts.VideoIndex, *, image_size: int,
               min_frames: int, name: str | None = None):
    if image_size < 1:
      raise ValueError(f"image_size={image_size} must be a positive number "
                       "of pixels")
    self.name = name or f"{index.layout}/{index.split}"
    self.root = index.root
    self.image_size = int(image_size)
    self.min_frames = int(min_frames)
    self._videos = tuple(v for v in index.videos if v.num_frames >= min_frames)
    self.num_too_short = len(index.videos) - len(self._videos)
    self._unreadable: set[tuple[int, int]] = set()
    self._shortened: dict[int, int] = {}
    self._num_unreadable_frames = 0
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._videos)

  def __getitem__(self, video_index: int) -> dict:
    """Record of a video: {"video_index", "video_id", "num_frames"}."""
    video_index = int(video_index)
    return {
        "video_index": video_index,
        "video_id": self._videos[video_index].video_id,
        "num_frames": self.num_frames(video_index),
    }

  def __repr__(self) -> str:
    return (f"VideoFrameSource(name={self.name!r}, root={self.root!r}, "
            f"videos={len(self._videos)}, image_size={self.image_size})")

  @property
  def num_unreadable_frames(self) -> int:
    """Unreadable frames met so far by this source in this process."""
    return self._num_unreadable_frames

  def video_id(self, video_index: int) -> str:
    return self._videos[video_index].video_id

  def num_frames(self, video_index: int) -> int:
    """Frame count, less any unreadable tail of a truncated video file."""
    return self._shortened.get(video_index,
                               self._videos[video_index].num_frames)

  def has_unreadable(self, video_index: int,
                     positions: Sequence[int]) -> bool:
    """Whether any of these frames is known to be unreadable."""
    return any((video_index, int(p)) in self._unreadable for p in positions)

  def frame_path(self, video_index: int, position: int) -> str:
    video = self._videos[video_index]
    if video.is_video_file:
      return os.path.join(self.root, video.rel_path)
    return os.path.join(self.root, video.rel_path, video.frame_name(position))

  def read_clip(self, video_index: int,
                positions: Sequence[int]) -> np.ndarray:
    """Decodes frames of a video.

    Args:
      video_index: which video (0 <= video_index < len(self)).
      positions: V frame positions in the video.

    Returns:
      V x S x S x 3 uint8 frames (S = image_size).

    Raises:
      UnreadableFrameError: a frame could not be decoded (already counted and
        logged).
    """
    video = self._videos[video_index]
    try:
      if video.is_video_file:
        return decoding.read_video_frames(
            os.path.join(self.root, video.rel_path), positions,
            self.image_size)
      return np.stack([
          decoding.read_image_frame(self.frame_path(video_index, p),
                                    self.image_size, int(p))
          for p in positions
      ])
    except UnreadableFrameError as e:
      self._record_unreadable(video_index, e)
      raise

  def _record_unreadable(self, video_index: int,
                         error: UnreadableFrameError) -> None:
    with self._lock:
      key = (video_index, error.position)
      if key in self._unreadable:
        return
      self._unreadable.add(key)
      self._num_unreadable_frames += 1
      count = self._num_unreadable_frames
      if self._videos[video_index].is_video_file:
        self._shortened[video_index] = min(self.num_frames(video_index),
                                           error.position)
    logging.warning(
        "%s: skipping an unreadable frame (%d unreadable so far in this "
        "process): %s", self.name, count, error)
