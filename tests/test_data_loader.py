"""Tests of the video loader: layouts, index cache, frame sampler, grain loader.

Every test dataset is tiny and written on the fly. A frame's solid colour
encodes where it came from: red = 8 * (frame position in its video), green =
8 * (video number), so a test can tell exactly which frames were sampled.
"""

import json
import logging
import os

import cv2
import grain.python as pygrain
import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from xfactor_core.data import dataset_layouts
from xfactor_core.data import decoding
from xfactor_core.data import loader
from xfactor_core.data import sampling
from xfactor_core.data import scene_layout
from xfactor_core.data.sources import UnreadableFrameError
from xfactor_core.data.sources import VideoFrameSource
from xfactor_core.inference import media
from xfactor_core.inference import model_frames

SIZE = 8
NO_SHARDING = pygrain.NoSharding()


def _colour_frame(video: int, frame: int, shape=(12, 16)) -> np.ndarray:
  image = np.empty((*shape, 3), np.uint8)
  image[...] = (8 * frame, 8 * video, 100)
  return image


def _write_frame(path, video: int, frame: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(_colour_frame(video, frame)).save(path, quality=95)


def _decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(..., S, S, 3) frames -> (frame numbers, video numbers)."""
  mean = frames.reshape(*frames.shape[:-3], -1, 3).astype(float).mean(-2)
  return np.rint(mean[..., 0] / 8).astype(int), np.rint(mean[..., 1] /
                                                         8).astype(int)


def _write_generic(root, num_videos: int, num_frames: int,
                   first_number: int = 0) -> dict[str, int]:
  """root/seqNN/frames/NNNNN.png; returns video id -> video number."""
  numbers = {}
  for v in range(num_videos):
    video_id = f"seq{v:02d}"
    for f in range(num_frames):
      _write_frame(os.path.join(root, video_id, "frames", f"{f:05d}.png"),
                   first_number + v, f)
    numbers[video_id] = first_number + v
  return numbers


def _config(name, root, **overrides):
  config = loader.default_dataset_config()
  config.name = name
  config.root = str(root)
  config.split = "all" if name == "generic" else "train"
  config.image_size = SIZE
  config.num_views = 2
  config.window_start = 3
  config.window_end = 6
  config.window_warmup_steps = 10
  config.update(overrides)
  return config


def _check_batch(batch, numbers: dict[str, int], batch_size: int,
                 num_views: int) -> None:
  """Shapes, dtypes, and that frames match frame_indices and video_id."""
  assert batch["frames"].shape == (batch_size, num_views, SIZE, SIZE, 3)
  assert batch["frames"].dtype == np.uint8
  assert batch["frame_indices"].shape == (batch_size, num_views)
  assert batch["frame_indices"].dtype == np.int32
  assert batch["video_id"].shape == (batch_size,)
  frame_numbers, video_numbers = _decode(batch["frames"])
  np.testing.assert_array_equal(frame_numbers - frame_numbers[:, :1],
                                batch["frame_indices"])
  expected_videos = [numbers[str(v)] for v in batch["video_id"]]
  np.testing.assert_array_equal(video_numbers,
                                np.repeat(np.array(expected_videos)[:, None],
                                          num_views, axis=1))
  for row in frame_numbers:
    assert len(set(row.tolist())) == num_views


# ----------------------------------------------------------------------------
# The frame sampler (pure function).


def test_window_grows_linearly_with_step():
  params = sampling.WindowParams(num_views=2, window_start=4, window_end=40,
                                 window_warmup_steps=100, reverse_prob=0.0)
  rng = np.random.default_rng(0)
  for step, expected in [(0, 4), (50, 22), (99, 39), (100, 40), (10**6, 40)]:
    assert sampling.max_window_length(params, step) == expected
    plans = [sampling.sample_clip(rng, 60, step, params) for _ in range(400)]
    lengths = np.array([p.window_length for p in plans])
    assert lengths.min() >= 2 and lengths.max() == expected
    for plan in plans:  # Stereo clips are the two ends of the window.
      assert plan.positions[1] - plan.positions[0] == plan.window_length - 1
      assert 0 <= plan.positions[0] and plan.positions[1] < 60
  # The window never exceeds the video.
  short = [sampling.sample_clip(rng, 10, 100, params) for _ in range(100)]
  assert max(p.window_length for p in short) == 10
  assert max(p.positions.max() for p in short) <= 9


def test_clip_frames_distinct_inside_window_and_min_window():
  params = sampling.WindowParams(num_views=5, window_start=3, window_end=30,
                                 window_warmup_steps=0, min_window=12)
  rng = np.random.default_rng(1)
  for _ in range(300):
    plan = sampling.sample_clip(rng, 40, 0, params)
    first, last = plan.window_first, plan.window_first + plan.window_length - 1
    assert 12 <= plan.window_length <= 30
    assert len(set(plan.positions.tolist())) == 5
    assert {first, last} <= set(plan.positions.tolist())
    assert plan.positions.min() == first and plan.positions.max() == last
  # min_window beats a smaller maximum: at step 0 every window is 12 long.
  early = sampling.WindowParams(num_views=2, window_start=3, window_end=30,
                                window_warmup_steps=100, min_window=12)
  assert {sampling.sample_clip(rng, 40, 0, early).window_length
          for _ in range(50)} == {12}


def test_long_window_weight_favours_long_windows():
  uniform = sampling.WindowParams(num_views=2, window_start=41, window_end=41,
                                  window_warmup_steps=0)
  upweighted = sampling.WindowParams(num_views=2, window_start=41,
                                     window_end=41, window_warmup_steps=0,
                                     long_window_weight=0.8)
  weights = sampling.window_length_weights(upweighted, 0, 100)
  assert np.argmax(weights) == 70
  assert weights[70] / weights[0] == pytest.approx(1 / (0.2 + 0.8 * np.exp(
      -(0.7 / 0.25)**2)))
  np.testing.assert_allclose(sampling.window_length_weights(uniform, 2, 41),
                             1 / 40)
  rng = np.random.default_rng(2)
  mean_uniform = np.mean([sampling.sample_clip(rng, 50, 0, uniform)
                          .window_length for _ in range(2000)])
  mean_long = np.mean([sampling.sample_clip(rng, 50, 0, upweighted)
                       .window_length for _ in range(2000)])
  assert abs(mean_uniform - 21.5) < 1.0
  assert mean_long > mean_uniform + 3.0


def test_reversal_and_frame_indices_relative_to_view_zero():
  rng = np.random.default_rng(3)
  base = dict(num_views=3, window_start=10, window_end=10,
              window_warmup_steps=0)
  forward = sampling.WindowParams(**base, reverse_prob=0.0)
  backward = sampling.WindowParams(**base, reverse_prob=1.0)
  for _ in range(50):
    plan = sampling.sample_clip(rng, 30, 0, forward)
    assert np.all(np.diff(plan.positions) > 0) and not plan.reversed
    assert plan.frame_indices[0] == 0 and np.all(plan.frame_indices[1:] > 0)
    plan = sampling.sample_clip(rng, 30, 0, backward)
    assert np.all(np.diff(plan.positions) < 0) and plan.reversed
    assert plan.frame_indices[0] == 0 and np.all(plan.frame_indices[1:] < 0)
    assert plan.frame_indices.dtype == np.int32
  half = sampling.WindowParams(**base, reverse_prob=0.5)
  fraction = np.mean([sampling.sample_clip(rng, 30, 0, half).reversed
                      for _ in range(1000)])
  assert 0.45 < fraction < 0.55


def test_gap_sigma_puts_a_reference_near_the_middle():
  base = dict(num_views=6, window_start=41, window_end=41,
              window_warmup_steps=0, min_window=41)
  with_gap = sampling.WindowParams(**base, gap_sigma=0.25)
  without = sampling.WindowParams(**base)
  rng = np.random.default_rng(4)

  def reference_frames(params):
    plans = [sampling.sample_clip(rng, 41, 0, params) for _ in range(400)]
    indices = np.stack([p.frame_indices for p in plans])
    views = sampling.reference_view(indices)
    return np.array([p.positions[v] for p, v in zip(plans, views)])

  # Window [0, 40]: the band of width 0.25 * 40 around frame 20 is [15, 25].
  references = reference_frames(with_gap)
  assert references.min() >= 15 and references.max() <= 25
  assert references.min() <= 16 and references.max() >= 24
  assert np.mean(np.abs(reference_frames(without) - 20) > 5) > 0.1
  exact = sampling.WindowParams(**base, gap_sigma=0.0)
  assert set(reference_frames(exact).tolist()) == {20}
  # reference_view on a reversed clip picks the frame nearest the middle.
  assert sampling.reference_view(np.array([[0, -3, -5, -9, -10]])) == [2]


def test_sampler_rejects_bad_settings():
  with pytest.raises(ValueError, match="num_views"):
    sampling.WindowParams(num_views=1, window_start=2, window_end=3,
                          window_warmup_steps=1)
  with pytest.raises(ValueError, match="reverse_prob"):
    sampling.WindowParams(num_views=2, window_start=2, window_end=3,
                          window_warmup_steps=1, reverse_prob=2.0)


# ----------------------------------------------------------------------------
# Decoding.


def test_image_modes_become_rgb_uint8(tmp_path):
  sixteen = np.array([[0, 40000, 65535, 257]], np.uint16)
  Image.fromarray(sixteen).save(tmp_path / "gray16.png")
  with Image.open(tmp_path / "gray16.png") as image:
    image.load()
    rgb = media.to_rgb_uint8(image)
  np.testing.assert_array_equal(rgb[0, :, 0], [0, 156, 255, 1])  # Scaled.
  assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
  as_int = media.to_rgb_uint8(Image.fromarray(sixteen.astype(np.int32)))
  np.testing.assert_array_equal(as_int[0, :, 1], [0, 156, 255, 1])

  rgb16 = np.zeros((4, 4, 3), np.uint16)
  rgb16[...] = (65535, 32896, 771)
  cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])
  frame = decoding.read_image_frame(str(tmp_path / "rgb16.png"), 4)
  np.testing.assert_array_equal(frame[0, 0], [255, 128, 3])

  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[..., :3] = (200, 100, 50)
  rgba[0, :, 3] = 255
  out = media.to_rgb_uint8(Image.fromarray(rgba))
  np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
  np.testing.assert_array_equal(out[1, 0], [255, 255, 255])  # Over white.

  gray = Image.fromarray(np.full((3, 3), 77, np.uint8))
  np.testing.assert_array_equal(media.to_rgb_uint8(gray)[1, 1], [77] * 3)
  palette = Image.fromarray(np.full((3, 3, 3), (10, 20, 30), np.uint8)).convert(
      "P", palette=Image.Palette.ADAPTIVE)
  np.testing.assert_array_equal(
      media.to_rgb_uint8(palette)[0, 0], [10, 20, 30])
  floats = Image.fromarray(np.full((2, 2), 0.5, np.float32))
  np.testing.assert_array_equal(media.to_rgb_uint8(floats)[0, 0], [128] * 3)

  # JPEGs: grayscale, CMYK, large (decoded at reduced scale), EXIF-rotated.
  Image.fromarray(np.full((16, 16), 90, np.uint8)).save(tmp_path / "g.jpg")
  assert np.all(np.abs(decoding.read_image_frame(str(tmp_path / "g.jpg"), 8)
                       .astype(int) - 90) <= 1)
  Image.fromarray(np.full((16, 16, 3), (200, 40, 40), np.uint8)).convert(
      "CMYK").save(tmp_path / "cmyk.jpg", quality=95)
  cmyk = decoding.read_image_frame(str(tmp_path / "cmyk.jpg"), 8)
  assert np.all(np.abs(cmyk.astype(int) - (200, 40, 40)) <= 4)
  big = np.zeros((600, 800, 3), np.uint8)
  big[:, :400] = (250, 0, 0)
  big[:, 400:] = (0, 0, 250)
  Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
  small = decoding.read_image_frame(str(tmp_path / "big.jpg"), 64)
  assert small.shape == (64, 64, 3)
  assert np.all(np.abs(small[:, :24].astype(int) - (250, 0, 0)) <= 8)
  assert np.all(np.abs(small[:, 40:].astype(int) - (0, 0, 250)) <= 8)
  exif = Image.Exif()
  exif[0x0112] = 6  # Stored rotated: the viewer turns it 90 degrees clockwise.
  tall = np.zeros((32, 16, 3), np.uint8)
  tall[:16] = (250, 0, 0)
  Image.fromarray(tall).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
  upright = decoding.read_image_frame(str(tmp_path / "rotated.jpg"), 16)
  assert upright.shape == (16, 16, 3)
  assert upright[8, 2, 0] < 60 and upright[8, 13, 0] > 200  # Red on the right.


def test_center_crop_resize_keeps_the_centre():
  frame = np.zeros((12, 20, 3), np.uint8)
  frame[:, :4] = 255  # Left and right margins are cropped away.
  frame[:, 16:] = 255
  frame[:, 4:16] = 60
  out = model_frames.center_crop_resize(frame, SIZE)
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
  assert np.all(out == 60)


# ----------------------------------------------------------------------------
# Layouts, splits and the index cache.


def _write_re10k(root, split, videos, num_frames, first_number=0):
  numbers = {}
  for v in range(videos):
    video_id = f"{split}{v:03d}"
    for f in range(num_frames):  # Names 0, 5, 10, ...: natural order matters.
      _write_frame(
          os.path.join(root, split, "images", video_id, f"{5 * f}.png"),
          first_number + v, f)
    numbers[video_id] = first_number + v
  return numbers


def _write_dl3dv(root, videos, benchmark_ids, num_frames):
  numbers = {}
  for v, video_id in enumerate(videos):
    part = "1K" if v % 2 else "2K"
    for f in range(num_frames):
      _write_frame(os.path.join(root, "training_256", part, video_id,
                                "images_8", f"frame_{f + 1:05d}.png"), v, f)
    numbers[video_id] = v
  for video_id in benchmark_ids:
    os.makedirs(os.path.join(root, "test_256", "benchmark_960p", video_id),
                exist_ok=True)
  return numbers


def _write_categories(root, layout, scenes_per_category, num_frames):
  numbers = {}
  number = 0
  for category, count in scenes_per_category.items():
    for s in range(count):
      scene = f"{s:03d}_{category}" if layout == "co3d" else f"s{s:03d}"
      for f in range(num_frames):
        name = (f"frame{f + 1:06d}.jpg" if layout == "co3d" else
                f"{f + 1:03d}.jpg")
        _write_frame(os.path.join(root, category, scene, "images", name),
                     number, f)
      numbers[f"{category}/{scene}"] = number
      number += 1
  return numbers


def _ids(layout, root, split, split_file=None):
  index = dataset_layouts.index_videos(layout, str(root), split, split_file,
                               use_cache=False)
  return [v.video_id for v in index.videos]


def test_layout_splits(tmp_path):
  _write_re10k(tmp_path / "re10k", "train", 3, 2)
  _write_re10k(tmp_path / "re10k", "test", 2, 2)
  assert _ids("re10k", tmp_path / "re10k", "train") == [
      "train000", "train001", "train002"]
  assert _ids("re10k", tmp_path / "re10k", "test") == ["test000", "test001"]
  assert len(_ids("re10k", tmp_path / "re10k", "all")) == 5

  dl3dv = tmp_path / "dl3dv"
  _write_dl3dv(dl3dv, [f"v{i}" for i in range(6)], ["v4", "v5", "v9"], 2)
  for f in range(2):
    _write_frame(str(dl3dv / "test_256" / "benchmark_960p" / "v9" / "images_8"
                     / f"frame_{f:05d}.png"), 9, f)
  assert sorted(_ids("dl3dv", dl3dv, "train")) == ["v0", "v1", "v2", "v3"]
  assert sorted(_ids("dl3dv", dl3dv, "test")) == ["v4", "v5", "v9"]
  assert len(_ids("dl3dv", dl3dv, "all")) == 7

  for layout in ("mvimgnet", "co3d"):
    root = tmp_path / layout
    numbers = _write_categories(root, layout, {"apple": 10, "bench": 20}, 2)
    os.makedirs(root / "apple" / "set_lists")  # Not a scene: no images/.
    train, test = _ids(layout, root, "train"), _ids(layout, root, "test")
    assert len(train) == 27 and len(test) == 3
    assert set(train) | set(test) == set(numbers)
    apple = sorted(i for i in numbers if i.startswith("apple"))
    bench = sorted(i for i in numbers if i.startswith("bench"))
    assert test == [apple[-1]] + bench[-2:]

  generic = tmp_path / "generic"
  _write_generic(generic, 10, 2)
  assert _ids("generic", generic, "test") == ["seq09"]
  assert len(_ids("generic", generic, "train")) == 9
  with pytest.raises(ValueError, match="unknown dataset layout"):
    _ids("kitti", generic, "train")
  with pytest.raises(FileNotFoundError, match="images"):
    _ids("re10k", tmp_path / "re10k", "validation")


def test_split_file_restricts_the_videos(tmp_path):
  root = tmp_path / "mvimgnet"
  _write_categories(root, "mvimgnet", {"apple": 10, "bench": 10}, 2)
  split_file = tmp_path / "split.json"
  # Keys may be full ids or the scene name alone; unknown ids are ignored.
  split_file.write_text(json.dumps({"apple/s009": 1, "s002": 2, "nope": 3}))
  ids = _ids("mvimgnet", root, "test", str(split_file))
  assert ids == ["apple/s002", "apple/s009", "bench/s002"]
  re10k = tmp_path / "re10k"
  _write_re10k(re10k, "train", 4, 2)
  split_file.write_text(json.dumps(["train001", "train003"]))
  assert _ids("re10k", re10k, "train", str(split_file)) == [
      "train001", "train003"]
  split_file.write_text("[not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    _ids("re10k", re10k, "train", str(split_file))


def test_generic_layout_finds_folders_videos_and_synthetic_sequences(tmp_path):
  root = tmp_path / "generic"
  _write_generic(root, 1, 3)
  for f in range(2):  # Frames directly in the sequence folder.
    _write_frame(str(root / "direct" / f"img{f}.png"), 1, f)
  writer = imageio.get_writer(str(root / "clip.mp4"), fps=10,
                              macro_block_size=16, ffmpeg_log_level="error")
  for f in range(5):
    writer.append_data(_colour_frame(2, f, shape=(16, 32)))
  writer.close()
  pair = {  # The synthetic world's on-disk format, via its own writer.
      "frames": np.stack([_colour_frame(3, f, (16, 16)) for f in range(4)]),
      "camera_from_world": np.tile(np.eye(4), (4, 1, 1)),
      "intrinsics": np.tile(np.eye(3), (4, 1, 1)),
  }
  scene_layout.write_sequence(pair, root / "000001" / "a")
  scene_layout.write_sequence(pair, root / "000001" / "b")
  index = dataset_layouts.index_videos("generic", str(root), "all", use_cache=False)
  found = {v.video_id: v for v in index.videos}
  assert set(found) == {"seq00", "direct", "clip", "000001/a", "000001/b"}
  assert found["clip"].is_video_file and found["clip"].num_frames == 5
  assert found["000001/a"].num_frames == 4
  assert found["000001/a"].frame_name(3) == "00003.png"


def test_index_cache_is_reused_and_invalidated(tmp_path):
  root = tmp_path / "generic"
  _write_generic(root, 3, 4)
  first = dataset_layouts.index_videos("generic", str(root), "all")
  assert not first.from_cache
  assert first.cache_path.startswith(str(root / ".xfactor_index"))
  assert os.path.isfile(first.cache_path)
  second = dataset_layouts.index_videos("generic", str(root), "all")
  assert second.from_cache and second.videos == first.videos
  _write_frame(str(root / "seq01" / "frames" / "00004.png"), 1, 4)
  third = dataset_layouts.index_videos("generic", str(root), "all")
  assert not third.from_cache
  assert {v.video_id: v.num_frames for v in third.videos}["seq01"] == 5
  cache_dir = tmp_path / "elsewhere"
  elsewhere = dataset_layouts.index_videos("generic", str(root), "all",
                                   cache_dir=str(cache_dir))
  assert not elsewhere.from_cache
  assert os.path.dirname(elsewhere.cache_path) == str(cache_dir)
  assert dataset_layouts.index_videos("generic", str(root), "all",
                              cache_dir=str(cache_dir)).from_cache


def test_index_cache_of_a_read_only_root_goes_to_the_user_cache(
    tmp_path, monkeypatch):
  root = tmp_path / "generic"
  _write_generic(root, 2, 3)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user_cache"))
  monkeypatch.setattr(dataset_layouts.os, "access", lambda path, mode: False)
  first = dataset_layouts.index_videos("generic", str(root), "all")
  assert first.cache_path.startswith(
      str(tmp_path / "user_cache" / "xfactor_studio" / "video_index"))
  assert not (root / ".xfactor_index").exists()
  assert dataset_layouts.index_videos("generic", str(root), "all").from_cache


# ----------------------------------------------------------------------------
# Sources and the grain loader.


def test_loader_samples_every_layout(tmp_path):
  datasets = []
  numbers = _write_re10k(tmp_path / "re10k", "train", 3, 12)
  datasets.append((_config("re10k", tmp_path / "re10k"), numbers))
  numbers = _write_dl3dv(tmp_path / "dl3dv", ["a", "b", "c"], ["c"], 12)
  datasets.append((_config("dl3dv", tmp_path / "dl3dv"), numbers))
  for layout in ("mvimgnet", "co3d"):
    numbers = _write_categories(tmp_path / layout, layout, {"cat": 4}, 12)
    datasets.append((_config(layout, tmp_path / layout), numbers))
  numbers = _write_generic(tmp_path / "generic", 3, 12)
  datasets.append((_config("generic", tmp_path / "generic"), numbers))
  for config, numbers in datasets:
    config.num_views = 3
    dataset = loader.make_clip_dataset(config, 4, shard_options=NO_SHARDING)
    for k in (0, 1, 50):
      batch = dataset[k]
      _check_batch(batch, numbers, 4, 3)
      assert int(batch["step"]) == k
      np.testing.assert_array_equal(batch["dataset_index"], 0)


def test_loader_reads_video_files(tmp_path):
  root = tmp_path / "videos"
  os.makedirs(root)
  numbers = {}
  for v, extension in enumerate(["mp4", "mov", "webm"]):
    codec = "libvpx-vp9" if extension == "webm" else "libx264"
    writer = imageio.get_writer(str(root / f"clip{v}.{extension}"), fps=10,
                                codec=codec, macro_block_size=16,
                                ffmpeg_log_level="error")
    for f in range(24):
      writer.append_data(_colour_frame(v, f, shape=(16, 32)))
    writer.close()
    numbers[f"clip{v}"] = v
  config = _config("generic", root, num_views=3, window_start=24,
                   window_end=24)
  dataset = loader.make_clip_dataset(config, 6, shard_options=NO_SHARDING)
  for k in range(3):
    _check_batch(dataset[k], numbers, 6, 3)


def test_window_grows_with_the_step_and_resumes_exactly(tmp_path):
  numbers = _write_generic(tmp_path / "generic", 2, 30)
  config = _config("generic", tmp_path / "generic", window_start=2,
                   window_end=30, window_warmup_steps=10, reverse_prob=0.5)
  dataset = loader.make_clip_dataset(config, 8, shard_options=NO_SHARDING,
                                     batches_per_step=2)
  spans = {}
  for k in range(0, 30):
    batch = dataset[k]
    _check_batch(batch, numbers, 8, 2)
    assert int(batch["step"]) == k // 2
    spans[k // 2] = max(spans.get(k // 2, 0),
                        int(np.abs(batch["frame_indices"]).max()))
  assert spans[0] == 1  # Window length 2 at step 0.
  for step, span in spans.items():  # max_len(step) - 1 = 2 + 2.8 step - 1.
    assert span <= int(2 + 2.8 * min(step, 10)) - 1
  assert max(spans[s] for s in range(10, 15)) >= 20
  resumed = loader.make_clip_dataset(config, 8, shard_options=NO_SHARDING,
                                     batches_per_step=2, start_step=7)
  for k in range(2):
    for key in ("frames", "frame_indices", "video_id", "step"):
      np.testing.assert_array_equal(resumed[k][key], dataset[14 + k][key])


def test_dataset_weights_set_the_mix(tmp_path):
  first = _write_generic(tmp_path / "a", 4, 6)
  second = _write_generic(tmp_path / "b", 4, 6, first_number=10)
  configs = [_config("generic", tmp_path / "a", weight=3.0),
             _config("generic", tmp_path / "b", weight=1.0)]
  dataset = loader.make_clip_dataset(configs, 8, shard_options=NO_SHARDING)
  chosen = []
  for k in range(25):
    batch = dataset[k]
    chosen.append(batch["dataset_index"])
    _, video_numbers = _decode(batch["frames"])
    for d, number in zip(batch["dataset_index"], video_numbers[:, 0]):
      assert (number >= 10) == (d == 1)
  assert np.mean(np.concatenate(chosen) == 0) == pytest.approx(0.75, abs=0.03)
  with pytest.raises(ValueError, match="share image_size"):
    loader.make_clip_dataset([configs[0], _config("generic", tmp_path / "b",
                                                  image_size=16)], 2,
                             shard_options=NO_SHARDING)


def test_shards_are_disjoint_and_cover_the_videos(tmp_path):
  numbers = _write_generic(tmp_path / "generic", 7, 4)
  config = _config("generic", tmp_path / "generic")
  seen = []
  for shard in range(2):
    options = pygrain.ShardOptions(shard_index=shard, shard_count=2,
                                   drop_remainder=False)
    dataset = loader.make_clip_dataset(config, 4, shard_options=options)
    seen.append({str(v) for k in range(8) for v in dataset[k]["video_id"]})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(numbers)
  even = pygrain.ShardOptions(shard_index=1, shard_count=2, drop_remainder=True)
  dataset = loader.make_clip_dataset(config, 4, shard_options=even)
  assert len({str(v) for k in range(8) for v in dataset[k]["video_id"]}) == 3


def test_unreadable_frames_are_skipped_with_a_counted_warning(tmp_path, caplog):
  root = tmp_path / "generic"
  numbers = _write_generic(root, 3, 4)
  truncated = root / "seq01" / "frames" / "00002.png"
  truncated.write_bytes(truncated.read_bytes()[:40])
  (root / "seq02" / "frames" / "00001.png").write_bytes(b"not an image")
  config = _config("generic", root, num_views=3, window_start=4, window_end=4)
  dataset = loader.make_clip_dataset(config, 4, shard_options=NO_SHARDING)
  with caplog.at_level(logging.WARNING):
    batches = [dataset[k] for k in range(25)]
  warnings = [r.getMessage() for r in caplog.records
              if "unreadable" in r.getMessage()]
  assert len(warnings) == 2
  assert "1 unreadable so far" in warnings[0]
  assert "2 unreadable so far" in warnings[1]
  clips = {"seq01": set(), "seq02": set()}
  for batch in batches:
    _check_batch(batch, numbers, 4, 3)
    frame_numbers, _ = _decode(batch["frames"])
    for video_id, row in zip(batch["video_id"], frame_numbers):
      if str(video_id) in clips:
        clips[str(video_id)].update(row.tolist())
  assert clips["seq01"] == {0, 1, 3}  # Never frame 2, still sampled.
  assert clips["seq02"] == {0, 2, 3}

  index = dataset_layouts.index_videos("generic", str(root), "all")
  source = VideoFrameSource(index, image_size=SIZE, min_frames=2)
  assert source[1] == {"video_index": 1, "video_id": "seq01", "num_frames": 4}
  with pytest.raises(UnreadableFrameError):
    source.read_clip(1, [0, 2])
  with pytest.raises(UnreadableFrameError):
    source.read_clip(1, [2, 3])
  assert source.num_unreadable_frames == 1
  assert source.has_unreadable(1, [2]) and not source.has_unreadable(1, [1])


def test_too_few_videos_is_a_clear_error(tmp_path):
  root = tmp_path / "generic"
  _write_generic(root, 1, 4)
  _write_frame(str(root / "short" / "frames" / "00000.png"), 5, 0)
  config = _config("generic", root, min_videos=2)
  with pytest.raises(ValueError, match=r"found 1 with at least 2 frames .*"
                     r"1 shorter.*needs 2"):
    loader.make_clip_dataset(config, 2, shard_options=NO_SHARDING)
  _write_generic(root, 3, 4)
  config.min_videos = 1
  four_shards = pygrain.ShardOptions(shard_index=0, shard_count=4,
                                     drop_remainder=True)
  with pytest.raises(ValueError, match=r"found 3 .*needs 4 \(1 per process x "
                     r"4 processes\)"):
    loader.make_clip_dataset(config, 2, shard_options=four_shards)


def test_configs(tmp_path):
  config = loader.default_dataset_config()
  for field in ("name", "root", "split", "split_file", "weight", "image_size",
                "num_views", "window_start", "window_end",
                "window_warmup_steps", "min_window", "long_window_weight",
                "gap_sigma", "reverse_prob"):
    assert field in config
  published = loader.published_dataset_configs(
      "multiview", {"re10k": "/r", "co3dv2": "/c"})
  assert [(c.name, c.window_start, c.window_end, c.weight, c.num_views,
           c.gap_sigma) for c in published] == [
               ("re10k", 40, 200, 3.0, 6, 0.25), ("co3d", 9, 40, 2.0, 6, 0.25)]
  with pytest.raises(ValueError, match="unknown dataset config fields"):
    loader.make_clip_dataset({"name": "generic", "rooot": "/x"}, 2,
                             shard_options=NO_SHARDING)
  with pytest.raises(ValueError, match="root is empty"):
    loader.make_clip_dataset(loader.default_dataset_config(), 2,
                             shard_options=NO_SHARDING)


def test_worker_processes_give_the_same_batches(tmp_path):
  numbers = _write_generic(tmp_path / "generic", 4, 10)
  config = _config("generic", tmp_path / "generic", num_views=3)
  reference = loader.make_clip_dataset(config, 4, shard_options=NO_SHARDING,
                                       seed=7, start_step=3)
  iterable = loader.make_loader(config, 4, shard_options=NO_SHARDING, seed=7,
                                start_step=3, worker_count=2)
  iterator = iter(iterable)
  for k in range(4):
    batch = next(iterator)
    _check_batch(batch, numbers, 4, 3)
    assert int(batch["step"]) == 3 + k
    np.testing.assert_array_equal(batch["frames"], reference[k]["frames"])
    np.testing.assert_array_equal(batch["frame_indices"],
                                  reference[k]["frame_indices"])
  state = iterator.get_state()
  restored = iter(iterable)
  restored.set_state(state)
  np.testing.assert_array_equal(next(restored)["frames"],
                                reference[4]["frames"])
  iterator.close()
  restored.close()
