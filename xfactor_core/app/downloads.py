"""Downloads of the published models while the app serves.

One background thread per model runs :func:`xfactor_core.fetch.fetch`; the
page's Download button and the start-up fetch of a Space
(``XFACTOR_FETCH_AT_START``) both go through :meth:`Downloads.start`, which
joins a download already running instead of starting another (and the fetch
lock keeps other processes out). When a download ends its model is made
usable in the registry; the page polls :meth:`Downloads.status`.

A model whose installed copy cannot be used (a half-finished or damaged
install) is removed first and downloaded again: that is what the page's
Download button and the advice ``python -m xfactor_core.fetch NAME --force``
do. A start-up fetch that fails is logged with what the server's owner can
do (:func:`owner_advice`); the page says that it failed, and why.

Only the models of the fetch table can be downloaded, from their configured
addresses: a visitor names a model, never a URL. ``XFACTOR_PAGE_DOWNLOADS=0``
turns the page's Download off (a public server's disk is the operator's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import threading
from typing import Mapping, Optional, Sequence, Union

from xfactor_core import fetch
from xfactor_core.app import registry as registry_lib
from xfactor_core.app.registry import ModelRegistry

PathLike = Union[str, os.PathLike]
FETCH_AT_START_ENV = "XFACTOR_FETCH_AT_START"
PAGE_DOWNLOADS_ENV = "XFACTOR_PAGE_DOWNLOADS"


class DownloadError(ValueError):
  """A download that may not or cannot start (with the reason)."""


@dataclasses.dataclass(frozen=True)
class DownloadStatus:
  """Where the download of one model stands.

  Attributes:
    name: the fetch name (``sm``, ``mv``).
    running: whether its thread is working.
    progress: the latest progress report, if any.
    error: the message of a failed download.
    path: the installed folder once done.
    at_start: whether the start-up fetch (``XFACTOR_FETCH_AT_START``)
      started it.
  """
  name: str
  running: bool = False
  progress: Optional[fetch.Progress] = None
  error: Optional[str] = None
  path: Optional[pathlib.Path] = None
  at_start: bool = False

  def describe(self) -> str:
    """One line for the page."""
    if self.error:
      return f"Download of {self.name} failed: {self.error}"
    if self.path is not None:
      return f"{self.name} is downloaded and ready."
    if self.progress is not None:
      line = self.progress.describe()
      return line[:1].upper() + line[1:]
    return f"Starting the download of {self.name} ..." if self.running else ""


def names_from_env(value: Optional[str],
                   table: Mapping[str, fetch.PublishedModel]) -> list[str]:
  """``"sm,mv"`` / ``"all"`` / ``""`` -> model names (unknown ones raise)."""
  if not value or not value.strip():
    return []
  names = [n.strip() for n in value.split(",") if n.strip()]
  if names == ["all"]:
    return list(table)
  unknown = [n for n in names if n not in table]
  if unknown:
    raise DownloadError(f"{FETCH_AT_START_ENV} names {', '.join(unknown)}; "
                        f"use all or a list of {', '.join(table)}")
  return names


def owner_advice(model: fetch.PublishedModel) -> str:
  """What a server's owner can do when the start-up fetch of ``model``
  failed: check its address, host a mirror, or turn the fetch off."""
  name, variable = model.name, model.url_env
  return (f"What the owner of this server can do: check the address "
          f"({model.url}; {variable} sets another); host a mirror: on a "
          f"machine where {name} is installed run python -m xfactor_core.fetch "
          f"--export {name} {name}.zip, upload {name}.zip to a Hugging Face "
          f"model repository and set {variable}=https://huggingface.co/"
          f"USER/REPO/resolve/main/{name}.zip; or turn the start-up fetch "
          f"off (remove {name} from {FETCH_AT_START_ENV}). Meanwhile the page "
          "offers the other models of its list.")


def page_downloads_allowed(environ: Optional[Mapping[str, str]] = None
                           ) -> bool:
  """``XFACTOR_PAGE_DOWNLOADS`` (default on); 0, false, no or off turn the
  page's Download button off."""
  env = os.environ if environ is None else environ
  return env.get(PAGE_DOWNLOADS_ENV, "1").strip().lower() not in (
      "0", "false", "no", "off")


class Downloads:
  """Background downloads of the published models for one app.

  Args:
    registry: the app's models; a finished download refreshes its entry.
    models: the fetch table (name -> :class:`fetch.PublishedModel`).
    root: the model cache (default :func:`fetch.cache_root`).
    page_allowed: whether visitors may start downloads from the page.
  """

  def __init__(self, registry: ModelRegistry,
               models: Mapping[str, fetch.PublishedModel], *,
               root: Optional[PathLike] = None, page_allowed: bool = True):
    self.registry = registry
    self.models = dict(models)
    self.root = pathlib.Path(root) if root is not None else fetch.cache_root()
    self.page_allowed = page_allowed
    self._lock = threading.Lock()
    self._status: dict[str, DownloadStatus] = {}
    self._threads: dict[str, threading.Thread] = {}

  def status(self, name: str) -> DownloadStatus:
    with self._lock:
      return self._status.get(name, DownloadStatus(name))

  def running(self) -> list[str]:
    with self._lock:
      return [n for n, s in self._status.items() if s.running]

  def start(self, name: str, *, from_page: bool = False,
            at_start: bool = False) -> DownloadStatus:
    """Starts downloading ``name`` in the background, or joins the download
    already running; a model already installed just refreshes its entry,
    and one whose installed copy cannot be used is reinstalled.

    ``at_start`` marks the start-up fetch (its failure is shown in the page
    whatever model is chosen).

    Raises:
      DownloadError: an unknown name, or a page request when the server
        turned page downloads off.
    """
    if name not in self.models:
      raise DownloadError(f"{name!r} is not a published model; the page can "
                          f"download {', '.join(self.models)} only")
    if from_page and not self.page_allowed:
      raise DownloadError(
          "downloads from the page are turned off on this server "
          f"({PAGE_DOWNLOADS_ENV}=0); its operator can fetch the model with "
          f"python -m xfactor_core.fetch {name}")
    with self._lock:
      current = self._status.get(name)
      if current is not None and current.running:
        return current
      self._status[name] = DownloadStatus(name, running=True,
                                          at_start=at_start)
      thread = threading.Thread(target=self._run, args=(name,), daemon=True,
                                name=f"fetch-{name}")
      self._threads[name] = thread
    thread.start()
    return self.status(name)

  def start_all(self, names: Sequence[str]) -> None:
    """The start-up fetch: each of ``names`` in the background."""
    for name in names:
      self.start(name, at_start=True)

  def failed_at_start(self) -> list[DownloadStatus]:
    """The start-up fetches that failed (their status holds the reason)."""
    with self._lock:
      return [s for s in self._status.values() if s.at_start and s.error]

  def wait(self, name: str, timeout: Optional[float] = None) -> DownloadStatus:
    """Blocks until the download of ``name`` ends (for tests and scripts)."""
    with self._lock:
      thread = self._threads.get(name)
    if thread is not None:
      thread.join(timeout)
    return self.status(name)

  def _report(self, name: str, progress: fetch.Progress) -> None:
    with self._lock:
      self._status[name] = dataclasses.replace(self._status[name],
                                               progress=progress)

  def _reinstall_if_broken(self, model: fetch.PublishedModel) -> None:
    """Removes an installed copy that cannot be used, so that the fetch
    below installs the model again (the fetch returns an installed folder
    as it is)."""
    problem = registry_lib.published_spec(model, self.root).problem
    if problem is not None:
      logging.warning("reinstalling %s: its installed copy cannot be used "
                      "(%s)", model.name, problem)
      fetch.remove(model.name, self.root)

  def _run(self, name: str) -> None:
    model = self.models[name]
    at_start = self.status(name).at_start
    try:
      self._reinstall_if_broken(model)
      path = fetch.fetch(name, root=self.root, url=model.url,
                         progress=lambda p: self._report(name, p))
      spec = self.registry.refresh_published(model, self.root)
      if spec.problem is not None:
        raise fetch.FetchError(f"the installed {name} cannot be used "
                               f"({spec.problem}); reinstall it with "
                               f"{registry_lib.reinstall_command(name)}")
      final = DownloadStatus(name, path=path, at_start=at_start)
    except fetch.FetchError as e:
      final = DownloadStatus(name, error=str(e), at_start=at_start)
      logging.error("download of %s failed: %s", name, e)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("download of %s failed", name)
      final = DownloadStatus(name, error=f"{type(e).__name__}: {e}",
                             at_start=at_start)
    if final.error and at_start:
      logging.error("the start-up fetch of %s (%s) failed. %s", name,
                    FETCH_AT_START_ENV, owner_advice(model))
    with self._lock:
      self._status[name] = final
