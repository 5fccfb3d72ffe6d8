"""Shared pytest fixtures and markers.

Where reference data comes from is decided here and nowhere else:

- ``reference_dir``: the project's own fixtures of the published networks
  (``tests/data``: golden parity files, the published parameter tree, a
  checkpoint in the published clu layout), laid out in a temporary folder
  as the published reference folder lays them out. Every clone has them.
- ``example_clip_dir``: a clip the project makes from its own preset photos,
  in the layout of the real example (``target/`` and ``transfer/`` frames).
- ``real_example_dir``: the third-party example clip and the published
  model's transfer of it. The project does not ship them; they lie in
  ``../shared/reference/example_videos`` beside our CI's checkout (or where
  ``XFACTOR_EXAMPLE_VIDEOS`` points), and the tests that need them skip with
  a reason elsewhere.
"""

import gzip
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
EXAMPLE_VIDEOS = pathlib.Path(os.environ.get(
    "XFACTOR_EXAMPLE_VIDEOS",
    REPO_ROOT.parent / "shared" / "reference" / "example_videos"))
PARITY_PARAMS = "params_seed0.msgpack"


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
def reference_dir(tmp_path_factory) -> pathlib.Path:
  """tests/data laid out as the published reference folder lays it out.

  The repository stores two things more compactly (tests/data/README.md):
  the checkpoint's ``ckpt-1.flax``, mostly the zeros of its optimiser state,
  as ``ckpt-1.flax.gz``; and the weights of the parity sets, which are the
  same for both, once as ``parity/params_seed0.msgpack``.
  """
  folder = tmp_path_factory.mktemp("reference") / "reference"
  shutil.copytree(TEST_DATA, folder, ignore=shutil.ignore_patterns(
      "*.gz", "README.md", PARITY_PARAMS))
  for packed in TEST_DATA.rglob("*.gz"):
    unpacked = folder / packed.relative_to(TEST_DATA).with_suffix("")
    with gzip.open(packed, "rb") as source, open(unpacked, "wb") as out:
      shutil.copyfileobj(source, out)
  for config in (TEST_DATA / "parity").glob("parity_*.json"):
    shutil.copyfile(TEST_DATA / "parity" / PARITY_PARAMS,
                    folder / "parity" / config.with_suffix(".msgpack").name)
  return folder


@pytest.fixture(scope="session")
def real_example_dir() -> pathlib.Path:
  """The real 30-frame walk-through and the published transfer of it."""
  if not (EXAMPLE_VIDEOS / "target").is_dir():
    pytest.skip(f"needs the third-party example clip, which the project does "
                f"not ship: {EXAMPLE_VIDEOS} is absent (our CI has it; "
                f"XFACTOR_EXAMPLE_VIDEOS=DIR points elsewhere)")
  return EXAMPLE_VIDEOS


def _panning_crops(photo: np.ndarray, num_frames: int, size: int,
                   step: int) -> list[np.ndarray]:
  """Square crops of `photo` sliding right and slightly down (a pan)."""
  return [photo[i * step // 3:i * step // 3 + size, i * step:i * step + size]
          for i in range(num_frames)]


@pytest.fixture(scope="session")
def example_clip_dir(tmp_path_factory) -> pathlib.Path:
  """A clip made from the project's preset photos, in the real example's
  layout: ``target/000.jpg``.. pans across one photo, ``transfer/000.jpg``..
  pans the same way across another (12 frames, 256 x 256)."""
  folder = tmp_path_factory.mktemp("example_clip")
  num_frames, size, step = 12, 256, 8
  contexts = REPO_ROOT / "presets" / "contexts"
  for name, photo in (("target", "room_1"), ("transfer", "astronaut")):
    image = Image.open(contexts / photo / "view_0.jpg").convert("RGB")
    scale = (size + num_frames * step) / min(image.size)
    image = image.resize((round(image.width * scale),
                          round(image.height * scale)), Image.BICUBIC)
    (folder / name).mkdir()
    for i, crop in enumerate(_panning_crops(np.asarray(image), num_frames,
                                            size, step)):
      Image.fromarray(crop).save(folder / name / f"{i:03d}.jpg", quality=95)
  return folder


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


@pytest.fixture(scope="session")
def tiny_warp_checkpoint(tmp_path_factory) -> pathlib.Path:
  """A randomly initialised warp-renderer model (32 px, patch 8, pose_dim 8)
  saved as our trainer saves runs (weights in ``checkpoints-0`` plus
  model.json). Its global warp follows the latents (a random last layer),
  so the renders move with the camera path."""
  import jax

  from xfactor_core import checkpoints, models
  from xfactor_core.app import testing

  size = 32
  config = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 2,
                                   render_output="warp")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x = np.zeros((1, 2, size, size, 3), np.float32)
  params = {"PoseEnc": pose_enc.init(jax.random.key(0), x)["params"],
            "Render": render.init(jax.random.key(1), x[:, :1],
                                  np.zeros((1, 2, 8), np.float32))["params"]}
  node = params["Render"][checkpoints.GLOBAL_WARP_HEAD]["Dense_2"]
  node["kernel"] = 0.5 * jax.random.normal(jax.random.key(2),
                                            node["kernel"].shape)
  folder = tmp_path_factory.mktemp("warp_model") / "tiny_warp"
  checkpoints.save_params(folder / "checkpoints-0", params)
  testing.write_model_info(folder, name="tiny warp", image_size=size,
                           num_context_views=1, config=config.to_dict())
  return folder
