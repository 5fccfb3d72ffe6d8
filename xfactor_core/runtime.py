"""Process-level JAX settings for the entry points (CLI, app, benchmarks).

Library code never calls these; entry points do, once, before compiling.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Optional

import jax

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
