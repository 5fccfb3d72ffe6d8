"""Results of the shipped examples, cached lazily and shared by all sessions."""

from __future__ import annotations

import collections
import hashlib
import json
import pathlib
import shutil
import threading
from typing import Optional

from xfactor_core.app import sessions
from xfactor_core.app.jobs import TransferRequest, TransferResult
from xfactor_core.app.presets import PresetLibrary


def _file_fingerprint(path: str) -> tuple[str, int, int]:
  p = pathlib.Path(path)
  stat = p.stat()
  return (str(p.resolve()), stat.st_size, int(stat.st_mtime))


class ExampleCache:
  """Lazily cached results of the shipped examples, shared by all sessions.

  Only requests whose files are all shipped presets are cached (keyed by the
  model, the files' path/size/mtime and the settings), so the first click on
  an example costs one normal transfer and later clicks are instant. Results
  are never mutated; their files live under the cache's own folder.
  """

  def __init__(self, presets: PresetLibrary, root: pathlib.Path,
               max_entries: int = 32):
    self._presets = presets
    self._root = root
    self._max_entries = max_entries
    self._entries: collections.OrderedDict[str, TransferResult] = (
        collections.OrderedDict())
    self._lock = threading.Lock()

  def key(self, request: TransferRequest) -> Optional[str]:
    """The cache key, or None when the request uses uploads."""
    files = list(request.context_files) + list(request.motion.files)
    if not request.context_files or not all(
        self._presets.is_shipped(f) for f in files):
      return None
    try:
      payload = {
          "model": request.model_id,
          "files": [_file_fingerprint(f) for f in files],
          "source": request.motion.source, "preset": request.motion.preset,
          "settings": request.settings.to_dict()}
    except OSError:
      return None
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()
                          ).hexdigest()

  def get(self, request: TransferRequest) -> Optional[TransferResult]:
    key = self.key(request)
    if key is None:
      return None
    with self._lock:
      result = self._entries.get(key)
      if result is not None:
        self._entries.move_to_end(key)
      return result

  def workdir(self) -> pathlib.Path:
    return sessions.new_workdir(self._root, "example")

  def put(self, request: TransferRequest, result: TransferResult) -> None:
    key = self.key(request)
    if key is None:
      return
    with self._lock:
      self._entries[key] = result
      while len(self._entries) > self._max_entries:
        _, dropped = self._entries.popitem(last=False)
        shutil.rmtree(dropped.video.parent, ignore_errors=True)

  def __len__(self) -> int:
    with self._lock:
      return len(self._entries)
