"""Metric output: a JSON-lines file and TensorBoard event files.

``<workdir>/metrics.jsonl`` gets one line per write, ``{"step": N, "time":
unix seconds, "<name>": value, ...}`` with names such as ``train/loss`` or
``eval/recon_psnr``; the event files (tensorboardX, no TensorFlow needed) go
into ``<workdir>`` itself, so ``tensorboard --logdir <workdir>`` shows them.
Only one process of a multi-process run writes (``enabled``).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Mapping, Union

import numpy as np

PathLike = Union[str, os.PathLike]
METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: PathLike) -> list[dict]:
  """All lines of ``<workdir>/metrics.jsonl`` (empty when there are none)."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


class MetricWriter:
  """Writes scalars and images to ``metrics.jsonl`` and TensorBoard."""

  def __init__(self, workdir: PathLike, enabled: bool = True):
    self._enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(workdir / METRICS_FILE, "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tensorboard = SummaryWriter(logdir=str(workdir), flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One JSON line and one TensorBoard point per scalar."""
    if not self._enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    record = {"step": int(step), "time": time.time()}
    # JSON has no NaN/inf: write them as strings so the line stays valid.
    record.update({k: v if math.isfinite(v) else str(v)
                   for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tensorboard.add_scalar(name, value, int(step))

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """An ``H x W x 3`` uint8 image to TensorBoard."""
    if self._enabled:
      self._tensorboard.add_image(name, np.asarray(image), int(step),
                                  dataformats="HWC")

  def write_text(self, step: int, name: str, text: str) -> None:
    if self._enabled:
      self._tensorboard.add_text(name, text, int(step))

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()
      self._enabled = False
