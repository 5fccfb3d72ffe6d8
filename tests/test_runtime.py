"""Tests of xfactor_core.runtime: naming an NVIDIA GPU that JAX leaves idle.

The GPU is faked: an ``nvidia-smi`` script on PATH, or a driver file in a
temporary folder; JAX on this machine sees only its CPU either way.
"""

import logging
import os
import pathlib
import stat
import sys

import pytest

from xfactor_core import runtime, transfer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fake_smi(folder: pathlib.Path, output: str, code: int = 0) -> None:
  script = folder / "nvidia-smi"
  script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nexit {code}\n")
  script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def no_gpu(tmp_path, monkeypatch):
  """A machine without any sign of an NVIDIA GPU, and a fresh 'warned' flag:
  PATH holds an empty folder and the driver files point nowhere."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  monkeypatch.setenv("PATH", str(bin_dir))
  monkeypatch.setattr(runtime, "NVIDIA_DRIVER_FILES",
                      (str(tmp_path / "proc_driver_nvidia_version"),
                       str(tmp_path / "dev_nvidia0")))
  monkeypatch.setattr(runtime, "_idle_gpu_named", False)
  return bin_dir


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and "NVIDIA GPU" in r.getMessage()]


def test_nvidia_smi_names_the_gpu(no_gpu):
  _fake_smi(no_gpu, "GPU 0: NVIDIA L4 (UUID: GPU-1234)\\nGPU 1: NVIDIA L4 "
            "(UUID: GPU-5678)\\n")
  assert runtime.nvidia_gpu(runtime.NVIDIA_DRIVER_FILES) == "GPU 0: NVIDIA L4"


def test_driver_files_show_a_gpu_when_nvidia_smi_does_not_run(no_gpu,
                                                              tmp_path):
  assert runtime.nvidia_gpu(runtime.NVIDIA_DRIVER_FILES) is None
  _fake_smi(no_gpu, "NVIDIA-SMI has failed", code=9)  # a broken driver
  assert runtime.nvidia_gpu(runtime.NVIDIA_DRIVER_FILES) is None
  version = tmp_path / "proc_driver_nvidia_version"
  version.write_text("NVRM version: 550.54.15\n")
  found = runtime.nvidia_gpu(runtime.NVIDIA_DRIVER_FILES)
  assert found is not None and str(version) in found


def test_warns_once_with_the_install_line_when_jax_sees_only_the_cpu(
    no_gpu, caplog):
  caplog.set_level(logging.WARNING)
  probe = lambda: "GPU 0: NVIDIA T4"
  message = runtime.warn_if_gpu_idle(platforms=["cpu"], probe=probe)
  assert message is not None
  assert "GPU 0: NVIDIA T4" in message
  assert runtime.CUDA_INSTALL in message
  assert runtime.CUDA_INSTALL == 'pip install "jax[cuda12]==0.10.2"'
  assert runtime.warn_if_gpu_idle(platforms=["cpu"], probe=probe) is None
  assert _warnings(caplog) == [message]


def test_no_warning_without_a_gpu_or_when_jax_uses_it(no_gpu, caplog):
  caplog.set_level(logging.WARNING)
  assert runtime.warn_if_gpu_idle(platforms=["cpu"]) is None  # the real probe
  assert runtime.warn_if_gpu_idle(platforms=["gpu"],
                                  probe=lambda: "GPU 0: NVIDIA T4") is None
  assert runtime.warn_if_gpu_idle(platforms=["cpu", "gpu"],
                                  probe=lambda: "GPU 0: NVIDIA T4") is None
  assert runtime.warn_if_gpu_idle() is None  # this machine's JAX, no GPU
  assert _warnings(caplog) == []


def test_the_transfer_cli_names_a_faked_gpu_once(no_gpu, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  _fake_smi(no_gpu, "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\\n")
  args = ["--context", str(tmp_path / "missing.png"), "--target",
          str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out.mp4")]
  assert transfer.main(args) == 2  # the photo is missing: it stops there
  assert transfer.main(args) == 2
  warned = _warnings(caplog)
  assert len(warned) == 1, warned
  assert "NVIDIA A100-SXM4-40GB" in warned[0]
  assert 'pip install "jax[cuda12]==0.10.2"' in warned[0]


def test_the_app_names_a_faked_gpu(no_gpu, tmp_path, caplog, monkeypatch):
  """app.py warns before it looks for models (here: a missing folder, so it
  stops at once)."""
  caplog.set_level(logging.INFO)
  monkeypatch.syspath_prepend(str(REPO))
  monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
  monkeypatch.setenv("XFACTOR_COMPILATION_CACHE", "off")
  (tmp_path / "dev_nvidia0").write_text("")
  import app  # pylint: disable=g-import-not-at-top
  assert app.main(["--checkpoints", str(tmp_path / "no_such_folder")]) == 2
  warned = _warnings(caplog)
  assert len(warned) == 1 and "dev_nvidia0" in warned[0], warned


def test_requirements_gpu_is_requirements_with_the_cuda_build_of_jax():
  """requirements-gpu.txt (a GPU Space's requirements) pins what
  requirements.txt pins, with the CUDA build of the same JAX, which is the
  build the warning's install line names."""
  def pins(name):
    return [line.strip() for line in (REPO / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
  cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
  assert "jax==0.10.2" in cpu
  cuda = runtime.CUDA_INSTALL.split('"')[1]
  assert cuda == "jax[cuda12]==0.10.2"
  assert gpu == [cuda if line == "jax==0.10.2" else line for line in cpu]
