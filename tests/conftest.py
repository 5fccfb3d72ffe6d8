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


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
  """Every test (and every app or CLI a test starts) sees an empty model
  cache of its own instead of the user's, and the published addresses of the
  table: nothing a test does can reach or fill ~/.cache/xfactor."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("XFACTOR_HOME", str(tmp_path_factory.mktemp("xfactor_home")))
    for name in ("XFACTOR_SOURCES", "XFACTOR_SM_URL", "XFACTOR_MV_URL",
                 "XFACTOR_FETCH_AT_START", "XFACTOR_PAGE_DOWNLOADS"):
      patch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  if not REFERENCE.is_dir():
    pytest.fail(f"reference files missing: expected {REFERENCE} beside the checkout")
  return REFERENCE


@pytest.fixture(scope="session")
def tiny_flow_checkpoint(tmp_path_factory) -> pathlib.Path:
  """A randomly initialised flow-renderer model (64 px, patch 8) saved as our
  trainer saves runs: weights plus model.json."""
  import json

  import jax
  import numpy as np

  from xfactor_core import checkpoints, models

  config = checkpoints.ModelConfig(features=32, num_heads=2, patch_size=8,
                                   pose_layers=1, render_layers=1, pose_dim=8,
                                   num_global_tokens=2, render_output="flow")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x = np.zeros((1, 2, 64, 64, 3), np.float32)
  params = {
      "PoseEnc": pose_enc.init(jax.random.key(0), x)["params"],
      "Render": render.init(jax.random.key(1), x[:, :1],
                            np.zeros((1, 2, 8), np.float32))["params"],
  }
  # Non-zero offsets, so that the renders move with the latent.
  head = params["Render"]["AppearanceFlowHead_0"]["view_head"]["Dense_2"]
  head["kernel"] = jax.random.normal(jax.random.key(2),
                                     head["kernel"].shape) * 0.05
  directory = tmp_path_factory.mktemp("flow_model")
  checkpoints.save_params(directory, params)
  (directory / checkpoints.MODEL_INFO).write_text(json.dumps({
      "name": "tiny_flow", "kind": "stereo-monocular", "image_size": 64,
      "num_context_views": 1, "config": config.to_dict()}))
  return directory
