"""Shared pytest fixtures and markers."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


def pytest_collection_modifyitems(config, items):
  run_slow = os.environ.get("XFACTOR_SLOW_TESTS") == "1"
  skip_slow = pytest.mark.skip(reason="slow check: set XFACTOR_SLOW_TESTS=1 to run it")
  gpu_skip = None
  for item in items:
    if "slow" in item.keywords and not run_slow:
      item.add_marker(skip_slow)
    if "gpu" in item.keywords:
      if gpu_skip is None:
        import jax
        has_gpu = any(d.platform == "gpu" for d in jax.devices())
        gpu_skip = pytest.mark.skip(reason="needs a GPU: JAX sees none") if not has_gpu else False
      if gpu_skip:
        item.add_marker(gpu_skip)


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  if not REFERENCE.is_dir():
    pytest.fail(f"reference files missing: expected {REFERENCE} beside the checkout")
  return REFERENCE
