"""One transfer job, as plain functions the UI, the API and the tests share.

>>> steps = run_transfer(registry, presets, request, workdir)
>>> for update in steps:            # TransferUpdate: stage, fraction, frames
...   show(update)
>>> result = update.result          # the last update carries the result

A job reads the context and the motion, computes the latent camera path,
renders it chunk by chunk (each chunk is one update, so a UI can stream frames)
and writes the MP4. Target frames are read once, as uint8 at the model's size,
and prepared once. The output size (:func:`output_size`) is the working size
for models with the RGB head; models with the flow renderer run at their own
size and sample the output from the context photo at the output size. The
result keeps what the scrub slider, the export and the TPS check need.

Cancelling is cooperative: ``run_transfer`` asks its ``should_stop`` callback
between stages and rendered chunks, and a stopped job ends with a last update
marked ``cancelled`` that holds the frames rendered so far
(:class:`job_board.JobBoard` records which jobs their users asked to stop).
The sessions' job folders live in :mod:`sessions`, the cache of the shipped
examples' results in :mod:`example_cache`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from xfactor_core.app import uploads
from xfactor_core.app.estimates import Estimator
from xfactor_core.app.presets import PresetLibrary
from xfactor_core.app.registry import ModelRegistry
from xfactor_core.app.uploads import ClipSelection, InputError, Limits
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import model_frames as frame_utils
from xfactor_core.inference import media
from xfactor_core.inference.pipeline import TransferPipeline, interpolate_path

MOTION_SOURCES = ("preset", "video", "frames", "pair", "path")
SOURCE_LABELS = {"preset": "Preset", "video": "Video", "frames": "Frames",
                 "pair": "Image pair", "path": "Camera path (.npz / .npy)"}
# Labels the motion source had before (still read by ui.motion_from_ui).
OLD_SOURCE_LABELS = {"camera path (.npy)": "path"}
MAX_STRENGTH = 1.5
DEFAULT_FRAMES = 30
# Transfers estimated to take longer show the estimate in the status.
LONG_TRANSFER_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class TransferSettings:
  """User options of a transfer.

  Attributes:
    num_frames: target frames used (after start and stride).
    stride: take every ``stride``-th frame.
    start: first target frame.
    resolution: size in pixels; None = the model's default. For models
      with the RGB head (the published ones) the size the model runs and
      renders at (None: its native size). For models that render at any size
      (the flow renderer) the output size: the model runs at its own size and
      the output is sampled from the context photo at this size (None: the
      photo's own resolution, at most 512; see
      ``TransferPipeline.default_output_size``).
    fps: frame rate of the written videos.
    reverse: play the motion backwards (target frames are reversed before
      encoding, so the result still starts at the context view; a saved path
      is replayed from its end).
    ping_pong: append the motion backwards, for a seamless loop.
    motion_strength: scales the latent path (0 = still, 1 = as the target).
    path_mode: the camera path of a target clip (``camera_path.
      CAMERA_PATH_MODES``): ``"reference"``, or ``"composed"`` for models
      with the warp renderer; None = the model's default
      (``TransferPipeline.default_path_mode``). A saved path replays in the
      mode it records.
  """
  num_frames: int = DEFAULT_FRAMES
  stride: int = 1
  start: int = 0
  resolution: Optional[int] = None
  fps: float = 12.0
  reverse: bool = False
  ping_pong: bool = False
  motion_strength: float = 1.0
  path_mode: Optional[str] = None

  def validate(self, limits: Limits = uploads.DEFAULT_LIMITS
               ) -> "TransferSettings":
    self.selection().validate(limits)
    if not 1.0 <= float(self.fps) <= 60.0:
      raise InputError(f"fps {self.fps} is outside 1..60; pick a frame rate "
                       "in that range")
    if not 0.0 <= float(self.motion_strength) <= MAX_STRENGTH:
      raise InputError(f"motion strength {self.motion_strength} is outside "
                       f"0..{MAX_STRENGTH}")
    if (self.path_mode is not None
        and self.path_mode not in camera_paths.CAMERA_PATH_MODES):
      raise InputError(f"camera path mode {self.path_mode!r}: use one of "
                       f"{', '.join(camera_paths.CAMERA_PATH_MODES)}")
    if self.resolution is not None and self.resolution < 16:
      raise InputError(f"resolution {self.resolution} px is too small; use "
                       "the model's native size or at least 64 px")
    return self

  def selection(self) -> ClipSelection:
    return ClipSelection(int(self.start), int(self.stride),
                         int(self.num_frames))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MotionRequest:
  """Where the camera motion comes from.

  Attributes:
    source: one of MOTION_SOURCES.
    preset: preset name (source "preset").
    files: the uploaded file(s): one video, frames, two images or one saved
      camera path (.npz or .npy).
  """
  source: str
  preset: Optional[str] = None
  files: tuple[str, ...] = ()

  def describe(self) -> str:
    if self.source == "preset":
      return f"preset '{self.preset}'"
    names = [uploads.display_name(f) for f in self.files]
    shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    return f"{SOURCE_LABELS.get(self.source, self.source).lower()} ({shown})"

  def short_name(self) -> str:
    if self.source == "preset":
      return str(self.preset)
    if self.files:
      return pathlib.Path(uploads.display_name(self.files[0])).stem
    return self.source


@dataclasses.dataclass(frozen=True)
class TransferRequest:
  """Everything one transfer needs (hashable parts only)."""
  model_id: Optional[str]
  context_files: tuple[str, ...]
  motion: MotionRequest
  settings: TransferSettings = TransferSettings()


@dataclasses.dataclass(frozen=True)
class TransferResult:
  """A finished transfer (treated as immutable; shared by the example cache).

  Attributes:
    request: what was asked.
    model_id, model_label: the model used.
    image_size: working size S (the model's input).
    context: ``V x S x S x 3`` float32 in [-1, 1], as given to the model.
    path: ``N x D`` latent camera path of the shown frames (after reverse and
      ping-pong), before motion strength, in ``path_mode``.
    generated: ``N x S' x S' x 3`` uint8 at the output size S'
      (:attr:`output_size`; S' = S unless ``sample_from`` is set).
    target: ``N x S x S x 3`` uint8 target frames, or None (replayed path).
    video: the MP4 of ``generated``.
    seconds: wall time of the job.
    motion_frames: frames of the motion used, before ping-pong.
    model_info: kind, parameters, config of the model (for the export JSON).
    sample_from: ``V x S' x S' x 3`` float32 in [-1, 1]: the context at the
      output size, which a flow model samples (None: output at the model
      size). Scrubbing renders with it too.
    context_note: a note for the user about the context ("" when none), e.g.
      that only the centre square of a non-square photo is used.
    path_mode: how ``path`` renders (``camera_path.CAMERA_PATH_MODES``):
      ``"reference"`` (each latent against frame 0) or ``"composed"`` (each
      latent the step from the previous frame, whose warps chain).
  """
  request: TransferRequest
  model_id: str
  model_label: str
  image_size: int
  context: np.ndarray
  path: np.ndarray
  generated: np.ndarray
  target: Optional[np.ndarray]
  video: pathlib.Path
  seconds: float
  motion_frames: int
  model_info: dict[str, Any]
  sample_from: Optional[np.ndarray] = None
  context_note: str = ""
  path_mode: str = "reference"

  def path_record(self) -> camera_paths.CameraPath:
    """The saveable record of :attr:`path` (what the export and the API
    write)."""
    return camera_paths.CameraPath(
        latents=self.path, mode=self.path_mode,
        render_output=str(self.model_info.get("render_output") or ""))

  @property
  def num_frames(self) -> int:
    return len(self.generated)

  @property
  def output_size(self) -> int:
    """Side of the generated frames in pixels."""
    return int(self.generated.shape[1])

  @property
  def settings(self) -> TransferSettings:
    return self.request.settings


@dataclasses.dataclass(frozen=True)
class TransferUpdate:
  """Progress of a running job.

  Attributes:
    stage: human-readable step.
    fraction: 0..1 of the whole job.
    frames: uint8 frames rendered so far (rendering stage), else None.
    result: set on the last update of a finished job only.
    cancelled: set on the last update of a job that was asked to stop.
  """
  stage: str
  fraction: float
  frames: Optional[list[np.ndarray]] = None
  result: Optional[TransferResult] = None
  cancelled: bool = False


# ----------------------------------------------------------------- motion --


def _read_motion(pipe, presets: PresetLibrary, motion: MotionRequest,
                 settings: TransferSettings, limits: Limits
                 ) -> tuple[Optional[np.ndarray],
                            Optional[camera_paths.CameraPath]]:
  """(target uint8 frames or None, saved camera path or None)."""
  size = pipe.image_size
  selection = settings.selection()
  if motion.source == "preset":
    if not motion.preset:
      raise InputError("no preset picked; choose a camera motion from the "
                       "preset list")
    try:
      preset = presets.motion(motion.preset)
    except ValueError as e:
      raise InputError(str(e)) from e
    return uploads.read_target_video(preset.clip, selection, size, limits), None
  if motion.source == "video":
    paths = uploads.file_paths(list(motion.files))
    if not paths:
      raise InputError("no target video given; upload one ("
                       f"{uploads.suffix_names(media.VIDEO_SUFFIXES)}) or "
                       "pick a preset")
    if len(paths) > 1:
      raise InputError(f"{len(paths)} videos given; give one target video")
    return uploads.read_target_video(paths[0], selection, size, limits), None
  if motion.source == "frames":
    if not motion.files:
      raise InputError("no target frames given; upload two or more images "
                       "(they are ordered by file name)")
    return uploads.read_target_images(list(motion.files), selection, size,
                                     limits=limits), None
  if motion.source == "pair":
    paths = uploads.file_paths(list(motion.files))
    if len(paths) != 2:
      raise InputError(f"the target pair needs two images (first and second "
                       f"view), {len(paths)} given")
    return uploads.read_target_images(paths, None, size, "target pair image",
                                     limits), None
  if motion.source == "path":
    files = list(motion.files)
    record = uploads.read_camera_path(files[0] if files else None,
                                      pipe.config.pose_dim, limits,
                                      pipe.config.render_output)
    latents = record.latents
    if record.mode == "composed" and (selection.start or
                                      selection.stride != 1):
      raise InputError(
          "a composed camera path holds the steps between consecutive "
          "frames, so it replays from its first frame, every frame: set the "
          "start frame to 0 and the stride to 1")
    picked = latents[selection.indices(len(latents))]
    if len(picked) < 2:
      raise InputError(
          f"{len(picked)} latent(s) of the {len(latents)} in the camera path "
          "remain after start and stride; lower them")
    return None, dataclasses.replace(record, latents=picked)
  raise InputError(f"unknown motion source {motion.source!r}; use one of "
                   f"{', '.join(MOTION_SOURCES)}")


def _ping_pong(x: np.ndarray) -> np.ndarray:
  """[0, 1, ..., n-1] -> [0, 1, ..., n-1, n-2, ..., 1] (loops seamlessly)."""
  return np.concatenate([x, x[-2:0:-1]]) if len(x) > 2 else x


def output_size(pipe: TransferPipeline, resolution: Optional[int],
                images: Sequence[np.ndarray],
                limits: Limits = uploads.DEFAULT_LIMITS) -> int:
  """The output size of a transfer, in pixels.

  Models with the RGB head render at the size they run at (``pipe`` is
  already at the chosen resolution). Models that render at any size (the
  flow renderer) render at ``resolution``, or by default at the context
  photos' own resolution (at most 512).

  Raises:
    InputError: above ``limits.max_output_size``.
    TransferError: a size the model cannot render (the message names the
      range).
  """
  if not pipe.renders_any_size:
    return pipe.image_size
  size = (pipe.default_output_size(images) if resolution is None
          else int(resolution))
  if size > limits.max_output_size:
    raise InputError(f"output size {size} px is above this server's limit of "
                     f"{limits.max_output_size} px; pick "
                     f"{limits.max_output_size} or less")
  return pipe.check_output_size(size)


def working_pipeline(registry: ModelRegistry, model_id: str,
                      resolution: Optional[int]) -> TransferPipeline:
  """The pipeline a job runs: flow models at their own size (the resolution
  is their output size), RGB models at the chosen resolution."""
  pipe = registry.get(model_id)
  if pipe.renders_any_size:
    return pipe
  return registry.pipeline(model_id, image_size=resolution)


def model_info(registry: ModelRegistry, model_id: str, pipe) -> dict[str, Any]:
  spec = registry.spec(model_id)
  return {"label": spec.label, "checkpoint": str(spec.path),
          "source": spec.source, "kind": pipe.kind,
          "native_image_size": spec.image_size,
          "render_output": pipe.config.render_output,
          "max_context_views": pipe.max_context_views,
          "num_parameters": pipe.num_parameters,
          "config": pipe.config.to_dict()}


def path_mode(pipe: TransferPipeline, settings: TransferSettings,
              saved: Optional[camera_paths.CameraPath] = None) -> str:
  """The camera path mode of a job: a saved path's own, else the one asked
  for, else the model's default (``TransferPipeline.default_path_mode``).

  Raises:
    InputError: an option the mode cannot honour (a composed path is a
      chain of steps from frame 0: it cannot be reversed once saved, nor
      played back and forth).
    TransferError: a mode the model cannot replay (the message names the
      fix).
  """
  if saved is not None:
    mode = saved.mode
    if settings.path_mode is not None and settings.path_mode != mode:
      logging.info("a saved %s camera path replays in its own mode (%s was "
                   "asked for)", mode, settings.path_mode)
  else:
    mode = settings.path_mode or pipe.default_path_mode
  mode = pipe.check_path_mode(mode)
  if mode == "composed":
    if settings.ping_pong:
      raise InputError(
          "ping-pong needs the reference camera path: a composed path chains "
          "steps from the first frame and cannot be played backwards; turn "
          "off ping-pong or pick the reference camera path")
    if saved is not None and settings.reverse:
      raise InputError(
          "a saved composed camera path cannot be reversed (its steps chain "
          "from the first frame); turn off reverse, or reverse the target "
          "clip and transfer it again")
  return mode


def run_transfer(registry: ModelRegistry, presets: PresetLibrary,
                 request: TransferRequest, workdir: pathlib.Path,
                 limits: Limits = uploads.DEFAULT_LIMITS,
                 should_stop: Callable[[], bool] = lambda: False,
                 estimator: Optional[Estimator] = None
                 ) -> Iterator[TransferUpdate]:
  """Runs one transfer, yielding progress; the last update holds the result.

  ``should_stop`` is asked between stages and after each rendered chunk; once
  it says True the job writes nothing more and its last update is marked
  ``cancelled`` (with the frames rendered so far, if rendering had begun).
  ``estimator`` records the rendering speed and makes the estimates the
  updates show (default: a fresh one, which estimates from FLOPs).

  Raises:
    InputError, RegistryError, TransferError: bad input (messages name the
      fix).
  """
  started = time.perf_counter()
  estimator = estimator or Estimator()
  settings = request.settings.validate(limits)
  rendered: Optional[list[np.ndarray]] = None

  def stopped(fraction: float, total: int = 0) -> Optional[TransferUpdate]:
    if not should_stop():
      return None
    if rendered is None:
      return TransferUpdate("cancelled before rendering", fraction,
                            cancelled=True)
    return TransferUpdate(
        f"cancelled after {len(rendered)} of {total} frames", fraction,
        frames=list(rendered), cancelled=True)

  yield TransferUpdate("loading the model", 0.02)
  if (update := stopped(0.02)) is not None:
    yield update
    return
  model_id = registry.spec(request.model_id).model_id
  pipe = working_pipeline(registry, model_id, settings.resolution)
  spec = registry.spec(model_id)
  images = uploads.read_context(list(request.context_files),
                               pipe.max_context_views, pipe.kind, limits)
  size = output_size(pipe, settings.resolution, images, limits)
  context = pipe.prepare(images, "context")
  # Flow models sample the output from the context at the output size.
  sample_from = (None if size == pipe.image_size
                 else pipe.prepare(images, "context", size=size))
  context_note = frame_utils.crop_note(images, "context")
  yield TransferUpdate("reading the motion", 0.06)
  if (update := stopped(0.06)) is not None:
    yield update
    return
  target, saved_path = _read_motion(pipe, presets, request.motion, settings,
                                    limits)
  mode = path_mode(pipe, settings, saved_path)
  strength = float(settings.motion_strength)
  if target is not None:
    if settings.reverse:
      target = target[::-1].copy()
    frames = len(target)
    # Each chunk's latents are encoded just before it renders: the first
    # frames stream after one chunk's work, not after the whole path.
    chunks = pipe.transfer_chunks(context, pipe.prepare(target, "target"),
                                  motion_strength=strength,
                                  sample_from=sample_from, path_mode=mode)
  else:
    path = saved_path.latents
    path = path[::-1].copy() if settings.reverse else path
    frames = len(path)
    chunks = ((start, path[start:start + len(chunk)], chunk)
              for start, chunk in pipe.render_chunks(
                  context, path, motion_strength=strength,
                  sample_from=sample_from, path_mode=mode))
  if (update := stopped(0.1)) is not None:
    yield update
    return
  estimate = estimator.estimate_seconds(model_id, pipe, frames, len(images))
  rendered, latents = [], []
  long = estimate.seconds >= LONG_TRANSFER_SECONDS
  yield TransferUpdate(f"rendering {frames} frames"
                       + (f", {estimate.describe()}" if long else ""),
                       0.1, frames=[])
  clock = time.perf_counter()
  for start, path_chunk, chunk in chunks:
    rendered.extend(frame_utils.to_uint8(chunk))
    latents.append(path_chunk)
    done = start + len(chunk)
    now = time.perf_counter()
    if start > 0:  # the first chunk pays the compilation: not a speed
      estimator.record_speed(model_id, pipe, len(images),
                            (now - clock) / len(chunk))
    clock = now
    fraction = 0.1 + 0.8 * done / frames
    if done < frames and (update := stopped(fraction, frames)) is not None:
      yield update
      return
    left = estimator.estimate_seconds(model_id, pipe, frames - done,
                                     len(images))
    yield TransferUpdate(
        f"rendered {done}/{frames} frames"
        + (f", {left.describe(short=True)}" if long and done < frames
           else ""), fraction, frames=list(rendered))
  path = np.concatenate(latents)
  generated = np.stack(rendered)
  motion_frames = len(generated)
  if settings.ping_pong:
    generated, path = _ping_pong(generated), _ping_pong(path)
    target = None if target is None else _ping_pong(target)
  yield TransferUpdate("writing the video", 0.95)
  video = media.write_video(workdir / "transfer.mp4", generated,
                            fps=float(settings.fps))
  result = TransferResult(
      request=request, model_id=model_id, model_label=spec.label,
      image_size=pipe.image_size, context=context, path=path,
      generated=generated, target=target, video=video,
      seconds=time.perf_counter() - started, motion_frames=motion_frames,
      model_info=model_info(registry, model_id, pipe),
      sample_from=sample_from, context_note=context_note, path_mode=mode)
  yield TransferUpdate("done", 1.0, frames=list(generated), result=result)


def transfer(registry: ModelRegistry, presets: PresetLibrary,
             request: TransferRequest, workdir: pathlib.Path,
             limits: Limits = uploads.DEFAULT_LIMITS,
             estimator: Optional[Estimator] = None) -> TransferResult:
  """:func:`run_transfer` to the end."""
  update = None
  for update in run_transfer(registry, presets, request, workdir, limits,
                             estimator=estimator):
    pass
  return update.result


# ------------------------------------------------------------------ scrub --


def scrub(registry: ModelRegistry, result: TransferResult, position: float
          ) -> tuple[Optional[np.ndarray], np.ndarray]:
  """The target frame and the generated view at a (fractional) position.

  Integer positions return rendered frames; between two frames the latent is
  the linear blend of its neighbours (``interpolate_path``), rendered as one
  frame. The target frame shown is the nearest one.

  Between frames the view is rendered at the result's output size (sampled
  from ``result.sample_from`` for flow models), like the rendered frames.
  A composed path renders its chain up to the frame below, then that
  fraction of the next step's latent.

  Returns:
    ``(target S x S x 3 uint8 or None, generated S' x S' x 3 uint8)``.
  """
  n = result.num_frames
  position = float(np.clip(position, 0.0, n - 1))
  nearest = int(round(position))
  target = None if result.target is None else result.target[nearest]
  if abs(position - nearest) < 1e-6:
    return target, result.generated[nearest]
  strength = float(result.settings.motion_strength)
  if result.path_mode == "composed":
    # The chain up to the frame before, then that fraction of the next step.
    pipe = registry.pipeline(result.model_id, image_size=result.image_size)
    below = int(np.floor(position))
    fraction = position - below
    steps = np.concatenate([result.path[:below + 1],
                            fraction * result.path[below + 1:below + 2]])
    frames = pipe.render(result.context, steps, motion_strength=strength,
                         sample_from=result.sample_from, path_mode="composed")
    return target, frame_utils.to_uint8(frames[-1])
  pipe = registry.pipeline(result.model_id, image_size=result.image_size,
                           batch_size=1)
  latent = interpolate_path(result.path, position)[None]
  frame = pipe.render(result.context, latent, motion_strength=strength,
                      sample_from=result.sample_from)
  return target, frame_utils.to_uint8(frame[0])


def log_result(result: TransferResult) -> None:
  logging.info("transfer: %s, %d frames at %d px (model %d px) in %.2f s "
               "(%s)", result.model_label, result.num_frames,
               result.output_size, result.image_size, result.seconds,
               result.request.motion.describe())
