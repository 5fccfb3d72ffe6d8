"""The published frame sampler: random windows that widen during training.

A clip of V frames is drawn from a video of F frames as follows.

1. Maximum window length at training step s (a window of length L spans L
   consecutive frames, so its first and last frame are L - 1 apart):
     max_len(s) = floor(window_start
                        + min(s / window_warmup_steps, 1)
                          * (window_end - window_start))
   (window_end at once when window_warmup_steps is 0), capped at F.
2. The window length L is drawn from [lo, hi] with lo = max(min_window, V)
   (capped at F) and hi = max(max_len(s), lo): uniformly, or, when
   `long_window_weight` a > 0, with weights
     (1 - a) + a * exp(-((t - 0.7) / 0.25)^2),  t = (L - lo) / (hi - lo),
   which favours long windows (a = 0.8 is the published "upweight").
3. The window start is uniform over all F - L + 1 positions.
4. The first and the last frame of the window are always taken; the other
   V - 2 frames are distinct interior frames drawn uniformly. With
   `gap_sigma` g set (the multi-view model), one interior frame, the future
   reference, is drawn uniformly from the frames whose distance to both window
   ends is at most (1 + g) / 2 of the window span, i.e. from the middle g
   fraction of the window; the other V - 3 are uniform. The trainer picks the
   reference as the frame nearest the middle (`reference_view`).
5. Frames are in temporal order, and the whole clip is reversed with
   probability `reverse_prob`.

`frame_indices` are the frame positions minus the position of view 0, so a
reversed clip has non-positive indices.

The sampler is a pure function of (rng, num_frames, step): the loader derives
the rng and the step from the batch number (see `loader.py`), so the same
clip comes out whichever process or worker draws it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

_UPWEIGHT_CENTRE = 0.7
_UPWEIGHT_WIDTH = 0.25


@dataclasses.dataclass(frozen=True)
class WindowParams:
  """Parameters of the frame sampler (see the module docstring).

  Attributes:
    num_views: V, frames per clip (context views + target), at least 2.
    window_start: maximum window length at step 0.
    window_end: maximum window length after the warm-up.
    window_warmup_steps: steps over which the maximum grows linearly.
    min_window: minimum window length (0: V).
    long_window_weight: a in [0, 1]; 0 draws window lengths uniformly.
    gap_sigma: None, or g >= 0: width of the band around the middle of the
      window that holds the reference frame, as a fraction of the window.
    reverse_prob: probability of reversing the clip.
  """
  num_views: int
  window_start: int
  window_end: int
  window_warmup_steps: int
  min_window: int = 0
  long_window_weight: float = 0.0
  gap_sigma: float | None = None
  reverse_prob: float = 0.5

  def __post_init__(self):
    problems = []
    if self.num_views < 2:
      problems.append(f"num_views={self.num_views} must be at least 2 "
                      "(one context view and the target)")
    if self.window_start < 1 or self.window_end < 1:
      problems.append(f"window_start={self.window_start} and window_end="
                      f"{self.window_end} must be positive frame counts")
    if self.window_warmup_steps < 0:
      problems.append(f"window_warmup_steps={self.window_warmup_steps} must "
                      "be >= 0")
    if self.min_window < 0:
      problems.append(f"min_window={self.min_window} must be >= 0 (0 means "
                      "num_views)")
    if not 0.0 <= self.long_window_weight <= 1.0:
      problems.append(f"long_window_weight={self.long_window_weight} must "
                      "lie in [0, 1]")
    if self.gap_sigma is not None and self.gap_sigma < 0:
      problems.append(f"gap_sigma={self.gap_sigma} must be >= 0, or None to "
                      "turn reference placement off")
    if not 0.0 <= self.reverse_prob <= 1.0:
      problems.append(f"reverse_prob={self.reverse_prob} must lie in [0, 1]")
    if problems:
      raise ValueError("invalid frame sampler settings: " + "; ".join(problems))

  @classmethod
  def from_config(cls, config: Any) -> "WindowParams":
    """Reads the window fields of a dataset ConfigDict."""
    gap_sigma = config.get("gap_sigma", None)
    return cls(
        num_views=int(config.num_views),
        window_start=int(config.window_start),
        window_end=int(config.window_end),
        window_warmup_steps=int(config.window_warmup_steps),
        min_window=int(config.get("min_window", 0) or 0),
        long_window_weight=float(config.get("long_window_weight", 0.0) or 0.0),
        gap_sigma=None if gap_sigma is None else float(gap_sigma),
        reverse_prob=float(config.get("reverse_prob", 0.5)),
    )

  @property
  def min_length(self) -> int:
    """Shortest window the sampler draws: max(min_window, num_views)."""
    return max(self.min_window, self.num_views)


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """Which frames of a video make up one clip.

  Attributes:
    positions: V int64 frame positions in the video, in view order.
    window_first: first frame of the window.
    window_length: L, frames spanned by the window.
    reversed: whether the clip runs backwards.
  """
  positions: np.ndarray
  window_first: int
  window_length: int
  reversed: bool

  @property
  def frame_indices(self) -> np.ndarray:
    """V int32 positions relative to view 0."""
    return (self.positions - self.positions[0]).astype(np.int32)


def max_window_length(params: WindowParams, step: int) -> int:
  """The maximum window length at a training step (before capping at F)."""
  if params.window_warmup_steps <= 0:
    fraction = 1.0
  else:
    fraction = min(max(step, 0), params.window_warmup_steps) / float(
        params.window_warmup_steps)
  return int(math.floor(params.window_start + fraction *
                        (params.window_end - params.window_start)))


def window_length_range(params: WindowParams, num_frames: int,
                        step: int) -> tuple[int, int]:
  """Inclusive range [lo, hi] of window lengths at `step` for F frames."""
  if num_frames < params.num_views:
    raise ValueError(f"a video with {num_frames} frames cannot give "
                     f"{params.num_views} distinct views")
  lo = min(params.min_length, num_frames)
  hi = max(min(max_window_length(params, step), num_frames), lo)
  return lo, hi


def window_length_weights(params: WindowParams, lo: int,
                          hi: int) -> np.ndarray:
  """Probabilities of the window lengths lo..hi (hi - lo + 1 values)."""
  count = hi - lo + 1
  if params.long_window_weight == 0.0 or count == 1:
    return np.full(count, 1.0 / count)
  t = np.linspace(0.0, 1.0, count)
  bump = np.exp(-((t - _UPWEIGHT_CENTRE) / _UPWEIGHT_WIDTH)**2)
  weights = (1.0 - params.long_window_weight) + params.long_window_weight * bump
  return weights / weights.sum()


def _reference_band(first: int, last: int, gap_sigma: float) -> np.ndarray:
  """Interior frames whose distance to both window ends is small enough."""
  span = last - first
  alpha = 1.0 + gap_sigma
  low = max(int(math.ceil(last - alpha * span / 2.0)), first + 1)
  high = min(int(math.floor(first + alpha * span / 2.0)), last - 1)
  if high < low:
    middle = (first + last) // 2
    return np.array([min(max(middle, first + 1), last - 1)])
  return np.arange(low, high + 1)


def sample_clip(rng: np.random.Generator, num_frames: int, step: int,
                params: WindowParams) -> ClipPlan:
  """Draws the frames of one clip (see the module docstring).

  Args:
    rng: numpy Generator; the only source of randomness.
    num_frames: F, frames in the video (at least V).
    step: training step that sets the maximum window length.
    params: sampler settings.

  Returns:
    the ClipPlan; its positions are V distinct frames in [0, F).
  """
  lo, hi = window_length_range(params, num_frames, step)
  lengths = np.arange(lo, hi + 1)
  if params.long_window_weight > 0.0:
    length = int(rng.choice(lengths, p=window_length_weights(params, lo, hi)))
  else:
    length = int(rng.integers(lo, hi + 1))
  first = int(rng.integers(0, num_frames - length + 1))
  last = first + length - 1
  num_interior = params.num_views - 2

  chosen = []
  if num_interior > 0 and params.gap_sigma is not None:
    reference = int(rng.choice(_reference_band(first, last, params.gap_sigma)))
    chosen.append(reference)
    num_interior -= 1
  if num_interior > 0:
    pool = np.setdiff1d(np.arange(first + 1, last), np.asarray(chosen, int))
    chosen.extend(
        int(p) for p in rng.choice(pool, size=num_interior, replace=False))
  positions = np.sort(np.asarray([first, last] + chosen, dtype=np.int64))
  is_reversed = bool(rng.random() < params.reverse_prob)
  if is_reversed:
    positions = positions[::-1].copy()
  return ClipPlan(positions=positions, window_first=first,
                  window_length=length, reversed=is_reversed)


def reference_view(frame_indices: np.ndarray) -> np.ndarray:
  """The view nearest the middle of each clip (the multi-view reference).

  The reference minimises the larger of its distances to the two ends of the
  clip (first of the tied views).

  Args:
    frame_indices: ... x V frame indices of clips in temporal order (either
      direction), as the loader returns them.

  Returns:
    ... int32 view index of the reference.
  """
  frame_indices = np.asarray(frame_indices)
  to_ends = np.maximum(
      np.abs(frame_indices - frame_indices[..., :1]),
      np.abs(frame_indices - frame_indices[..., -1:]))
  return np.argmin(to_ends, axis=-1).astype(np.int32)
