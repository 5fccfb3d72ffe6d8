"""The composed camera path of warp models (pipeline, CLI) and how camera
paths are saved and replayed (xfactor_core.inference.camera_path)."""

import jax
import numpy as np
import pytest

from xfactor_core import checkpoints, models, transfer
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference.pipeline import TransferError, TransferPipeline

SIZE = 32


def _pipeline(output="warp", move=True, batch_size=3) -> TransferPipeline:
  config = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 2, render_output=output)
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x = np.zeros((1, 2, SIZE, SIZE, 3), np.float32)
  params = {"PoseEnc": pose_enc.init(jax.random.key(0), x)["params"],
            "Render": render.init(jax.random.key(1), x[:, :1],
                                  np.zeros((1, 2, 8), np.float32))["params"]}
  if move:  # a homography that follows the latents
    node = params["Render"][checkpoints.GLOBAL_WARP_HEAD]["Dense_2"]
    node["kernel"] = 0.5 * jax.random.normal(jax.random.key(2),
                                              node["kernel"].shape)
  return TransferPipeline(params=params, config=config, image_size=SIZE,
                          batch_size=batch_size, attention_impl="xla")


def _clip(n=7, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


def _photo(size=SIZE, seed=1):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(coarse, (1, size, size, 3), "linear"))


def test_composed_path_is_the_steps_between_consecutive_frames():
  pipe = _pipeline()
  clip = _clip()
  steps = pipe.camera_path(clip, mode="composed")
  assert steps.shape == (7, 8) and not steps[0].any()
  np.testing.assert_allclose(steps[1:], pipe.encode_pairs(clip[:-1], clip[1:]),
                             rtol=1e-5, atol=1e-6)
  reference = pipe.camera_path(clip)
  np.testing.assert_allclose(steps[1], reference[1], rtol=1e-5, atol=1e-6)
  assert np.abs(steps[2:] - reference[2:]).max() > 1e-3


def test_composed_render_streams_the_same_frames_as_one_call():
  pipe = _pipeline()
  clip, photo = _clip(), _photo()
  big = _photo(48)
  steps = pipe.camera_path(clip, mode="composed")
  frames = pipe.render(photo, steps, path_mode="composed", sample_from=big)
  assert frames.shape == (7, 48, 48, 3)
  # Frame 0 is the context at the zero latent; the frames move after it.
  assert np.abs(frames[-1] - frames[0]).mean() > 1e-2
  chunks = list(pipe.transfer_chunks(photo, clip, path_mode="composed",
                                     sample_from=big))
  assert [a for a, _, _ in chunks] == [0, 3, 6]
  np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), steps,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.concatenate([c[2] for c in chunks]), frames,
                             rtol=1e-4, atol=1e-5)
  # One step composed equals one reference render of that step's latent
  # (frame 1 of both paths is the same latent, and frame 0's warp at the
  # zero latent is the identity for this head).
  reference = pipe.render(photo, steps[:2], sample_from=big)
  np.testing.assert_allclose(frames[1], reference[1], atol=2e-3)


def test_a_multi_view_context_composes_from_its_reference_view():
  # Three context views (the multi-view demo's count): the path composes
  # from the reference view (the middle one), all three views are sampled
  # through the chained warps, and streaming gives the one call's frames.
  pipe = _pipeline()
  pipe.max_context_views = 3
  clip = _clip()
  views = np.concatenate([_photo(seed=s) for s in (1, 2, 3)])
  big = np.concatenate([_photo(48, seed=s) for s in (1, 2, 3)])
  steps = pipe.camera_path(clip, mode="composed")
  frames = pipe.render(views, steps, path_mode="composed", sample_from=big)
  assert frames.shape == (7, 48, 48, 3) and np.isfinite(frames).all()
  np.testing.assert_allclose(frames[0], pipe.render(
      views, np.zeros((1, 8), np.float32), sample_from=big)[0],
      rtol=1e-5, atol=1e-5)
  assert np.abs(frames[-1] - frames[0]).mean() > 1e-2
  chunks = list(pipe.transfer_chunks(views, clip, path_mode="composed",
                                     sample_from=big))
  np.testing.assert_allclose(np.concatenate([c[2] for c in chunks]), frames,
                             rtol=1e-4, atol=1e-5)
  # The order of the uploaded views does not matter beyond which one is the
  # reference: swapping the two non-reference views renders the same clip.
  swapped = pipe.render(views[[2, 1, 0]], steps, path_mode="composed",
                        sample_from=big[[2, 1, 0]])
  np.testing.assert_allclose(swapped, frames, rtol=1e-4, atol=1e-4)


def test_a_saved_path_records_its_mode_and_replays_identically(tmp_path):
  pipe = _pipeline()
  clip, photo = _clip(), _photo()
  steps = pipe.camera_path(clip, mode="composed")
  file = camera_paths.save(tmp_path / "walk", pipe.path_record(steps,
                                                              "composed"))
  assert file.suffix == ".npz"
  loaded = camera_paths.load(file)
  assert (loaded.mode, loaded.render_output) == ("composed", "warp")
  np.testing.assert_array_equal(loaded.latents, steps)
  np.testing.assert_array_equal(
      pipe.render(photo, loaded),
      pipe.render(photo, steps, path_mode="composed"))
  # An old plain .npy is a reference path.
  np.save(tmp_path / "old.npy", steps)
  old = camera_paths.load(tmp_path / "old.npy")
  assert old.mode == "reference"
  with pytest.raises(ValueError, match="camera path mode 'chained'"):
    camera_paths.CameraPath(steps, mode="chained")


def test_composed_paths_need_an_explicit_warp():
  pipe = _pipeline(output="flow", move=False)
  with pytest.raises(TransferError, match="composes explicit warps"):
    pipe.camera_path(_clip(3), mode="composed")
  with pytest.raises(TransferError, match="camera path mode 'x'"):
    _pipeline().check_path_mode("x")


def test_cli_saves_and_replays_a_composed_path(tmp_path, monkeypatch):
  pipe = _pipeline()
  checkpoints.save_params(tmp_path / "model", pipe.params)
  (tmp_path / "model" / checkpoints.MODEL_INFO).write_text(
      '{"name": "tiny_warp", "image_size": 32, "num_context_views": 1}')
  from PIL import Image
  to_u8 = lambda x: ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
  Image.fromarray(to_u8(_photo(64)[0])).save(tmp_path / "photo.png")
  (tmp_path / "clip").mkdir()
  for i, frame in enumerate(_clip(4)):
    Image.fromarray(to_u8(frame)).save(tmp_path / "clip" / f"{i:03d}.png")
  common = ["--checkpoint", str(tmp_path / "model"), "--context",
            str(tmp_path / "photo.png"), "--batch-size", "2"]
  assert transfer.main(common + [
      "--target", str(tmp_path / "clip"), "--out", str(tmp_path / "a"),
      "--camera-path-mode", "composed",
      "--save-path", str(tmp_path / "walk.npy")]) == 0
  record = camera_paths.load(tmp_path / "walk.npz")  # .npy -> .npz
  assert record.mode == "composed" and record.latents.shape == (4, 8)
  assert transfer.main(common + [
      "--camera-path", str(tmp_path / "walk.npz"),
      "--out", str(tmp_path / "b")]) == 0
  first = sorted((tmp_path / "a").glob("*.png"))
  second = sorted((tmp_path / "b").glob("*.png"))
  assert len(first) == len(second) == 4
  for a, b in zip(first, second):
    np.testing.assert_array_equal(np.asarray(Image.open(a)),
                                  np.asarray(Image.open(b)))
  assert transfer.main(common + [
      "--camera-path", str(tmp_path / "walk.npz"), "--camera-path-mode",
      "reference", "--out", str(tmp_path / "c")]) == 2
  # A reference path saved as .npy stays a plain array of latents (what
  # older versions wrote and read), and replays.
  assert transfer.main(common + [
      "--target", str(tmp_path / "clip"), "--out", str(tmp_path / "d"),
      "--camera-path-mode", "reference",
      "--save-path", str(tmp_path / "ref.npy")]) == 0
  assert np.load(tmp_path / "ref.npy").shape == (4, 8)
  assert transfer.main(common + [
      "--camera-path", str(tmp_path / "ref.npy"),
      "--out", str(tmp_path / "e")]) == 0
  for a, b in zip(sorted((tmp_path / "d").glob("*.png")),
                  sorted((tmp_path / "e").glob("*.png"))):
    np.testing.assert_array_equal(np.asarray(Image.open(a)),
                                  np.asarray(Image.open(b)))
