"""The Gradio Blocks UI of XFactor Studio.

The handlers here only translate widget values to the plain functions of
:mod:`jobs`, :mod:`export` and :mod:`check`, and their results back to widget
updates; user mistakes become ``gr.Error`` messages that name the fix.
Nothing is shared between sessions except the model cache and the cache of
the shipped examples' results (both keyed by immutable inputs); each
session's result lives in its own ``gr.State``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import shutil
from typing import Any, Iterator, Optional

import gradio as gr
import numpy as np

from xfactor_core import checkpoints
from xfactor_core.app import export, jobs, sessions, uploads
from xfactor_core.app.example_cache import ExampleCache
from xfactor_core.app.job_board import JobBoard
from xfactor_core.app.presets import PresetLibrary
from xfactor_core.app.registry import ModelRegistry, RegistryError
from xfactor_core.app.uploads import InputError, Limits
from xfactor_core.inference.frames import FrameError
from xfactor_core.inference.media import MediaError
from xfactor_core.inference.pipeline import TransferError

USER_ERRORS = (InputError, RegistryError, TransferError, MediaError,
               FrameError, checkpoints.CheckpointError)
RESOLUTIONS = ("native", "64", "128", "192", "256", "320", "384", "512")
SESSION_TTL_SECONDS = 2 * 3600
WORKDIR_MAX_AGE_SECONDS = 2 * 3600
VIDEO_TYPES = [".mp4", ".mov", ".webm", ".gif"]
DISPLAY_SIDE = 256
EXAMPLE_PAIRS = (
    ("photo: astronaut", "zoom in"), ("synthetic room 1", "orbit left"),
    ("photo: cat", "pan right"), ("photo: coffee cup", "spiral"),
    ("synthetic room 2", "move up"), ("photo: rocket launch", "tilt down"),
    ("synthetic room 3", "zoom in + pan right"),
    ("synthetic room, 3 views (multi-view)", "orbit right"),
)
INTRO = """# XFactor Studio
Transfer the **camera motion** of a video onto **another scene**.
XFactor learns latent camera poses from plain videos (no 3D, no calibration):
the motion of the target clip is encoded as a latent path and re-rendered
from your context image. Click an example below to try it in one step."""


def for_display(frame: Optional[np.ndarray], min_side: int = DISPLAY_SIDE
                ) -> Optional[np.ndarray]:
  """Small frames enlarged (nearest neighbour) so the scrub view is legible."""
  if frame is None or frame.shape[0] >= min_side:
    return frame
  factor = -(-min_side // frame.shape[0])
  return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


def _user_error(error: Exception) -> gr.Error:
  return gr.Error(str(error), title=type(error).__name__.replace(
      "Error", " problem").strip())


@contextlib.contextmanager
def _as_gradio_errors() -> Iterator[None]:
  """Inside a handler: a user problem becomes a named ``gr.Error``; anything
  else is logged and reported as unexpected, and the server keeps running."""
  try:
    yield
  except gr.Error:
    raise
  except USER_ERRORS as e:
    raise _user_error(e) from e
  except Exception as e:  # keep the server up, tell the user
    raise _unexpected(e) from e


def _unexpected(error: Exception) -> gr.Error:
  logging.exception("unexpected error in a handler")
  return gr.Error(f"unexpected {type(error).__name__}: {error}. The server "
                  "is fine; check the inputs or report this message.",
                  title="Something went wrong")


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
  """
  registry: ModelRegistry
  presets: PresetLibrary
  work_root: pathlib.Path
  limits: Limits = uploads.DEFAULT_LIMITS
  example_cache: Optional[ExampleCache] = None
  job_board: JobBoard = dataclasses.field(default_factory=JobBoard)

  def __post_init__(self):
    self.work_root = pathlib.Path(self.work_root)
    self.sessions = sessions.SessionFolders(self.work_root / "sessions",
                                            WORKDIR_MAX_AGE_SECONDS)
    if self.example_cache is None:
      self.example_cache = ExampleCache(self.presets,
                                        self.work_root / "examples")

  # ------------------------------------------------------------- helpers --

  def discard(self, result: Any) -> None:
    """``gr.State`` delete callback: removes a session's job folder."""
    if isinstance(result, jobs.TransferResult):
      self.sessions.discard(result.video.parent)

  def cleanup(self) -> None:
    """Removes every file the app wrote (call at shutdown)."""
    shutil.rmtree(self.work_root, ignore_errors=True)

  def model_markdown(self, model_id: Optional[str]) -> str:
    return self.registry.describe(model_id)

  def preset_preview(self, name: Optional[str]) -> tuple[Any, str]:
    """(clip path for the preview player, description line)."""
    if not name:
      return None, ""
    try:
      preset = self.presets.motion(name)
    except ValueError as e:
      raise _user_error(InputError(str(e)))
    return str(preset.clip), f"*{preset.name}*: {preset.description}"

  @staticmethod
  def context_gallery(files: Any) -> list[str]:
    return [str(p) for p in uploads.file_paths(files)]

  @staticmethod
  def source_visibility(source: str) -> list[Any]:
    """Visibility updates of the five motion input groups."""
    labels = list(jobs.SOURCE_LABELS.values())
    return [gr.update(visible=(source == label)) for label in labels]

  # ------------------------------------------------------------ transfer --

  def _outputs_for(self, result: jobs.TransferResult, status: str):
    n = result.num_frames
    target, generated = jobs.scrub(self.registry, result, 0)
    return (list(result.generated), str(result.video),
            gr.update(minimum=0, maximum=max(n - 1, 1), value=0, step=0.05,
                      interactive=True),
            for_display(target), for_display(generated), status, result,
            self.model_markdown(result.model_id))

  def run_transfer(self, model_id, context_files, source, preset, video, frames,
               first, second, camera_path, num_frames, stride, start,
               resolution, fps, reverse, ping_pong, strength, job_id=None,
               progress=gr.Progress()) -> Iterator[tuple]:
    """Transfer event: streams rendered frames, then the finished result.

    ``job_id`` comes from :meth:`open_job`; the Cancel button stops that job
    between chunks (see :meth:`cancel_job`), and the event then ends normally
    with the frames rendered so far in the preview.

    Yields tuples for (preview gallery, video, scrub slider, scrub target,
    scrub generated, status, result state, model info).
    """
    skip = gr.skip()
    should_stop = lambda: self.job_board.cancelled(job_id)
    try:
      if should_stop():
        yield (skip,) * 5 + ("Cancelled before it started.", skip, skip)
        return
      with _as_gradio_errors():
        request = jobs.TransferRequest(
            model_id=model_id,
            context_files=tuple(
                str(p) for p in uploads.file_paths(context_files)),
            motion=jobs.motion_from_ui(source, preset, video, frames, first,
                                       second, camera_path),
            settings=jobs.settings_from_ui(num_frames, stride, start,
                                           resolution, fps, reverse, ping_pong,
                                           strength).validate(self.limits))
        cached = self.example_cache.get(request)
        if cached is not None:
          progress(1.0, desc="cached example")
          yield self._outputs_for(cached, f"Example (cached): "
                                  f"{cached.num_frames} frames at "
                                  f"{cached.image_size} px.")
          return
        cacheable = self.example_cache.key(request) is not None
        workdir = (self.example_cache.workdir() if cacheable
                   else self.sessions.new())
        for update in jobs.run_transfer(self.registry, self.presets, request,
                                        workdir, self.limits,
                                        should_stop=should_stop):
          progress(update.fraction, desc=update.stage)
          if update.cancelled:
            preview = skip if update.frames is None else update.frames
            yield (preview, skip, skip, skip, skip,
                   f"{update.stage[:1].upper()}{update.stage[1:]}; the "
                   "last finished result is kept.", skip, skip)
            return
          if update.result is not None:
            result = update.result
            jobs.log_result(result)
            if cacheable:
              self.example_cache.put(request, result)
            if result.motion_frames < request.settings.num_frames and (
                request.motion.source not in ("pair",)):
              gr.Warning(f"the motion has only {result.motion_frames} frames "
                         f"from frame {request.settings.start} with stride "
                         f"{request.settings.stride}; used all of them")
            yield self._outputs_for(result, (
                f"Done: {result.num_frames} frames at {result.image_size} px "
                f"in {result.seconds:.1f} s ({request.motion.describe()})."))
          elif update.frames is not None:
            yield (update.frames, skip, skip, skip, skip,
                   f"{update.stage} ...", skip, skip)
    finally:
      self.job_board.close(job_id)

  def open_job(self) -> str:
    """Transfer click, before the queue: the id of the new job (kept in the
    session's state so that Cancel can name it)."""
    return self.job_board.open()

  def cancel_job(self, job_id: Optional[str]) -> Any:
    """Cancel button: the session's queued or running job stops after the
    chunk it is rendering; the status says so at once."""
    if self.job_board.cancel(job_id):
      return "Cancelling: the job stops after the frames it is rendering."
    return gr.skip()  # nothing running: leave the last status alone

  def scrub(self, result: Optional[jobs.TransferResult], position: Any
            ) -> tuple[Any, Any]:
    """Scrub slider: (target frame, generated view) at a fractional frame."""
    if result is None or position is None:
      return None, None
    with _as_gradio_errors():
      target, generated = jobs.scrub(self.registry, result, float(position))
      return for_display(target), for_display(generated)

  def warm_scrub(self, result: Optional[jobs.TransferResult]) -> None:
    """Compiles the one-frame render of the scrub slider ahead of use."""
    if result is None or result.num_frames < 2:
      return
    try:
      jobs.scrub(self.registry, result, 0.5)
    except Exception:  # a warm-up failure only costs speed
      logging.exception("scrub warm-up failed")

  # -------------------------------------------------------------- export --

  def export(self, result: Optional[jobs.TransferResult]) -> str:
    """Export button: one zip with every format of the current result."""
    with _as_gradio_errors():
      if result is None:
        raise InputError("nothing to export yet; run a transfer first")
      return str(export.export_result(result, self.sessions.new()))

  def batch(self, model_id, batch_contexts, context_files, batch_presets,
            batch_videos, source, preset, video, frames, first, second,
            camera_path, num_frames, stride, start, resolution, fps, reverse,
            ping_pong, strength, progress=gr.Progress()) -> tuple[str, Any]:
    """Batch export: every chosen motion onto every chosen context.

    Contexts: each batch image is one context (default: the current context).
    Motions: the picked presets and uploaded videos (default: the current
    motion).
    """
    with _as_gradio_errors():
      settings = jobs.settings_from_ui(num_frames, stride, start, resolution,
                                       fps, reverse, ping_pong, strength
                                       ).validate(self.limits)
      contexts = [[str(p)] for p in uploads.file_paths(batch_contexts)]
      if not contexts:
        contexts = [[str(p) for p in uploads.file_paths(context_files)]]
      motions = [jobs.MotionRequest("preset", preset=name)
                 for name in (batch_presets or [])]
      motions += [jobs.MotionRequest("video", files=(str(p),))
                  for p in uploads.file_paths(batch_videos)]
      if not motions:
        motions = [jobs.motion_from_ui(source, preset, video, frames, first,
                                       second, camera_path)]
      progress(0.0, desc="batch")
      archive, sheet = export.batch_export(
          self.registry, self.presets, model_id, contexts, motions, settings,
          self.sessions.new(),
          progress=lambda done, total, name: progress(
              done / total, desc=f"{done}/{total}: {name}"),
          limits=self.limits)
      return str(archive), sheet

  # --------------------------------------------------------------- check --

  def check(self, result: Optional[jobs.TransferResult],
            progress=gr.Progress()) -> tuple[Any, Any, str]:
    """TPS check: the COLMAP oracle on target and generated clip."""
    from xfactor_core.app import check  # pycolmap is heavy: import on use
    with _as_gradio_errors():
      if result is None:
        raise InputError("nothing to check yet; run a transfer first")
      progress(0.1, desc="estimating camera poses with COLMAP")
      report = check.check_transfer(result)
      return report.table, report.figure, report.summary

  # ----------------------------------------------------------------- API --

  def api_transfer(self, context: Any, target: Any, preset: Optional[str],
                   num_frames: Any) -> tuple[str, str]:
    """The ``/transfer`` endpoint: (MP4 path, camera path .npy path).

    Args:
      context: list of context image files (1 for stereo-monocular models).
      target: a target video (mp4, mov, webm, gif) or a saved camera path
        (.npy), or None to use ``preset``.
      preset: a preset name (see the app's preset list), or None.
      num_frames: number of target frames to use.
    """
    with _as_gradio_errors():
      target_path = uploads.file_path(target)
      if target_path is not None:
        suffix = target_path.suffix.lower()
        if suffix == ".npy":
          motion = jobs.MotionRequest("path", files=(str(target_path),))
        elif suffix in uploads.VIDEO_SUFFIXES:
          motion = jobs.MotionRequest("video", files=(str(target_path),))
        else:
          raise InputError(f"target {uploads.display_name(target_path)} is "
                           "neither a video (mp4, mov, webm, gif) nor a "
                           "camera path (.npy)")
        if preset:
          gr.Warning("both a target and a preset were given; used the target")
      elif preset:
        motion = jobs.MotionRequest("preset", preset=preset)
      else:
        raise InputError("give a target video or a preset name "
                         f"({', '.join(self.presets.motion_names[:4])}, ...)")
      settings = jobs.settings_from_ui(num_frames, 1, 0, None, 12.0, False,
                                       False, 1.0).validate(self.limits)
      request = jobs.TransferRequest(
          None, tuple(str(p) for p in uploads.file_paths(context)), motion,
          settings)
      workdir = self.sessions.new()
      result = jobs.transfer(self.registry, self.presets, request, workdir,
                             self.limits)
      jobs.log_result(result)
      path_file = workdir / "camera_path.npy"
      np.save(path_file, result.path)
      return str(result.video), str(path_file)


def _example_rows(presets: PresetLibrary) -> tuple[list[list[Any]], list[str]]:
  rows, labels = [], []
  for context_name, motion_name in EXAMPLE_PAIRS:
    try:
      context = presets.context(context_name)
      presets.motion(motion_name)
    except ValueError:
      continue
    rows.append([[str(f) for f in context.files], "Preset", motion_name])
    labels.append(f"{context_name.replace('photo: ', '')} · {motion_name}")
  return rows, labels


def build_app(studio: Studio, *, max_jobs: int = 1) -> gr.Blocks:
  """The Blocks UI; call ``.queue()`` is done here, launch it yourself."""
  registry, presets, limits = studio.registry, studio.presets, studio.limits
  labels = list(jobs.SOURCE_LABELS.values())
  heavy = dict(concurrency_limit=max_jobs, concurrency_id="heavy")
  gr.set_static_paths([str(presets.root)])

  with gr.Blocks(title="XFactor Studio", analytics_enabled=False,
                 delete_cache=(1800, WORKDIR_MAX_AGE_SECONDS)) as demo:
    result_state = gr.State(None, time_to_live=SESSION_TTL_SECONDS,
                            delete_callback=studio.discard)
    job_state = gr.State(None)  # id of the session's latest transfer job
    gr.Markdown(INTRO)
    with gr.Row():
      model = gr.Dropdown(registry.choices(), value=registry.default_id,
                          label="Model", scale=1, interactive=True,
                          elem_id="model")
      model_info = gr.Markdown(registry.describe(registry.default_id),
                               elem_id="model-info")
    with gr.Row(equal_height=False):
      with gr.Column(scale=1):
        gr.Markdown("### 1 · Context (the scene to film)")
        context_files = gr.File(
            file_count="multiple", file_types=["image"], elem_id="context",
            label="Context image(s): one for stereo-monocular models, up to "
                  "the model's view count for multi-view models")
        context_preview = gr.Gallery(label="Context", columns=5, height=130,
                                     object_fit="contain", interactive=False,
                                     allow_preview=False, fit_columns=False,
                                     show_label=False)
        if presets.contexts:
          gr.Examples([[[str(f) for f in c.files]] for c in presets.contexts],
                      inputs=[context_files], label="Example contexts",
                      example_labels=[c.name for c in presets.contexts],
                      cache_examples=False, examples_per_page=10,
                      api_name="load_context_example",
                      api_visibility="private")
      with gr.Column(scale=1):
        gr.Markdown("### 2 · Motion (the camera move to copy)")
        source = gr.Radio(labels, value="Preset", label="Motion from",
                          elem_id="source")
        with gr.Group(visible=True) as preset_group:
          preset = gr.Dropdown(presets.motion_names,
                               value=(presets.motion_names or [None])[0],
                               label="Preset camera motion", elem_id="preset")
          preset_preview = gr.Video(label="Preset clip", height=160,
                                    autoplay=True, loop=True,
                                    interactive=False)
          preset_note = gr.Markdown("")
        with gr.Group(visible=False) as video_group:
          target_video = gr.File(file_types=VIDEO_TYPES,
                                 label="Target video (mp4, mov, webm, gif)")
        with gr.Group(visible=False) as frames_group:
          target_frames = gr.File(file_count="multiple", file_types=["image"],
                                  label="Target frames (ordered by file name)")
        with gr.Group(visible=False) as pair_group:
          with gr.Row():
            pair_first = gr.Image(type="filepath", label="First view",
                                  height=160)
            pair_second = gr.Image(type="filepath", label="Second view",
                                   height=160)
        with gr.Group(visible=False) as path_group:
          camera_path = gr.File(file_types=[".npy"],
                                label="Camera path (.npy from an export)")
        with gr.Accordion("Options", open=False):
          with gr.Row():
            num_frames = gr.Slider(2, limits.max_frames, value=jobs.DEFAULT_FRAMES,
                                   step=1, label="Frames")
            stride = gr.Slider(1, 10, value=1, step=1, label="Frame stride")
            start = gr.Number(0, precision=0, minimum=0, label="Start frame")
          with gr.Row():
            resolution = gr.Dropdown(
                list(RESOLUTIONS), value="native",
                label="Output resolution (px)",
                info="the model renders at this size (a multiple of its "
                     "patch size); native = the size it was trained at")
            fps = gr.Slider(4, 30, value=12, step=1, label="fps")
            strength = gr.Slider(0.0, jobs.MAX_STRENGTH, value=1.0, step=0.05,
                                 label="Motion strength")
          with gr.Row():
            reverse = gr.Checkbox(False, label="Reverse")
            ping_pong = gr.Checkbox(False, label="Ping-pong loop")
    with gr.Row():
      run = gr.Button("Transfer camera motion", variant="primary",
                      elem_id="run", scale=3)
      cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
    status = gr.Markdown("", elem_id="status")

    example_rows, example_labels = _example_rows(presets)
    examples = None
    if example_rows:
      examples = gr.Examples(
          example_rows, inputs=[context_files, source, preset],
          example_labels=example_labels, label="Examples: one click runs a "
          "transfer", cache_examples=False, examples_per_page=8,
          elem_id="examples")

    with gr.Row(equal_height=False):
      with gr.Column(scale=1):
        result_video = gr.Video(label="Result", autoplay=True, loop=True,
                                interactive=False, height=320,
                                elem_id="result-video")
        preview = gr.Gallery(label="Frames as they render", columns=8,
                             height=150, interactive=False, elem_id="preview")
      with gr.Column(scale=1):
        scrub = gr.Slider(0, 1, value=0, step=0.05, interactive=False,
                          label="Scrub (fractional frames blend the two "
                                "neighbouring latents)", elem_id="scrub")
        with gr.Row():
          scrub_target = gr.Image(label="Target frame", height=256,
                                  interactive=False, elem_id="scrub-target")
          scrub_generated = gr.Image(label="Generated view", height=256,
                                     interactive=False,
                                     elem_id="scrub-generated")

    with gr.Accordion("Export", open=False):
      export_button = gr.Button("Export zip (MP4, side-by-side, GIF, PNG "
                                "frames, camera path, settings)",
                                elem_id="export-button")
      export_file = gr.File(label="Export", interactive=False,
                            elem_id="export-file")
    with gr.Accordion("Batch export", open=False):
      gr.Markdown("Every motion onto every context: one MP4 each plus a "
                  "contact sheet, in one zip. Empty fields use the current "
                  "context / motion.")
      with gr.Row():
        batch_contexts = gr.File(file_count="multiple", file_types=["image"],
                                 label="Contexts (one image each)")
        batch_presets = gr.Dropdown(presets.motion_names, multiselect=True,
                                    label="Preset motions")
        batch_videos = gr.File(file_count="multiple", file_types=VIDEO_TYPES,
                               label="Target videos")
      batch_button = gr.Button("Run batch export")
      with gr.Row():
        batch_file = gr.File(label="Batch zip", interactive=False)
        batch_sheet = gr.Image(label="Contact sheet", interactive=False)
    with gr.Accordion("Check transfer (TPS with COLMAP)", open=False):
      check_button = gr.Button("Run the TPS check")
      check_summary = gr.Markdown("")
      with gr.Row():
        check_table = gr.Dataframe(headers=["metric", "value"],
                                   label="TPS", interactive=False)
        check_plot = gr.Image(label="Camera trajectories", interactive=False)

    # Hidden components of the /transfer API endpoint.
    with gr.Group(visible=False):
      api_context = gr.File(file_count="multiple", label="context")
      api_target = gr.File(label="target")
      api_preset = gr.Dropdown(presets.motion_names, value=None,
                               label="preset", allow_custom_value=True)
      api_num_frames = gr.Number(jobs.DEFAULT_FRAMES, precision=0,
                                 label="num_frames")
      api_video = gr.File(label="video")
      api_path = gr.File(label="camera_path")
      api_button = gr.Button("api")

    # ------------------------------------------------------------ events --
    motion_inputs = [source, preset, target_video, target_frames, pair_first,
                     pair_second, camera_path]
    option_inputs = [num_frames, stride, start, resolution, fps, reverse,
                     ping_pong, strength]
    transfer_inputs = [model, context_files] + motion_inputs + option_inputs
    transfer_outputs = [preview, result_video, scrub, scrub_target,
                        scrub_generated, status, result_state, model_info]

    model.change(studio.model_markdown, model, model_info,
                 api_visibility="private", show_progress="hidden")
    context_files.change(studio.context_gallery, context_files,
                         context_preview, api_visibility="private",
                         show_progress="hidden")
    source.change(studio.source_visibility, source,
                  [preset_group, video_group, frames_group, pair_group,
                   path_group], api_visibility="private",
                  show_progress="hidden")
    preset.change(studio.preset_preview, preset, [preset_preview, preset_note],
                  api_visibility="private", show_progress="hidden")
    demo.load(studio.preset_preview, preset, [preset_preview, preset_note],
              api_visibility="private", show_progress="hidden")

    # Each transfer first opens a job (not queued, so Cancel can name the job
    # while it waits in the queue); Cancel asks that job to stop, and the job
    # ends its event normally with the frames it had. Gradio's own
    # ``cancels=`` kills the event instead, and the "error" status the killed
    # event leaves on its outputs can land after the Cancel handler's text.
    job_inputs = transfer_inputs + [job_state]
    transfer_events = [
        run.click(studio.open_job, None, job_state, queue=False,
                  show_progress="hidden", api_visibility="private").then(
            studio.run_transfer, job_inputs, transfer_outputs,
            api_name="transfer_ui", api_visibility="undocumented", **heavy)]
    if examples is not None:
      transfer_events.append(examples.load_input_event.then(
          studio.open_job, None, job_state, queue=False,
          show_progress="hidden", api_visibility="private").then(
              studio.run_transfer, job_inputs, transfer_outputs,
              api_name="example_transfer", api_visibility="private", **heavy))
    for event in transfer_events:
      event.success(studio.warm_scrub, result_state, None,
                    show_progress="hidden", concurrency_limit=2,
                    concurrency_id="scrub", api_visibility="private")
    cancel.click(studio.cancel_job, job_state, status, queue=False,
                 show_progress="hidden", api_visibility="private")
    scrub.input(studio.scrub, [result_state, scrub],
                [scrub_target, scrub_generated], trigger_mode="always_last",
                show_progress="hidden", concurrency_limit=2,
                concurrency_id="scrub", api_visibility="private")
    export_button.click(studio.export, result_state, export_file,
                        api_visibility="private", **heavy)
    batch_button.click(studio.batch,
                       [model, batch_contexts, context_files, batch_presets,
                        batch_videos] + motion_inputs + option_inputs,
                       [batch_file, batch_sheet], api_visibility="private",
                       **heavy)
    check_button.click(studio.check, result_state,
                       [check_table, check_plot, check_summary],
                       api_visibility="private", **heavy)
    api_button.click(studio.api_transfer,
                     [api_context, api_target, api_preset, api_num_frames],
                     [api_video, api_path], api_name="transfer", **heavy)
  demo.queue(default_concurrency_limit=max_jobs, max_size=32)
  return demo


def theme() -> gr.themes.Base:
  """A theme with system fonts only (nothing is fetched from the web)."""
  return gr.themes.Soft(
      font=["ui-sans-serif", "system-ui", "sans-serif"],
      font_mono=["ui-monospace", "monospace"])
