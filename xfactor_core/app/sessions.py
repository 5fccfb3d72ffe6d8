"""The sessions' job folders: one per job, swept by age, removed with the
session's result.

Every file a job writes (the MP4, exports, batch zips) lives in its own folder
under one root, so a session that ends or goes stale takes its files with it
and a shut-down app removes the whole root.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
import uuid
from typing import Optional


def new_workdir(root: pathlib.Path, prefix: str = "job") -> pathlib.Path:
  """A fresh folder under ``root`` for one job's files."""
  root.mkdir(parents=True, exist_ok=True)
  stamp = time.strftime("%Y%m%d_%H%M%S")
  path = root / f"{prefix}_{stamp}_{uuid.uuid4().hex[:8]}"
  path.mkdir()
  return path


def sweep_workdirs(root: pathlib.Path, max_age_seconds: float,
                   now: Optional[float] = None) -> int:
  """Deletes job folders under ``root`` older than ``max_age_seconds``.

  Returns the number deleted.
  """
  if not root.is_dir():
    return 0
  now = time.time() if now is None else now
  removed = 0
  for entry in root.iterdir():
    try:
      if entry.is_dir() and now - entry.stat().st_mtime > max_age_seconds:
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    except OSError:
      continue
  return removed


@dataclasses.dataclass(frozen=True)
class SessionFolders:
  """Job folders of the sessions, under ``root``.

  Attributes:
    root: parent of every session job folder.
    max_age_seconds: folders older than this are swept when a new one is made
      (a session that left without its state being deleted).
  """
  root: pathlib.Path
  max_age_seconds: float = 2 * 3600

  def new(self) -> pathlib.Path:
    """A fresh job folder (stale ones are swept first)."""
    sweep_workdirs(self.root, self.max_age_seconds)
    return new_workdir(self.root)

  def discard(self, folder: pathlib.Path) -> bool:
    """Removes a job folder of these sessions; False (and nothing removed)
    for a folder elsewhere, such as the example cache's."""
    folder = pathlib.Path(folder).resolve()
    if self.root.resolve() not in folder.parents:
      return False
    shutil.rmtree(folder, ignore_errors=True)
    return True
