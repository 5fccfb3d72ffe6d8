"""Process-level JAX settings for the entry points (CLI, app, benchmarks):
the compilation cache, and joining a multi-process run.

Library code never calls these; entry points do, once, before compiling.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Optional

import jax
import ml_collections

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
