"""The published XFactor checkpoints, one step away: fetch, verify, cache.

    python -m xfactor_core.fetch sm             # stereo-monocular (mv; all)
    python -m xfactor_core.fetch sm --url https://mirror.example/sm.zip
    python -m xfactor_core.fetch mv --url ~/Downloads/multiview.zip
    python -m xfactor_core.fetch --list
    python -m xfactor_core.fetch --remove sm

The published release gives each model as a zip archive of its training
folder: ``checkpoints-0/`` with the whole train state (params, optimiser
moments, LPIPS weights, ...). A fetch

1. takes a lock, so that a second process asking for the same model waits for
   the first download instead of starting another, and returns at once when
   the model is installed already;
2. checks the free disk space, then downloads the archive with a progress bar,
   resuming an interrupted download with an HTTP Range request (and retrying a
   cut connection by itself a few times);
3. verifies the archive: a zip, whose checkpoint member's CRC holds, whose
   params tree has every path and shape of the model it claims to be (for the
   published models: the published tree);
4. keeps only what inference needs: the params, streamed out of the zip member
   (peak memory about the params' size, not the archive's), written as a clu
   checkpoint with a ``model.json``;
5. installs atomically: the model folder appears whole, or not at all.

Where models live: ``$XFACTOR_HOME`` or, without it, ``$XDG_CACHE_HOME/xfactor``
(``~/.cache/xfactor``): ``models/<name>/`` for installed models, ``downloads/``
for interrupted downloads. The addresses are the table ``PUBLISHED`` below;
``XFACTOR_SM_URL`` / ``XFACTOR_MV_URL`` (or ``--url``) point a model at a
mirror or a local zip, and ``XFACTOR_SOURCES`` names a JSON file that
overrides any field of the table (how the tests serve tiny models).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import pathlib
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from xfactor_core import checkpoints

PathLike = Union[str, os.PathLike]
HOME_ENV = "XFACTOR_HOME"
SOURCES_ENV = "XFACTOR_SOURCES"
CHUNK_BYTES = 1 << 20
DISK_MARGIN_BYTES = 256 << 20
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CKPT_MEMBER = re.compile(r"(^|/)ckpt-(\d+)\.flax$")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


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
    sha256: the archive's digest, checked when known.
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
  ``XFACTOR_<NAME>_URL`` replaces a model's address.

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
        table[name] = dataclasses.replace(base, name=name, **fields)
    except (OSError, ValueError, TypeError, AttributeError) as e:
      raise FetchError(f"{SOURCES_ENV}={file} cannot be used ({e}); it must "
                       "be a JSON object of model name -> fields of "
                       "xfactor_core.fetch.PublishedModel") from e
  for name, model in table.items():
    if env.get(model.url_env):
      table[name] = dataclasses.replace(model, url=env[model.url_env])
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
  """
  name: str
  path: Optional[pathlib.Path]
  installed_bytes: int = 0
  partial_bytes: int = 0
  expected_bytes: Optional[int] = None
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _models_dir(root: pathlib.Path) -> pathlib.Path:
  return root / "models"


def _part_file(root: pathlib.Path, name: str) -> pathlib.Path:
  return root / "downloads" / f"{name}.zip.part"


def _part_meta(part: pathlib.Path) -> pathlib.Path:
  return part.with_name(part.name + ".json")


def _folder_bytes(folder: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def installed_path(name: str, root: Optional[PathLike] = None
                   ) -> Optional[pathlib.Path]:
  """The installed folder of model ``name``, or ``None``.

  A folder is installed once it is in place: installs are atomic renames.
  """
  root = pathlib.Path(root) if root is not None else cache_root()
  folder = _models_dir(root) / name
  if (folder / checkpoints.MODEL_INFO).is_file():
    return folder
  return None


def cache_entry(name: str, root: Optional[PathLike] = None) -> CacheEntry:
  """What the cache holds for ``name``: installed folder, partial download."""
  root = pathlib.Path(root) if root is not None else cache_root()
  path = installed_path(name, root)
  part = _part_file(root, name)
  expected = None
  if _part_meta(part).is_file():
    with contextlib.suppress(OSError, ValueError):
      expected = json.loads(_part_meta(part).read_text()).get("total")
  info = {}
  if path is not None:
    with contextlib.suppress(OSError, ValueError):
      info = json.loads((path / checkpoints.MODEL_INFO).read_text())
  return CacheEntry(
      name=name, path=path,
      installed_bytes=_folder_bytes(path) if path else 0,
      partial_bytes=part.stat().st_size if part.is_file() else 0,
      expected_bytes=expected, info=info)


def checkpoint_path(value: PathLike, root: Optional[PathLike] = None,
                    environ: Optional[Mapping[str, str]] = None) -> PathLike:
  """A ``--checkpoint`` value with published names resolved.

  ``"sm"`` / ``"mv"`` (any name of :func:`sources`) that is not an existing
  path becomes the installed folder of that model; any other value is
  returned as it is.

  Raises:
    checkpoints.CheckpointError: the name's model is not installed (the
      message gives the fetch command).
  """
  text = os.fspath(value)
  table = sources(environ)
  if text not in table or pathlib.Path(text).exists():
    return value
  root = pathlib.Path(root) if root is not None else cache_root(environ)
  path = installed_path(text, root)
  if path is None:
    model = table[text]
    raise checkpoints.CheckpointError(
        f"the published model {text!r} ({model.title}) is not downloaded "
        f"yet; fetch it once with: python -m xfactor_core.fetch {text} "
        f"({format_bytes(model.installed_bytes)} in {root})")
  return path


def remove(name: str, root: Optional[PathLike] = None) -> bool:
  """Deletes the installed model ``name`` and any partial download of it.

  Returns whether anything was deleted.
  """
  root = pathlib.Path(root) if root is not None else cache_root()
  removed = False
  with _lock(root, name, on_wait=None):
    folder = _models_dir(root) / name
    if folder.exists():
      shutil.rmtree(folder)
      removed = True
    part = _part_file(root, name)
    for file in (part, _part_meta(part)):
      if file.exists():
        file.unlink()
        removed = True
  return removed


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
  """Holds the model's lock file (``flock``: released if the process dies).

  ``on_wait()`` is called about twice a second while another process holds
  it.
  """
  locks = root / "locks"
  locks.mkdir(parents=True, exist_ok=True)
  with open(locks / f"{name}.lock", "a+") as handle:
    while True:
      try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if on_wait is not None:
          on_wait()
        time.sleep(0.5)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------- downloading --


def _is_local(url: str) -> bool:
  scheme = urllib.parse.urlparse(url).scheme
  return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _local_file(url: str) -> pathlib.Path:
  if url.startswith("file://"):
    return pathlib.Path(urllib.request.url2pathname(
        urllib.parse.urlparse(url).path))
  return pathlib.Path(url).expanduser()


def _offline_help(environ: Optional[Mapping[str, str]]) -> str:
  lines = [f"  {m.name} ({m.title}): {m.url}"
           for m in sources(environ).values()]
  return ("\nFetch the archive on a machine with internet access, then either "
          "pass it here with --url /path/to/archive.zip, or unzip it and "
          "give its folder to the app with --checkpoints DIR (the CLI: "
          "--checkpoint DIR). The archives:\n" + "\n".join(lines))


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


class _Cut(Exception):
  """The connection ended before the whole archive arrived (resumable)."""


def _open(url: str, start: int, meta: Mapping[str, Any], timeout: float
          ) -> http.client.HTTPResponse:
  headers = {"User-Agent": "xfactor-studio (python urllib)"}
  if start > 0:
    headers["Range"] = f"bytes={start}-"
    validator = meta.get("etag") or meta.get("last_modified")
    if validator:  # the server sends the whole file if it changed
      headers["If-Range"] = validator
  request = urllib.request.Request(url, headers=headers)
  return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310


def _http_error(error: urllib.error.HTTPError, model: PublishedModel,
                url: str) -> FetchError:
  hint = {403: "the address refuses access: an expired or private link",
          404: "nothing is at that address: the release may have moved",
          410: "the file was removed from that address"}.get(
              error.code, "the server refused the request")
  return FetchError(
      f"downloading {model.name} failed: {url} answered HTTP {error.code} "
      f"{error.reason} ({hint}). Point {model.url_env} (or --url) at a "
      "mirror or at a copy of the archive on this machine")


def _network_error(error: Exception, model: PublishedModel, url: str,
                   environ: Optional[Mapping[str, str]]) -> FetchError:
  host = urllib.parse.urlparse(url).netloc or url
  reason = getattr(error, "reason", error)
  return FetchError(
      f"cannot reach {host} to download {model.name} ({reason}): this "
      "machine seems to have no network access, or the address is wrong."
      + _offline_help(environ))


def _download(model: PublishedModel, url: str, root: pathlib.Path,
              progress: ProgressFn, retries: int, retry_wait: float,
              timeout: float, environ: Optional[Mapping[str, str]]
              ) -> tuple[pathlib.Path, str]:
  """Downloads (or resumes) the archive into ``downloads/``.

  Returns:
    ``(archive path, sha256 hex digest)``.
  """
  part = _part_file(root, model.name)
  part.parent.mkdir(parents=True, exist_ok=True)
  meta_file = _part_meta(part)
  meta: dict[str, Any] = {}
  if part.is_file() and meta_file.is_file():
    with contextlib.suppress(OSError, ValueError):
      meta = json.loads(meta_file.read_text())
  if meta.get("url") != url:  # a partial file of another address is useless
    part.unlink(missing_ok=True)
    meta = {"url": url}
  attempt = 0
  while True:
    try:
      _download_once(model, url, part, meta, root, progress, timeout)
      break
    except _Cut as cut:
      attempt += 1
      have = part.stat().st_size if part.is_file() else 0
      if attempt > retries:
        raise FetchError(
            f"the connection to {urllib.parse.urlparse(url).netloc} was cut "
            f"after {format_bytes(have)} of "
            f"{format_bytes(meta.get('total'))} ({cut}); run the fetch again: "
            "it resumes from there") from None
      wait = min(retry_wait * 2.0 ** (attempt - 1), 30.0)
      logging.warning("download of %s cut after %s (%s); resuming in %.0f s",
                      model.name, format_bytes(have), cut, wait)
      time.sleep(wait)
    except urllib.error.HTTPError as e:
      raise _http_error(e, model, url) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
      raise _network_error(e, model, url, environ) from None
  return part, _sha256(part)


def _sha256(file: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(file, "rb") as f:
    while block := f.read(8 * CHUNK_BYTES):
      digest.update(block)
  return digest.hexdigest()


def _download_once(model: PublishedModel, url: str, part: pathlib.Path,
                   meta: dict[str, Any], root: pathlib.Path,
                   progress: ProgressFn, timeout: float) -> None:
  """One request: the rest of the archive from where ``part`` ends.

  Raises:
    _Cut: the connection ended early (resumable).
    FetchError: the answer is not a zip archive, or the disk is full.
  """
  have = part.stat().st_size if part.is_file() else 0
  if have and meta.get("total") == have:
    return
  try:
    response = _open(url, have, meta, timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # the range starts at or after the end
      part.unlink()
      meta.clear()
      meta["url"] = url
      raise _Cut("the server had no bytes after the partial file; starting "
                 "over") from None
    raise
  with response:
    status = response.status
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() in ("text/html",
                                                      "application/xhtml+xml"):
      part.unlink(missing_ok=True)
      raise FetchError(
          f"{url} answered with a web page ({content_type}), not a zip "
          f"archive: the link leads to a page, not to the file (a Dropbox "
          f"link must end in dl=1). Point {model.url_env} (or --url) at the "
          "archive itself")
    if status == 206:
      match = _RANGE.match(response.headers.get("Content-Range", ""))
      if not match or int(match.group(1)) != have:
        raise _Cut("the server resumed at the wrong place")
      total = int(match.group(3)) if match.group(3) != "*" else None
      mode = "ab"
    else:  # 200: the whole file (no range support, or it changed)
      have = 0
      length = response.headers.get("Content-Length")
      total = int(length) if length and length.isdigit() else None
      mode = "wb"
    meta.update(total=total, etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"))
    _check_disk(root, max((total or 0) - have, 0), model.installed_bytes)
    _part_meta(part).write_text(json.dumps(meta))
    started, received = time.monotonic(), 0
    progress(Progress(model.name, "downloading", have, total))
    try:
      with open(part, mode) as out:
        first = have == 0
        while True:
          try:
            block = response.read(CHUNK_BYTES)
          except (http.client.IncompleteRead, ConnectionError,
                  socket.timeout, OSError) as e:
            raise _Cut(f"{type(e).__name__}: {e}") from None
          if not block:
            break
          if first:
            first = False
            if not block.startswith(ZIP_MAGIC):
              out.close()
              part.unlink(missing_ok=True)
              raise FetchError(
                  f"{url} did not send a zip archive (it starts with "
                  f"{block[:16]!r}); point {model.url_env} (or --url) at the "
                  "release's zip file")
          out.write(block)
          have += len(block)
          received += len(block)
          rate = received / max(time.monotonic() - started, 1e-6)
          progress(Progress(model.name, "downloading", have, total, rate))
    except OSError as e:
      if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise _disk_full(e, root) from None
      raise
  if total is not None and have < total:
    raise _Cut(f"the server stopped sending at {have} of {total} bytes")
  meta["total"] = have
  _part_meta(part).write_text(json.dumps(meta))


# ----------------------------------------------------- verify and install --


def _checkpoint_member(archive: zipfile.ZipFile) -> str:
  """The archive member holding the newest (indexed) train state."""
  names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
  found = [(int(m.group(2)), n) for n in names
           if (m := _CKPT_MEMBER.search(n))]
  if not found:
    raise FetchError(
        "the archive holds no clu checkpoint (no .../checkpoints-0/ckpt-N.flax "
        f"among its {len(names)} files); is it an XFactor release archive?")
  for _, name in found:  # the index file names the newest step
    index = name.rsplit("/", 1)[0] + "/" + checkpoints.CHECKPOINT_INDEX \
        if "/" in name else checkpoints.CHECKPOINT_INDEX
    if index in names:
      text = archive.read(index).decode(errors="replace")
      match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text,
                        re.MULTILINE)
      if match:
        wanted = pathlib.PurePosixPath(match.group(1)).name + ".flax"
        for _, candidate in found:
          if candidate.endswith("/" + wanted) or candidate == wanted:
            return candidate
  return max(found)[1]


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
      member = str(file.relative_to(archive_path))
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


def _install(model: PublishedModel, params: checkpoints.Params, step: int,
             root: pathlib.Path, facts: Mapping[str, Any]) -> pathlib.Path:
  """Writes the params and model.json to a temporary folder, then renames it
  into place (atomic: the model appears whole or not at all)."""
  models_dir = _models_dir(root)
  models_dir.mkdir(parents=True, exist_ok=True)
  final = models_dir / model.name
  staging = models_dir / f".{model.name}.partial-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    checkpoints.save_params(staging / "checkpoints-0", params, step=step)
    config = checkpoints.infer_config(params, source=model.name)
    checkpoints.write_model_info(
        staging, name=model.title, image_size=model.image_size,
        num_context_views=model.num_context_views, config=config.to_dict(),
        num_parameters=checkpoints.parameter_count(config),
        published={"name": model.name, **facts})
    if final.exists():  # left by hand or by an older layout: replace it
      shutil.rmtree(final)
    os.replace(staging, final)
  except OSError as e:
    shutil.rmtree(staging, ignore_errors=True)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise _disk_full(e, root) from None
    raise
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def fetch(name: str, *, url: Optional[str] = None,
          root: Optional[PathLike] = None,
          progress: Optional[ProgressFn] = None, retries: int = 3,
          retry_wait: float = 2.0, timeout: float = 60.0,
          environ: Optional[Mapping[str, str]] = None) -> pathlib.Path:
  """Downloads, verifies and installs the published model ``name``.

  A model already installed is returned at once; a second caller while a
  download runs waits for it (``Progress`` stage ``"waiting"``).

  Args:
    name: ``"sm"`` or ``"mv"`` (a name of :func:`sources`).
    url: the archive's address instead of the table's: http(s), ``file://``
      or a local path (a zip, or the folder it unzips to).
    root: the cache folder (default :func:`cache_root`).
    progress: called with a :class:`Progress` as bytes arrive and stages
      change.
    retries: how often a cut connection is resumed before giving up.
    retry_wait: seconds before the first resume (doubling after each).
    timeout: seconds without data before a connection counts as cut.
    environ: the environment to read overrides from (default ``os.environ``).

  Returns:
    The installed model's folder (give it to ``--checkpoint``).

  Raises:
    FetchError: with the problem and the fix; nothing half-installed is left.
  """
  model = source(name, environ)
  url = url or model.url
  if not url:
    raise FetchError(f"no address for {name}: set {model.url_env} or pass "
                     "--url")
  root = pathlib.Path(root) if root is not None else cache_root(environ)
  report = progress or (lambda p: None)
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise FetchError(f"cannot create the model cache {root} ({e}); set "
                     f"{HOME_ENV} to a writable folder") from None
  part = _part_file(root, name)

  def waiting():
    meta = {}
    with contextlib.suppress(OSError, ValueError):
      meta = json.loads(_part_meta(part).read_text())
    have = part.stat().st_size if part.is_file() else 0
    report(Progress(name, "waiting", have, meta.get("total")))

  with _lock(root, name, on_wait=waiting):
    installed = installed_path(name, root)
    if installed is not None:
      report(Progress(name, "done"))
      return installed
    for stale in _models_dir(root).glob(f".{name}.partial-*"):
      shutil.rmtree(stale, ignore_errors=True)  # left by a killed install
    if _is_local(url):
      archive = _local_file(url)
      if not archive.exists():
        raise FetchError(f"{archive} does not exist; give --url the path of "
                         "the downloaded zip archive (or of its unzipped "
                         "folder)")
      _check_disk(root, 0, model.installed_bytes)
      sha256, downloaded = (None if archive.is_dir()
                            else _sha256(archive)), False
    else:
      archive, sha256 = _download(model, url, root, report, retries,
                                  retry_wait, timeout, environ)
      downloaded = True
    try:
      if model.sha256 and sha256 and sha256 != model.sha256.lower():
        raise FetchError(f"the archive's SHA-256 is {sha256}, not the "
                         f"published {model.sha256}: the download is corrupt "
                         "or the address serves another file")
      report(Progress(name, "verifying"))
      params, step, member = read_archive_params(archive, model)
    except FetchError:
      if downloaded:  # bad bytes: the next try starts afresh
        part.unlink(missing_ok=True)
        _part_meta(part).unlink(missing_ok=True)
      raise
    report(Progress(name, "installing"))
    path = _install(model, params, step, root, {
        "url": url, "archive_sha256": sha256,
        "archive_bytes": archive.stat().st_size if archive.is_file() else None,
        "member": member,
        "step": step,
        "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")})
    if downloaded:
      part.unlink(missing_ok=True)
      _part_meta(part).unlink(missing_ok=True)
    report(Progress(name, "done"))
    logging.info("installed %s (%s) in %s", name, model.title, path)
    return path


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
    if entry.path is not None:
      state, size = "installed", format_bytes(entry.installed_bytes)
    elif entry.partial_bytes:
      share = (f" of {format_bytes(entry.expected_bytes)}"
               if entry.expected_bytes else "")
      state = (f"partial download {format_bytes(entry.partial_bytes)}{share}"
               f" (python -m xfactor_core.fetch {name} resumes it)")
      size = format_bytes(entry.partial_bytes)
    else:
      state = ("not downloaded (about "
               f"{format_bytes(table[name].installed_bytes)} once installed)")
      size = "-"
    rows.append(f"| {name} | {title} | {state} | {size} | "
                f"{entry.path or '-'} |")
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
  parser.add_argument("--home", default=None,
                      help=f"cache folder (default: ${HOME_ENV} or "
                           "~/.cache/xfactor)")
  parser.add_argument("--list", action="store_true",
                      help="show what is installed, where, and its size")
  parser.add_argument("--remove", nargs="+", metavar="MODEL", default=None,
                      help="delete installed models and partial downloads")
  parser.add_argument("--retries", type=int, default=3,
                      help="times a cut connection is resumed (default 3)")
  return parser


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
    names = list(sources()) if args.names == ["all"] else args.names
    if not names:
      parser.error("name a model: sm, mv or all (or --list)")
    if args.url and len(names) != 1:
      parser.error("--url takes the archive of one model; name one")
    for name in names:
      bar = _Bar()
      try:
        path = fetch(name, url=args.url, root=root, progress=bar,
                     retries=args.retries)
      finally:
        bar.close()
      logging.info("%s is ready: %s (use --checkpoint %s)", name, path, name)
  except FetchError as e:
    logging.error("%s", e)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
