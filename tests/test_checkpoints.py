"""Tests of xfactor_core.checkpoints: the published clu format, both ways."""

import shutil

import jax
import numpy as np
import pytest
from flax import serialization

from xfactor_core import checkpoints, models


def _official_dir(reference_dir):
  return reference_dir / "official_format_checkpoint"


def test_loads_official_format_in_every_spelling(reference_dir, tmp_path):
  base = _official_dir(reference_dir)
  spellings = [base, base / "checkpoints-0", base / "checkpoints-0" / "ckpt-1",
               base / "checkpoints-0" / "ckpt-1.flax"]
  loaded = [checkpoints.load_params(p) for p in spellings]
  golden = serialization.msgpack_restore(
      (reference_dir / "parity" / "parity_f32_seed0.msgpack").read_bytes())
  for params in loaded:
    assert set(params) == {"PoseEnc", "Render"}
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(golden)):
      np.testing.assert_array_equal(a, b)
  # Without the index file the newest ckpt-N.flax is taken.
  copy = tmp_path / "ck"
  shutil.copytree(base / "checkpoints-0", copy)
  (copy / "checkpoint").unlink()
  assert checkpoints.resolve_checkpoint(copy).name == "ckpt-1.flax"


def test_model_from_official_checkpoint_reproduces_parity(reference_dir):
  params = checkpoints.load_params(_official_dir(reference_dir))
  config = checkpoints.infer_config(params)
  assert config == checkpoints.ModelConfig(64, 4, 8, 2, 2, 32, 32)
  arrays = np.load(reference_dir / "parity" / "parity_f32_seed0.npz")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  poses = jax.jit(pose_enc.apply)({"params": params["PoseEnc"]},
                                  arrays["in_pair"])
  frames = jax.jit(render.apply)({"params": params["Render"]},
                                 arrays["in_ctx1"], poses)
  np.testing.assert_allclose(poses, arrays["out_pose_pair"], atol=1e-4)
  np.testing.assert_allclose(frames, arrays["out_render_sm"], atol=1e-4)


def test_save_round_trip_and_retention(reference_dir, tmp_path):
  params = checkpoints.load_params(_official_dir(reference_dir))
  directory = tmp_path / "work" / "checkpoints-0"
  for step in range(1, 8):
    checkpoints.save_params(directory, params, step=step)
  files = sorted(p.name for p in directory.glob("ckpt-*.flax"))
  assert files == [f"ckpt-{n}.flax" for n in (3, 4, 5, 6, 7)]
  assert 'model_checkpoint_path: "ckpt-7"' in (directory / "checkpoint").read_text()
  state, file = checkpoints.load_state(tmp_path / "work")
  assert file.name == "ckpt-7.flax" and state["step"] == 7
  checkpoints.save_params(directory, params, step=8, extra={"perceptual": "ssim"})
  assert checkpoints.load_state(directory)[0]["perceptual"] == "ssim"
  (directory / "ckpt-8.flax").unlink()
  again = checkpoints.load_params(tmp_path / "work")
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  assert not list(directory.glob("*.tmp"))


def test_published_clu_reader_loads_our_checkpoints(reference_dir, tmp_path):
  tf = pytest.importorskip(
      "tensorflow", reason="clu.checkpoint needs TensorFlow: pip install -r "
      "requirements-tf.txt (CI installs it)")
  del tf
  from clu import checkpoint as clu_checkpoint
  params = checkpoints.load_params(_official_dir(reference_dir))
  checkpoints.save_params(tmp_path / "checkpoints-0", params, step=11)
  state = clu_checkpoint.load_state_dict(str(tmp_path / "checkpoints-0"))
  assert int(state["step"]) == 11
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_clear_errors(reference_dir, tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    checkpoints.load_params(tmp_path / "nowhere")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint in"):
    checkpoints.load_params(empty)
  good = (_official_dir(reference_dir) / "checkpoints-0" / "ckpt-1.flax")
  truncated = tmp_path / "truncated.msgpack"
  truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
  with pytest.raises(checkpoints.CheckpointError,
                     match="truncated.msgpack is corrupt or truncated"):
    checkpoints.load_params(truncated)
  (tmp_path / "zero.msgpack").write_bytes(b"")
  with pytest.raises(checkpoints.CheckpointError, match="is empty"):
    checkpoints.load_params(tmp_path / "zero.msgpack")
  other = tmp_path / "other.msgpack"
  other.write_bytes(serialization.msgpack_serialize({"params": {"w": np.ones(3)}}))
  with pytest.raises(checkpoints.CheckpointError, match="has no PoseEnc or Render"):
    checkpoints.load_params(other)
  # Wrong model: the first offending parameter is named with both shapes.
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"PoseEnc/Dense_0/bias has shape \(64,\) but .* "
                     r"needs \(1024,\)"):
    checkpoints.load_params(good, config=checkpoints.PUBLISHED_CONFIG)
  # A damaged tree: one tensor with a wrong shape.
  params = checkpoints.load_params(good)
  params["Render"]["layers_1"]["Dense_1"]["kernel"] = np.zeros((3, 3))
  bad = tmp_path / "bad.msgpack"
  bad.write_bytes(serialization.msgpack_serialize(params))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"Render/layers_1/Dense_1/kernel has shape \(3, 3\) "
                     r"but .* needs \(128, 64\)"):
    checkpoints.load_params(bad)


def test_model_info_round_trip_and_kind(reference_dir, tmp_path):
  params = checkpoints.load_params(_official_dir(reference_dir))
  checkpoints.save_params(tmp_path / "mv" / "checkpoints-0", params)
  path = checkpoints.write_model_info(tmp_path / "mv", name="mv",
                                      image_size=64, num_context_views=3,
                                      perceptual="ssim")
  assert path == tmp_path / "mv" / checkpoints.MODEL_INFO
  assert checkpoints.read_model_info(tmp_path / "mv") == {
      "name": "mv", "kind": "multi-view", "image_size": 64,
      "num_context_views": 3, "perceptual": "ssim"}
  assert checkpoints.model_kind(1) == "stereo-monocular"
  with pytest.raises(ValueError, match="is 'stereo-monocular', not"):
    checkpoints.write_model_info(tmp_path, name="sm", image_size=64,
                                 num_context_views=1, kind="multi-view")
  assert not list(tmp_path.rglob("*.tmp"))
