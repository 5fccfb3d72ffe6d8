"""How the handlers' exceptions reach a visitor.

A user problem (bad input, a model that cannot be used, a refused download)
becomes a ``gr.Error`` titled after its kind, whose message names the fix;
anything else is logged with its traceback and reported as unexpected, and
the server keeps running. :func:`reports_errors` applies this to a handler,
function or generator.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Callable

import gradio as gr

from xfactor_core import checkpoints
from xfactor_core.app.downloads import DownloadError
from xfactor_core.app.registry import RegistryError
from xfactor_core.app.uploads import InputError
from xfactor_core.inference.media import MediaError
from xfactor_core.inference.model_frames import FrameError
from xfactor_core.inference.pipeline import TransferError

USER_ERRORS = (InputError, RegistryError, TransferError, MediaError,
               FrameError, checkpoints.CheckpointError, DownloadError)


def user_error(error: Exception) -> gr.Error:
  """A user problem as a ``gr.Error`` titled after its kind."""
  return gr.Error(str(error), title=type(error).__name__.replace(
      "Error", " problem").strip())


def unexpected(error: Exception) -> gr.Error:
  """Any other exception: logged with its traceback, reported briefly."""
  logging.exception("unexpected error in a handler")
  return gr.Error(f"unexpected {type(error).__name__}: {error}. The server "
                  "is fine; check the inputs or report this message.",
                  title="Something went wrong")


def as_gradio_error(error: Exception) -> gr.Error:
  """A user problem becomes a named ``gr.Error``; anything else is logged and
  reported as unexpected, and the server keeps running."""
  if isinstance(error, gr.Error):
    return error
  if isinstance(error, USER_ERRORS):
    return user_error(error)
  return unexpected(error)


def reports_errors(handler: Callable) -> Callable:
  """Decorates a handler (function or generator) so that what it raises
  reaches the user as a ``gr.Error``."""
  if inspect.isgeneratorfunction(handler):
    @functools.wraps(handler)
    def stream(*args, **kwargs):
      try:
        yield from handler(*args, **kwargs)
      except Exception as e:  # keep the server up, tell the user
        raise as_gradio_error(e) from e
    return stream

  @functools.wraps(handler)
  def call(*args, **kwargs):
    try:
      return handler(*args, **kwargs)
    except Exception as e:  # keep the server up, tell the user
      raise as_gradio_error(e) from e
  return call
