"""The model picker: its line, its resolutions and its Download button.

:class:`ModelPicker` holds the event handlers of the model row (the picker,
its markdown line, the Download button and the timer that polls running
downloads) and the page text they show; :func:`model_facts` and
:func:`resolution_options` are the plain functions behind them. Handlers
take a form (widget name -> value) and return a dict of the widgets they
change, as every handler of :class:`ui.Studio` does.

What the line says beyond a model's facts:

* a published model not downloaded yet: press Download (or, where the page
  may not download, the operator's fetch command);
* a published model whose installed copy cannot be used: why, and that
  Download (or ``python -m xfactor_core.fetch NAME --force``) reinstalls it;
* a download running or failed: its progress or its message;
* a start-up fetch (``XFACTOR_FETCH_AT_START``) that failed: that the
  published model could not be fetched at start, and why, whatever model
  is chosen (the page then offers the offline demo).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator, Optional

import gradio as gr

from xfactor_core import fetch
from xfactor_core.app import uploads
from xfactor_core.app.downloads import DownloadError, Downloads
from xfactor_core.app.errors import reports_errors
from xfactor_core.app.registry import (ModelRegistry, ModelSpec,
                                       RegistryError, reinstall_command)
from xfactor_core.app.uploads import InputError, Limits
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference.pipeline import DEFAULT_MAX_OUTPUT_SIZE

DOWNLOAD_POLL_SECONDS = 0.5
# Resolution choices: models with the RGB head run and render at the size
# picked (a multiple of their patch size); flow models render at any output
# size, sampled from the context photo.
NATIVE = "native"
RGB_RESOLUTIONS = (64, 128, 192, 256, 320, 384, 512)
FLOW_OUTPUT_SIZES = (256, 384, 512, 768, 1024)
# The camera path choice (warp models only): one line of help each.
PATH_MODE_LABELS = {
    "reference": "reference: each frame read against the first (the XFactor "
                 "path)",
    "composed": "composed: the steps between consecutive frames, chained "
                "(follows long moves; a cut breaks one step only)",
}


def format_parameters(count: Optional[int]) -> str:
  """``203456789`` -> ``"203.5 M"``."""
  if count is None:
    return "known after loading"
  if count >= 1e9:
    return f"{count / 1e9:.2f} B"
  if count >= 1e6:
    return f"{count / 1e6:.1f} M"
  if count >= 1e3:
    return f"{count / 1e3:.1f} K"
  return str(count)


def model_facts(registry: ModelRegistry, model_id: Optional[str] = None
                ) -> str:
  """One markdown line: kind, resolution, views, parameters, load state."""
  try:
    spec = registry.spec(model_id)
  except RegistryError as e:
    return f"**No model.** {e}"
  views = spec.num_context_views
  state = ("loaded" if registry.is_loaded(spec.model_id) else
           "loads on first use" if spec.available else
           "installed copy unusable" if spec.problem else
           f"not downloaded ({fetch.format_bytes(spec.download_bytes)})")
  parts = [
      f"**{spec.title or spec.label}**",
      spec.kind or "kind known after loading",
      f"{spec.image_size} px" if spec.image_size else "resolution known "
                                                        "after loading",
      (f"{views} context view{'s' if views != 1 else ''}" if views
       else "views known after loading"),
      (f"{format_parameters(spec.num_parameters)} parameters"
       if spec.num_parameters else "size known after loading"),
      *([f"{spec.render_output} renderer: any output size"]
        if spec.renders_any_size else []),
      state,
  ]
  return " · ".join(parts)


def resolution_options(spec: Optional[ModelSpec],
                       limits: Limits = uploads.DEFAULT_LIMITS
                       ) -> dict[str, Any]:
  """The resolution dropdown's ``choices``, ``value`` and ``info`` for a
  model (a model not known to have the flow renderer gets today's choices).

  Values are ``"native"`` or a size in pixels; labels say what they mean.
  """
  if spec is None or not spec.renders_any_size:
    return {"choices": [(NATIVE, NATIVE)] + [(str(s), str(s))
                                              for s in RGB_RESOLUTIONS],
            "value": NATIVE,
            "info": "the model renders at this size (a multiple of its patch "
                    "size); native = the size it was trained at"}
  sizes = sorted({s for s in FLOW_OUTPUT_SIZES if s <= limits.max_output_size}
                 | ({spec.image_size} if spec.image_size else set()))
  labels = {spec.image_size: "the model's size"}
  return {"choices": [(f"{NATIVE} (the photo's size, at most "
                       f"{DEFAULT_MAX_OUTPUT_SIZE})", NATIVE)] + [
                           (f"{s} ({labels[s]})" if s in labels else str(s),
                            str(s)) for s in sizes],
          "value": NATIVE,
          "info": "output size: the model runs at its own size"
                  + (f" ({spec.image_size} px)" if spec.image_size else "")
                  + " and samples its output from your photo at this size"}


def path_mode_options(spec: Optional[ModelSpec]) -> dict[str, Any]:
  """The "Camera path" radio's ``choices``, ``value`` and ``visible`` for a
  model: shown only for models that replay more than the reference path
  (the warp renderer), at the model's default
  (``camera_path.default_mode``); hidden, at "reference", otherwise."""
  modes = spec.path_modes if spec is not None else ("reference",)
  return {"choices": [(PATH_MODE_LABELS[m], m)
                      for m in camera_paths.CAMERA_PATH_MODES],
          "value": spec.default_path_mode if spec is not None else "reference",
          "visible": len(modes) > 1}


def start_failure_line(title: str, error: str) -> str:
  """The page's note about a start-up fetch that failed."""
  return (f"**{title} could not be fetched at start**: {error}  \n"
          "Meanwhile the other models in the list work; the server's log "
          "says what its owner can do.")


@dataclasses.dataclass
class ModelPicker:
  """The model row's handlers.

  Attributes:
    registry: the models on offer.
    downloads: background downloads of the published models (None: the app
      offers none).
    limits: input bounds (the resolutions a flow model offers).
    page_default: the picker's value when the page was built (set by the
      layout).
  """
  registry: ModelRegistry
  downloads: Optional[Downloads] = None
  limits: Limits = uploads.DEFAULT_LIMITS
  page_default: Optional[str] = None

  def can_download(self, spec: Optional[ModelSpec]) -> bool:
    """Whether the page offers Download for ``spec`` (a published model that
    is not usable here: not downloaded, or its installed copy broken)."""
    return (spec is not None and not spec.available and
            spec.published is not None and self.downloads is not None and
            self.downloads.page_allowed)

  def _start_failures(self) -> dict[str, str]:
    """Model name -> the note of its start-up fetch, for those that
    failed."""
    if self.downloads is None:
      return {}
    notes = {}
    for status in self.downloads.failed_at_start():
      model = self.downloads.models.get(status.name)
      title = model.title if model is not None else status.name
      notes[status.name] = start_failure_line(title, status.error)
    return notes

  def _way_to_get(self, spec: ModelSpec) -> str:
    """How a published model that is not usable here becomes usable."""
    status = (self.downloads.status(spec.published)
              if self.downloads is not None else None)
    if status is not None and (status.running or status.error):
      return status.describe()
    if spec.problem:
      broken = f"The installed copy cannot be used ({spec.problem})."
      if self.can_download(spec):
        return f"{broken} Press **Download** to reinstall it."
      return (f"{broken} The server's operator can reinstall it with "
              f"`{reinstall_command(spec.published)}`.")
    if self.can_download(spec):
      return "Press **Download** to fetch it once; it is then kept."
    return ("Downloads from the page are turned off on this server; its "
            f"operator can run `python -m xfactor_core.fetch "
            f"{spec.published}`.")

  def line(self, model_id: Optional[str]) -> str:
    """The model's line, with a published model's way to get it and any
    start-up fetch that failed."""
    lines = [model_facts(self.registry, model_id)]
    try:
      spec = self.registry.spec(model_id)
    except RegistryError:
      spec = None
    failures = self._start_failures()
    if spec is not None and not spec.available and spec.published:
      way = self._way_to_get(spec)
      # The chosen model's own start-up failure replaces its plain error.
      lines.append(failures.pop(spec.published, way))
    lines += failures.values()
    return "  \n".join(lines)

  def describe_model(self, form: dict[str, Any]) -> dict[str, Any]:
    """Model picker: the model's line (kind, size, views, load state), the
    resolutions it offers (reset to native), the camera path choice (warp
    models only, at their default), and Download for a published model that
    is not usable yet."""
    try:
      spec = self.registry.spec(form.get("model"))
    except RegistryError:
      spec = None
    return {"model_info": self.line(form.get("model")),
            "resolution": gr.update(**resolution_options(spec, self.limits)),
            "path_mode": gr.update(**path_mode_options(spec)),
            "download": gr.update(visible=self.can_download(spec))}

  def select(self, model_id: Optional[str]) -> dict[str, Any]:
    """The model row for ``model_id``, with every label as it is now."""
    update = self.describe_model({"model": model_id})
    update["model"] = gr.update(choices=self.registry.choices(),
                                value=model_id)
    return update

  def refresh_models(self, form: dict[str, Any]) -> dict[str, Any]:
    """Page load: the picker's labels as the models are now, and the poll
    timer on while downloads run. A page still on the model it was built
    with moves to today's default (a published model downloaded since the
    server started); a model the visitor picked already stays."""
    shown = form.get("model")
    chosen = shown
    if chosen is None or chosen == self.page_default:
      chosen = self.registry.default_id
    update = self.select(chosen)
    if chosen == shown:  # labels only: a pick made meanwhile is kept
      update["model"] = gr.update(choices=self.registry.choices())
    update["download_timer"] = gr.Timer(active=bool(
        self.downloads is not None and self.downloads.running()))
    return update

  def poll_downloads(self, form: dict[str, Any]) -> dict[str, Any]:
    """Timer tick while downloads run: the picker's labels and the chosen
    model's line; the timer stops once no download runs."""
    running = self.downloads is not None and bool(self.downloads.running())
    update = self.select(form.get("model"))
    update["download_timer"] = gr.Timer(active=running)
    return update

  @reports_errors
  def download_model(self, form: dict[str, Any],
                     progress: gr.Progress = gr.Progress()
                     ) -> Iterator[dict[str, Any]]:
    """Download button: fetches the chosen published model (or joins its
    download; a broken install is reinstalled), streaming its progress,
    then selects it."""
    spec = self.registry.spec(form.get("model"))
    if spec.available:
      yield self.select(spec.model_id)
      return
    if spec.published is None or self.downloads is None:
      raise InputError(f"{spec.label} cannot be downloaded by the app")
    name = spec.published
    status = self.downloads.start(name, from_page=True)
    while status.running:
      update = status.progress
      if update is not None and update.fraction is not None:
        progress(update.fraction, desc=update.describe())
      else:
        progress(None, desc=status.describe())
      yield {"model_info": self.line(spec.model_id)}
      time.sleep(DOWNLOAD_POLL_SECONDS)
      status = self.downloads.status(name)
    if status.error:
      raise DownloadError(status.error)
    gr.Info(f"{self.registry.spec(spec.model_id).label} is downloaded and "
            "selected.")
    yield self.select(spec.model_id)
