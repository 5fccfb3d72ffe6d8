"""A local stand-in for the release host, for tests and benchmarks of fetch.

:class:`ArchiveServer` serves files over HTTP on 127.0.0.1 with Range support
(as Dropbox and CDNs do) and can misbehave on request as real hosts do: cut
the connection after some bytes, answer 403/404, answer "not now" (408, 429,
5xx, with ``Retry-After`` and an HTML page if asked) for the next requests,
send an HTML page (sign-in, traffic limit), ignore Range, resume at another
byte than asked, or send a lying ``Content-Range``. Every request is logged
with the bytes it sent. :func:`make_release_archive` builds
a zip in the published layout (``<folder>/checkpoints-0/...``) from a clu
checkpoint directory or a state dictionary; :func:`publish_tiny_release`
serves a tiny random model that way and writes the ``XFACTOR_SOURCES`` file
that points the fetch at it (the notebook's test mode).

Nothing here reaches beyond this machine.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import pathlib
import re
import threading
import time
import zipfile
from typing import Any, Mapping, Optional, Union

import numpy as np

from xfactor_core import checkpoints, msgpack_stream

PathLike = Union[str, os.PathLike]
# A tiny model of the published architecture (the fetch tests' size).
TINY_CONFIG = checkpoints.ModelConfig(features=64, num_heads=4, patch_size=8,
                                      pose_layers=2, render_layers=2,
                                      pose_dim=32, num_global_tokens=32)


@dataclasses.dataclass
class Behaviour:
  """How the server answers one path.

  Attributes:
    file: the file served (None: the path only answers with ``status``).
    status: an error status to answer instead (403, 404, ...).
    html: answer with an HTML page (status 200, text/html).
    cut_after: close the connection after sending this many bytes of a
      request's body, for the next ``cuts`` requests.
    cuts: how many requests are cut.
    ranges: honour Range headers (False: always send the whole file, 200).
    delay: seconds to wait after each 64 KiB block (a slow link).
    fail: statuses answered, one per request, before the file is served
      (e.g. ``[503, 429]``: the next two requests get those).
    retry_after: the ``Retry-After`` header sent with ``fail`` answers.
    fail_html: ``fail`` answers carry an HTML page (a host's traffic-limit
      page) instead of plain text.
    html_type: the Content-Type of ``html`` pages (a host may send
      ``application/octet-stream`` for them).
    range_shift: a 206 starts this many bytes before the asked byte (a
      negative value: after it), with a true ``Content-Range``.
    content_range: sent verbatim as the ``Content-Range`` of 206 answers (a
      server that lies about what it sends).
  """
  file: Optional[pathlib.Path] = None
  status: Optional[int] = None
  html: bool = False
  cut_after: Optional[int] = None
  cuts: int = 1
  ranges: bool = True
  delay: float = 0.0
  fail: list[int] = dataclasses.field(default_factory=list)
  retry_after: Optional[str] = None
  fail_html: bool = False
  html_type: str = "text/html; charset=utf-8"
  range_shift: int = 0
  content_range: Optional[str] = None


@dataclasses.dataclass
class Request:
  """One request the server answered, logged before the answer's headers go
  out (so the log is in the order the client saw the answers); ``sent``
  counts each block before it is written."""
  path: str
  range: Optional[str]
  status: int
  sent: int


class ArchiveServer:
  """An HTTP server on 127.0.0.1 (a free port) for the duration of a ``with``.

  ``serve(name, file, **behaviour)`` publishes a file at ``/name``;
  ``url(name)`` is its address; ``requests`` logs what was asked and sent.
  """

  def __init__(self):
    self.paths: dict[str, Behaviour] = {}
    self.requests: list[Request] = []
    self._lock = threading.Lock()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):  # quiet
        del args

      def do_GET(self):  # noqa: N802 (http.server's name)
        server._answer(self)

    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._httpd.daemon_threads = True
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    daemon=True)

  def __enter__(self) -> "ArchiveServer":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._httpd.shutdown()
    self._httpd.server_close()

  @property
  def port(self) -> int:
    return self._httpd.server_address[1]

  def url(self, name: str) -> str:
    return f"http://127.0.0.1:{self.port}/{name}"

  def serve(self, name: str, file: Optional[PathLike] = None,
            **behaviour: Any) -> str:
    """Publishes ``file`` at ``/name`` with the given :class:`Behaviour`
    fields; returns its URL."""
    with self._lock:
      self.paths[name] = Behaviour(
          file=None if file is None else pathlib.Path(file), **behaviour)
    return self.url(name)

  def update(self, name: str, **behaviour: Any) -> None:
    """Changes fields of the :class:`Behaviour` of ``/name``."""
    with self._lock:
      self.paths[name] = dataclasses.replace(self.paths[name], **behaviour)

  def sent_bytes(self, name: str) -> int:
    """Body bytes sent for ``/name`` over all requests."""
    return sum(r.sent for r in self.requests if r.path == "/" + name)

  def _log(self, handler, status: int, sent: int) -> Request:
    entry = Request(handler.path, handler.headers.get("Range"), status, sent)
    with self._lock:
      self.requests.append(entry)
    return entry

  def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
    with self._lock:
      behaviour = self.paths.get(handler.path.lstrip("/").split("?")[0])
    if behaviour is None or behaviour.status is not None:
      status = 404 if behaviour is None else behaviour.status
      body = b"no such file\n"
      handler.send_response(status)
      handler.send_header("Content-Type", "text/plain")
      handler.send_header("Content-Length", str(len(body)))
      self._log(handler, status, 0)
      handler.end_headers()
      handler.wfile.write(body)
      return
    with self._lock:
      failing = behaviour.fail.pop(0) if behaviour.fail else None
    if failing is not None:
      self._answer_not_now(handler, behaviour, failing)
      return
    if behaviour.html:
      body = b"<!DOCTYPE html><html><body>Sign in to download</body></html>"
      handler.send_response(200)
      handler.send_header("Content-Type", behaviour.html_type)
      handler.send_header("Content-Length", str(len(body)))
      self._log(handler, 200, len(body))
      handler.end_headers()
      handler.wfile.write(body)
      return
    size = behaviour.file.stat().st_size
    start, status = 0, 200
    match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
    if match and behaviour.ranges:
      start = int(match.group(1))
      if start < size:
        start = min(max(start - behaviour.range_shift, 0), size - 1)
      if start >= size:
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{size}")
        handler.send_header("Content-Length", "0")
        self._log(handler, 416, 0)
        handler.end_headers()
        return
      status = 206
    handler.send_response(status)
    handler.send_header("Content-Type", "application/zip")
    handler.send_header("Content-Length", str(size - start))
    handler.send_header("ETag", f'"{size}-{int(behaviour.file.stat().st_mtime)}"')
    if status == 206:
      handler.send_header("Content-Range", behaviour.content_range
                          or f"bytes {start}-{size - 1}/{size}")
    entry = self._log(handler, status, 0)
    handler.end_headers()
    limit = size - start
    with self._lock:
      if behaviour.cut_after is not None and behaviour.cuts > 0:
        behaviour.cuts -= 1
        limit = min(limit, behaviour.cut_after)
    sent = 0
    with open(behaviour.file, "rb") as f:
      f.seek(start)
      while sent < limit:
        block = f.read(min(1 << 16, limit - sent))
        if not block:
          break
        entry.sent += len(block)  # before the client can have it
        try:
          handler.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
          entry.sent -= len(block)
          break
        sent += len(block)
        if behaviour.delay:
          time.sleep(behaviour.delay)
    if sent < size - start:
      handler.close_connection = True
      try:
        handler.wfile.flush()
        handler.connection.shutdown(2)  # the cut: the client sees an early end
      except OSError:  # the client hung up first
        pass


  def _answer_not_now(self, handler: http.server.BaseHTTPRequestHandler,
                      behaviour: Behaviour, status: int) -> None:
    """A "not now" answer (408, 429, 5xx), as a host sends it."""
    if behaviour.fail_html:
      body = (b"<!DOCTYPE html><html><body>This link has been temporarily "
              b"disabled: too much traffic</body></html>")
      kind = "text/html; charset=utf-8"
    else:
      body, kind = b"try again later\n", "text/plain"
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    if behaviour.retry_after is not None:
      handler.send_header("Retry-After", behaviour.retry_after)
    self._log(handler, status, 0)
    handler.end_headers()
    handler.wfile.write(body)


def make_release_archive(out: PathLike, *, checkpoint_dir: Optional[PathLike]
                         = None, state: Optional[Mapping[str, Any]] = None,
                         folder: str = "stereo_monocular",
                         compression: int = zipfile.ZIP_STORED
                         ) -> pathlib.Path:
  """A zip in the published layout: ``<folder>/checkpoints-0/<files>``.

  Give either a clu checkpoint directory (its files are zipped as they are)
  or a train-state dictionary (written as ``ckpt-1.flax`` with its index,
  streamed into the zip leaf by leaf).
  """
  out = pathlib.Path(out)
  prefix = f"{folder}/checkpoints-0/"
  with zipfile.ZipFile(out, "w", compression=compression,
                       allowZip64=True) as archive:
    if checkpoint_dir is not None:
      for file in sorted(pathlib.Path(checkpoint_dir).iterdir()):
        archive.write(file, prefix + file.name)
    else:
      archive.writestr(prefix + checkpoints.CHECKPOINT_INDEX,
                       'model_checkpoint_path: "ckpt-1"\n'
                       'all_model_checkpoint_paths: "ckpt-1"\n')
      with archive.open(prefix + "ckpt-1.flax", "w",
                        force_zip64=True) as member:
        msgpack_stream.write_tree(member, state)
  return out


def tiny_params(config: checkpoints.ModelConfig = TINY_CONFIG, seed: int = 0
                ) -> dict[str, Any]:
  """Random params of ``config`` (no flax init: from the expected shapes),
  small enough that a transfer with them takes a second."""
  rng = np.random.default_rng(seed)
  params: dict[str, Any] = {}
  for network, shapes in checkpoints.expected_shapes(config).items():
    for path, shape in shapes.items():
      if path.endswith("scale"):
        value = np.ones(shape, np.float32)
      elif path.endswith("bias"):
        value = np.zeros(shape, np.float32)
      else:
        value = (0.02 * rng.standard_normal(shape)).astype(np.float32)
      node = params.setdefault(network, {})
      *parents, leaf = path.split("/")
      for parent in parents:
        node = node.setdefault(parent, {})
      node[leaf] = value
  return params


def publish_tiny_release(server: "ArchiveServer", folder: PathLike,
                         name: str = "sm", image_size: int = 64,
                         config: checkpoints.ModelConfig = TINY_CONFIG
                         ) -> dict[str, str]:
  """Serves a tiny random model as the release archive of ``name``.

  Writes into ``folder`` the archive (published layout, with an optimiser
  state beside the params as the release has) and a sources file that gives
  ``name`` the server's address and the tiny model's size.

  Returns:
    The environment that points the fetch at it: ``{"XFACTOR_SOURCES": ...}``.
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  params = tiny_params(config)
  state = {"step": 1, "params": params,
           "opt_state": {"mu": params, "nu": params}}
  archive = make_release_archive(folder / f"{name}.zip", state=state,
                                 folder="stereo_monocular")
  url = server.serve(f"{name}.zip", archive)
  sources = folder / "sources.json"
  sources.write_text(json.dumps({name: {
      "url": url, "config": config.to_dict(), "image_size": image_size}}))
  return {"XFACTOR_SOURCES": str(sources)}
