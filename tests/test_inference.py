"""Tests of xfactor_core.inference and the transfer CLI (tiny parity weights)."""

import json
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from xfactor_core import checkpoints, transfer
from xfactor_core.inference import media, model_frames
from xfactor_core.metrics import motion
from xfactor_core.inference.pipeline import (TransferError, TransferPipeline,
                                             interpolate_path, reference_order)


@pytest.fixture(scope="module")
def pipe(reference_dir):
  return TransferPipeline.from_checkpoint(
      reference_dir / "official_format_checkpoint", image_size=64, batch_size=4)


def _clip(n=6, size=48, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (6, 12, 3)).astype(np.float32)
  base = np.clip(cv2.resize(coarse, (size * 2, size),
                            interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
  return np.stack([np.roll(base, 3 * i, axis=1)[:, :size] for i in range(n)])


# ------------------------------------------------------------------ frames --


def test_prepare_frame_handles_every_image_kind():
  rgb = np.zeros((40, 60, 3), np.uint8)
  rgb[:, 10:50] = 255  # the centred 40x40 square is white
  out = model_frames.prepare_frame(rgb, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, 1.0, atol=1e-6)
  gray16 = np.full((20, 20), 65535 // 2, np.uint16)
  np.testing.assert_allclose(model_frames.prepare_frame(gray16, 8), 0.0, atol=1e-4)
  rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent -> white
  np.testing.assert_allclose(model_frames.prepare_frame(rgba, 8), 1.0)
  gray1 = np.zeros((9, 7, 1), np.float32)
  np.testing.assert_allclose(model_frames.prepare_frame(gray1, 8), -1.0)
  as255 = np.full((4, 4, 3), 127.5, np.float64)
  np.testing.assert_allclose(model_frames.prepare_frame(as255, 4), 0.0, atol=1e-6)
  up = model_frames.prepare_frame(np.full((5, 5, 3), 128, np.uint8), 64)
  assert up.shape == (64, 64, 3)
  roundtrip = model_frames.to_uint8(model_frames.prepare_frame(rgb[:, 10:50], 40))
  np.testing.assert_array_equal(roundtrip, rgb[:, 10:50])


def test_inference_resamples_frames_as_the_training_data_is():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
  for size in (16, 29, 64):  # shrink by an integer and a fractional factor, enlarge
    loader_frame = model_frames.center_crop_resize(image, size) / 255.0
    model_input = (model_frames.prepare_frame(image, size) + 1.0) / 2.0
    assert model_input.shape == loader_frame.shape == (size, size, 3)
    # The same filter: they differ by the loader's rounding to uint8 only.
    np.testing.assert_allclose(model_input, loader_frame, atol=0.51 / 255)
  floats = model_frames.center_crop_resize(image[:40, :40] / 255.0, 80)
  assert floats.dtype == np.float64 and 0 <= floats.min() <= floats.max() <= 1
  flat = np.full((40, 40, 1), 77, np.uint8)
  assert np.all(model_frames.center_crop_resize(flat, 7) == 77)  # channel axis kept


def test_prepare_frame_errors():
  with pytest.raises(model_frames.FrameError, match="expected H x W"):
    model_frames.prepare_frame(np.zeros((4, 4, 2)), 8)
  with pytest.raises(model_frames.FrameError, match="NaN"):
    model_frames.prepare_frame(np.full((4, 4, 3), np.nan), 8)
  with pytest.raises(model_frames.FrameError, match="no frames given"):
    model_frames.prepare_frames([], 8)
  with pytest.raises(model_frames.FrameError, match="stride must be at least 1"):
    model_frames.select_frames(10, stride=0)
  assert model_frames.select_frames(10, num_frames=3, stride=3, start=1) == [1, 4, 7]


# ------------------------------------------------------------------- media --


def test_media_round_trips(tmp_path):
  clip = _clip(5, 32)
  mp4 = media.write_video(tmp_path / "c.mp4", clip, fps=10)
  back = media.read_video(mp4)
  assert back.shape == clip.shape
  err = lambda a, b: np.abs(a.astype(int) - b).mean()
  # Lossy (yuv420 at 32 px), but frame for frame the same clip.
  assert err(back, clip) < 16 and err(back, clip) < 0.5 * err(back, clip[::-1])
  gif = media.write_video(tmp_path / "c.gif", clip, fps=10)
  assert media.read_frames(gif).shape == clip.shape
  media.write_frames(tmp_path / "dir", clip)
  np.testing.assert_array_equal(media.read_frames(tmp_path / "dir"), clip)
  sel = media.read_clip(tmp_path / "dir", num_frames=2, stride=2, start=1)
  np.testing.assert_array_equal(sel, clip[[1, 3]])
  sel = media.read_clip(mp4, num_frames=2, stride=2, start=1)
  assert sel.shape[0] == 2
  # 16-bit grayscale and RGBA PNG files read as RGB uint8.
  Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(tmp_path / "g16.png")
  np.testing.assert_array_equal(media.read_image(tmp_path / "g16.png"), 255)
  Image.fromarray(np.zeros((6, 6, 4), np.uint8)).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(media.read_image(tmp_path / "rgba.png"), 255)


def test_media_errors(tmp_path):
  (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
  with pytest.raises(media.MediaError, match="bad.mp4"):
    media.read_video(tmp_path / "bad.mp4")
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(media.MediaError, match="cannot read image .*bad.png"):
    media.read_image(tmp_path / "bad.png")
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(media.MediaError, match="neither a video"):
    media.read_frames(tmp_path / "notes.txt")
  (tmp_path / "empty").mkdir()
  with pytest.raises(media.MediaError, match="no image frames"):
    media.read_frames(tmp_path / "empty")
  with pytest.raises(media.MediaError, match=".mp4 or .gif"):
    media.write_video(tmp_path / "x.avi", _clip(2))


def _numbered_clip(n: int, height: int = 24, width: int = 40) -> np.ndarray:
  """Flat grey frames whose level tells their number: 20 + 5 * index."""
  levels = 20 + 5 * np.arange(n, dtype=np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy()


def _frame_numbers(frames: np.ndarray) -> list[int]:
  return [int(round((float(f.mean()) - 20) / 5)) for f in frames]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_reader_picks_seeks_and_resizes(tmp_path, suffix):
  video = media.write_video(tmp_path / f"n{suffix}", _numbered_clip(40), fps=10)
  info = media.probe_video(video)
  assert (info.width, info.height, info.num_frames) == (40, 24, 40)
  assert info.fps == pytest.approx(10.0)
  assert media.count_video_frames(video) == 40
  assert _frame_numbers(media.read_video(video)) == list(range(40))
  # Any order, repeats, a jump far enough to seek, and the crop + resize.
  picked = media.read_video(video, [30, 2, 30, 3], size=16)
  assert picked.shape == (4, 16, 16, 3)
  assert _frame_numbers(picked) == [30, 2, 30, 3]
  # Past the end: the iterator stops, the strict reader names the frame.
  assert [i for i, _ in media.iter_video(video, [45, 3, 39])] == [3, 39]
  with pytest.raises(media.MissingFrameError, match="no frame 45") as error:
    media.read_video(video, [5, 45, 50])
  assert error.value.index == 45
  assert _frame_numbers(media.read_clip(video, num_frames=3, stride=10,
                                        start=15)) == [15, 25, 35]


def test_tiling_helpers():
  rng = np.random.default_rng(0)
  short = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  long = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  sheet = media.contact_sheet([short, long], max_frames=3, gap=2)
  assert sheet.dtype == np.uint8 and sheet.shape == (2 * 8 + 2, 3 * 8 + 4, 3)
  np.testing.assert_array_equal(sheet[:8, :8], short[0])
  np.testing.assert_array_equal(sheet[:8, 10:18], short[1])
  np.testing.assert_array_equal(sheet[:8, 20:], 255)  # the short row ends
  assert not np.all(sheet[10:, -8:] == 255)  # the last frame, resized
  with pytest.raises(ValueError, match="at least one clip"):
    media.contact_sheet([], 3)
  both = media.side_by_side(short, long[:2], gap=3)
  assert both.shape == (2, 16, 16 + 3 + 16, 3)
  np.testing.assert_array_equal(both[:, :, 16:19], 255)
  np.testing.assert_array_equal(both[:, :, 19:], long[:2])
  images = {name: np.full((3, 8, 8, 3), value, np.float32) for name, value in
            [("target", -1.0), ("reconstruction", 0.0),
             ("motion_reference", 0.5), ("motion_target", 0.5),
             ("transfer", 1.0)]}
  images["context"] = np.full((3, 2, 8, 8, 3), -1.0, np.float32)
  grid = media.eval_grid(images, rows=2, gap=4)
  # 2 rows; 4 tiles, a triple gap, 3 tiles.
  assert grid.shape == (2 * 8 + 4, 7 * 8 + 8 * 4, 3)
  np.testing.assert_array_equal(grid[:8, 36:44], 128)  # the reconstruction
  np.testing.assert_array_equal(grid[:8, -8:], 255)  # the transfer


# ---------------------------------------------------------------- pipeline --


def test_camera_path_and_render(pipe):
  target = pipe.prepare(_clip(6))
  path = pipe.camera_path(target)
  assert path.shape == (6, 32)
  np.testing.assert_array_equal(path[0], 0.0)
  assert np.abs(path[1:]).max() > 0
  context = pipe.prepare(_clip(1, seed=1))
  out = pipe.render(context, path)
  assert out.shape == (6, 64, 64, 3) and np.abs(out).max() <= 1.0
  # Chunking and padding do not change results. Another batch size is
  # another XLA program (float32 sums ordered differently: 4e-6 seen on
  # frames in [-1, 1]), so results agree to 1e-4 of their scale, the
  # tolerance the parity check allows these networks.
  path_tol, frame_tol = 1e-4 * np.abs(path).max(), 1e-4
  big = TransferPipeline(params=pipe.params, config=pipe.config, image_size=64,
                         batch_size=8)
  np.testing.assert_allclose(big.camera_path(target), path, atol=path_tol)
  np.testing.assert_allclose(big.render(context, path), out, atol=frame_tol)
  # Motion strength 0 renders the no-motion view for every frame; the
  # no-motion latent is exactly the context paired with itself.
  still = pipe.render(context, path, motion_strength=0.0)
  np.testing.assert_allclose(still, np.broadcast_to(still[:1], still.shape),
                             atol=frame_tol)
  self_pair = pipe.encode_pairs(context, context)
  np.testing.assert_allclose(self_pair, 0.0, atol=path_tol)
  seen = []
  pipe.render(context, path, progress=lambda d, t: seen.append((d, t)))
  assert seen == [(4, 6), (6, 6)]


def test_streamed_transfer_matches_path_then_render(pipe):
  """transfer_chunks encodes each chunk's latents just before rendering it:
  the same latents and frames as the whole path first, chunk by chunk."""
  target = pipe.prepare(_clip(6))
  context = pipe.prepare(_clip(1, seed=1))
  path = pipe.camera_path(target)
  frames = pipe.render(context, path, motion_strength=0.7)
  chunks = list(pipe.transfer_chunks(context, target, motion_strength=0.7))
  assert [(start, len(lat), len(out)) for start, lat, out in chunks] == [
      (0, 4, 4), (4, 2, 2)]
  np.testing.assert_array_equal(chunks[0][1][0], 0.0)
  np.testing.assert_allclose(np.concatenate([c[1] for c in chunks]), path,
                             atol=1e-4 * np.abs(path).max())
  np.testing.assert_allclose(np.concatenate([c[2] for c in chunks]), frames,
                             atol=1e-4)
  with pytest.raises(TransferError, match="at least 2 needed"):
    next(pipe.transfer_chunks(context, target[:1]))


def test_flops_estimate_is_near_xlas_count(pipe):
  """The FLOPs the app's time estimate and chunk size use, against XLA's
  cost analysis of the compiled encode and render functions."""
  from xfactor_core import benchmarking  # pylint: disable=g-import-not-at-top
  one = TransferPipeline(params=pipe.params, config=pipe.config,
                         image_size=64, batch_size=1)
  encode, render = one._fns()  # pylint: disable=protected-access
  frame = np.zeros((1, 64, 64, 3), np.float32)
  latent = np.zeros((1, 32), np.float32)
  xla = (benchmarking.compiled_flops(encode, one.params["PoseEnc"], frame,
                                     frame)
         + benchmarking.compiled_flops(render, one.params["Render"], frame,
                                       latent, latent))
  assert 0.6 < one.flops_per_frame(1) / xla < 1.4
  assert one.flops_per_frame(3) > one.flops_per_frame(1)


def test_multi_view_context_order(pipe):
  assert reference_order(1) == [0]
  assert reference_order(5) == [2, 0, 1, 3, 4]
  assert reference_order(4) == [1, 0, 2, 3]
  mv = TransferPipeline(params=pipe.params, config=pipe.config, image_size=64,
                        max_context_views=5, batch_size=4)
  context = mv.prepare(_clip(5, seed=2))
  ordered, latents = mv.context_poses(context)
  np.testing.assert_array_equal(ordered[0], context[2])
  np.testing.assert_array_equal(latents[0], 0.0)
  expected = mv.encode_pairs(np.broadcast_to(context[2], (4,) + context.shape[1:]),
                             context[[0, 1, 3, 4]])
  np.testing.assert_allclose(latents[1:], expected,
                             atol=1e-4 * np.abs(expected).max())
  out = mv.render(context, mv.camera_path(mv.prepare(_clip(3))))
  assert out.shape == (3, 64, 64, 3)
  with pytest.raises(TransferError, match="at most 1"):
    pipe.render(context, np.zeros((2, 32), np.float32))


def test_pipeline_errors(pipe):
  with pytest.raises(TransferError, match="at least 2 needed"):
    pipe.camera_path(pipe.prepare(_clip(1)))
  with pytest.raises(TransferError, match="N x 64 x 64 x 3"):
    pipe.camera_path(np.zeros((3, 32, 32, 3), np.float32))
  with pytest.raises(TransferError, match="N x 32 latents"):
    pipe.render(pipe.prepare(_clip(1)), np.zeros((3, 7), np.float32))
  with pytest.raises(TransferError, match="outside \\[0, 1.5\\]"):
    pipe.render(pipe.prepare(_clip(1)), np.zeros((3, 32), np.float32),
                motion_strength=2.0)
  with pytest.raises(TransferError, match="multiple of the model's patch size 8"):
    TransferPipeline(params=pipe.params, config=pipe.config, image_size=60)


def test_interpolate_path():
  path = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 0.0]], np.float32)
  np.testing.assert_allclose(interpolate_path(path, 0.5), [1.0, 2.0])
  np.testing.assert_allclose(interpolate_path(path, [0, 1.75, 2, 9]),
                             [[0, 0], [3.5, 1.0], [4, 0], [4, 0]])


# --------------------------------------------------------------------- CLI --


@pytest.mark.parametrize("clip", ["example_clip_dir", "real_example_dir"])
def test_cli_end_to_end(reference_dir, clip, request, tmp_path):
  ckpt = reference_dir / "official_format_checkpoint"
  target = request.getfixturevalue(clip) / "target"
  context = request.getfixturevalue(clip) / "transfer" / "000.jpg"
  args = ["--checkpoint", str(ckpt), "--context", str(context), "--size", "64"]
  select = ["--num-frames", "5", "--stride", "2"]
  assert transfer.main(args + select + ["--target", str(target), "--out",
                               str(tmp_path / "o.mp4"), "--save-path",
                               str(tmp_path / "p.npy"), "--side-by-side",
                               str(tmp_path / "s.mp4")]) == 0
  assert media.read_video(tmp_path / "o.mp4").shape == (5, 64, 64, 3)
  assert media.read_video(tmp_path / "s.mp4").shape[0] == 5
  assert np.load(tmp_path / "p.npy").shape == (5, 32)
  # Two target images, GIF out; then a saved path into a frames folder.
  pair = [str(target / "000.jpg"), str(target / "010.jpg")]
  assert transfer.main(args + ["--target", *pair, "--out",
                               str(tmp_path / "o.gif")]) == 0
  assert media.read_frames(tmp_path / "o.gif").shape[0] == 2
  assert transfer.main(args + ["--camera-path", str(tmp_path / "p.npy"),
                               "--out", str(tmp_path / "frames")]) == 0
  assert len(list((tmp_path / "frames").glob("*.png"))) == 5
  # Bad input: clear errors, exit code 2, nothing written.
  assert transfer.main(args + ["--target", pair[0], "--out",
                               str(tmp_path / "bad.mp4")]) == 2
  assert transfer.main(["--checkpoint", str(tmp_path), "--context",
                        str(context), "--target", *pair, "--out",
                        str(tmp_path / "bad.mp4")]) == 2
  assert not (tmp_path / "bad.mp4").exists()


def test_flow_models_render_at_any_output_size(tiny_flow_checkpoint,
                                               reference_dir):
  pipe = TransferPipeline.from_checkpoint(tiny_flow_checkpoint)
  assert pipe.renders_any_size and pipe.image_size == 64
  photo = np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)
  assert pipe.default_output_size([photo]) == 300
  big = np.zeros((2000, 1500, 3), np.uint8)
  assert pipe.default_output_size([big]) == 512
  context = pipe.prepare([photo])
  path = pipe.camera_path(pipe.prepare([photo, np.roll(photo, 9, axis=1)]))
  hi = pipe.prepare([photo], size=200)
  frames = pipe.render(context, path, sample_from=hi)
  assert frames.shape == (2, 200, 200, 3)
  low = pipe.render(context, path)
  assert low.shape == (2, 64, 64, 3)
  # The high-resolution output keeps the photo's detail; the model-size one
  # enlarged to the same size does not.
  sharp = motion.sharpness(model_frames.to_uint8(frames))
  enlarged = motion.sharpness(model_frames.to_uint8(
      model_frames.prepare_frames(model_frames.to_uint8(low), 200)))
  assert sharp > 1.5 * enlarged
  with pytest.raises(TransferError, match="outside 32..1024"):
    pipe.check_output_size(4096)
  with pytest.raises(TransferError, match="sample_from must hold the 1"):
    pipe.render(context, path, sample_from=np.concatenate([hi, hi]))


def test_rgb_models_render_at_their_own_size_only(reference_dir):
  pipe = TransferPipeline.from_checkpoint(
      reference_dir / "official_format_checkpoint", image_size=64)
  assert not pipe.renders_any_size
  assert pipe.check_output_size(None) == 64 == pipe.check_output_size(64)
  assert pipe.default_output_size([np.zeros((500, 500, 3), np.uint8)]) == 64
  with pytest.raises(TransferError, match="published RGB head"):
    pipe.check_output_size(256)


def test_crop_note_names_non_square_contexts():
  assert model_frames.crop_note([np.zeros((64, 64, 3))]) == ""
  note = model_frames.crop_note([np.zeros((64, 64, 3)),
                                 np.zeros((720, 1280, 3))])
  assert "context[1] is 1280 x 720" in note and "centre 720 x 720" in note
  assert "Crop the image" in note


def test_cli_output_size_of_flow_and_rgb_models(tiny_flow_checkpoint,
                                                reference_dir, example_clip_dir,
                                                tmp_path, caplog):
  target = example_clip_dir / "target"
  pair = [str(target / "000.jpg"), str(target / "010.jpg")]
  wide = tmp_path / "wide.png"
  Image.fromarray(np.random.default_rng(0).integers(
      0, 256, (180, 320, 3), np.uint8)).save(wide)
  flow_args = ["--checkpoint", str(tiny_flow_checkpoint), "--context",
               str(wide), "--target", *pair]
  # Default: the photo's own resolution (its centre square, 180 px).
  assert transfer.main(flow_args + ["--out", str(tmp_path / "a.mp4")]) == 0
  assert media.read_video(tmp_path / "a.mp4").shape == (2, 180, 180, 3)
  assert "is 320 x 180, not square" in caplog.text
  assert transfer.main(flow_args + ["--size", "96", "--out",
                                    str(tmp_path / "b.mp4")]) == 0
  assert media.read_video(tmp_path / "b.mp4").shape == (2, 96, 96, 3)
  assert transfer.main(flow_args + ["--size", "5000", "--out",
                                    str(tmp_path / "c.mp4")]) == 2
  assert "outside 32..1024" in caplog.text
  assert not (tmp_path / "c.mp4").exists()
  rgb_args = ["--checkpoint", str(reference_dir / "official_format_checkpoint"),
              "--context", str(wide), "--target", *pair]
  assert transfer.main(rgb_args + ["--size", "64", "--out",
                                   str(tmp_path / "d.mp4")]) == 0
  assert media.read_video(tmp_path / "d.mp4").shape == (2, 64, 64, 3)
