"""Camera paths: what a transfer replays, and how it is saved.

Two modes (``CAMERA_PATH_MODES``):

* ``"reference"`` (the XFactor path, the only one of the published models and
  every non-warp model): ``latents[k]`` is frame k relative to frame 0,
  ``PoseEnc((frame0, frame_k))[:, 1]``; frame k renders from that latent
  alone.
* ``"composed"`` (renderers whose warp is explicit: ``render_output="warp"``,
  and their default, ``COMPOSABLE_DEFAULT_MODE``, since it follows real clips
  where the reference path breaks: benchmarks/README.md, "The smooth-warp
  demo"):
  ``latents[k]`` is the step from frame k-1 to frame k,
  ``PoseEnc((frame_{k-1}, frame_k))[:, 1]`` (``latents[0] = 0``); frame k is
  the warp of frame 0 composed with the warps of steps 1..k
  (:func:`xfactor_core.models.warp.chain_step`). Each step stays inside the
  baselines the encoder learnt, however far the clip moves, and a shot cut
  breaks one step rather than every frame after it.

A saved path is an ``.npz`` holding ``latents`` (N x pose_dim float32) and
``meta`` (a JSON string: ``format``, ``mode``, ``render_output``,
``pose_dim``): all a renderer needs to replay it, with the same model and
context, to the same frames. A plain ``.npy`` of latents (what older
versions saved) loads as a ``"reference"`` path.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
from typing import BinaryIO, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]
CAMERA_PATH_MODES = ("reference", "composed")
FORMAT = "xfactor-camera-path/1"
# The renderer heads that can replay a composed path (an explicit warp).
COMPOSABLE_OUTPUTS = ("warp",)
# The path a model with a composable renderer uses when none is asked for
# (the CLI, the app's page and its API): the one place to change it.
COMPOSABLE_DEFAULT_MODE = "composed"


def modes_for(render_output: Optional[str]) -> tuple[str, ...]:
  """The camera path modes a renderer head can replay."""
  if render_output in COMPOSABLE_OUTPUTS:
    return CAMERA_PATH_MODES
  return ("reference",)


def default_mode(render_output: Optional[str]) -> str:
  """The camera path mode of a renderer head when none is asked for:
  ``COMPOSABLE_DEFAULT_MODE`` for warp renderers, else ``"reference"``."""
  if render_output in COMPOSABLE_OUTPUTS:
    return COMPOSABLE_DEFAULT_MODE
  return "reference"


@dataclasses.dataclass(frozen=True)
class CameraPath:
  """A latent camera path and how to replay it.

  Attributes:
    latents: ``N x pose_dim`` (see the module docstring for each mode).
    mode: one of ``CAMERA_PATH_MODES``.
    render_output: the renderer head of the model that made it ("" unknown).
  """
  latents: np.ndarray
  mode: str = "reference"
  render_output: str = ""

  def __post_init__(self):
    if self.mode not in CAMERA_PATH_MODES:
      raise ValueError(f"camera path mode {self.mode!r}: use one of "
                       f"{CAMERA_PATH_MODES}")
    latents = np.asarray(self.latents, np.float32)
    if latents.ndim != 2:
      raise ValueError(f"camera path latents must be N x pose_dim, got shape "
                       f"{latents.shape}")
    object.__setattr__(self, "latents", latents)

  def meta(self) -> dict[str, object]:
    return {"format": FORMAT, "mode": self.mode,
            "render_output": self.render_output,
            "pose_dim": int(self.latents.shape[1])}

  def to_bytes(self) -> bytes:
    """The ``.npz`` file's bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, latents=self.latents, meta=np.array(json.dumps(
        self.meta())))
    return buffer.getvalue()


def save(path: PathLike, camera_path: CameraPath) -> pathlib.Path:
  """Writes ``camera_path`` as an ``.npz`` (the suffix is added if missing);
  returns the file written."""
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    path = path.with_name(path.name + ".npz")
  path.write_bytes(camera_path.to_bytes())
  return path


def load(source: Union[PathLike, BinaryIO]) -> CameraPath:
  """Reads a saved path: our ``.npz``, or a plain ``.npy`` of reference
  latents (older saves)."""
  data = np.load(source, allow_pickle=False)
  if isinstance(data, np.ndarray):
    return CameraPath(latents=data, mode="reference")
  with data:
    if "meta" not in data or "latents" not in data:
      raise ValueError(f"{source}: not a saved camera path (an .npz with "
                       "'latents' and 'meta', or an .npy of latents)")
    meta = json.loads(str(data["meta"]))
    if meta.get("format") != FORMAT:
      raise ValueError(f"{source}: camera path format {meta.get('format')!r}, "
                       f"expected {FORMAT!r}")
    return CameraPath(latents=np.array(data["latents"]), mode=meta["mode"],
                      render_output=meta.get("render_output", ""))
