"""How long transfers take, and how long a new one would wait.

* :class:`Estimator` remembers how fast each model rendered and estimates a
  transfer's seconds: as the model ran before, or from its FLOPs and this
  machine's measured matmul speed (the estimate the status line shows).
* :func:`queue_wait` turns the jobs ahead of a new one and that estimate
  into the wait a visitor faces; :meth:`QueueWait.admitted` says whether it
  is within the server's bound (``--max-wait-s``, ``XFACTOR_MAX_WAIT_S``),
  and :meth:`QueueWait.refusal` words the refusal.

Everything here is plain arithmetic on measured numbers: no Gradio, no
model loading.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from typing import Mapping, Optional

from xfactor_core.inference.pipeline import TransferPipeline

# The share of the matmul peak a transfer reaches (0.5 to 0.8 measured, see
# benchmarks/README.md): estimates before a model's first run use the low end.
ESTIMATE_EFFICIENCY = 0.5
MAX_WAIT_ENV = "XFACTOR_MAX_WAIT_S"
# A visitor waits at most this long for a job to finish (nobody is told to
# wait an hour): 10 minutes, some 6 to 10 jobs of the published model on a
# 2-core CPU.
DEFAULT_MAX_WAIT_SECONDS = 600.0


def format_seconds(seconds: float) -> str:
  """``0.25`` -> ``"0.25 s"``, ``4.2`` -> ``"4.2 s"``, ``42.4`` -> ``"42 s"``,
  ``300`` -> ``"5.0 min"``."""
  if seconds < 1:
    return f"{seconds:.2f} s"
  if seconds < 10:
    return f"{seconds:.1f} s"
  return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@dataclasses.dataclass(frozen=True)
class Estimate:
  """How long rendering some frames will take.

  Attributes:
    seconds: the estimate.
    measured: from this model's earlier frames (else from its FLOPs and
      this machine's matmul speed).
  """
  seconds: float
  measured: bool

  def describe(self, short: bool = False) -> str:
    """``"about 45 s (measured)"``; short: ``"about 45 s left"``."""
    amount = format_seconds(self.seconds)
    if short:
      return f"about {amount} left"
    how = ("as this model ran before" if self.measured else
           "estimated from the model's size; the first run also compiles")
    return f"about {amount} ({how})"


@functools.lru_cache(maxsize=1)
def host_flops() -> float:
  """This machine's measured matmul speed in FLOP/s (measured once)."""
  from xfactor_core import benchmarking  # pylint: disable=g-import-not-at-top
  return benchmarking.matmul_peak_flops(size=1024, repeats=3)


class Estimator:
  """Measured rendering speeds and the estimates made from them.

  Thread-safe; one per app, shared by every session (speeds are facts of
  the machine and the model, not of a visitor).
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._speeds: dict[tuple, float] = {}  # seconds per frame, measured

  @staticmethod
  def _key(model_id: str, pipe: TransferPipeline, views: int) -> tuple:
    return (model_id, pipe.image_size, views, pipe.batch_size)

  def record_speed(self, model_id: str, pipe: TransferPipeline, views: int,
                   seconds_per_frame: float) -> None:
    """Remembers how fast a model rendered (warm chunks only)."""
    key = self._key(model_id, pipe, views)
    with self._lock:
      old = self._speeds.get(key)
      self._speeds[key] = (seconds_per_frame if old is None
                           else 0.5 * (old + seconds_per_frame))

  def estimate_seconds(self, model_id: str, pipe: TransferPipeline,
                       frames: int, views: int) -> Estimate:
    """Seconds to transfer ``frames`` frames with ``views`` context views:
    as the model ran before, or from its FLOPs and this machine's measured
    matmul speed."""
    with self._lock:
      measured = self._speeds.get(self._key(model_id, pipe, views))
    if measured is not None:
      return Estimate(frames * measured, measured=True)
    rate = host_flops() * ESTIMATE_EFFICIENCY
    return Estimate(frames * pipe.flops_per_frame(views) / rate,
                    measured=False)


@dataclasses.dataclass(frozen=True)
class QueueWait:
  """What a new job faces: the jobs ahead of it and the estimated wait.

  Attributes:
    ahead: jobs queued or running before this one.
    job: the estimate of this job (used for each job ahead too: their
      settings are not known), or ``None`` when it cannot be made yet (its
      model is not loaded).
  """
  ahead: int
  job: Optional[Estimate]

  @property
  def seconds(self) -> Optional[float]:
    """Estimated seconds until this job is done: each job ahead as long as
    this one, plus this one; ``None`` when unknown. Jobs that run side by
    side (``--max-jobs`` above 1) share the CPU, so they are not counted as
    faster."""
    if self.job is None:
      return None
    return (self.ahead + 1) * self.job.seconds

  def admitted(self, bound: Optional[float]) -> bool:
    """Whether the job may join the queue: nothing ahead of it, no bound, an
    unknown estimate, or a wait within ``bound`` seconds."""
    seconds = self.seconds
    return (self.ahead == 0 or not bound or seconds is None
            or seconds <= bound)

  def describe(self) -> str:
    """The status line of a queued job (``""`` with nothing ahead)."""
    if self.ahead == 0:
      return ""
    jobs = f"{self.ahead} job{'s' if self.ahead != 1 else ''}"
    line = f"Queued: {jobs} ahead of yours"
    if self.seconds is not None:
      line += (f"; estimated wait until your result about "
               f"{format_seconds(self.seconds)}")
    return line + "."

  def refusal(self, bound: float) -> str:
    """Why a job over ``bound`` was refused, and what to do instead."""
    jobs = f"{self.ahead} job{'s' if self.ahead != 1 else ''}"
    return (f"The queue is too long right now: {jobs} ahead of yours, an "
            f"estimated wait of about {format_seconds(self.seconds or 0.0)} "
            f"until your result, above this server's limit of "
            f"{format_seconds(bound)}. Nothing was queued: try again in a few "
            "minutes, with fewer frames, or run XFactor Studio on your own "
            "machine.")


def queue_wait(ahead: int, job: Optional[Estimate]) -> QueueWait:
  """The wait of a new job with ``ahead`` jobs before it."""
  return QueueWait(max(0, int(ahead)), job)


def max_wait_seconds(cli_value: Optional[float] = None,
                     environ: Optional[Mapping[str, str]] = None) -> float:
  """The wait bound: ``--max-wait-s`` wins over ``XFACTOR_MAX_WAIT_S``, else
  :data:`DEFAULT_MAX_WAIT_SECONDS`; 0 turns the bound off.

  Raises:
    ValueError: a value that is not a finite number of seconds >= 0.
  """
  env = os.environ if environ is None else environ
  value = cli_value
  if value is None:
    text = env.get(MAX_WAIT_ENV, "").strip()
    if not text:
      return DEFAULT_MAX_WAIT_SECONDS
    try:
      value = float(text)
    except ValueError:
      raise ValueError(f"{MAX_WAIT_ENV}={text!r} is not a number of seconds; "
                       "set it to e.g. 600, or 0 for no bound") from None
  value = float(value)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"the wait bound must be 0 (off) or a positive number of "
                     f"seconds, got {value}")
  return value
