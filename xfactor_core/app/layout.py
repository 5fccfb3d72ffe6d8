"""The page of XFactor Studio: its panels, and the wiring of their events.

:func:`build_app` lays the page out (one helper per panel) and connects each
widget event to its :class:`ui.Studio` handler with Gradio's dict form (a set
of input components in, a dict keyed by component out); :class:`Widgets`
translates between components and the widget names the handlers use. The
page is a :class:`gate.GatedBlocks`, so every event, whichever endpoint it is
called through, passes the gate before Gradio reads its values.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, Mapping, Optional

import gradio as gr

from xfactor_core.app import gate, jobs, picker, ui, uploads
from xfactor_core.app.presets import PresetLibrary
from xfactor_core.app.registry import ModelRegistry, RegistryError
from xfactor_core.app.uploads import Limits
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import media

SESSION_TTL_SECONDS = 2 * 3600
QUEUE_SIZE = 32  # waiting events; more are refused until the queue drains
HEAVY = "heavy"  # the concurrency id of transfers, exports, batches, checks
# What the upload widgets offer: the types the media readers take.
IMAGE_TYPES = list(media.IMAGE_SUFFIXES)
VIDEO_TYPES = list(media.VIDEO_SUFFIXES)
VIDEO_LABEL = f"Target video ({uploads.suffix_names(media.VIDEO_SUFFIXES)})"
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


# ------------------------------------------------------------------ widgets --


class Widgets:
  """The app's components by name, for Gradio's dict form.

  :meth:`bind` adapts a :class:`ui.Studio` handler to an event: Gradio
  passes the event's input components as a dict keyed by component, the
  handler sees them keyed by name, and its update goes back keyed by
  component.
  """

  def __init__(self, components: Mapping[str, gr.blocks.Block]):
    self._components = dict(components)
    self._names = {component._id: name
                   for name, component in self._components.items()}

  def __getitem__(self, name: str) -> gr.blocks.Block:
    return self._components[name]

  def inputs(self, names: Iterable[str]) -> set[gr.blocks.Block]:
    """The input set of an event (Gradio's dict form)."""
    return {self[name] for name in names}

  def listed(self, names: Iterable[str]) -> list[gr.blocks.Block]:
    """Components in order (outputs, or the inputs of a positional API)."""
    return [self[name] for name in names]

  def form(self, values: Mapping[gr.blocks.Block, Any]) -> dict[str, Any]:
    """An event's input values, keyed by name."""
    return {self._names[component._id]: value
            for component, value in values.items()}

  def keyed(self, update: Optional[ui.Update]) -> Any:
    """A handler's update, keyed by component (``gr.skip()`` for none)."""
    if update is None:
      return None
    if not update:
      return gr.skip()
    return {self[name]: value for name, value in update.items()}

  def bind(self, handler: Callable) -> Callable:
    """``handler(form, *special)`` as a dict-form event function."""
    if inspect.isgeneratorfunction(handler):
      @functools.wraps(handler)
      def stream(values, *args, **kwargs):
        for update in handler(self.form(values or {}), *args, **kwargs):
          yield self.keyed(update)
      return stream

    @functools.wraps(handler)
    def call(values, *args, **kwargs):
      return self.keyed(handler(self.form(values or {}), *args, **kwargs))
    return call


# ------------------------------------------------------------------- layout --


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


def _model_row(studio: ui.Studio) -> dict[str, gr.blocks.Block]:
  """The model picker, its line, Download (for a published model not on this
  machine yet) and the timer that polls running downloads."""
  registry = studio.registry
  studio.picker.page_default = registry.default_id
  first = studio.picker.describe_model({"model": registry.default_id})
  with gr.Row():
    model = gr.Dropdown(registry.choices(), value=registry.default_id,
                        label="Model", scale=1, interactive=True,
                        elem_id="model")
    with gr.Column(scale=2):
      model_info = gr.Markdown(first["model_info"], elem_id="model-info")
      download = gr.Button("Download", variant="secondary", size="sm",
                           visible=first["download"]["visible"],
                           elem_id="download")
  running = studio.downloads is not None and bool(studio.downloads.running())
  timer = gr.Timer(2.0, active=running)
  return {"model": model, "model_info": model_info, "download": download,
          "download_timer": timer}


def _context_column(presets: PresetLibrary) -> dict[str, gr.blocks.Block]:
  gr.Markdown("### 1 · Context (the scene to film)")
  context = gr.File(
      file_count="multiple", file_types=IMAGE_TYPES, elem_id="context",
      label="Context image(s): one for stereo-monocular models, up to the "
            "model's view count for multi-view models")
  preview = gr.Gallery(label="Context", columns=5, height=130,
                       object_fit="contain", interactive=False,
                       allow_preview=False, fit_columns=False,
                       show_label=False)
  if presets.contexts:
    gr.Examples([[[str(f) for f in c.files]] for c in presets.contexts],
                inputs=[context], label="Example contexts",
                example_labels=[c.name for c in presets.contexts],
                cache_examples=False, examples_per_page=10,
                api_name="load_context_example", api_visibility="private")
  return {"context": context, "context_preview": preview}


def _motion_column(presets: PresetLibrary, registry: ModelRegistry,
                   limits: Limits) -> dict[str, gr.blocks.Block]:
  gr.Markdown("### 2 · Motion (the camera move to copy)")
  w: dict[str, gr.blocks.Block] = {}
  w["source"] = gr.Radio(list(jobs.SOURCE_LABELS.values()), value="Preset",
                         label="Motion from", elem_id="source")
  with gr.Group(visible=True) as w["preset_group"]:
    w["preset"] = gr.Dropdown(presets.motion_names,
                              value=(presets.motion_names or [None])[0],
                              label="Preset camera motion", elem_id="preset")
    w["preset_preview"] = gr.Video(label="Preset clip", height=160,
                                   autoplay=True, loop=True, interactive=False)
    w["preset_note"] = gr.Markdown("")
  with gr.Group(visible=False) as w["video_group"]:
    w["video"] = gr.File(file_types=VIDEO_TYPES, label=VIDEO_LABEL)
  with gr.Group(visible=False) as w["frames_group"]:
    w["frames"] = gr.File(file_count="multiple", file_types=IMAGE_TYPES,
                          label="Target frames (ordered by file name)")
  with gr.Group(visible=False) as w["pair_group"]:
    with gr.Row():
      w["first"] = gr.Image(type="filepath", label="First view", height=160)
      w["second"] = gr.Image(type="filepath", label="Second view", height=160)
  with gr.Group(visible=False) as w["path_group"]:
    w["camera_path"] = gr.File(
        file_types=list(uploads.PATH_SUFFIXES),
        label="Camera path (camera_path.npz or .npy from an export; it "
              "replays in the mode it was saved in)")
  # Warp models only (the picker shows it): how the target becomes a path.
  w["path_mode"] = gr.Radio(
      label="Camera path", elem_id="path-mode",
      info="how the target clip becomes a camera path (a saved path replays "
           "in its own mode)",
      **picker.path_mode_options(_default_spec(registry)))
  with gr.Accordion("Options", open=False):
    with gr.Row():
      w["num_frames"] = gr.Slider(2, limits.max_frames,
                                  value=jobs.DEFAULT_FRAMES, step=1,
                                  label="Frames")
      w["stride"] = gr.Slider(1, 10, value=1, step=1, label="Frame stride")
      w["start"] = gr.Number(0, precision=0, minimum=0, label="Start frame")
    with gr.Row():
      w["resolution"] = gr.Dropdown(
          label="Output resolution (px)", elem_id="resolution",
          **picker.resolution_options(_default_spec(registry), limits))
      w["fps"] = gr.Slider(4, 30, value=12, step=1, label="fps")
      w["strength"] = gr.Slider(0.0, jobs.MAX_STRENGTH, value=1.0, step=0.05,
                                label="Motion strength")
    with gr.Row():
      w["reverse"] = gr.Checkbox(False, label="Reverse")
      w["ping_pong"] = gr.Checkbox(False, label="Ping-pong loop")
  return w


def _default_spec(registry: ModelRegistry):
  """The spec of the model the page starts with (None: no model)."""
  try:
    return registry.spec(registry.default_id)
  except RegistryError:
    return None


def _run_row() -> dict[str, gr.blocks.Block]:
  with gr.Row():
    run = gr.Button("Transfer camera motion", variant="primary",
                    elem_id="run", scale=3)
    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
  status = gr.Markdown("", elem_id="status")
  return {"run": run, "cancel": cancel, "status": status}


def _examples(presets: PresetLibrary, w: Mapping[str, gr.blocks.Block]
              ) -> Optional[gr.Examples]:
  rows, labels = _example_rows(presets)
  if not rows:
    return None
  return gr.Examples(rows, inputs=[w["context"], w["source"], w["preset"]],
                     example_labels=labels, label="Examples: one click runs "
                     "a transfer", cache_examples=False, examples_per_page=8,
                     elem_id="examples")


def _result_panel() -> dict[str, gr.blocks.Block]:
  w: dict[str, gr.blocks.Block] = {}
  with gr.Row(equal_height=False):
    with gr.Column(scale=1):
      w["result_video"] = gr.Video(label="Result", autoplay=True, loop=True,
                                   interactive=False, height=320,
                                   elem_id="result-video")
      w["preview"] = gr.Gallery(label="Frames as they render", columns=8,
                                height=150, interactive=False,
                                elem_id="preview")
    with gr.Column(scale=1):
      w["scrub"] = gr.Slider(0, 1, value=0, step=0.05, interactive=False,
                             label="Scrub (fractional frames blend the two "
                                   "neighbouring latents)", elem_id="scrub")
      with gr.Row():
        w["scrub_target"] = gr.Image(label="Target frame", height=256,
                                     interactive=False,
                                     elem_id="scrub-target")
        w["scrub_generated"] = gr.Image(label="Generated view", height=256,
                                        interactive=False,
                                        elem_id="scrub-generated")
  return w


def _export_panels(presets: PresetLibrary) -> dict[str, gr.blocks.Block]:
  """Export, batch export and the TPS check, each in its accordion."""
  w: dict[str, gr.blocks.Block] = {}
  with gr.Accordion("Export", open=False):
    w["export_button"] = gr.Button("Export zip (MP4, side-by-side, GIF, PNG "
                                   "frames, camera path, settings)",
                                   elem_id="export-button")
    w["export_file"] = gr.File(label="Export", interactive=False,
                               elem_id="export-file")
  with gr.Accordion("Batch export", open=False):
    gr.Markdown("Every motion onto every context: one MP4 each plus a "
                "contact sheet, in one zip. Empty fields use the current "
                "context / motion.")
    with gr.Row():
      w["batch_contexts"] = gr.File(file_count="multiple",
                                    file_types=IMAGE_TYPES,
                                    label="Contexts (one image each)")
      w["batch_presets"] = gr.Dropdown(presets.motion_names, multiselect=True,
                                       label="Preset motions")
      w["batch_videos"] = gr.File(file_count="multiple",
                                  file_types=VIDEO_TYPES,
                                  label="Target videos")
    w["batch_button"] = gr.Button("Run batch export")
    with gr.Row():
      w["batch_file"] = gr.File(label="Batch zip", interactive=False)
      w["batch_sheet"] = gr.Image(label="Contact sheet", interactive=False)
  with gr.Accordion("Check transfer (TPS with COLMAP)", open=False):
    w["check_button"] = gr.Button("Run the TPS check")
    w["check_summary"] = gr.Markdown("")
    with gr.Row():
      w["check_table"] = gr.Dataframe(headers=["metric", "value"],
                                      label="TPS", interactive=False)
      w["check_plot"] = gr.Image(label="Camera trajectories",
                                 interactive=False)
  return w


def _api_components(presets: PresetLibrary) -> dict[str, gr.blocks.Block]:
  """Hidden components of the ``/transfer`` API endpoint."""
  with gr.Group(visible=False):
    return {
        "api_context": gr.File(file_count="multiple", label="context"),
        "api_target": gr.File(label="target"),
        "api_preset": gr.Dropdown(presets.motion_names, value=None,
                                  label="preset", allow_custom_value=True),
        "api_num_frames": gr.Number(jobs.DEFAULT_FRAMES, precision=0,
                                    label="num_frames"),
        # Added after the first four: optional, so earlier callers work.
        "api_output_size": gr.Number(None, precision=0, label="output_size"),
        "api_path_mode": gr.Dropdown(
            list(camera_paths.CAMERA_PATH_MODES), value=None,
            label="path_mode"),
        "api_video": gr.File(label="video"),
        "api_path": gr.File(label="camera_path"),
        "api_button": gr.Button("api"),
    }


# ------------------------------------------------------------------- events --


def _wire_events(studio: ui.Studio, w: Widgets, demo: gr.Blocks,
                 examples: Optional[gr.Examples], max_jobs: int) -> None:
  """Connects every widget event to its :class:`ui.Studio` handler."""
  heavy = dict(concurrency_limit=max_jobs, concurrency_id=HEAVY)
  quiet = dict(api_visibility="private", show_progress="hidden")
  on = w.bind

  model_row = ["model", "model_info", "resolution", "path_mode", "download"]
  row = studio.picker
  w["model"].change(on(row.describe_model), w.inputs(["model"]),
                    w.listed(model_row[1:]), **quiet)
  w["context"].change(on(studio.context_gallery),
                      w.inputs(["context", "model"]),
                      w.listed(["context_preview", *model_row]), **quiet)
  w["download"].click(on(row.download_model), w.inputs(["model"]),
                      w.listed(model_row), api_visibility="private",
                      concurrency_limit=2, concurrency_id="download",
                      show_progress="minimal")
  w["download_timer"].tick(on(row.poll_downloads), w.inputs(["model"]),
                           w.listed([*model_row, "download_timer"]), **quiet)
  demo.load(on(row.refresh_models), w.inputs(["model"]),
            w.listed([*model_row, "download_timer"]), queue=False, **quiet)
  w["source"].change(on(studio.source_visibility), w.inputs(["source"]),
                     w.listed(ui.SOURCE_GROUPS.values()), **quiet)
  preview_outputs = w.listed(["preset_preview", "preset_note"])
  w["preset"].change(on(studio.preset_preview), w.inputs(["preset"]),
                     preview_outputs, **quiet)
  demo.load(on(studio.preset_preview), w.inputs(["preset"]), preview_outputs,
            **quiet)

  # Each transfer first opens a job (not queued, so Cancel can name the job
  # while it waits in the queue); Cancel asks that job to stop, and the job
  # ends its event normally with the frames it had. Gradio's own
  # ``cancels=`` kills the event instead, and the "error" status the killed
  # event leaves on its outputs can land after the Cancel handler's text.
  # Opening the job also estimates its wait: a job over the bound gets no
  # id and a status that names the wait; ``admit`` then fails, and the
  # transfer, which follows on success only, is never queued.
  open_job = dict(fn=on(studio.open_job), inputs=w.inputs(ui.JOB_FIELDS),
                  outputs=w.listed(["job", "status"]), queue=False, **quiet)
  admit = dict(fn=on(studio.admit), inputs=w.inputs(["job"]), outputs=None,
               queue=False, **quiet)
  transfer = dict(fn=on(studio.run_transfer),
                  inputs=w.inputs(ui.TRANSFER_FIELDS),
                  outputs=w.listed(ui.TRANSFER_OUTPUTS), **heavy)
  transfer_events = [w["run"].click(**open_job).success(**admit).success(
      api_name="transfer_ui", api_visibility="undocumented", **transfer)]
  if examples is not None:
    transfer_events.append(
        examples.load_input_event.then(**open_job).success(**admit).success(
            api_name="example_transfer", api_visibility="private",
            **transfer))
  for event in transfer_events:
    event.success(on(studio.warm_scrub), w.inputs(["result"]), None,
                  concurrency_limit=2, concurrency_id="scrub", **quiet)
  w["cancel"].click(on(studio.cancel_job), w.inputs(["job"]),
                    w.listed(["status"]), queue=False, **quiet)
  w["scrub"].input(on(studio.scrub), w.inputs(["result", "scrub"]),
                   w.listed(["scrub_target", "scrub_generated"]),
                   trigger_mode="always_last", concurrency_limit=2,
                   concurrency_id="scrub", **quiet)
  w["export_button"].click(on(studio.export), w.inputs(["result"]),
                           w.listed(["export_file"]),
                           api_visibility="private", **heavy)
  w["batch_button"].click(on(studio.batch), w.inputs(ui.BATCH_FIELDS),
                          w.listed(["batch_file", "batch_sheet"]),
                          api_visibility="private", **heavy)
  w["check_button"].click(on(studio.check), w.inputs(["result"]),
                          w.listed(["check_table", "check_plot",
                                     "check_summary"]),
                          api_visibility="private", **heavy)
  w["api_button"].click(
      studio.api_transfer,
      w.listed(["api_context", "api_target", "api_preset", "api_num_frames",
                "api_output_size", "api_path_mode"]),
      w.listed(["api_video", "api_path"]), api_name="transfer",
      validator=studio.api_admission, **heavy)


def build_app(studio: ui.Studio, *, max_jobs: int = 1) -> gate.GatedBlocks:
  """The Blocks UI, queued (at most ``max_jobs`` transfers at once); launch
  it yourself.

  Every event, whichever endpoint it is called through, passes the
  :mod:`gate` (uploads and presets only, file counts, finite numbers) before
  Gradio reads its values.
  """
  gr.set_static_paths([str(studio.presets.root)])
  with gate.GatedBlocks(
      shipped_roots=[studio.presets.root], limits=studio.limits,
      title="XFactor Studio", analytics_enabled=False,
      delete_cache=(1800, ui.WORKDIR_MAX_AGE_SECONDS)) as demo:
    parts: dict[str, gr.blocks.Block] = {
        "result": gr.State(None, time_to_live=SESSION_TTL_SECONDS,
                           delete_callback=studio.discard),
        "job": gr.State(None),  # id of the session's latest transfer job
    }
    gr.Markdown(INTRO)
    parts |= _model_row(studio)
    with gr.Row(equal_height=False):
      with gr.Column(scale=1):
        parts |= _context_column(studio.presets)
      with gr.Column(scale=1):
        parts |= _motion_column(studio.presets, studio.registry,
                                studio.limits)
    parts |= _run_row()
    examples = _examples(studio.presets, parts)
    parts |= _result_panel()
    parts |= _export_panels(studio.presets)
    parts |= _api_components(studio.presets)
    _wire_events(studio, Widgets(parts), demo, examples, max_jobs)
  demo.queue(default_concurrency_limit=max_jobs, max_size=QUEUE_SIZE)
  studio.queue_depth = functools.partial(jobs_in_queue, demo, HEAVY)
  return demo


def jobs_in_queue(demo: gr.Blocks, concurrency_id: str) -> int:
  """Events of ``concurrency_id`` waiting in ``demo``'s queue or running.

  Reads Gradio's queue (its per-concurrency-id event queues, as Gradio
  6.x keeps them); 0 when the queue has not started or looks otherwise.
  """
  queue = getattr(demo, "_queue", None)
  event_queue = getattr(queue, "event_queue_per_concurrency_id", {}).get(
      concurrency_id)
  if event_queue is None:
    return 0
  return (len(getattr(event_queue, "queue", ()))
          + int(getattr(event_queue, "current_concurrency", 0) or 0))


def theme() -> gr.themes.Base:
  """A theme with system fonts only (nothing is fetched from the web)."""
  return gr.themes.Soft(
      font=["ui-sans-serif", "system-ui", "sans-serif"],
      font_mono=["ui-monospace", "monospace"])
