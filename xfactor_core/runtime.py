"""Process-level JAX settings for the entry points (CLI, app, benchmarks):
the compilation cache, joining a multi-process run, and naming a GPU that
JAX leaves idle.

Library code never calls these; entry points do, once, before compiling.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
from typing import Callable, Iterable, Optional, Sequence

import jax
import ml_collections

# The CUDA build of the JAX version that requirements.txt pins (and
# requirements-gpu.txt installs).
CUDA_INSTALL = 'pip install "jax[cuda12]==0.10.2"'
# Files an NVIDIA driver creates (JAX's own probe looks at the /dev nodes).
NVIDIA_DRIVER_FILES: tuple[str, ...] = ("/proc/driver/nvidia/version",
                                        "/dev/nvidiactl", "/dev/nvidia0")

DEFAULT_CACHE_DIR = pathlib.Path(
    os.environ.get("XFACTOR_COMPILATION_CACHE",
                   pathlib.Path.home() / ".cache" / "xfactor" / "jax"))


def enable_compilation_cache(path: Optional[os.PathLike] = None,
                             min_compile_seconds: float = 0.5) -> Optional[pathlib.Path]:
  """Turns on JAX's persistent compilation cache so later runs skip compiling.

  Set ``XFACTOR_COMPILATION_CACHE=off`` to disable it. Returns the directory,
  or None when disabled or not writable.
  """
  if str(path or DEFAULT_CACHE_DIR).lower() in ("off", "none", "0", ""):
    return None
  directory = pathlib.Path(path or DEFAULT_CACHE_DIR).expanduser()
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.warning("compilation cache disabled: cannot create %s (%s)",
                    directory, e)
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins a multi-process run when configured (call before any JAX work).

  ``config.distributed.coordinator_address`` (or the environment variable
  XFACTOR_COORDINATOR_ADDRESS) ``host:port`` with num_processes and process_id
  (or XFACTOR_NUM_PROCESSES / XFACTOR_PROCESS_ID) starts
  ``jax.distributed.initialize``; "auto" lets JAX detect the cluster (SLURM,
  Open MPI, cloud TPU); empty: a single process.
  """
  settings = config.get("distributed", ml_collections.ConfigDict())
  address = (settings.get("coordinator_address", "")
             or os.environ.get("XFACTOR_COORDINATOR_ADDRESS", ""))
  if not address:
    return
  if address == "auto":
    jax.distributed.initialize()
  else:
    processes = int(os.environ.get("XFACTOR_NUM_PROCESSES",
                                   settings.get("num_processes", 1)))
    process_id = int(os.environ.get("XFACTOR_PROCESS_ID",
                                    settings.get("process_id", 0)))
    if not 0 <= process_id < processes:
      raise ValueError(f"process_id={process_id} must lie in [0, "
                       f"{processes}) (num_processes={processes})")
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=processes, process_id=process_id)
  logging.info("process %d of %d; %d local and %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def nvidia_gpu(driver_files: Optional[Iterable[os.PathLike | str]] = None,
               smi_timeout: float = 10.0) -> Optional[str]:
  """What shows an NVIDIA GPU on this machine, or None when nothing does.

  ``nvidia-smi -L`` on PATH that runs and lists a GPU gives its first line
  (``GPU 0: NVIDIA L4``); otherwise an existing driver file of
  ``driver_files`` (default :data:`NVIDIA_DRIVER_FILES`) is named. Nothing
  here imports a CUDA library, so it answers on any machine.
  """
  smi = shutil.which("nvidia-smi")
  if smi is not None:
    try:
      listing = subprocess.run([smi, "-L"], capture_output=True, text=True,
                               timeout=smi_timeout, check=False)
    except (OSError, subprocess.SubprocessError):
      listing = None
    if listing is not None and listing.returncode == 0:
      lines = [line.strip() for line in listing.stdout.splitlines()
               if line.strip()]
      if lines:
        return lines[0].split(" (UUID")[0]
  for file in NVIDIA_DRIVER_FILES if driver_files is None else driver_files:
    if os.path.exists(file):
      return f"the NVIDIA driver's {file}"
  return None


def _jax_platforms() -> set[str]:
  return {device.platform for device in jax.devices()}


_idle_gpu_named = False


def warn_if_gpu_idle(
    platforms: Optional[Sequence[str]] = None,
    probe: Callable[[], Optional[str]] = nvidia_gpu) -> Optional[str]:
  """Logs a warning, once per process, when an NVIDIA GPU is present but JAX
  sees only the CPU (the CPU build of jaxlib, which requirements.txt
  installs).

  Entry points call it after JAX is set up (after
  :func:`initialize_distributed`). Args: ``platforms``, the platforms JAX
  sees (default: those of ``jax.devices()``); ``probe``, what finds the GPU
  (default :func:`nvidia_gpu`).

  Returns:
    The warning's text when it was logged now, else None (no GPU, JAX uses
    an accelerator, or the warning was given already).
  """
  global _idle_gpu_named
  if _idle_gpu_named:
    return None
  seen = set(platforms) if platforms is not None else _jax_platforms()
  if seen != {"cpu"}:
    return None
  evidence = probe()
  if evidence is None:
    return None
  _idle_gpu_named = True
  message = (f"an NVIDIA GPU is present ({evidence}) but JAX sees only the "
             "CPU, so everything runs on the CPU, many times slower: this "
             "environment has the CPU build of jaxlib. Install the CUDA build "
             f"of the same version: {CUDA_INSTALL} (or pip install -r "
             "requirements-gpu.txt)")
  logging.warning("%s", message)
  return message
