"""The gate every event's values pass before Gradio reads any of them.

A caller controls the JSON of every event of a Gradio app: the documented
API, the undocumented endpoints and the private ones alike (the page calls
these by index, and so can anyone). A file value in that JSON names a path
on the server, and Gradio copies the file it names into its cache (from where
anyone who knows the URL can fetch it) before a handler runs; Gradio's own
check of that path depends on how the app was started (``launch()`` checks,
an app mounted in FastAPI does not). So the app checks every event's raw
values itself, in :meth:`GatedBlocks.preprocess_data`, before Gradio's own
processing:

* every file value must name a file that, after resolving symlinks and
  ``..``, lies in this server's upload folder or among the shipped presets
  (:meth:`uploads.UploadPolicy.check`); anything else is refused with
  "files must be uploaded; server paths are not accepted" and logged, and
  nothing of it is read;
* a file widget takes file values only (no bare strings or numbers), and one
  event names at most ``Limits.max_files`` files;
* a number widget takes finite numbers only; a text value is at most
  ``Limits.max_text_chars`` long.

An event's validator (Gradio runs it before the event joins the queue; the
``/transfer`` API's estimates the wait) passes the same gate: a refused call
reaches it as ``None`` values, and the event itself then refuses it.

A caller that sends fewer values than an event has inputs gets the defaults
of the handler's trailing parameters for the rest (:func:`with_defaults`), so
a parameter added at the end of a public endpoint, with a default, leaves
earlier callers working (Gradio itself would refuse the short call).

Ranges (frames, fps, strength, ...) are the widgets' and the handlers'
business; their refusals are ``gr.Error`` messages too.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import pathlib
from typing import Any, Iterator, Sequence, Union

import gradio as gr

from xfactor_core.app import uploads
from xfactor_core.app.uploads import InputError, Limits, UploadPolicy

PathLike = Union[str, os.PathLike]
FILE_WIDGETS = tuple(getattr(gr, name) for name in (
    "File", "Image", "Video", "Audio", "Gallery", "Model3D", "UploadButton",
    "ImageEditor", "MultimodalTextbox") if hasattr(gr, name))
NUMBER_WIDGETS = (gr.Number, gr.Slider)


def _name(component: Any) -> str:
  label = getattr(component, "label", None) or getattr(component, "elem_id",
                                                       None)
  return str(label or type(component).__name__)


def _is_file_value(value: Any) -> bool:
  """A dict Gradio may read as a file (FileData and its kin)."""
  return isinstance(value, dict) and ("path" in value or "url" in value)


def _file_values(value: Any) -> Iterator[Any]:
  """Every file dict inside a value (lists and dicts walked)."""
  if _is_file_value(value):
    yield value
  elif isinstance(value, dict):
    for item in value.values():
      yield from _file_values(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _file_values(item)


def _texts(value: Any) -> Iterator[str]:
  if isinstance(value, str):
    yield value
  elif isinstance(value, dict):
    for item in value.values():
      yield from _texts(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _texts(item)


def _check_file_widget_shape(value: Any, name: str) -> None:
  """A file widget's value: None, a file dict, or a list of them."""
  items = value if isinstance(value, (list, tuple)) else [value]
  for item in items:
    if item is None or isinstance(item, dict):
      continue
    logging.warning("refused %r for the file widget %r", item, name)
    shown = "a text" if isinstance(item, str) else type(item).__name__
    raise InputError(f"{uploads.REFUSAL}: {name} expects an uploaded file, "
                     f"got {shown}; upload the file through the page or with "
                     "gradio_client's handle_file")


def _check_number(value: Any, name: str) -> None:
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      not math.isfinite(value)):
    raise InputError(f"{name} must be a finite number, got {value!r:.40}")


def check_event(components: Sequence[Any], values: Sequence[Any],
                policy: UploadPolicy, limits: Limits = uploads.DEFAULT_LIMITS
                ) -> None:
  """Checks the raw values of one event against its input components.

  Raises:
    InputError: the first value the app refuses (see the module docstring).
  """
  files = 0
  for component, value in zip(components, values):
    if getattr(component, "stateful", False):
      continue  # gr.State: Gradio uses the server's value, not the caller's
    name = _name(component)
    for text in _texts(value):
      if len(text) > limits.max_text_chars:
        raise InputError(f"a text of {len(text)} characters was given for "
                         f"{name}; the app takes at most "
                         f"{limits.max_text_chars}")
    if isinstance(component, FILE_WIDGETS):
      _check_file_widget_shape(value, name)
    elif isinstance(component, NUMBER_WIDGETS):
      _check_number(value, name)
    for file_value in _file_values(value):
      files += 1
      if files > limits.max_files:
        raise InputError(f"more than {limits.max_files} files in one request; "
                         "the app takes at most that many: send fewer")
      policy.check(file_value.get("path"), f"{name} file")


def with_defaults(fn: Any, num_inputs: int, values: Sequence[Any]) -> list:
  """``values`` padded with the defaults of ``fn``'s trailing parameters.

  Only for a function that takes its inputs as positional parameters (the
  public API's), and only when every missing one has a default; otherwise
  ``values`` comes back as it is (and Gradio refuses a short call).
  """
  values = list(values)
  if len(values) >= num_inputs or fn is None:
    return values
  try:
    parameters = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError):
    return values
  positional = [p for p in parameters if p.kind in (
      inspect.Parameter.POSITIONAL_ONLY,
      inspect.Parameter.POSITIONAL_OR_KEYWORD)]
  if len(positional) < num_inputs:
    return values
  missing = positional[len(values):num_inputs]
  if any(p.default is inspect.Parameter.empty for p in missing):
    return values
  return values + [p.default for p in missing]


class GatedBlocks(gr.Blocks):
  """``gr.Blocks`` whose every event passes :func:`check_event` first.

  Args:
    shipped_roots: folders of shipped files a caller may name (the presets).
    limits: the bounds of :func:`check_event`.
    **kwargs: ``gr.Blocks`` arguments.
  """

  def __init__(self, *, shipped_roots: Sequence[PathLike] = (),
               limits: Limits = uploads.DEFAULT_LIMITS, **kwargs: Any):
    super().__init__(**kwargs)
    self.upload_policy = UploadPolicy(
        upload_root=pathlib.Path(self.GRADIO_CACHE),
        shipped_roots=tuple(pathlib.Path(r) for r in shipped_roots))
    self.limits = limits

  async def preprocess_data(self, block_fn, inputs, state,
                            explicit_call: bool = False):
    """Gradio's preprocessing, after :func:`check_event` passed (a short
    call first padded by :func:`with_defaults`)."""
    inputs = with_defaults(block_fn.fn, len(block_fn.inputs), inputs)
    try:
      check_event(block_fn.inputs, inputs, self.upload_policy, self.limits)
    except InputError as e:  # logged where refused; no traceback needed
      if getattr(block_fn, "is_validator_function", False):
        # An event's validator (run before the event is queued) gets no
        # value of a refused call, nothing of it is read, and the event
        # itself then refuses it with the message above.
        return [None] * len(block_fn.inputs)
      raise gr.Error(str(e), title="Input refused",
                     print_exception=False) from e
    return await super().preprocess_data(block_fn, inputs, state,
                                         explicit_call)
