"""The prepared GPU session (benchmarks/gpu_run.py), run at its tiny size on
the CPU: both throughput tables, a training run whose schedule fits the
budget, and weights that come back in parts and load."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from xfactor_core import checkpoints

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_gpu_run_script_at_tiny_size(tmp_path):
  out = tmp_path / "out"
  subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--tiny",
                  "--minutes", "3"], check=True, cwd=REPO,
                 env={**os.environ, "OUT": str(out), "PYTHON": sys.executable}, capture_output=True)
  names = sorted(p.name for p in out.iterdir())
  assert "summary.json" in names and "weights.json" in names
  assert len(names) <= 8
  assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.iterdir())
  summary = json.loads((out / "summary.json").read_text())
  assert summary["inference"]["rows"][0]["frames_per_s"] > 0
  assert summary["train"]["rows"][0]["mfu"] > 0
  # The schedule was planned from the measured rate and trained to its end.
  assert summary["trained_steps"] == summary["planned_steps"] > 20
  assert summary["model_info"]["name"] == "synthetic_tiny"
  params = checkpoints.load_split_params(out)
  config = checkpoints.infer_config(params)
  assert config.features == 64
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
