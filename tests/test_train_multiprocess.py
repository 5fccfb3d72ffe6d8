"""The training CLI across devices and processes: 4 simulated CPU devices and a
2-process run (jax.distributed on localhost, CPU collectives) train the same
model as one device, through `python -m xfactor_core.train`."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from xfactor_core import checkpoints
from xfactor_core.configs import synthetic_tiny
from xfactor_core.training import trainer
from xfactor_core.training.writer import read_metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO_ROOT / "xfactor_core" / "configs" / "synthetic_tiny.py"
STEPS = 4
# The same run for every device layout; evaluation does not touch the train
# state and is tested in test_training.py.
OVERRIDES = {"total_steps": STEPS, "checkpoint_every": 2, "log_every": 1,
             "eval_every": 1000, "eval.num_batches": 0, "progress_bar": False}
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _command(workdir, **extra):
  flags = {**OVERRIDES, **extra}
  return [sys.executable, "-m", "xfactor_core.train", f"--config={CONFIG_FILE}",
          f"--workdir={workdir}"] + [
              f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}"
              for k, v in flags.items()]


def _start(command, env_changes):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update({"JAX_PLATFORMS": "cpu", **env_changes})
  return subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _finish(process):
  try:
    output, _ = process.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    output, _ = process.communicate()
  return process.returncode, output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two processes through the CLI first, on their own: their CPU collectives
  give up when one process reaches the first collective 30 s after the other,
  which other work competing for the cores can cause. Then, concurrently, 4
  simulated devices through the CLI and one device in this process."""
  root = tmp_path_factory.mktemp("layouts")
  port = _free_port()
  pair = [_start(_command(root / "two_processes", **{
      "distributed.coordinator_address": f"localhost:{port}",
      "distributed.num_processes": 2, "distributed.process_id": i}), {})
          for i in range(2)]
  results = {"two_processes": [_finish(p) for p in pair]}
  four = _start(_command(root / "four"),
                {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  config = synthetic_tiny.get_config()
  for name, value in OVERRIDES.items():
    node = config
    *parents, leaf = name.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  trainer.train_and_evaluate(config, root / "one")
  results["four"] = _finish(four)
  return root, results


def _losses(workdir):
  return {r["step"]: r["train/loss"] for r in read_metrics(workdir)
          if "train/loss" in r}


def _assert_same_training(root, name):
  reference = _losses(root / "one")
  assert sorted(reference) == list(range(1, STEPS + 1))
  other = _losses(root / name)
  assert sorted(other) == sorted(reference)
  for step in reference:
    assert other[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6)
  a = checkpoints.load_params(root / "one")
  b = checkpoints.load_params(root / name)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_cli_on_four_devices_trains_like_one_device(runs):
  root, results = runs
  code, output = results["four"]
  assert code == 0, output[-3000:]
  assert "on 4 device(s)" in output
  _assert_same_training(root, "four")
  workdir = root / "four"
  state, file = checkpoints.load_state(workdir)
  assert file.name == "ckpt-2.flax" and int(state["step"]) == STEPS
  info = json.loads((workdir / "model.json").read_text())
  assert info["name"] == "synthetic_tiny" and info["image_size"] == 64
  assert list(workdir.glob("events.out.tfevents.*"))


def test_two_processes_train_like_one_device(runs):
  root, results = runs
  for i, (code, output) in enumerate(results["two_processes"]):
    assert code == 0, f"process {i}:\n{output[-3000:]}"
    assert f"process {i} of 2" in output
  _assert_same_training(root, "two_processes")
