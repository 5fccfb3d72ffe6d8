"""Which transfer jobs are open, and which of them their users cancelled.

Cancelling is cooperative: a UI opens a job when its button is clicked,
passes ``lambda: board.cancelled(job_id)`` to :func:`jobs.run_transfer` as
``should_stop``, and closes the job when its event ends.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Optional


class JobBoard:
  """The transfer jobs that are queued or running, and which were cancelled.

  A UI opens a job when its button is clicked (before the job waits in a
  queue), asks for it to be cancelled from another event, and passes
  ``lambda: board.cancelled(job_id)`` to :func:`run_transfer` as
  ``should_stop``. A cancelled job then ends like any other run, with the
  frames it had, instead of being killed mid-event. Thread-safe. Jobs that
  never closed (a client that left while queued) expire after
  ``ttl_seconds``.
  """

  def __init__(self, ttl_seconds: float = 6 * 3600):
    self.ttl_seconds = ttl_seconds
    self._opened: dict[str, float] = {}
    self._cancelled: set[str] = set()
    self._lock = threading.Lock()

  def open(self) -> str:
    """Registers a new job; returns its id."""
    job_id = uuid.uuid4().hex
    now = time.monotonic()
    with self._lock:
      for old, opened in list(self._opened.items()):
        if now - opened > self.ttl_seconds:
          self._forget(old)
      self._opened[job_id] = now
    return job_id

  def cancel(self, job_id: Optional[str]) -> bool:
    """Asks an open job to stop; False when it is not open (finished,
    expired or never started)."""
    with self._lock:
      if job_id not in self._opened:
        return False
      self._cancelled.add(job_id)
      return True

  def cancelled(self, job_id: Optional[str]) -> bool:
    with self._lock:
      return job_id in self._cancelled

  def close(self, job_id: Optional[str]) -> None:
    """The job ended (finished, failed or stopped)."""
    with self._lock:
      self._forget(job_id)

  def _forget(self, job_id: Optional[str]) -> None:
    self._opened.pop(job_id, None)
    self._cancelled.discard(job_id)

  def __len__(self) -> int:
    with self._lock:
      return len(self._opened)
