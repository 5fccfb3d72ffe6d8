"""One prepared GPU session: throughput at published size, then training.

    python benchmarks/gpu_run.py --out "$OUT" [--minutes 9] [--tiny]

In one run of at most ``--minutes`` (the device tool's lease allows 10 per
command), it

1. records GPU inference and training throughput at the published size
   (bfloat16, cuDNN attention where the backend has it): frames/s, ms per
   frame and the fraction of the matmul peak, with ``benchmarks/inference.py``
   and ``benchmarks/train.py``;
2. trains the default recipe at its larger GPU size
   (``xfactor_core/configs/synthetic_sm.py:gpu``) for the rest of the time: a
   short calibration run measures the step rate, then the run resumes with
   ``total_steps`` set so that its schedule ends before the deadline;
3. writes what comes back into ``--out`` as at most 8 files of at most 16 MiB:
   ``summary.json`` (both benchmark tables, the run's metrics and model.json)
   and the final weights in bfloat16, split into parts
   (``checkpoints.save_split_params``; ``weights.json`` names them).

Back on the CPU, ``checkpoints.load_split_params(folder)`` reads the weights;
``python -m xfactor_core.training.release`` ships them after
``python -m xfactor_core.evaluate`` says they are better.

``--tiny`` runs the same steps at a tiny size on any backend (the CPU test of
this script). On the device machine, the packages the image lacks
(ml-collections, tensorboardX, clu, grain) travel as wheels: see the device
tool's README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_OUTPUT_FILES = 8
MAX_FILE_BYTES = 15 * 2 ** 20  # under the 16 MiB a returned file may have


def _run(command: list[str], timeout: float, log: pathlib.Path) -> int:
  """Runs a command with a wall-clock limit; its output goes to ``log``."""
  logging.info("$ %s (at most %.0f s)", " ".join(command), timeout)
  with open(log, "a") as out:
    try:
      return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                            timeout=max(timeout, 1.0), cwd=REPO,
                            check=False).returncode
    except subprocess.TimeoutExpired:
      logging.warning("stopped at its time limit: %s", command[:4])
      return 124


def _read_json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text()) if path.is_file() else {}


def _steps_per_second(workdir: pathlib.Path) -> float:
  """The last logged training rate of a run (0 when none was logged)."""
  rate = 0.0
  metrics = workdir / "metrics.jsonl"
  if metrics.is_file():
    for line in metrics.read_text().splitlines():
      record = json.loads(line)
      rate = record.get("steps_per_second", rate)
  return rate


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True,
                      help="the folder that comes back (the device's $OUT)")
  parser.add_argument("--minutes", type=float, default=9.0,
                      help="wall-clock budget of the whole run")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny sizes: the CPU test of this script")
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  deadline = time.monotonic() + 60.0 * args.minutes
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  scratch = pathlib.Path(tempfile.mkdtemp(prefix="gpu_run_"))
  log = scratch / "log.txt"
  python = sys.executable
  config_name = "default" if args.tiny else "published"
  dtype = "float32" if args.tiny else "bfloat16"

  # 1. Throughput at published size (a few minutes at most).
  _run([python, "benchmarks/inference.py", "--configs", config_name,
        "--batches", "1" if args.tiny else "8", "--dtype", dtype,
        "--repeats", "2", "--json", str(scratch / "inference.json")],
       min(150.0, 0.25 * (deadline - time.monotonic())), log)
  _run([python, "benchmarks/train.py", "--configs",
        "tiny" if args.tiny else "published", "--dtype", dtype,
        "--steps", "2" if args.tiny else "5",
        "--json", str(scratch / "train.json")],
       min(150.0, 0.3 * (deadline - time.monotonic())), log)

  # 2. Training: calibrate the step rate, then a schedule that fits.
  workdir = scratch / "run"
  config = (f"--config={REPO}/xfactor_core/configs/"
            + ("synthetic_tiny.py" if args.tiny else "synthetic_sm.py:gpu"))
  train = [python, "-m", "xfactor_core.train", config,
           f"--workdir={workdir}", "--config.progress_bar=False",
           "--config.eval.num_batches=0", "--config.log_every=10"]
  calibration_steps = 20 if args.tiny else 60
  margin = 45.0  # export and slack
  _run(train + [f"--config.total_steps={calibration_steps}",
                f"--config.checkpoint_every={calibration_steps}"],
       deadline - time.monotonic() - margin, log)
  rate = _steps_per_second(workdir)
  left = deadline - time.monotonic() - margin - 30.0  # restart and compile
  total = calibration_steps + int(max(rate * left * 0.9, 0))
  if total > calibration_steps:
    _run(train + [f"--config.total_steps={total}",
                  f"--config.checkpoint_every={max(total // 10, 10)}"],
         deadline - time.monotonic() - margin, log)

  # 3. What comes back: summary.json and the bfloat16 weights in parts.
  from xfactor_core import checkpoints  # pylint: disable=g-import-not-at-top
  summary = {
      "inference": _read_json(scratch / "inference.json"),
      "train": _read_json(scratch / "train.json"),
      "model_info": _read_json(workdir / checkpoints.MODEL_INFO),
      "steps_per_second": _steps_per_second(workdir),
      "planned_steps": total,
      "metrics": [json.loads(line) for line in
                  (workdir / "metrics.jsonl").read_text().splitlines()[-50:]]
      if (workdir / "metrics.jsonl").is_file() else [],
      "log_tail": log.read_text()[-4000:] if log.is_file() else "",
  }
  try:
    params = checkpoints.load_params(workdir)
    stored, _ = checkpoints.load_state(workdir)
    summary["trained_steps"] = int(stored["step"])
    files = checkpoints.save_split_params(out, params,
                                          max_bytes=MAX_FILE_BYTES)
  except checkpoints.CheckpointError as e:
    summary["error"] = str(e)
    files = []
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  if len(files) + 1 > MAX_OUTPUT_FILES:
    logging.error("%d files would come back, more than %d: use a smaller "
                  "model", len(files) + 1, MAX_OUTPUT_FILES)
    return 1
  shutil.rmtree(scratch, ignore_errors=True)
  logging.info("wrote %s", ", ".join(sorted(p.name for p in out.iterdir())))
  return 0 if "error" not in summary else 1


if __name__ == "__main__":
  sys.exit(main())
