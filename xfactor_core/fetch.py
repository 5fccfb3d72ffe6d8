"""The published XFactor checkpoints, one step away: fetch, verify, cache.

    python -m xfactor_core.fetch sm             # stereo-monocular (mv; all)
    python -m xfactor_core.fetch sm --url https://mirror.example/sm.zip
    python -m xfactor_core.fetch mv --url ~/Downloads/multiview.zip
    python -m xfactor_core.fetch sm --force     # reinstall
    python -m xfactor_core.fetch --export sm sm.zip   # a params-only mirror
    python -m xfactor_core.fetch --list
    python -m xfactor_core.fetch --remove sm

The published release gives each model as a zip archive of its training
folder: ``checkpoints-0/`` with the whole train state (params, optimiser
moments, LPIPS weights, ...). A fetch

1. takes a lock (``filelock``: Linux, macOS and Windows), so that a second
   process asking for the same model waits for the first download instead of
   starting another, and returns at once when the model is installed already;
   leftovers of a killed fetch or removal are cleared first;
2. checks the free disk space, then downloads the archive with a progress bar,
   hashing it (SHA-256) as the bytes arrive. An interrupted download resumes
   with an HTTP Range request (re-hashing only the kept prefix); a cut
   connection and the answers 408, 429 and 5xx are retried with backoff,
   honouring ``Retry-After``; a server that ignores Range, or answers it with
   an inconsistent ``Content-Range``, restarts the download from zero (or
   continues at the right byte), never appends the wrong bytes;
3. verifies the archive: the known digest (when the address is the table's,
   or a digest was given with the override), a zip whose checkpoint member's
   CRC holds, whose params tree has every path and shape of the model it
   claims to be (for the published models: the published tree);
4. keeps only what inference needs: the params, streamed out of the zip member
   and written as a clu checkpoint with a ``model.json``. The archive is never
   held in memory: the measured peak RSS of the whole fetch of the published
   model (3.66 GB archive, 1.22 GB params) is 2.5 GB, about twice the params
   (benchmarks/README.md);
5. installs atomically: files are fsynced, then the model folder is renamed
   into place (an existing one is renamed aside first, then deleted), so it
   appears whole or not at all. A model counts as installed only when its
   weights file is there at its recorded size.

Where models live: ``$XFACTOR_HOME`` or, without it, ``$XDG_CACHE_HOME/xfactor``
(``~/.cache/xfactor``): ``models/<name>/`` for installed models, ``downloads/``
for interrupted downloads. The addresses are the table ``PUBLISHED`` below;
``XFACTOR_SM_URL`` / ``XFACTOR_MV_URL`` (or ``--url``) point a model at a
mirror or a local zip (with ``XFACTOR_SM_SHA256`` / ``--sha256`` its digest),
and ``XFACTOR_SOURCES`` names a JSON file that overrides any field of the
table (how the tests serve tiny models).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import email.utils
import errno
import hashlib
import http.client
import json
import logging
import os
import pathlib
import re
import shutil
import socket
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import (Any, Callable, Iterator, Mapping, Optional, Sequence,
                    TypeVar, Union)

import filelock

from xfactor_core import checkpoints

PathLike = Union[str, os.PathLike]
T = TypeVar("T")
HOME_ENV = "XFACTOR_HOME"
SOURCES_ENV = "XFACTOR_SOURCES"
# Names a point of the fetch (download, convert, install, remove) at which the
# process ends at once, as a kill would end it: how the tests check that every
# half state left behind is repaired. Never set it outside tests.
TEST_KILL_ENV = "XFACTOR_FETCH_TEST_KILL"
KILLED_EXIT = 137
CHUNK_BYTES = 1 << 20
DISK_MARGIN_BYTES = 256 << 20
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")  # C:\..., \\server\...
_WEB_PAGE_TYPES = ("text/html", "application/xhtml+xml")
_WEB_PAGE_START = (b"<!doctype html", b"<html", b"<head", b"<!--")
# Answers that say "not now" rather than "never": retried with backoff.
_TRANSIENT = frozenset({408, 425, 429}) | frozenset(range(500, 600))
_sleep = time.sleep  # the tests replace it to see the waits


class FetchError(RuntimeError):
  """A model could not be fetched; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class PublishedModel:
  """One published checkpoint: where it is and what it must hold.

  Attributes:
    name: the short name used everywhere (``sm``, ``mv``).
    title: the display name.
    url: the archive's address (http(s), ``file://`` or a local path).
    num_context_views: context views the model was trained with.
    image_size: the frame size it was trained at.
    config: the model its params must match exactly; ``None`` accepts any
      tree that is consistent with the configuration read off it.
    sha256: the archive's digest, checked when known. It belongs to the
      archive at ``url``: an override of the address drops it (unless the
      override gives its own).
  """
  name: str
  title: str
  url: str
  num_context_views: int
  image_size: int = 256
  config: Optional[checkpoints.ModelConfig] = checkpoints.PUBLISHED_CONFIG
  sha256: Optional[str] = None

  @property
  def kind(self) -> str:
    return checkpoints.model_kind(self.num_context_views)

  @property
  def url_env(self) -> str:
    return f"XFACTOR_{self.name.upper()}_URL"

  @property
  def sha256_env(self) -> str:
    return f"XFACTOR_{self.name.upper()}_SHA256"

  @property
  def installed_bytes(self) -> Optional[int]:
    """Bytes the installed params take (float32), when the config is known."""
    if self.config is None:
      return None
    return 4 * checkpoints.parameter_count(self.config)


PUBLISHED = {
    "sm": PublishedModel(
        name="sm", title="XFactor stereo-monocular (published)",
        url="https://www.dropbox.com/scl/fi/4cuw2esx0ofjgpqj4cbiz/"
            "stereo_monocular.zip?rlkey=ixdaaqzae9heh0i2tc4wxvz24&dl=1",
        num_context_views=1),
    "mv": PublishedModel(
        name="mv", title="XFactor multi-view (published)",
        url="https://www.dropbox.com/scl/fi/3qkm7knlkznfajg4w75i5/"
            "multiview.zip?rlkey=lsk7islgffgaa2dxwshfvpxqc&dl=1",
        num_context_views=5),
}


def sources(environ: Optional[Mapping[str, str]] = None
            ) -> dict[str, PublishedModel]:
  """The table of published models with the environment's overrides.

  ``XFACTOR_SOURCES`` names a JSON file ``{"sm": {"url": ..., "config": {...}
  or null, "image_size": ..., "num_context_views": ..., "sha256": ...,
  "title": ...}, ...}`` whose fields replace the table's; then
  ``XFACTOR_<NAME>_URL`` replaces a model's address and
  ``XFACTOR_<NAME>_SHA256`` its digest. A digest belongs to the archive it was
  taken from: a new address without a digest of its own has none (the params
  tree is still verified).

  Raises:
    FetchError: the sources file is missing or malformed.
  """
  env = os.environ if environ is None else environ
  table = dict(PUBLISHED)
  if env.get(SOURCES_ENV):
    file = pathlib.Path(env[SOURCES_ENV]).expanduser()
    try:
      overrides = json.loads(file.read_text())
      for name, fields in overrides.items():
        fields = dict(fields)
        if "config" in fields and fields["config"] is not None:
          fields["config"] = checkpoints.ModelConfig.from_dict(fields["config"])
        base = table.get(name) or PublishedModel(
            name=name, title=f"XFactor {name}", url="", num_context_views=1)
        if fields.get("url", base.url) != base.url:
          fields.setdefault("sha256", None)
        table[name] = dataclasses.replace(base, name=name, **fields)
    except (OSError, ValueError, TypeError, AttributeError) as e:
      raise FetchError(f"{SOURCES_ENV}={file} cannot be used ({e}); it must "
                       "be a JSON object of model name -> fields of "
                       "xfactor_core.fetch.PublishedModel") from e
  for name, model in table.items():
    if env.get(model.url_env) and env[model.url_env] != model.url:
      model = dataclasses.replace(model, url=env[model.url_env], sha256=None)
    if env.get(model.sha256_env):
      model = dataclasses.replace(model, sha256=env[model.sha256_env].lower())
    table[name] = model
  return table


def source(name: str, environ: Optional[Mapping[str, str]] = None
           ) -> PublishedModel:
  """The published model ``name`` (raises FetchError naming the choices)."""
  table = sources(environ)
  if name not in table:
    raise FetchError(f"unknown model {name!r}: the published models are "
                     f"{', '.join(sorted(table))}")
  return table[name]


def cache_root(environ: Optional[Mapping[str, str]] = None) -> pathlib.Path:
  """``$XFACTOR_HOME``, else ``$XDG_CACHE_HOME/xfactor``, else
  ``~/.cache/xfactor``."""
  env = os.environ if environ is None else environ
  if env.get(HOME_ENV):
    return pathlib.Path(env[HOME_ENV]).expanduser()
  cache = env.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return pathlib.Path(cache) / "xfactor"


def format_bytes(count: Optional[float]) -> str:
  """``1234567`` -> ``"1.2 MB"`` (decimal units, as disks are sold)."""
  if count is None:
    return "unknown size"
  for unit in ("B", "kB", "MB", "GB", "TB"):
    if abs(count) < 1000 or unit == "TB":
      return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
    count /= 1000
  raise AssertionError("unreachable")


# ------------------------------------------------- files, on every system --


def _test_kill(point: str, handle: Any = None) -> None:
  """Ends the process at once, as a kill would, when the tests ask for
  ``point`` (``$XFACTOR_FETCH_TEST_KILL``); ``handle``'s buffer is flushed
  first, as the OS would have flushed it some time before a kill."""
  if os.environ.get(TEST_KILL_ENV) != point:
    return
  if handle is not None:
    handle.flush()
  logging.warning("test kill at %s", point)
  logging.shutdown()
  os._exit(KILLED_EXIT)  # no cleanup, no finally blocks: like SIGKILL


def _retrying(action: Callable[[], T], tries: int = 7,
              wait: float = 0.05) -> T:
  """``action()``, tried again for about 3 s while it raises PermissionError:
  Windows refuses to rename or delete a file that another process (a virus
  scanner, an indexer, a reader) holds open for a moment."""
  for attempt in range(tries):
    try:
      return action()
    except PermissionError:
      if attempt == tries - 1:
        raise
      _sleep(wait * 2 ** attempt)
  raise AssertionError("unreachable")


def _rename(source: pathlib.Path, target: pathlib.Path) -> None:
  """``os.replace`` (atomic; replaces a file, never a folder), retried while
  Windows holds either name open."""
  _retrying(lambda: os.replace(source, target))


def _writable_again(function: Callable[[str], Any], path: str,
                    _: Any) -> None:
  """``rmtree``'s error handler: Windows will not delete a read-only file, so
  make it writable and try once more."""
  os.chmod(path, stat.S_IWRITE | stat.S_IREAD)
  function(path)


def _delete_tree(folder: pathlib.Path) -> None:
  """Deletes a folder (read-only files too; retried while Windows holds a
  file of it open)."""
  handler = "onexc" if sys.version_info >= (3, 12) else "onerror"
  if folder.exists():
    _retrying(lambda: shutil.rmtree(folder, **{handler: _writable_again}))


def _move_aside(folder: pathlib.Path, why: str) -> pathlib.Path:
  """Renames ``folder`` to a hidden sibling ``.<name>.<why>-<pid>`` (which no
  reader takes for a model) and returns the new path."""
  aside = folder.with_name(f".{folder.name}.{why}-{os.getpid()}")
  _delete_tree(aside)
  _rename(folder, aside)
  return aside


def _write_json(file: pathlib.Path, data: Mapping[str, Any]) -> None:
  """Writes ``file`` whole or not at all (temporary file, fsync, rename)."""
  tmp = file.with_name(file.name + ".tmp")
  with open(tmp, "w") as handle:
    json.dump(data, handle)
    checkpoints.fsync_file(handle)
  _rename(tmp, file)


def _read_json(file: pathlib.Path) -> dict[str, Any]:
  """The JSON object in ``file``, or ``{}`` when it is missing or unreadable."""
  with contextlib.suppress(OSError, ValueError):
    data = json.loads(file.read_text())
    if isinstance(data, dict):
      return data
  return {}


# ------------------------------------------------------------ the cache --


@dataclasses.dataclass(frozen=True)
class CacheEntry:
  """What the cache holds for one model name.

  Attributes:
    name: the model's short name.
    path: its installed folder, or ``None``.
    installed_bytes: bytes on disk of the installed folder (0 if none).
    partial_bytes: bytes of an interrupted download (0 if none).
    expected_bytes: the whole archive's size when a download has seen it.
    info: the installed ``model.json`` (``{}`` if none).
    broken: a model folder is there but its weights are missing or short
      (an install or removal was cut); a fetch replaces it.
  """
  name: str
  path: Optional[pathlib.Path]
  installed_bytes: int = 0
  partial_bytes: int = 0
  expected_bytes: Optional[int] = None
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  broken: bool = False


def _models_dir(root: pathlib.Path) -> pathlib.Path:
  return root / "models"


def _part_file(root: pathlib.Path, name: str) -> pathlib.Path:
  return root / "downloads" / f"{name}.zip.part"


def _part_meta(part: pathlib.Path) -> pathlib.Path:
  return part.with_name(part.name + ".json")


def _folder_bytes(folder: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _root(root: Optional[PathLike],
          environ: Optional[Mapping[str, str]] = None) -> pathlib.Path:
  return pathlib.Path(root) if root is not None else cache_root(environ)


def _msgpack_map_start(byte: int) -> bool:
  return 0x80 <= byte <= 0x8f or byte in (0xde, 0xdf)


def weights_resolve(folder: PathLike) -> bool:
  """Whether ``folder`` holds a usable installed model: a ``model.json`` and
  the weights file it leads to, at the size the install recorded (or, for an
  install that recorded none, a non-empty flax msgpack map).

  Cheap (two stats and a byte): it is called for every model listed.
  """
  folder = pathlib.Path(folder)
  info = _read_json(folder / checkpoints.MODEL_INFO)
  if not info:
    return False
  try:
    file = checkpoints.resolve_checkpoint(folder)
    size = file.stat().st_size
    with open(file, "rb") as handle:
      head = handle.read(1)
  except (OSError, checkpoints.CheckpointError):
    return False
  recorded = (info.get("published") or {}).get("weights_bytes")
  if recorded is not None:
    return size == recorded
  return bool(head) and _msgpack_map_start(head[0])


def installed_path(name: str, root: Optional[PathLike] = None
                   ) -> Optional[pathlib.Path]:
  """The installed folder of model ``name``, or ``None``.

  A folder counts only when its weights resolve (:func:`weights_resolve`):
  installs are atomic renames, and a folder damaged by hand or by a cut
  removal is not installed (a fetch replaces it).
  """
  folder = _models_dir(_root(root)) / name
  return folder if weights_resolve(folder) else None


def cache_entry(name: str, root: Optional[PathLike] = None) -> CacheEntry:
  """What the cache holds for ``name``: installed folder, partial download."""
  root = _root(root)
  path = installed_path(name, root)
  part = _part_file(root, name)
  expected = _read_json(_part_meta(part)).get("total")
  info = _read_json(path / checkpoints.MODEL_INFO) if path else {}
  return CacheEntry(
      name=name, path=path,
      installed_bytes=_folder_bytes(path) if path else 0,
      partial_bytes=part.stat().st_size if part.is_file() else 0,
      expected_bytes=expected, info=info,
      broken=path is None and (_models_dir(root) / name).is_dir())


def checkpoint_path(value: PathLike, root: Optional[PathLike] = None,
                    environ: Optional[Mapping[str, str]] = None) -> PathLike:
  """A ``--checkpoint`` value with published names resolved.

  ``"sm"`` / ``"mv"`` (any name of :func:`sources`) that is not an existing
  path becomes the installed folder of that model; any other value is
  returned as it is.

  Raises:
    checkpoints.CheckpointError: the name's model is not installed (the
      message gives the fetch command).
    FetchError: the table of sources cannot be read.
  """
  text = os.fspath(value)
  table = sources(environ)
  if text not in table or pathlib.Path(text).exists():
    return value
  root = _root(root, environ)
  path = installed_path(text, root)
  if path is None:
    model = table[text]
    state = ("is not installed completely (its weights are missing or cut "
             "short: an install or a removal was interrupted)"
             if (_models_dir(root) / text).is_dir() else
             "is not downloaded yet")
    raise checkpoints.CheckpointError(
        f"the published model {text!r} ({model.title}) {state}; fetch it "
        f"once with: python -m xfactor_core.fetch {text} "
        f"({format_bytes(model.installed_bytes)} in {root})")
  return path


def _recover(root: pathlib.Path, name: str) -> None:
  """Repairs what a killed fetch or removal of ``name`` left (under the lock).

  A replaced model renamed aside (``.<name>.old-*``) whose replacement never
  arrived is renamed back; staging folders of cut installs and folders of cut
  removals are deleted.
  """
  models = _models_dir(root)
  if not models.is_dir():
    return
  final = models / name
  leftovers = sorted(models.glob(f".{name}.*"))
  for folder in leftovers:
    if (folder.name.startswith(f".{name}.old-") and not final.exists()
        and weights_resolve(folder)):
      logging.info("restoring %s, which a cut reinstall had moved aside", name)
      _rename(folder, final)
      continue
    logging.info("deleting %s, left by a cut fetch or removal", folder)
    _delete_tree(folder)


def remove(name: str, root: Optional[PathLike] = None) -> bool:
  """Deletes the installed model ``name`` and any partial download of it.

  The folder is renamed aside first, then deleted, so a kill midway leaves no
  half model under the model's name (the next fetch clears the rest).

  Returns:
    Whether anything was deleted.
  """
  root = _root(root)
  removed = False
  with _lock(root, name, on_wait=None):
    folder = _models_dir(root) / name
    if folder.exists():
      aside = _move_aside(folder, "removing")
      checkpoints.fsync_dir(folder.parent)
      _test_kill("remove")
      _delete_tree(aside)
      removed = True
    removed = _delete_leftovers(root, name) or removed
    part = _part_file(root, name)
    for file in (part, _part_meta(part)):
      if file.exists():
        _retrying(file.unlink)
        removed = True
  return removed


def _delete_leftovers(root: pathlib.Path, name: str) -> bool:
  """Deletes every hidden folder a cut fetch or removal of ``name`` left
  (a removal restores nothing); returns whether there was any."""
  models = _models_dir(root)
  leftovers = sorted(models.glob(f".{name}.*")) if models.is_dir() else []
  for folder in leftovers:
    _delete_tree(folder)
  return bool(leftovers)


# ------------------------------------------------------------ progress --


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where a fetch stands, for progress bars.

  Attributes:
    name: the model's short name.
    stage: ``"waiting"`` (for another process's download), ``"downloading"``,
      ``"verifying"``, ``"installing"`` or ``"done"``.
    done: bytes downloaded so far (of the archive).
    total: the archive's size, when known.
    rate: bytes per second of this download (0 when not downloading).
  """
  name: str
  stage: str
  done: int = 0
  total: Optional[int] = None
  rate: float = 0.0

  @property
  def fraction(self) -> Optional[float]:
    return self.done / self.total if self.total else None

  @property
  def seconds_left(self) -> Optional[float]:
    if not self.total or self.rate <= 0:
      return None
    return max(self.total - self.done, 0) / self.rate

  def describe(self) -> str:
    """One line: ``downloading sm: 1.2 GB of 3.4 GB, 45.0 MB/s, 49 s left``."""
    if self.stage in ("downloading", "waiting"):
      amount = format_bytes(self.done) + (
          f" of {format_bytes(self.total)}" if self.total else "")
      parts = [amount]
      if self.rate > 0:
        parts.append(f"{format_bytes(self.rate)}/s")
      if self.seconds_left is not None:
        parts.append(f"{self.seconds_left:.0f} s left")
      what = ("waiting for another download of" if self.stage == "waiting"
              else "downloading")
      return f"{what} {self.name}: " + ", ".join(parts)
    return f"{self.stage} {self.name}"


ProgressFn = Callable[[Progress], None]


# --------------------------------------------------------------- the lock --


@contextlib.contextmanager
def _lock(root: pathlib.Path, name: str,
          on_wait: Optional[Callable[[], None]]) -> Iterator[None]:
  """Holds the model's lock file (``filelock``: an OS lock on Linux, macOS
  and Windows, released when the process dies).

  ``on_wait()`` is called about twice a second while another process holds
  it.
  """
  locks = root / "locks"
  locks.mkdir(parents=True, exist_ok=True)
  lock = filelock.FileLock(os.fspath(locks / f"{name}.lock"),
                           thread_local=False)
  while True:
    try:
      lock.acquire(blocking=False)
      break
    except filelock.Timeout:
      if on_wait is not None:
        on_wait()
      time.sleep(0.5)
  try:
    yield
  finally:
    lock.release()


# ------------------------------------------------------------ addresses --


def _is_local(url: str) -> bool:
  """Whether ``url`` names a file of this machine: a path (``C:\\...`` and
  ``\\\\server\\share`` on every system, where ``urlparse`` would take the
  drive letter for a scheme), or a ``file://`` address."""
  if _WINDOWS_PATH.match(url):
    return True
  return urllib.parse.urlparse(url).scheme in ("", "file")


def _local_file(url: str) -> pathlib.Path:
  if url.startswith("file://"):
    return pathlib.Path(urllib.request.url2pathname(
        urllib.parse.urlparse(url).path))
  return pathlib.Path(url).expanduser()


def _host(url: str) -> str:
  return urllib.parse.urlparse(url).netloc or url


def _offline_help(environ: Optional[Mapping[str, str]]) -> str:
  lines = [f"  {m.name} ({m.title}): {m.url}"
           for m in sources(environ).values()]
  return ("\nFetch the archive on a machine with internet access, then either "
          "pass it here with --url /path/to/archive.zip, or unzip it and "
          "give its folder to the app with --checkpoints DIR (the CLI: "
          "--checkpoint DIR). The archives:\n" + "\n".join(lines))


def _mirror_help(model: PublishedModel) -> str:
  """The ways around a host that will not serve the archive now."""
  return (
      f"Or use a mirror: on a machine that has {model.name} installed, "
      f"'python -m xfactor_core.fetch --export {model.name} {model.name}.zip' "
      "writes its params-only archive; upload it to a public Hugging Face Hub "
      f"model repository and set {model.url_env}=https://huggingface.co/<user>/"
      f"<repo>/resolve/main/{model.name}.zip (README.md, 'A mirror for busy "
      "hosts'). Or "
      "download the archive by hand and install it with "
      f"'python -m xfactor_core.fetch {model.name} --url /path/to/archive.zip'")


# ---------------------------------------------------------- disk checks --


def _check_disk(root: pathlib.Path, download_bytes: int,
                install_bytes: Optional[int]) -> None:
  free = shutil.disk_usage(root).free
  install = install_bytes or 0
  need = download_bytes + install + DISK_MARGIN_BYTES
  if free < need:
    raise FetchError(
        f"not enough free disk space in {root}: the fetch needs "
        f"{format_bytes(need)} ({format_bytes(download_bytes)} still to "
        f"download, {format_bytes(install)} for the installed model, "
        f"{format_bytes(DISK_MARGIN_BYTES)} to spare) and "
        f"{format_bytes(free)} is free; free some space, or set {HOME_ENV} "
        "to a folder on a disk with room")


def _disk_full(error: OSError, root: pathlib.Path) -> FetchError:
  return FetchError(
      f"the disk holding {root} filled up ({error.strerror}); free some "
      f"space, or set {HOME_ENV} to a folder on a disk with room, and run the "
      "fetch again (a download resumes where it stopped)")


def _is_disk_full(error: OSError) -> bool:
  return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


# ------------------------------------------------------------- retrying --


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """How a download meets cut connections and "not now" answers.

  Attributes:
    retries: tries after the first, in all, before the fetch gives up.
    wait: seconds before the first retry; doubled after each.
    max_wait: the longest wait, for the backoff and for a server's
      ``Retry-After`` alike (a host asking for an hour gets this, then the
      fetch gives up with the advice).
  """
  retries: int = 3
  wait: float = 2.0
  max_wait: float = 120.0

  def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): the backoff, or the
    server's ``Retry-After`` when it asks for longer, capped at ``max_wait``."""
    backoff = self.wait * 2.0 ** (attempt - 1)
    return min(max(backoff, retry_after or 0.0), self.max_wait)


def parse_retry_after(value: Optional[str],
                      now: Optional[datetime.datetime] = None
                      ) -> Optional[float]:
  """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP
  date (RFC 9110); ``None`` when absent or unreadable."""
  if not value:
    return None
  value = value.strip()
  if value.isdigit():
    return float(value)
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError, IndexError):
    return None
  if when.tzinfo is None:
    when = when.replace(tzinfo=datetime.timezone.utc)
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return max((when - now).total_seconds(), 0.0)


class _Cut(Exception):
  """The connection ended before the whole archive arrived (resumable)."""


class _NotNow(Exception):
  """The server answered 408, 429 or 5xx: try again later.

  Attributes:
    status: the HTTP status.
    reason: its reason phrase.
    retry_after: seconds the server asked for, if it did.
    web_page: the answer was an HTML page.
  """

  def __init__(self, status: int, reason: str, retry_after: Optional[float],
               web_page: bool):
    super().__init__(f"HTTP {status} {reason}")
    self.status, self.reason = status, reason
    self.retry_after, self.web_page = retry_after, web_page


# ----------------------------------------------------------- downloading --


@dataclasses.dataclass
class _Partial:
  """The download as it stands: the part file, what the server said of it,
  and the SHA-256 of the bytes kept so far (updated as bytes arrive).

  Attributes:
    path: ``downloads/<name>.zip.part``.
    meta: ``{"url", "total", "etag", "last_modified"}``, kept beside it.
    have: bytes in the part file.
    digest: SHA-256 of those bytes.
  """
  path: pathlib.Path
  meta: dict[str, Any]
  have: int = 0
  digest: Any = dataclasses.field(default_factory=hashlib.sha256)

  @property
  def meta_file(self) -> pathlib.Path:
    return _part_meta(self.path)

  def save_meta(self) -> None:
    _write_json(self.meta_file, self.meta)

  def restart(self) -> None:
    """Back to zero bytes: the kept ones cannot be continued."""
    self.discard()
    self.meta = {"url": self.meta.get("url")}
    self.have, self.digest = 0, hashlib.sha256()

  def discard(self) -> None:
    """Deletes the part file and its facts (after an install, or bad bytes)."""
    for file in (self.path, self.meta_file):
      _retrying(lambda f=file: f.unlink(missing_ok=True))


def _hash_prefix(file: pathlib.Path, size: int) -> Any:
  """SHA-256 of the first ``size`` bytes of ``file`` (a resumed download's
  kept prefix: the only bytes a download hashes after they arrived)."""
  digest = hashlib.sha256()
  with open(file, "rb") as handle:
    left = size
    while left > 0:
      block = handle.read(min(8 * CHUNK_BYTES, left))
      if not block:
        break
      digest.update(block)
      left -= len(block)
  return digest


def _sha256(file: pathlib.Path) -> str:
  """SHA-256 of a whole file (a local archive given with ``--url``)."""
  return _hash_prefix(file, file.stat().st_size).hexdigest()


def _open_partial(part: pathlib.Path, url: str) -> _Partial:
  """The part file of an earlier try at ``url`` (its prefix hashed), or a
  fresh one: bytes from another address are useless."""
  part.parent.mkdir(parents=True, exist_ok=True)
  meta = _read_json(_part_meta(part)) if part.is_file() else {}
  partial = _Partial(part, meta)
  total = meta.get("total")
  if meta.get("url") != url or (total is not None
                                and part.stat().st_size > total):
    partial.meta = {"url": url}
    partial.restart()
    return partial
  partial.have = part.stat().st_size
  partial.digest = _hash_prefix(part, partial.have)
  return partial


def _request(url: str, partial: _Partial, timeout: float
             ) -> http.client.HTTPResponse:
  """GET ``url`` from where the part file ends (Range, guarded by If-Range
  so that a changed file comes whole)."""
  headers = {"User-Agent": "xfactor-studio (python urllib)"}
  if partial.have > 0:
    headers["Range"] = f"bytes={partial.have}-"
    validator = partial.meta.get("etag") or partial.meta.get("last_modified")
    if validator:
      headers["If-Range"] = validator
  request = urllib.request.Request(url, headers=headers)
  return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310


def _is_web_page(content_type: str, first_bytes: bytes = b"") -> bool:
  kind = content_type.split(";")[0].strip().lower()
  return (kind in _WEB_PAGE_TYPES
          or first_bytes.lstrip()[:16].lower().startswith(_WEB_PAGE_START))


def _web_page_error(model: PublishedModel, url: str, what: str) -> FetchError:
  return FetchError(
      f"{url} answered with a web page ({what}), not the zip archive: a "
      "host's sign-in or 'too much traffic' page, or a link to a page rather "
      "than to the file (a Dropbox link must end in dl=1). If the host limits "
      "traffic, wait (an hour to a day) and run the fetch again. "
      + _mirror_help(model) + f"; or point {model.url_env} (or --url) at the "
      "archive itself")


def _not_now(error: urllib.error.HTTPError) -> _NotNow:
  """A transient HTTP error as :class:`_NotNow`, reading its headers."""
  headers = error.headers or {}
  return _NotNow(error.code, str(error.reason),
                 parse_retry_after(headers.get("Retry-After")),
                 _is_web_page(headers.get("Content-Type", "")))


def _answer_unsatisfiable(error: urllib.error.HTTPError, partial: _Partial
                          ) -> None:
  """A 416 to a resume: complete when the file is exactly what is kept,
  else the kept bytes are not a prefix of it (start over)."""
  match = _UNSATISFIED_RANGE.fullmatch(
      (error.headers or {}).get("Content-Range", "").strip())
  if match and int(match.group(1)) == partial.have:
    partial.meta["total"] = partial.have
    partial.save_meta()
    return
  partial.restart()
  raise _Cut("the server has no bytes after the partial file; starting over")


def _body_offset(response: http.client.HTTPResponse, partial: _Partial
                 ) -> int:
  """Fits the answer to the part file: returns how many leading bytes of the
  body repeat kept ones (to skip), restarting the part at zero when the
  answer is the whole file.

  Raises:
    _Cut: a 206 whose ``Content-Range`` does not continue the kept bytes
      (the part restarts at zero; the next try asks for the whole file).
  """
  headers = response.headers
  length_text = headers.get("Content-Length", "")
  length = int(length_text) if length_text.isdigit() else None
  fields = {"etag": headers.get("ETag"),
            "last_modified": headers.get("Last-Modified")}
  if response.status != 206:  # the whole file: no Range support, or changed
    if partial.have:
      logging.info("%s sent the whole file instead of the rest: starting the "
                   "download over", _host(partial.meta.get("url") or ""))
      partial.restart()
    partial.meta.update(total=length, **fields)
    return 0
  value = headers.get("Content-Range", "").strip()
  match = _RANGE.fullmatch(value)
  known = partial.meta.get("total")
  if match:
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
  consistent = bool(match) and (
      start <= partial.have <= end + 1
      and (length is None or length == end - start + 1)
      and (total is None or end < total)
      and (known is None or total is None or total == known))
  if not consistent:
    partial.restart()
    raise _Cut(f"the server answered the resume at byte {partial.have} with "
               f"an inconsistent Content-Range {value!r}; starting over from "
               "zero")
  partial.meta.update(total=total, **fields)
  return partial.have - start


def _stream_body(response: http.client.HTTPResponse, partial: _Partial,
                 skip: int, model: PublishedModel, url: str,
                 progress: ProgressFn) -> None:
  """Appends the body to the part file, hashing each block as it arrives.

  Raises:
    _Cut: the connection broke.
    FetchError: the bytes are a web page or not a zip archive.
  """
  started, received = time.monotonic(), 0
  total = partial.meta.get("total")
  with open(partial.path, "ab") as out:
    while True:
      try:
        block = response.read1(CHUNK_BYTES)
      except (http.client.IncompleteRead, ConnectionError, socket.timeout,
              OSError) as e:
        raise _Cut(f"{type(e).__name__}: {e}") from None
      if not block:
        break
      if skip:
        dropped = min(skip, len(block))
        block, skip = block[dropped:], skip - dropped
        if not block:
          continue
      if partial.have == 0:
        _check_first_bytes(block, response, model, url)
      out.write(block)
      partial.digest.update(block)
      partial.have += len(block)
      received += len(block)
      rate = received / max(time.monotonic() - started, 1e-6)
      progress(Progress(model.name, "downloading", partial.have, total, rate))
      _test_kill("download", out)
    checkpoints.fsync_file(out)


def _check_first_bytes(block: bytes, response: http.client.HTTPResponse,
                       model: PublishedModel, url: str) -> None:
  """The archive must start as a zip does; a web page is named as such."""
  if block.startswith(ZIP_MAGIC):
    return
  if _is_web_page("", block):
    raise _web_page_error(
        model, url, response.headers.get("Content-Type") or "no type given")
  raise FetchError(
      f"{url} did not send a zip archive (it starts with {block[:16]!r}); "
      f"point {model.url_env} (or --url) at the release's zip file")


def _download_once(model: PublishedModel, url: str, partial: _Partial,
                   root: pathlib.Path, progress: ProgressFn,
                   timeout: float) -> None:
  """One request: the rest of the archive from where the part file ends.

  Raises:
    _Cut: the connection ended early, or the answer could not continue the
      kept bytes (resumable).
    _NotNow: 408, 429 or 5xx.
    urllib.error.HTTPError: any other error status.
    FetchError: the answer is a web page or not a zip, or the disk is full.
  """
  if partial.have and partial.meta.get("total") == partial.have:
    return
  try:
    response = _request(url, partial, timeout)
  except urllib.error.HTTPError as e:
    if e.code in _TRANSIENT:
      raise _not_now(e) from None
    if e.code == 416 and partial.have:
      _answer_unsatisfiable(e, partial)
      return
    raise
  with response:
    content_type = response.headers.get("Content-Type", "")
    if _is_web_page(content_type):  # the kept bytes stay, for a later resume
      raise _web_page_error(model, url, content_type)
    skip = _body_offset(response, partial)
    total = partial.meta.get("total")
    _check_disk(root, max((total or 0) - partial.have, 0),
                model.installed_bytes)
    partial.save_meta()
    progress(Progress(model.name, "downloading", partial.have, total))
    try:
      _stream_body(response, partial, skip, model, url, progress)
    except FetchError:  # not an archive: its first bytes are worth nothing
      partial.discard()  # (after _stream_body closed it: Windows)
      raise
    except OSError as e:
      if _is_disk_full(e):
        raise _disk_full(e, root) from None
      raise
  _check_length(partial)


def _check_length(partial: _Partial) -> None:
  """After a body: all of the archive, or a cut; more than announced is a
  server fault (start over)."""
  total = partial.meta.get("total")
  if total is not None and partial.have < total:
    raise _Cut(f"the server stopped sending at {partial.have} of {total} "
               "bytes")
  if total is not None and partial.have > total:
    partial.restart()
    raise _Cut(f"the server sent more than the {total} bytes it announced; "
               "starting over")
  partial.meta["total"] = partial.have
  partial.save_meta()


def _http_error(error: urllib.error.HTTPError, model: PublishedModel,
                url: str) -> FetchError:
  hint = {401: "the address needs a sign-in: a private link",
          403: "the address refuses access: an expired or private link",
          404: "nothing is at that address: the release may have moved",
          410: "the file was removed from that address"}.get(
              error.code, "the server refused the request")
  return FetchError(
      f"downloading {model.name} failed: {url} answered HTTP {error.code} "
      f"{error.reason} ({hint}). Point {model.url_env} (or --url) at a "
      "mirror or at a copy of the archive on this machine. "
      + _mirror_help(model))


def _gave_up_not_now(error: _NotNow, tries: int, model: PublishedModel,
                     url: str, partial: _Partial) -> FetchError:
  """The message after the last 408/429/5xx: what happened, then the ways
  out (wait and resume, a mirror, a local copy)."""
  page = " (as a web page, not the archive)" if error.web_page else ""
  asked = (f" (it asked to wait {error.retry_after:.0f} s)"
           if error.retry_after is not None else "")
  if error.status == 429:
    what = ("the host limits this link's traffic and the limit is used up "
            "for now: hosts such as Dropbox lift it after some hours to a day")
  elif error.status == 408:
    what = "the server gave up waiting for the request"
  else:
    what = "the server has trouble for now"
  kept = (f"; it resumes from the {format_bytes(partial.have)} kept"
          if partial.have else "")
  return FetchError(
      f"downloading {model.name} failed: {_host(url)} answered HTTP "
      f"{error.status} {error.reason}{page} {tries} times{asked}: {what}. "
      f"Wait, then run 'python -m xfactor_core.fetch {model.name}' again"
      f"{kept}. " + _mirror_help(model))


def _gave_up_cut(reason: str, model: PublishedModel, url: str,
                 partial: _Partial) -> FetchError:
  if partial.have:
    again = "run the fetch again: it resumes from there"
  else:
    again = ("run the fetch again (it starts over: the server did not let "
             f"it resume); if this repeats, point {model.url_env} (or --url) "
             "at a mirror or at a copy of the archive on this machine")
  return FetchError(
      f"the connection to {_host(url)} was cut after "
      f"{format_bytes(partial.have)} of "
      f"{format_bytes(partial.meta.get('total'))} ({reason}); {again}")


def _network_error(error: Exception, model: PublishedModel, url: str,
                   environ: Optional[Mapping[str, str]]) -> FetchError:
  reason = getattr(error, "reason", error)
  return FetchError(
      f"cannot reach {_host(url)} to download {model.name} ({reason}): this "
      "machine seems to have no network access, or the address is wrong."
      + _offline_help(environ))


def _download(model: PublishedModel, url: str, root: pathlib.Path,
              progress: ProgressFn, policy: RetryPolicy, timeout: float,
              environ: Optional[Mapping[str, str]]) -> _Partial:
  """Downloads (or resumes) the archive into ``downloads/``, retrying cut
  connections and "not now" answers as ``policy`` says.

  Returns:
    The complete download, with its SHA-256.
  """
  partial = _open_partial(_part_file(root, model.name), url)
  failures = 0
  while True:
    try:
      _download_once(model, url, partial, root, progress, timeout)
      return partial
    except _Cut as cut:
      failures += 1
      if failures > policy.retries:
        raise _gave_up_cut(str(cut), model, url, partial) from None
      wait, why = policy.delay(failures), str(cut)
    except _NotNow as busy:
      failures += 1
      if failures > policy.retries:
        raise _gave_up_not_now(busy, failures, model, url, partial) from None
      wait, why = policy.delay(failures, busy.retry_after), str(busy)
    except urllib.error.HTTPError as e:
      raise _http_error(e, model, url) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
      raise _network_error(e, model, url, environ) from None
    logging.warning("download of %s: %s after %s; trying again in %.1f s",
                    model.name, why, format_bytes(partial.have), wait)
    _sleep(wait)


# ----------------------------------------------------- verify and install --


def _checkpoint_member(archive: zipfile.ZipFile) -> str:
  """The archive member holding the newest (indexed) train state."""
  names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
  member = checkpoints.newest_checkpoint(
      names, lambda n: archive.read(n).decode(errors="replace"))
  if member is None:
    raise FetchError(
        "the archive holds no clu checkpoint (no .../checkpoints-0/ckpt-N.flax "
        f"among its {len(names)} files); is it an XFactor release archive?")
  return member


def read_archive_params(archive_path: PathLike, model: PublishedModel
                        ) -> tuple[checkpoints.Params, int, str]:
  """Streams the params out of a release archive and checks them.

  Returns:
    ``(params, training step, member name)``.

  Raises:
    FetchError: not a zip, truncated or corrupt, no checkpoint, or a params
      tree that is not the model's.
  """
  try:
    if pathlib.Path(archive_path).is_dir():  # an archive unzipped elsewhere
      file = checkpoints.resolve_checkpoint(archive_path)
      member = file.relative_to(archive_path).as_posix()
      with open(file, "rb") as stream:
        state = checkpoints.read_state_stream(stream, file)
    else:
      with zipfile.ZipFile(archive_path) as archive:
        member = _checkpoint_member(archive)
        with archive.open(member) as stream:
          state = checkpoints.read_state_stream(
              stream, f"{archive_path}:{member}")
  except zipfile.BadZipFile as e:
    raise FetchError(f"the archive is not a valid zip ({e}): the download is "
                     "truncated or corrupt") from None
  except checkpoints.CheckpointError as e:
    raise FetchError(f"the checkpoint in the archive cannot be read: {e}"
                     ) from None
  try:
    params = checkpoints.params_from_state(state, member,
                                           config=model.config)
  except checkpoints.CheckpointError as e:
    expected = ("the published XFactor tree" if model.config ==
                checkpoints.PUBLISHED_CONFIG else "the model's tree")
    raise FetchError(f"the archive's weights are not {expected}: {e}. Is it "
                     f"the {model.title} archive?") from None
  step = state.get("step", 0)
  return params, int(step) if step is not None else 0, member


def _check_digest(actual: Optional[str], expected: Optional[str],
                  model: PublishedModel) -> None:
  """The archive's SHA-256 against the one known for its address."""
  if expected and actual and actual != expected.lower():
    raise FetchError(
        f"the archive's SHA-256 is {actual}, not the expected {expected}: the "
        "download is corrupt or the address serves another file. Run the "
        f"fetch again (it starts afresh); if it repeats, the digest "
        f"({model.sha256_env} or --sha256) belongs to another archive")


def _write_staging(staging: pathlib.Path, model: PublishedModel,
                   params: checkpoints.Params, step: int,
                   facts: Mapping[str, Any]) -> None:
  """The installed model's files, written (and fsynced) into ``staging``."""
  weights = checkpoints.save_params(staging / "checkpoints-0", params,
                                    step=step)
  _test_kill("convert")
  config = checkpoints.infer_config(params, source=model.name)
  checkpoints.write_model_info(
      staging, name=model.title, image_size=model.image_size,
      num_context_views=model.num_context_views, config=config.to_dict(),
      num_parameters=checkpoints.parameter_count(config),
      published={"name": model.name, **facts,
                 "weights_file": weights.relative_to(staging).as_posix(),
                 "weights_bytes": weights.stat().st_size})
  checkpoints.fsync_dir(staging)


def _put_in_place(staging: pathlib.Path, final: pathlib.Path) -> None:
  """Renames ``staging`` to ``final``. An existing ``final`` is renamed
  aside first and deleted after (Windows cannot rename onto a folder), so a
  kill in between leaves the old model aside, where the next fetch restores
  it."""
  old = _move_aside(final, "old") if final.exists() else None
  _test_kill("install")
  _rename(staging, final)
  checkpoints.fsync_dir(final.parent)
  if old is not None:
    _delete_tree(old)


def _install(model: PublishedModel, params: checkpoints.Params, step: int,
             root: pathlib.Path, facts: Mapping[str, Any]) -> pathlib.Path:
  """Writes the params and model.json to a staging folder, then puts it in
  place (atomic: the model appears whole or not at all)."""
  models_dir = _models_dir(root)
  models_dir.mkdir(parents=True, exist_ok=True)
  final = models_dir / model.name
  staging = models_dir / f".{model.name}.partial-{os.getpid()}"
  _delete_tree(staging)
  try:
    _write_staging(staging, model, params, step, facts)
    _put_in_place(staging, final)
  except OSError as e:
    shutil.rmtree(staging, ignore_errors=True)
    if _is_disk_full(e):
      raise _disk_full(e, root) from None
    raise
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


# ------------------------------------------------------------ the fetch --


@dataclasses.dataclass(frozen=True)
class _Archive:
  """The archive a fetch verifies: where it is, its digest, and whether it is
  a download of ours (deleted after the install, or when its bytes are bad)."""
  path: pathlib.Path
  sha256: Optional[str]
  download: Optional[_Partial] = None


def _prepare_root(root: pathlib.Path) -> None:
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise FetchError(f"cannot create the model cache {root} ({e}); set "
                     f"{HOME_ENV} to a writable folder") from None


def _waiting_reporter(root: pathlib.Path, name: str,
                      report: ProgressFn) -> Callable[[], None]:
  """Reports another process's download of ``name`` while we wait for it."""
  part = _part_file(root, name)

  def waiting() -> None:
    have = part.stat().st_size if part.is_file() else 0
    report(Progress(name, "waiting", have,
                    _read_json(_part_meta(part)).get("total")))
  return waiting


def _installed_answer(model: PublishedModel, url: Optional[str],
                      root: pathlib.Path, force: bool
                      ) -> Optional[pathlib.Path]:
  """The installed folder when the fetch has nothing to do; ``None`` when it
  must install.

  Raises:
    FetchError: another address was asked for an installed model without
      ``force`` (the message says how to replace it).
  """
  installed = installed_path(model.name, root)
  if installed is None or force:
    return None
  recorded = _read_json(installed / checkpoints.MODEL_INFO).get(
      "published", {}).get("url")
  if url is None or url in (model.url, recorded):
    return installed
  raise FetchError(
      f"{model.name} is installed already ({installed}, from {recorded}), so "
      f"{url} was not fetched. To replace the installed model with it, run: "
      f"python -m xfactor_core.fetch {model.name} --url {url} --force")


def _expected_digest(model: PublishedModel, url: Optional[str],
                     sha256: Optional[str]) -> Optional[str]:
  """The digest the archive must have: one given with the call, else the
  table's, which belongs to the table's address only."""
  if sha256:
    return sha256.lower()
  if url is not None and url != model.url:
    return None
  return model.sha256


def _local_archive(model: PublishedModel, url: str,
                   root: pathlib.Path) -> _Archive:
  archive = _local_file(url)
  if not archive.exists():
    raise FetchError(f"{archive} does not exist; give --url the path of "
                     "the downloaded zip archive (or of its unzipped "
                     "folder)")
  _check_disk(root, 0, model.installed_bytes)
  return _Archive(archive, None if archive.is_dir() else _sha256(archive))


def _obtain(model: PublishedModel, url: str, root: pathlib.Path,
            report: ProgressFn, policy: RetryPolicy, timeout: float,
            environ: Optional[Mapping[str, str]]) -> _Archive:
  """The archive, from this machine or downloaded (hashed as it arrived)."""
  if _is_local(url):
    return _local_archive(model, url, root)
  partial = _download(model, url, root, report, policy, timeout, environ)
  return _Archive(partial.path, partial.digest.hexdigest(), partial)


def _verify(model: PublishedModel, archive: _Archive,
            expected: Optional[str], report: ProgressFn
            ) -> tuple[checkpoints.Params, int, str]:
  """The digest, then the params tree; bad downloaded bytes are deleted, so
  that the next try starts afresh."""
  _check_digest_or_discard(archive, expected, model)
  report(Progress(model.name, "verifying"))
  try:
    return read_archive_params(archive.path, model)
  except FetchError as e:
    problem = str(e) if str(e)[-1:] in ".?!" else f"{e}."
    if archive.download is None:
      raise FetchError(f"{problem} Download the archive again, or give --url "
                       "another copy.") from None
    archive.download.discard()
    raise FetchError(
        f"{problem} The download was deleted: run the fetch again to download it "
        "afresh; if it fails the same way, the address serves another file: "
        f"point {model.url_env} (or --url) at the release archive.") from None


def _check_digest_or_discard(archive: _Archive, expected: Optional[str],
                             model: PublishedModel) -> None:
  """:func:`_check_digest`; a download that fails it is deleted."""
  try:
    _check_digest(archive.sha256, expected, model)
  except FetchError:
    if archive.download is not None:
      archive.download.discard()
    raise


def _facts(url: str, archive: _Archive, member: str, step: int
           ) -> dict[str, Any]:
  """What ``model.json`` records of where the model came from."""
  return {
      "url": url, "archive_sha256": archive.sha256,
      "archive_bytes": (archive.path.stat().st_size
                        if archive.path.is_file() else None),
      "member": member, "step": step,
      "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds")}


def fetch(name: str, *, url: Optional[str] = None,
          sha256: Optional[str] = None, force: bool = False,
          root: Optional[PathLike] = None,
          progress: Optional[ProgressFn] = None, retries: int = 3,
          retry_wait: float = 2.0, max_wait: float = 120.0,
          timeout: float = 60.0,
          environ: Optional[Mapping[str, str]] = None) -> pathlib.Path:
  """Downloads, verifies and installs the published model ``name``.

  A model already installed is returned at once; a second caller while a
  download runs waits for it (``Progress`` stage ``"waiting"``).

  Args:
    name: ``"sm"`` or ``"mv"`` (a name of :func:`sources`).
    url: the archive's address instead of the table's: http(s), ``file://``
      or a local path (a zip, or the folder it unzips to). The table's digest
      does not apply to it.
    sha256: the digest the archive must have (for ``url``).
    force: reinstall even if the model is installed.
    root: the cache folder (default :func:`cache_root`).
    progress: called with a :class:`Progress` as bytes arrive and stages
      change.
    retries: how often a cut connection or a 408/429/5xx answer is retried
      before giving up.
    retry_wait: seconds before the first retry (doubling after each).
    max_wait: the longest wait between tries, ``Retry-After`` included.
    timeout: seconds without data before a connection counts as cut.
    environ: the environment to read overrides from (default ``os.environ``).

  Returns:
    The installed model's folder (give it to ``--checkpoint``).

  Raises:
    FetchError: with the problem and the fix; nothing half-installed is left.
  """
  model = source(name, environ)
  address = url or model.url
  if not address:
    raise FetchError(f"no address for {name}: set {model.url_env} or pass "
                     "--url")
  root = _root(root, environ)
  report = progress or (lambda p: None)
  _prepare_root(root)
  with _lock(root, name, on_wait=_waiting_reporter(root, name, report)):
    _recover(root, name)
    installed = _installed_answer(model, url, root, force)
    if installed is not None:
      report(Progress(name, "done"))
      return installed
    archive = _obtain(model, address, root, report,
                      RetryPolicy(retries, retry_wait, max_wait), timeout,
                      environ)
    params, step, member = _verify(
        model, archive, _expected_digest(model, url, sha256), report)
    report(Progress(name, "installing"))
    path = _install(model, params, step, root,
                    _facts(address, archive, member, step))
    if archive.download is not None:
      archive.download.discard()
    report(Progress(name, "done"))
    logging.info("installed %s (%s) in %s", name, model.title, path)
    return path


# ------------------------------------------------------------ the mirror --


def export(name: str, out: PathLike, root: Optional[PathLike] = None
           ) -> tuple[pathlib.Path, str]:
  """Writes the installed model ``name`` as a release-layout archive of its
  params alone (``<name>/checkpoints-0/{checkpoint,ckpt-N.flax}`` and its
  ``model.json``): about a third of the release's size, and what
  ``fetch --url`` accepts and verifies like any other archive. For hosting a
  mirror (README.md, "A mirror for busy hosts").

  Returns:
    ``(the archive, its SHA-256)``: give the digest with the mirror's address
    (``XFACTOR_<NAME>_SHA256``).

  Raises:
    FetchError: the model is not installed.
  """
  root = _root(root)
  folder = installed_path(name, root)
  if folder is None:
    raise FetchError(f"{name} is not installed in {root}, so there is nothing "
                     f"to export; fetch it first: python -m "
                     f"xfactor_core.fetch {name}")
  weights = checkpoints.resolve_checkpoint(folder)
  out = pathlib.Path(out).expanduser()
  tmp = out.with_name(out.name + ".partial")
  prefix = f"{name}/checkpoints-0/"
  with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
    zf.writestr(prefix + checkpoints.CHECKPOINT_INDEX,
                f'model_checkpoint_path: "{weights.stem}"\n'
                f'all_model_checkpoint_paths: "{weights.stem}"\n')
    with open(weights, "rb") as src, zf.open(prefix + weights.name, "w",
                                              force_zip64=True) as dst:
      shutil.copyfileobj(src, dst, CHUNK_BYTES)
    zf.write(folder / checkpoints.MODEL_INFO,
             f"{name}/{checkpoints.MODEL_INFO}")
  with open(tmp, "rb+") as handle:
    checkpoints.fsync_file(handle)
  _rename(tmp, out)
  return out, _sha256(out)


# ------------------------------------------------------------------- CLI --


class _Bar:
  """A tqdm bar in bytes for the download, and a log line per stage."""

  def __init__(self):
    self._bar = None
    self._stage = None

  def __call__(self, update: Progress) -> None:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    if update.stage in ("downloading", "waiting"):
      desc = f"{update.name}: " + ("waiting for another download"
                                   if update.stage == "waiting"
                                   else "downloading")
      if self._bar is None or self._stage != update.stage:
        self.close()
        self._bar = tqdm(total=update.total, initial=update.done, unit="B",
                         unit_scale=True, unit_divisor=1024, desc=desc,
                         dynamic_ncols=True)
      if update.total and self._bar.total != update.total:
        self._bar.total = update.total
      self._bar.update(update.done - self._bar.n)
    elif update.stage != self._stage:
      self.close()
      logging.info("%s: %s", update.name, update.stage)
    self._stage = update.stage

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


def _state(entry: CacheEntry, model: Optional[PublishedModel]) -> str:
  """The listing's state column for one model."""
  if entry.path is not None:
    return "installed"
  if entry.broken:
    return ("broken install: its weights are missing or cut short "
            f"(python -m xfactor_core.fetch {entry.name} replaces it)")
  if entry.partial_bytes:
    share = (f" of {format_bytes(entry.expected_bytes)}"
             if entry.expected_bytes else "")
    return (f"partial download {format_bytes(entry.partial_bytes)}{share} "
            f"(python -m xfactor_core.fetch {entry.name} resumes it)")
  size = format_bytes(model.installed_bytes) if model else "unknown size"
  return f"not downloaded (about {size} once installed)"


def _list(root: pathlib.Path) -> str:
  table = sources()
  names = list(table) + sorted(
      p.name for p in _models_dir(root).glob("*")
      if p.is_dir() and not p.name.startswith(".") and p.name not in table)
  rows = [f"models in {root} (set {HOME_ENV} to move them):", "",
          "| name | model | state | size on disk | path |",
          "| --- | --- | --- | --- | --- |"]
  for name in names:
    entry = cache_entry(name, root)
    title = table[name].title if name in table else entry.info.get("name", "")
    size = (format_bytes(entry.installed_bytes) if entry.path is not None
            else format_bytes(entry.partial_bytes) if entry.partial_bytes
            else "-")
    rows.append(f"| {name} | {title} | {_state(entry, table.get(name))} | "
                f"{size} | {entry.path or '-'} |")
  return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m xfactor_core.fetch",
      description="Download, verify and install the published XFactor "
                  "checkpoints (then use them as --checkpoint sm / mv).")
  parser.add_argument("names", nargs="*", metavar="MODEL",
                      help="sm (stereo-monocular), mv (multi-view) or all")
  parser.add_argument("--url", default=None,
                      help="take the archive from this address or local zip "
                           "instead (one model only)")
  parser.add_argument("--sha256", default=None,
                      help="the SHA-256 the --url archive must have")
  parser.add_argument("--force", action="store_true",
                      help="reinstall a model that is installed already")
  parser.add_argument("--home", default=None,
                      help=f"cache folder (default: ${HOME_ENV} or "
                           "~/.cache/xfactor)")
  parser.add_argument("--list", action="store_true",
                      help="show what is installed, where, and its size")
  parser.add_argument("--remove", nargs="+", metavar="MODEL", default=None,
                      help="delete installed models and partial downloads")
  parser.add_argument("--export", nargs=2, metavar=("MODEL", "FILE.zip"),
                      default=None,
                      help="write an installed model's params as an archive "
                           "for a mirror (fetch --url installs it)")
  parser.add_argument("--retries", type=int, default=3,
                      help="times a cut connection or a 408/429/5xx answer "
                           "is retried (default 3)")
  parser.add_argument("--retry-wait", type=float, default=2.0,
                      help="seconds before the first retry, doubling after "
                           "each (default 2)")
  return parser


def _export_command(name: str, out: str, root: pathlib.Path) -> None:
  path, digest = export(name, out, root)
  model = source(name)
  logging.info(
      "wrote %s (%s, SHA-256 %s). To serve it as a mirror, upload it to a "
      "public Hugging Face Hub model repository (hf upload <user>/<repo> %s) "
      "and set %s=https://huggingface.co/<user>/<repo>/resolve/main/%s "
      "%s=%s", path, format_bytes(path.stat().st_size), digest, path,
      model.url_env, path.name, model.sha256_env, digest)


def _fetch_command(names: Sequence[str], args: argparse.Namespace,
                   root: pathlib.Path) -> None:
  for name in names:
    bar = _Bar()
    try:
      path = fetch(name, url=args.url, sha256=args.sha256, force=args.force,
                   root=root, progress=bar, retries=args.retries,
                   retry_wait=args.retry_wait)
    finally:
      bar.close()
    logging.info("%s is ready: %s (use --checkpoint %s)", name, path, name)


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  parser = build_parser()
  args = parser.parse_args(argv)
  root = pathlib.Path(args.home).expanduser() if args.home else cache_root()
  try:
    if args.list:
      print(_list(root))  # the listing is this command's output
      return 0
    if args.remove:
      for name in args.remove:
        what = "removed" if remove(name, root) else "nothing to remove for"
        logging.info("%s %s", what, name)
      return 0
    if args.export:
      _export_command(*args.export, root)
      return 0
    names = list(sources()) if args.names == ["all"] else args.names
    if not names:
      parser.error("name a model: sm, mv or all (or --list)")
    if (args.url or args.sha256) and len(names) != 1:
      parser.error("--url and --sha256 take the archive of one model; name one")
    _fetch_command(names, args, root)
  except FetchError as e:
    logging.error("%s", e)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
