"""The event handlers of XFactor Studio and the adapters they use.

* Widget adapters (:func:`settings_from_ui`, :func:`motion_from_ui`) turn
  widget values into the plain requests of :mod:`jobs`.
* :class:`Studio` holds the server-side objects and the event handlers. A
  handler takes the values of its input widgets as one dict keyed by widget
  name (a "form") and returns, or yields, a dict of the widgets it changes,
  keyed the same way; widgets it leaves out keep their value. Handlers only
  translate to the plain functions of :mod:`jobs`, :mod:`export` and
  :mod:`check`; user mistakes become ``gr.Error`` messages that name the fix.

The model row's handlers live in :mod:`picker` (``Studio.picker``), how
errors reach the visitor in :mod:`errors`, time estimates and the queue's
wait bound in :mod:`estimates`. The page and the wiring of its events live
in :mod:`layout`. Nothing is
shared between sessions except the model cache and the cache of the shipped
examples' results (both keyed by immutable inputs); each session's result
lives in its own ``gr.State``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import shutil
from typing import Any, Callable, Iterator, Mapping, Optional

import gradio as gr
import numpy as np

from xfactor_core.app import estimates, export, jobs, sessions, uploads
from xfactor_core.app.downloads import Downloads
from xfactor_core.app.errors import reports_errors
from xfactor_core.app.example_cache import ExampleCache
from xfactor_core.app.job_board import JobBoard
from xfactor_core.app.picker import ModelPicker, model_facts
from xfactor_core.app.presets import PresetLibrary
from xfactor_core.app.registry import ModelRegistry, RegistryError
from xfactor_core.app.uploads import InputError, Limits
from xfactor_core.inference import media

Form = Mapping[str, Any]  # widget name -> value, as a handler receives them
Update = dict[str, Any]  # widget name -> new value, as a handler returns them

WORKDIR_MAX_AGE_SECONDS = 2 * 3600
DISPLAY_SIDE = 256

# The widgets each handler reads and writes, by name (see layout.py).
MOTION_FIELDS = ("source", "preset", "video", "frames", "first", "second",
                 "camera_path")
OPTION_FIELDS = ("num_frames", "stride", "start", "resolution", "fps",
                 "reverse", "ping_pong", "strength", "path_mode")
TRANSFER_FIELDS = ("model", "context", *MOTION_FIELDS, *OPTION_FIELDS, "job")
# What the Transfer click reads before the queue (its wait estimate).
JOB_FIELDS = ("model", "context", "num_frames", "resolution")
TRANSFER_OUTPUTS = ("preview", "result_video", "scrub", "scrub_target",
                    "scrub_generated", "status", "result", "model_info")
BATCH_FIELDS = ("model", "batch_contexts", "context", "batch_presets",
                "batch_videos", *MOTION_FIELDS, *OPTION_FIELDS)
SOURCE_GROUPS = {source: f"{source}_group" for source in jobs.MOTION_SOURCES}
# ---------------------------------------------------------- widget adapters --


def _whole_number(value: Any, name: str, default: Optional[int]
                  ) -> Optional[int]:
  if value is None or value == "":
    return default
  try:
    number = float(value)
  except (TypeError, ValueError) as e:
    raise InputError(f"{name} must be a whole number, got {value!r}") from e
  if not math.isfinite(number) or number != int(number):
    raise InputError(f"{name} must be a whole number, got {value}")
  return int(number)


def _number(value: Any, name: str, default: float) -> float:
  if value is None or value == "":
    return default
  try:
    number = float(value)
  except (TypeError, ValueError) as e:
    raise InputError(f"{name} must be a number, got {value!r}") from e
  if not math.isfinite(number):
    raise InputError(f"{name} must be a finite number, got {value}")
  return number


def settings_from_ui(form: Form) -> jobs.TransferSettings:
  """The option widgets' values (possibly None or floats) -> settings.

  Reads ``num_frames, stride, start, resolution, fps, reverse, ping_pong,
  strength, path_mode``; a missing or empty one takes its default (a
  missing ``path_mode``: the model's). Call ``.validate``
  on the result to check the ranges.
  """
  resolution = form.get("resolution")
  size = None
  if resolution not in (None, "") and not str(resolution).startswith("native"):
    size = _whole_number(resolution, "resolution", None)
  return jobs.TransferSettings(
      num_frames=_whole_number(form.get("num_frames"), "number of frames",
                               jobs.DEFAULT_FRAMES),
      stride=_whole_number(form.get("stride"), "frame stride", 1),
      start=_whole_number(form.get("start"), "start frame", 0),
      resolution=size, fps=_number(form.get("fps"), "fps", 12.0),
      reverse=bool(form.get("reverse")), ping_pong=bool(form.get("ping_pong")),
      motion_strength=_number(form.get("strength"), "motion strength", 1.0),
      path_mode=str(form.get("path_mode")) if form.get("path_mode") else None)


def motion_from_ui(form: Form) -> jobs.MotionRequest:
  """The motion widgets' values -> a request of the chosen source.

  Reads ``source`` (a label of ``jobs.SOURCE_LABELS`` or a source name) and
  the widget of that source: ``preset, video, frames, first + second`` or
  ``camera_path``.
  """
  source = str(form.get("source") or "")
  labels = {label.lower(): name for name, label in jobs.SOURCE_LABELS.items()
            } | jobs.OLD_SOURCE_LABELS
  key = labels.get(source.lower(), source.lower())
  files = lambda *values: tuple(str(p) for p in uploads.file_paths(
      [v for v in values if v is not None] if len(values) > 1 else values[0]))
  if key == "preset":
    return jobs.MotionRequest("preset", preset=form.get("preset") or None)
  if key == "video":
    return jobs.MotionRequest("video", files=files(form.get("video")))
  if key == "frames":
    return jobs.MotionRequest("frames", files=files(form.get("frames")))
  if key == "pair":
    return jobs.MotionRequest("pair", files=files(form.get("first"),
                                                  form.get("second")))
  if key == "path":
    return jobs.MotionRequest("path", files=files(form.get("camera_path")))
  raise InputError(f"unknown motion source {form.get('source')!r}; choose "
                   "one of " + ", ".join(jobs.SOURCE_LABELS.values()))


def for_display(frame: Optional[np.ndarray], min_side: int = DISPLAY_SIDE
                ) -> Optional[np.ndarray]:
  """Small frames enlarged (nearest neighbour) so the scrub view is legible."""
  if frame is None or frame.shape[0] >= min_side:
    return frame
  factor = -(-min_side // frame.shape[0])
  return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


# ------------------------------------------------------------------ status --


def _frames_line(result: jobs.TransferResult) -> str:
  """"30 frames at 512 px (...)": the frame count and the output size."""
  line = f"{result.num_frames} frames at {result.output_size} px"
  if result.output_size != result.image_size:
    line += (f" (sampled from the context photo; the model runs at "
             f"{result.image_size} px)")
  return line


def _note(result: jobs.TransferResult) -> str:
  """The result's note about its context, as a sentence of the status, and
  its camera path when it is the composed one."""
  note = (" Camera path: composed (the steps between consecutive frames, "
          "chained)." if result.path_mode == "composed" else "")
  return note + (f" Note: {result.context_note}" if result.context_note
                 else "")


# ---------------------------------------------------------------- handlers --


@dataclasses.dataclass
class Studio:
  """The app's server-side objects and its event handlers.

  Attributes:
    registry: models on offer (loaded lazily, cached).
    presets: shipped motions and contexts.
    work_root: parent of every job folder (swept by age).
    limits: input bounds.
    example_cache: lazily cached results of the shipped examples.
    job_board: open transfer jobs and which of them were cancelled.
    downloads: background downloads of the published models (None: the app
      offers none).
    estimator: measured rendering speeds, shared by every session.
    max_wait_s: a transfer whose estimated wait (the jobs ahead of it, each
      as long as it, plus itself) exceeds this many seconds is refused when
      it is asked for (0: no bound).
    queue_depth: how many heavy jobs are queued or running now (set by the
      layout from Gradio's queue).
    picker: the model row's handlers (made from the fields above).
  """
  registry: ModelRegistry
  presets: PresetLibrary
  work_root: pathlib.Path
  limits: Limits = uploads.DEFAULT_LIMITS
  example_cache: Optional[ExampleCache] = None
  job_board: JobBoard = dataclasses.field(default_factory=JobBoard)
  downloads: Optional[Downloads] = None
  estimator: estimates.Estimator = dataclasses.field(
      default_factory=estimates.Estimator)
  max_wait_s: float = estimates.DEFAULT_MAX_WAIT_SECONDS
  queue_depth: Callable[[], int] = lambda: 0

  def __post_init__(self):
    self.picker = ModelPicker(self.registry, self.downloads, self.limits)
    self.work_root = pathlib.Path(self.work_root)
    self.sessions = sessions.SessionFolders(self.work_root / "sessions",
                                            WORKDIR_MAX_AGE_SECONDS)
    if self.example_cache is None:
      self.example_cache = ExampleCache(self.presets,
                                        self.work_root / "examples")

  def discard(self, result: Any) -> None:
    """``gr.State`` delete callback: removes a session's job folder."""
    if isinstance(result, jobs.TransferResult):
      self.sessions.discard(result.video.parent)

  def cleanup(self) -> None:
    """Removes every file the app wrote (call at shutdown)."""
    shutil.rmtree(self.work_root, ignore_errors=True)

  # ---------------------------------------------------------- the inputs --

  def context_gallery(self, form: Form) -> Update:
    """Context upload: the images in the small gallery below it. Several
    images while a one-view model is chosen switch to the multi-view default
    (the published one once downloaded)."""
    files = [str(p) for p in uploads.file_paths(form.get("context"))]
    update: Update = {"context_preview": files}
    try:
      spec = self.registry.spec(form.get("model"))
    except RegistryError:
      return update
    if len(files) > 1 and spec.num_context_views == 1:
      other = self.registry.default_for("multi-view")
      if other is not None:
        update |= self.picker.select(other)
        gr.Info(f"{len(files)} context views: switched to "
                f"{self.registry.spec(other).label}, which takes several.")
    return update

  def source_visibility(self, form: Form) -> Update:
    """Motion source: shows the input group of the chosen source only."""
    chosen = {label: name for name, label in jobs.SOURCE_LABELS.items()}.get(
        form.get("source"))
    return {group: gr.update(visible=(source == chosen))
            for source, group in SOURCE_GROUPS.items()}

  @reports_errors
  def preset_preview(self, form: Form) -> Update:
    """Preset picker: its clip in the preview player and its description."""
    name = form.get("preset")
    if not name:
      return {"preset_preview": None, "preset_note": ""}
    try:
      preset = self.presets.motion(name)
    except ValueError as e:
      raise InputError(str(e)) from e
    return {"preset_preview": str(preset.clip),
            "preset_note": f"*{preset.name}*: {preset.description}"}

  # ------------------------------------------------------------ transfer --

  def _shown(self, result: jobs.TransferResult, status: str) -> Update:
    """Every output of a finished transfer."""
    target, generated = jobs.scrub(self.registry, result, 0)
    return {"preview": list(result.generated),
            "result_video": str(result.video),
            "scrub": gr.update(minimum=0, maximum=max(result.num_frames - 1, 1),
                               value=0, step=0.05, interactive=True),
            "scrub_target": for_display(target),
            "scrub_generated": for_display(generated),
            "status": status, "result": result,
            "model_info": model_facts(self.registry, result.model_id)}

  def _request(self, form: Form) -> jobs.TransferRequest:
    return jobs.TransferRequest(
        model_id=form.get("model"),
        context_files=tuple(str(p) for p in uploads.file_paths(
            form.get("context"))),
        motion=motion_from_ui(form),
        settings=settings_from_ui(form).validate(self.limits))

  @reports_errors
  def run_transfer(self, form: Form, progress: gr.Progress = gr.Progress()
                   ) -> Iterator[Update]:
    """Transfer event: streams rendered frames, then the finished result.

    Reads ``TRANSFER_FIELDS``; ``job`` is the id from :meth:`open_job`. The
    Cancel button stops that job between chunks (see :meth:`cancel_job`), and
    the event then ends normally with the frames rendered so far in the
    preview. Yields updates of ``TRANSFER_OUTPUTS``.
    """
    job_id = form.get("job")
    should_stop = lambda: self.job_board.cancelled(job_id)
    try:
      if should_stop():
        yield {"status": "Cancelled before it started."}
        return
      request = self._request(form)
      cached = self.example_cache.get(request)
      if cached is not None:
        progress(1.0, desc="cached example")
        yield self._shown(cached, f"Example (cached): {_frames_line(cached)}."
                          + _note(cached))
        return
      cacheable = self.example_cache.key(request) is not None
      workdir = (self.example_cache.workdir() if cacheable
                 else self.sessions.new())
      for update in jobs.run_transfer(self.registry, self.presets, request,
                                      workdir, self.limits,
                                      should_stop=should_stop,
                                      estimator=self.estimator):
        progress(update.fraction, desc=update.stage)
        if update.cancelled:
          shown = {"status": f"{update.stage[:1].upper()}{update.stage[1:]}; "
                             "the last finished result is kept."}
          if update.frames is not None:
            shown["preview"] = update.frames
          yield shown
          return
        if update.result is not None:
          yield self._finished(request, update.result, cacheable)
        elif update.frames is not None:
          yield {"preview": update.frames, "status": f"{update.stage} ..."}
    finally:
      self.job_board.close(job_id)

  def _finished(self, request: jobs.TransferRequest,
                result: jobs.TransferResult, cacheable: bool) -> Update:
    jobs.log_result(result)
    if cacheable:
      self.example_cache.put(request, result)
    settings = request.settings
    if result.motion_frames < settings.num_frames and (
        request.motion.source != "pair"):
      gr.Warning(f"the motion has only {result.motion_frames} frames from "
                 f"frame {settings.start} with stride {settings.stride}; "
                 "used all of them")
    return self._shown(result, (
        f"Done: {_frames_line(result)} in {result.seconds:.1f} s "
        f"({request.motion.describe()}).") + _note(result))

  def _job_estimate(self, form: Form) -> Optional[estimates.Estimate]:
    """The status line's estimate of the job the form asks for, or ``None``
    while its model is not loaded (loading it here would hold up the page)
    or its settings are not valid (the job itself says why)."""
    try:
      spec = self.registry.spec(form.get("model"))
      if not self.registry.is_loaded(spec.model_id):
        return None
      settings = settings_from_ui(form)
      pipe = jobs.working_pipeline(self.registry, spec.model_id,
                                   settings.resolution)
      views = len(uploads.file_paths(form.get("context"))) or 1
      views = min(views, pipe.max_context_views)
      return self.estimator.estimate_seconds(spec.model_id, pipe,
                                             int(settings.num_frames), views)
    except (InputError, RegistryError, ValueError) as e:
      logging.info("no wait estimate for a new job: %s", e)
      return None

  def queue_wait(self, form: Form) -> estimates.QueueWait:
    """What a job asked for now faces: the heavy jobs queued or running
    before it and its estimated wait."""
    ahead = self.queue_depth()
    if ahead == 0:
      return estimates.queue_wait(0, None)  # nothing to wait for
    return estimates.queue_wait(ahead, self._job_estimate(form))

  def open_job(self, form: Form) -> Update:
    """Transfer click, before the queue: the id of the new job (kept in the
    session's state so that Cancel can name it) and, with jobs ahead, its
    position and estimated wait in the status.

    Reads ``JOB_FIELDS`` (all optional). A job whose estimated wait exceeds
    ``max_wait_s`` is refused here, at once: no job id, and the status names
    the wait (then :meth:`admit` stops the event chain before the queue).
    """
    wait = self.queue_wait(form)
    if not wait.admitted(self.max_wait_s):
      logging.info("refused a transfer: %d job(s) ahead, about %.1f s of "
                   "waiting (bound %.1f s)", wait.ahead, wait.seconds,
                   self.max_wait_s)
      return {"job": None,
              "status": f"**Not queued.** {wait.refusal(self.max_wait_s)}"}
    update: Update = {"job": self.job_board.open()}
    if wait.ahead:
      update["status"] = wait.describe()
    return update

  def admit(self, form: Form) -> None:
    """After :meth:`open_job`: lets the transfer event follow (on success)
    only when a job was opened; a refused one ends here, its status already
    saying why.

    Raises:
      gr.Error: the job was refused (no job id).
    """
    if form.get("job") is None:
      raise gr.Error("The queue is too long right now; the status says how "
                     "long the wait would be.", title="Queue too long",
                     print_exception=False)

  def cancel_job(self, form: Form) -> Update:
    """Cancel button: the session's queued or running job stops after the
    chunk it is rendering; the status says so at once. With nothing running
    the last status stays."""
    if self.job_board.cancel(form.get("job")):
      return {"status": "Cancelling: the job stops after the frames it is "
                        "rendering."}
    return {}

  @reports_errors
  def scrub(self, form: Form) -> Update:
    """Scrub slider: (target frame, generated view) at a fractional frame."""
    result, position = form.get("result"), form.get("scrub")
    if result is None or position is None:
      return {"scrub_target": None, "scrub_generated": None}
    target, generated = jobs.scrub(self.registry, result, float(position))
    return {"scrub_target": for_display(target),
            "scrub_generated": for_display(generated)}

  def warm_scrub(self, form: Form) -> None:
    """Compiles the one-frame render of the scrub slider ahead of use."""
    result = form.get("result")
    if result is None or result.num_frames < 2:
      return
    try:
      jobs.scrub(self.registry, result, 0.5)
    except Exception:  # a warm-up failure only costs speed
      logging.exception("scrub warm-up failed")

  # -------------------------------------------------------------- export --

  @reports_errors
  def export(self, form: Form) -> Update:
    """Export button: one zip with every format of the current result."""
    result = form.get("result")
    if result is None:
      raise InputError("nothing to export yet; run a transfer first")
    return {"export_file": str(export.export_result(result,
                                                    self.sessions.new()))}

  @reports_errors
  def batch(self, form: Form, progress: gr.Progress = gr.Progress()
            ) -> Update:
    """Batch export: every chosen motion onto every chosen context.

    Reads ``BATCH_FIELDS``. Contexts: each batch image is one context
    (default: the current context). Motions: the picked presets and uploaded
    videos (default: the current motion).
    """
    settings = settings_from_ui(form).validate(self.limits)
    contexts = [[str(p)]
                for p in uploads.file_paths(form.get("batch_contexts"))]
    if not contexts:
      contexts = [[str(p) for p in uploads.file_paths(form.get("context"))]]
    motions = [jobs.MotionRequest("preset", preset=name)
               for name in (form.get("batch_presets") or [])]
    motions += [jobs.MotionRequest("video", files=(str(p),))
                for p in uploads.file_paths(form.get("batch_videos"))]
    if not motions:
      motions = [motion_from_ui(form)]
    progress(0.0, desc="batch")
    archive, sheet = export.batch_export(
        self.registry, self.presets, form.get("model"), contexts, motions,
        settings, self.sessions.new(),
        progress=lambda done, total, name: progress(
            done / total, desc=f"{done}/{total}: {name}"),
        limits=self.limits)
    return {"batch_file": str(archive), "batch_sheet": sheet}

  # --------------------------------------------------------------- check --

  @reports_errors
  def check(self, form: Form, progress: gr.Progress = gr.Progress()
            ) -> Update:
    """TPS check: the COLMAP oracle on target and generated clip."""
    from xfactor_core.app import check  # pycolmap is heavy: import on use
    result = form.get("result")
    if result is None:
      raise InputError("nothing to check yet; run a transfer first")
    progress(0.1, desc="estimating camera poses with COLMAP")
    report = check.check_transfer(result)
    return {"check_table": report.table, "check_plot": report.figure,
            "check_summary": report.summary}

  # ----------------------------------------------------------------- API --

  def _api_model(self, views: int) -> Optional[str]:
    """The model of an API call: the default of the matching kind (one view,
    stereo-monocular; several, multi-view; the published ones once
    downloaded)."""
    return (self.registry.default_for(
        "multi-view" if views > 1 else "stereo-monocular")
            or self.registry.default_id)

  def api_admission(self, context: Any, target: Any, preset: Optional[str],
                    num_frames: Any, output_size: Any = None,
                    path_mode: Optional[str] = None) -> list[dict]:
    """The ``/transfer`` endpoint's validator: Gradio runs it before the call
    joins the queue, so a call whose estimated wait exceeds ``max_wait_s``
    is refused at once (HTTP 422; ``gradio_client`` raises a
    ``ValidationError`` naming the wait), as the page's job is.

    Returns:
      one ``gr.validate`` per parameter; the refusal is on ``num_frames``.
    """
    del target, preset, path_mode  # the wait: the model and the frames
    try:
      files = uploads.file_paths(context)
      wait = self.queue_wait({"model": self._api_model(len(files)),
                              "context": context, "num_frames": num_frames,
                              "resolution": output_size})
    except Exception:  # pylint: disable=broad-except
      logging.exception("no wait estimate for an API call; admitted")
      wait = estimates.queue_wait(0, None)
    admitted = wait.admitted(self.max_wait_s)
    if not admitted:
      logging.info("refused an API transfer: %d job(s) ahead, about %.1f s "
                   "of waiting (bound %.1f s)", wait.ahead, wait.seconds,
                   self.max_wait_s)
    valid = gr.validate(True, "")
    return [valid, valid, valid, gr.validate(
        admitted, "" if admitted else wait.refusal(self.max_wait_s)), valid,
            valid]

  @reports_errors
  def api_transfer(self, context: Any, target: Any, preset: Optional[str],
                   num_frames: Any, output_size: Any = None,
                   path_mode: Optional[str] = None) -> tuple[str, str]:
    """The ``/transfer`` endpoint: (MP4 path, camera path file path).

    Its parameters are the public API (by name and position), so it keeps
    plain arguments rather than a form; parameters added later come last and
    have defaults, so earlier callers keep working.

    The model is the default of the matching kind: stereo-monocular for one
    context image, multi-view for several (the published models once
    downloaded, else the shipped demos).

    Args:
      context: list of context image files (1 for stereo-monocular models).
      target: a target video (mp4, mov, webm, gif, ...) or a saved camera
        path (the .npz record, or a plain .npy of reference latents), or
        None to use ``preset``. A saved path replays in its own mode.
      preset: a preset name (see the app's preset list), or None.
      num_frames: number of target frames to use.
      output_size: side of the output video in pixels, or None for the
        model's default: models with the flow renderer sample the output
        from the context photo at this size (default: the photo's own, at
        most 512); models with the RGB head run at this size (default: their
        native size), as the page's "Output resolution" does.
      path_mode: the camera path of a target clip, ``"reference"`` or
        ``"composed"`` (models with the warp renderer only), or None for the
        model's default.

    Returns:
      the MP4, and the camera path as the export writes it:
      ``camera_path.npz`` (a record of its mode and renderer), or for a
      reference path of a model without the warp renderer the plain
      ``camera_path.npy`` of older versions.
    """
    target_path = uploads.file_path(target)
    if target_path is not None:
      suffix = target_path.suffix.lower()
      if suffix in uploads.PATH_SUFFIXES:
        motion = jobs.MotionRequest("path", files=(str(target_path),))
      elif suffix in media.VIDEO_SUFFIXES:
        motion = jobs.MotionRequest("video", files=(str(target_path),))
      else:
        raise InputError(
            f"target {uploads.display_name(target_path)} is neither a video "
            f"({uploads.suffix_names(media.VIDEO_SUFFIXES)}) nor a camera "
            f"path ({uploads.suffix_names(uploads.PATH_SUFFIXES)})")
      if preset:
        gr.Warning("both a target and a preset were given; used the target")
    elif preset:
      motion = jobs.MotionRequest("preset", preset=preset)
    else:
      raise InputError("give a target video or a preset name "
                       f"({', '.join(self.presets.motion_names[:4])}, ...)")
    settings = settings_from_ui({"num_frames": num_frames,
                                 "resolution": output_size,
                                 "path_mode": path_mode}).validate(
                                     self.limits)
    files = tuple(str(p) for p in uploads.file_paths(context))
    request = jobs.TransferRequest(self._api_model(len(files)), files, motion,
                                   settings)
    workdir = self.sessions.new()
    result = jobs.transfer(self.registry, self.presets, request, workdir,
                           self.limits, estimator=self.estimator)
    jobs.log_result(result)
    path_file = export.write_camera_path(result, workdir)
    return str(result.video), str(path_file)
