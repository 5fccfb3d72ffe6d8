"""Tests of the app's logic as plain functions (no server, no browser)."""

import dataclasses
import json
import pathlib
import threading
import time
import zipfile

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from xfactor_core import checkpoints
from xfactor_core.app import (check, example_cache, export, gate, job_board,
                              jobs, layout, make_presets, picker, presets,
                              registry, sessions, testing, ui, uploads)
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import media
from xfactor_core.inference.pipeline import interpolate_path
from xfactor_core.metrics import motion as motion_metrics

REQUIRED_MOTIONS = ("orbit left", "orbit right", "zoom in", "zoom out",
                    "move left", "move right", "move up", "move down",
                    "pan left", "pan right", "tilt up", "tilt down", "spiral")


@pytest.fixture(scope="module")
def checkpoints_dir(reference_dir, tmp_path_factory):
  return testing.write_test_checkpoints(
      tmp_path_factory.mktemp("ckpts"),
      reference_dir / "official_format_checkpoint")


@pytest.fixture(scope="module")
def library():
  return presets.load_presets()


@pytest.fixture(scope="module")
def models(checkpoints_dir):
  specs = registry.discover_models(checkpoints_dir, defaults={})
  return registry.ModelRegistry(specs, batch_size=4)


def _ids(models):
  by_kind = {s.kind: s.model_id for s in models.specs}
  return by_kind["stereo-monocular"], by_kind["multi-view"]


@pytest.fixture(scope="module")
def example_result(models, library, tmp_path_factory):
  sm, _ = _ids(models)
  request = jobs.TransferRequest(
      sm, tuple(str(f) for f in library.context("photo: cat").files),
      jobs.MotionRequest("preset", "orbit left"),
      jobs.TransferSettings(num_frames=8))
  return jobs.transfer(models, library, request,
                       tmp_path_factory.mktemp("job"))


# ---------------------------------------------------------------- presets --


def test_presets_cover_the_usual_camera_motions(library):
  names = library.motion_names
  assert len(names) >= 14
  for name in REQUIRED_MOTIONS:
    assert name in names
  assert any("+" in n for n in names)  # a combined path
  total = sum(p.stat().st_size for p in library.root.rglob("*") if p.is_file())
  assert total < 800 * 1024, f"presets are {total / 1024:.0f} KB"
  clip = media.read_video(library.motion("orbit left").clip)
  assert clip.shape[1:] == (128, 128, 3) and len(clip) >= 16
  with pytest.raises(ValueError, match="unknown motion preset 'nope'"):
    library.motion("nope")


def test_preset_motions_match_their_names(library):
  motion = lambda name: library.motion(name).info["motion"]
  assert motion("orbit left")["right_m"] < 0 < motion("orbit left")[
      "yaw_right_deg"]
  assert motion("orbit right")["right_m"] > 0 > motion("orbit right")[
      "yaw_right_deg"]
  assert motion("zoom in")["forward_m"] > 0 > motion("zoom out")["forward_m"]
  assert motion("move left")["right_m"] < 0 < motion("move right")["right_m"]
  assert motion("move up")["down_m"] < 0 < motion("move down")["down_m"]
  assert motion("pan left")["yaw_right_deg"] < 0 < motion("pan right")[
      "yaw_right_deg"]
  assert motion("tilt down")["pitch_up_deg"] < 0 < motion("tilt up")[
      "pitch_up_deg"]


def test_context_examples_record_source_and_licence(library):
  assert len(library.contexts) >= 6
  photos = [c for c in library.contexts if c.name.startswith("photo")]
  assert {c.info["source"].split(" (")[0] for c in photos} >= {
      "skimage.data.astronaut()", "skimage.data.chelsea()",
      "skimage.data.coffee()", "skimage.data.rocket()"}
  for example in library.contexts:
    assert example.licence
    for f in example.files:
      assert Image.open(f).size == (256, 256)
  for photo in photos:
    assert "public domain" in photo.licence or "CC0" in photo.licence
  assert any(c.num_views > 1 for c in library.contexts)


def test_measure_motion_reads_opencv_directions():
  def camera(centre, yaw_right_deg=0.0):
    a = np.radians(yaw_right_deg)
    # world x right, y down, z forward; rows of R are the camera axes.
    rotation = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0],
                         [np.sin(a), 0, np.cos(a)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -rotation @ np.asarray(centre, float)
    return matrix
  cams = np.stack([camera([0, 0, 0]), camera([0.5, -0.2, 1.0], 20.0)])
  m = make_presets.measure_motion(cams)
  assert m["right_m"] == pytest.approx(0.5)
  assert m["down_m"] == pytest.approx(-0.2)
  assert m["forward_m"] == pytest.approx(1.0)
  assert m["yaw_right_deg"] == pytest.approx(20.0)
  spiral = make_presets.custom_heading_path("spiral", 12, 1.0)
  np.testing.assert_allclose(np.asarray(spiral.center[0]), 0.0, atol=1e-7)
  assert float(spiral.center[-1, 2]) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="unknown custom path"):
    make_presets.custom_heading_path("loop", 4, 1.0)


# --------------------------------------------------------------- registry --


def test_discovery_reads_model_json_only(checkpoints_dir, tmp_path):
  (checkpoints_dir / "notes.txt").write_text("not a model")
  specs = registry.discover_models(checkpoints_dir, defaults={})
  assert sorted(s.kind for s in specs) == ["multi-view", "stereo-monocular"]
  assert all(s.image_size == 64 and s.num_parameters is None for s in specs)
  assert {s.num_context_views for s in specs} == {1, 3}
  single = registry.discover_models(checkpoints_dir / "tiny_sm", defaults={})
  assert len(single) == 1 and single[0].kind == "stereo-monocular"
  with pytest.raises(registry.RegistryError, match="does not exist"):
    registry.discover_models(tmp_path / "missing", defaults={})
  (tmp_path / "empty").mkdir()
  with pytest.raises(registry.RegistryError, match="no checkpoint found"):
    registry.discover_models(tmp_path / "empty", defaults={})
  assert registry.discover_models(None, defaults={"x": tmp_path / "no"}) == []
  with pytest.raises(registry.RegistryError, match="no model is installed"):
    registry.ModelRegistry([]).get()


def test_registry_loads_lazily_and_bounds_its_cache(checkpoints_dir):
  specs = registry.discover_models(checkpoints_dir, defaults={})
  loads = []

  def loader(path, **kwargs):
    loads.append(pathlib.Path(path).name)
    time.sleep(0.05)
    from xfactor_core.inference.pipeline import TransferPipeline
    return TransferPipeline.from_checkpoint(path, **kwargs)

  models = registry.ModelRegistry(specs, max_loaded=1, loader=loader)
  first, second = specs[0].model_id, specs[1].model_id
  assert "loads on first use" in picker.model_facts(models, first) and not loads
  threads = [threading.Thread(target=models.get, args=(first,))
             for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(loads) == 1  # concurrent sessions share one load
  assert "476.7 K parameters" in picker.model_facts(models, first)
  models.get(second)
  models.get(first)
  assert len(loads) == 3 and not models.is_loaded(second)
  with pytest.raises(registry.RegistryError, match="multiple of this model's "
                     "patch size 8"):
    models.pipeline(first, image_size=60)
  with pytest.raises(registry.RegistryError, match="unknown model"):
    models.get("elsewhere")


# ---------------------------------------------------------------- uploads --


def test_bad_inputs_name_the_problem_and_the_fix(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("hello")
  with pytest.raises(uploads.InputError,
                     match=r"wrong type \(\.txt\); use .*png"):
    uploads.read_context([str(text)], 1, "stereo-monocular")
  image = tmp_path / "a.png"
  Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(image)
  with pytest.raises(uploads.InputError, match="takes at most 1; remove 1 or "
                     "pick a multi-view model"):
    uploads.read_context([str(image), str(image)], 1, "stereo-monocular")
  with pytest.raises(uploads.InputError, match="no context image"):
    uploads.read_context(None, 1, "stereo-monocular")
  small = uploads.Limits(max_image_pixels=1000)
  with pytest.raises(uploads.InputError, match="30 x 40 pixels, above the "
                     "limit of 0.001 megapixels; downscale"):
    uploads.read_context([str(image)], 1, "stereo-monocular", small)
  with pytest.raises(uploads.InputError, match="limit of 0 MB"):
    uploads.check_file(image, media.IMAGE_SUFFIXES, "image",
                      uploads.Limits(max_file_mb=1e-6))
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"\x00not a video" * 50)
  with pytest.raises(uploads.InputError, match="cannot be opened"):
    uploads.read_target_video(broken, uploads.ClipSelection(count=4), 64)
  clip = tmp_path / "clip.mp4"
  media.write_video(clip, np.random.default_rng(0).integers(
      0, 255, (5, 32, 48, 3), np.uint8))
  with pytest.raises(uploads.InputError, match="only 1 frame .*lower the "
                     "start frame or the stride"):
    uploads.read_target_video(clip, uploads.ClipSelection(4, 1, 8), 64)
  frames = uploads.read_target_video(clip, uploads.ClipSelection(1, 2, 8), 16)
  assert frames.shape == (2, 16, 16, 3)
  with pytest.raises(uploads.InputError, match="above the limit of 120"):
    uploads.ClipSelection(count=500).validate()
  npy = tmp_path / "path.npy"
  np.save(npy, np.zeros((5, 7), np.float32))
  with pytest.raises(uploads.InputError, match=r"needs N x 32 latents"):
    uploads.read_camera_path(str(npy), 32)
  with pytest.raises(uploads.InputError, match="whole number"):
    ui.settings_from_ui({"num_frames": 2.5, "stride": 1, "start": 0,
                         "resolution": "native", "fps": 12, "reverse": False,
                         "ping_pong": False, "strength": 1.0})
  with pytest.raises(uploads.InputError, match="motion strength 2.0"):
    jobs.TransferSettings(motion_strength=2.0).validate()


def test_target_videos_are_read_by_the_media_reader(tmp_path):
  """uploads builds on media: the selected frames, decoded once, cropped and
  resized as decoded, uint8; the limits and messages stay the app's."""
  frames = np.random.default_rng(1).integers(0, 255, (12, 36, 48, 3),
                                             np.uint8)
  clip = media.write_video(tmp_path / "walk.mp4", frames)
  selection = uploads.ClipSelection(start=1, stride=3, count=4)
  read = uploads.read_target_video(clip, selection, 16)
  assert read.dtype == np.uint8 and read.shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(
      read, media.read_video(clip, [1, 4, 7, 10], size=16))
  # Past the end of the video: the frames it has (the job warns).
  tail = uploads.read_target_video(clip, uploads.ClipSelection(8, 2, 6), 16)
  np.testing.assert_array_equal(tail, media.read_video(clip, [8, 10],
                                                       size=16))
  with pytest.raises(uploads.InputError, match=r"start frame 12 is past the "
                     r"end of walk.mp4 \(12 frames\); lower the start"):
    uploads.read_target_video(clip, uploads.ClipSelection(12, 1, 4), 16)
  with pytest.raises(uploads.InputError, match="decodes at most 10 frames"):
    uploads.read_target_video(clip, selection, 16,
                              uploads.Limits(max_decoded_frames=10))
  with pytest.raises(uploads.InputError, match=r"48 x 36 pixels, above the "
                     "limit"):
    uploads.read_target_video(clip, selection, 16,
                              uploads.Limits(max_image_pixels=1000))
  gif = media.write_video(tmp_path / "walk.gif", frames[:5])
  assert uploads.read_target_video(
      gif, uploads.ClipSelection(count=5), 8).shape == (5, 8, 8, 3)
  assert uploads.probe_video(gif).num_frames == 5
  (tmp_path / "notes.txt").write_text("not a video")
  with pytest.raises(uploads.InputError, match=r"wrong type \(\.txt\); use "
                     + uploads.suffix_names(media.VIDEO_SUFFIXES)):
    uploads.read_target_video(tmp_path / "notes.txt", selection, 16)
  # Target frames as images: cropped and resized as read, uint8.
  paths = []
  for index in range(3):
    paths.append(tmp_path / f"f{index}.png")
    Image.fromarray(frames[index]).save(paths[-1])
  images = uploads.read_target_images([str(p) for p in paths], None, 16)
  assert images.dtype == np.uint8
  np.testing.assert_array_equal(images[1], media.read_image(paths[1], 16))


def test_ui_values_map_to_motion_requests():
  assert ui.motion_from_ui({"source": "Preset", "preset": "spiral",
                            "video": "v.mp4"}) == jobs.MotionRequest(
                                "preset", "spiral")
  assert ui.motion_from_ui({"source": "Video",
                            "video": "v.mp4"}).files == ("v.mp4",)
  assert ui.motion_from_ui({"source": "Frames", "frames": [
      "b.png", "a.png"]}).files == ("b.png", "a.png")
  pair = ui.motion_from_ui({"source": "Image pair", "first": "1.png",
                            "second": None})
  assert pair.source == "pair" and pair.files == ("1.png",)
  assert ui.motion_from_ui({"source": "Camera path (.npy)", "camera_path": {
      "path": "p.npy"}}).files == ("p.npy",)  # the label of older pages
  assert ui.motion_from_ui({"source": jobs.SOURCE_LABELS["path"],
                            "camera_path": "p.npz"}) == jobs.MotionRequest(
                                "path", files=("p.npz",))
  with pytest.raises(uploads.InputError, match="unknown motion source"):
    ui.motion_from_ui({"source": "Webcam"})


def test_frames_are_taken_in_natural_name_order(tmp_path):
  files = []
  for index in (10, 2, 1):
    path = tmp_path / f"f{index}.png"
    Image.fromarray(np.full((8, 8, 3), index * 20, np.uint8)).save(path)
    files.append(str(path))
  frames = uploads.read_target_images(files, uploads.ClipSelection(count=3), 8)
  assert [int(f[0, 0, 0]) for f in frames] == [20, 40, 200]


# ------------------------------------------------------------------- jobs --


def _zoom_in_on_room_1(model_id, library, num_frames):
  return jobs.TransferRequest(
      model_id, (str(library.context("synthetic room 1").files[0]),),
      jobs.MotionRequest("preset", "zoom in"),
      jobs.TransferSettings(num_frames=num_frames))


def test_transfer_streams_chunks_and_returns_a_result(models, library,
                                                      tmp_path):
  sm, _ = _ids(models)
  request = _zoom_in_on_room_1(sm, library, num_frames=6)
  updates = list(jobs.run_transfer(models, library, request, tmp_path))
  fractions = [u.fraction for u in updates]
  assert fractions == sorted(fractions) and fractions[-1] == 1.0
  streamed = [len(u.frames) for u in updates[:-1] if u.frames]
  assert streamed == [4, 6]  # chunks of the batch size (4)
  result = updates[-1].result
  assert result.generated.shape == (6, 64, 64, 3)
  assert result.path.shape == (6, 32) and not result.path[0].any()
  assert len(media.read_video(result.video)) == 6


def test_a_stopped_transfer_ends_with_the_frames_it_had(models, library,
                                                      tmp_path):
  sm, _ = _ids(models)
  request = _zoom_in_on_room_1(sm, library, num_frames=10)
  chunks = []
  should_stop = lambda: len(chunks) == 1  # stop after the first chunk
  updates = []
  for update in jobs.run_transfer(models, library, request, tmp_path,
                                  should_stop=should_stop):
    updates.append(update)
    if update.frames:
      chunks.append(len(update.frames))
  last = updates[-1]
  assert last.cancelled and last.result is None
  assert last.stage == "cancelled after 8 of 10 frames"
  assert len(last.frames) == 8 and not any(u.cancelled for u in updates[:-1])
  assert not (tmp_path / "transfer.mp4").exists()
  before = list(jobs.run_transfer(models, library, request, tmp_path,
                                  should_stop=lambda: True))
  assert [u.stage for u in before] == ["loading the model",
                                       "cancelled before rendering"]
  assert before[-1].frames is None


def test_job_board_cancels_only_open_jobs():
  board = job_board.JobBoard(ttl_seconds=3600)
  first, second = board.open(), board.open()
  assert first != second and len(board) == 2
  assert board.cancel(first) and board.cancelled(first)
  assert not board.cancelled(second)
  board.close(first)
  assert not board.cancelled(first) and not board.cancel(first)
  assert not board.cancel(None) and not board.cancel("no such job")
  board.ttl_seconds = -1  # every open job has expired: the next open forgets
  board.open()
  assert len(board) == 1 and not board.cancel(second)


def test_options_reverse_ping_pong_and_strength(models, library, tmp_path):
  sm, _ = _ids(models)
  context = (str(library.context("photo: coffee cup").files[0]),)
  run = lambda **kw: jobs.transfer(models, library, jobs.TransferRequest(
      sm, context, jobs.MotionRequest("preset", "pan left"),
      jobs.TransferSettings(num_frames=5, **kw)), tmp_path)
  forward = run()
  backward = run(reverse=True)
  np.testing.assert_array_equal(backward.target, forward.target[::-1])
  looped = run(ping_pong=True)
  assert looped.num_frames == 8 and looped.motion_frames == 5
  np.testing.assert_array_equal(looped.generated[5:], forward.generated[3:0:-1])
  still = run(motion_strength=0.0)
  assert np.abs(still.generated.astype(int) - still.generated[0]).max() <= 1
  assert np.abs(forward.generated.astype(int) - forward.generated[0]).max() > 8


def test_saved_camera_path_replays_the_transfer(models, library,
                                                example_result, tmp_path):
  archive = export.export_result(example_result, tmp_path)
  with zipfile.ZipFile(archive) as z:
    z.extract("camera_path.npy", tmp_path)
  replay = jobs.transfer(models, library, jobs.TransferRequest(
      example_result.model_id, example_result.request.context_files,
      jobs.MotionRequest("path", files=(str(tmp_path / "camera_path.npy"),)),
      jobs.TransferSettings(num_frames=8)), tmp_path / "replay")
  assert replay.target is None
  assert np.abs(replay.generated.astype(int) -
                example_result.generated).max() <= 1


def test_multi_view_context_and_view_limits(models, library, tmp_path):
  sm, mv = _ids(models)
  views = tuple(str(f) for f in library.context(
      "synthetic room, 3 views (multi-view)").files)
  request = jobs.TransferRequest(mv, views,
                                 jobs.MotionRequest("preset", "orbit right"),
                                 jobs.TransferSettings(num_frames=4))
  assert jobs.transfer(models, library, request, tmp_path).context.shape == (
      3, 64, 64, 3)
  with pytest.raises(uploads.InputError, match="takes at most 1"):
    jobs.transfer(models, library, jobs.TransferRequest(
        sm, views, request.motion, request.settings), tmp_path)


def test_scrub_renders_the_blend_of_neighbouring_latents(models,
                                                         example_result):
  target, frame = jobs.scrub(models, example_result, 3)
  np.testing.assert_array_equal(frame, example_result.generated[3])
  np.testing.assert_array_equal(target, example_result.target[3])
  start = time.perf_counter()
  target, frame = jobs.scrub(models, example_result, 2.6)
  np.testing.assert_array_equal(target, example_result.target[3])
  pipe = models.pipeline(example_result.model_id, batch_size=1)
  expected = pipe.render(example_result.context,
                         interpolate_path(example_result.path, 2.6)[None])
  from xfactor_core.inference.model_frames import to_uint8
  np.testing.assert_array_equal(frame, to_uint8(expected[0]))
  assert not np.array_equal(frame, example_result.generated[2])
  start = time.perf_counter()
  jobs.scrub(models, example_result, 4.25)
  assert time.perf_counter() - start < 0.5  # live once compiled


def test_example_cache_only_keeps_shipped_inputs(library, example_result,
                                                 tmp_path):
  cache = example_cache.ExampleCache(library, tmp_path, max_entries=1)
  request = example_result.request
  assert cache.key(request) is not None and cache.get(request) is None
  cache.put(request, example_result)
  assert cache.get(request) is example_result
  upload = tmp_path / "upload.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(upload)
  own = jobs.TransferRequest(request.model_id, (str(upload),), request.motion)
  assert cache.key(own) is None
  other = jobs.TransferRequest(request.model_id, request.context_files,
                               jobs.MotionRequest("preset", "zoom out"))
  assert cache.key(other) != cache.key(request)


def test_workdirs_are_swept_by_age(tmp_path):
  old = sessions.new_workdir(tmp_path)
  new = sessions.new_workdir(tmp_path)
  assert sessions.sweep_workdirs(tmp_path, 60, now=time.time() + 3600) == 2
  assert not old.exists() and not new.exists()


# ----------------------------------------------------------------- export --


def test_export_zip_holds_every_format(example_result, tmp_path):
  archive = export.export_result(example_result, tmp_path)
  with zipfile.ZipFile(archive) as z:
    names = set(z.namelist())
    z.extractall(tmp_path / "x")
  assert {"transfer.mp4", "side_by_side.mp4", "transfer.gif",
          "camera_path.npy", "settings.json"} <= names
  assert sum(n.startswith("frames/") for n in names) == 8
  out = tmp_path / "x"
  np.testing.assert_array_equal(np.load(out / "camera_path.npy"),
                                example_result.path)
  assert media.read_video(out / "side_by_side.mp4").shape == (8, 64, 132, 3)
  assert len(media.read_frames(out / "transfer.gif")) == 8
  settings = json.loads((out / "settings.json").read_text())
  assert settings["model"]["kind"] == "stereo-monocular"
  assert settings["motion"]["preset"] == "orbit left"
  assert settings["settings"]["num_frames"] == 8
  assert settings["model"]["num_parameters"] == 476704


def test_batch_export_packs_one_clip_per_combination(models, library,
                                                     tmp_path):
  sm, _ = _ids(models)
  contexts = [[str(library.context(n).files[0])]
              for n in ("photo: cat", "synthetic room 2")]
  motions = [jobs.MotionRequest("preset", "zoom in"),
             jobs.MotionRequest("preset", "spiral")]
  archive, sheet = export.batch_export(
      models, library, sm, contexts, motions,
      jobs.TransferSettings(num_frames=4), tmp_path)
  with zipfile.ZipFile(archive) as z:
    names = z.namelist()
  assert sum(n.endswith(".mp4") for n in names) == 4
  assert "contact_sheet.png" in names and "batch.json" in names
  assert "01_chelsea__zoom_in.mp4" in names
  assert sheet.shape[0] == 4 * 64 + 3 * 4  # one row per combination
  with pytest.raises(uploads.InputError, match="above the batch limit of 12"):
    export.batch_export(models, library, sm, contexts * 4, motions * 2,
                        jobs.TransferSettings(num_frames=4), tmp_path)


# ------------------------------------------------------------------ check --


class _KnownPoses:
  """A pose oracle returning a fixed sideways path (as if COLMAP worked)."""

  def estimate(self, frames):
    from xfactor_core.metrics import OracleResult
    n = len(frames)
    poses = np.repeat(np.eye(4)[None], n, axis=0)
    poses[:, 0, 3] = -0.1 * np.arange(n)
    return OracleResult(poses, np.ones(n, bool), "known")


def test_check_reports_tps_and_a_plot(example_result):
  report = check.check_transfer(example_result, oracle=_KnownPoses())
  table = dict(report.table)
  assert table["Rac_10"] == 1.0 and table["SE3_Auc_30"] == 1.0
  assert report.figure.ndim == 3 and report.figure.dtype == np.uint8
  assert "8 of 8 frames" in report.summary
  replayed = jobs.TransferResult(**{**example_result.__dict__, "target": None})
  with pytest.raises(uploads.InputError, match="replayed a saved camera path"):
    check.check_transfer(replayed)


@pytest.mark.slow
def test_check_with_colmap_scores_a_perfect_transfer_high(example_result):
  clip = media.read_video(presets.load_presets().motion("orbit left").clip)
  perfect = jobs.TransferResult(**{**example_result.__dict__,
                                   "target": clip, "generated": clip.copy()})
  report = check.check_transfer(perfect)
  assert report.metrics["num_frames"] >= 20, report.summary
  assert report.metrics["Rac_10"] > 0.95 and report.metrics["Tac_30"] > 0.9
  assert report.figure is not None


# --------------------------------------------------------------- handlers --


@pytest.fixture()
def studio(models, library, tmp_path):
  return ui.Studio(models, library, work_root=tmp_path / "work")


OPTIONS = {"num_frames": 6, "stride": 1, "start": 0, "resolution": "native",
           "fps": 12, "reverse": False, "ping_pong": False, "strength": 1.0}


def test_handlers_turn_bad_input_into_gradio_errors(studio, models, tmp_path):
  sm, _ = _ids(models)
  with pytest.raises(gr.Error, match="no context image given"):
    list(studio.run_transfer({"model": sm, "context": None, "source": "Preset",
                              "preset": "zoom in", **OPTIONS}))
  with pytest.raises(gr.Error, match="no target video given"):
    list(studio.run_transfer({
        "model": sm, "context": [str(studio.presets.contexts[0].files[0])],
        "source": "Video", **OPTIONS}))
  context = [str(studio.presets.contexts[0].files[0])]
  with pytest.raises(gr.Error, match="the target pair needs two images"):
    list(studio.run_transfer({"model": sm, "context": context,
                              "source": "Image pair", "first": context[0],
                              **OPTIONS}))
  with pytest.raises(gr.Error, match="give a target video or a preset"):
    studio.api_transfer([str(studio.presets.contexts[0].files[0])], None,
                        None, 6)
  with pytest.raises(gr.Error, match="run a transfer first"):
    studio.export({"result": None})
  assert studio.scrub({"result": None, "scrub": 1.0}) == {
      "scrub_target": None, "scrub_generated": None}


def test_transfer_handler_streams_then_caches_examples(studio, models):
  sm, _ = _ids(models)
  context = [str(f) for f in studio.presets.context("photo: rocket launch")
             .files]
  form = {"model": sm, "context": context, "source": "Preset",
          "preset": "move up", **OPTIONS}
  first = list(studio.run_transfer(form))
  # The preview is cleared, two chunks stream in, then the result arrives.
  assert [len(y["preview"]) for y in first] == [0, 4, 6, 6]
  preview, video, slider, target, generated, status, state, info = (
      first[-1][name] for name in ui.TRANSFER_OUTPUTS)
  assert status.startswith("Done: 6 frames at 64 px")
  assert isinstance(state, jobs.TransferResult)
  assert pathlib.Path(video).is_file()
  assert slider["maximum"] == 5 and len(preview) == 6
  assert "476.7 K parameters" in info
  again = list(studio.run_transfer(form))
  assert len(again) == 1 and again[0]["status"].startswith("Example (cached)")
  assert again[0]["result"] is state
  studio.discard(state)  # example results live in the cache, not the session
  assert pathlib.Path(video).is_file()


def test_cancel_button_stops_the_sessions_job_between_chunks(studio, models):
  sm, _ = _ids(models)
  context = [str(studio.presets.contexts[0].files[0])]
  form = {"model": sm, "context": context, "source": "Preset",
          "preset": "zoom in", **OPTIONS, "num_frames": 10}
  assert studio.cancel_job({"job": None}) == {}  # the status stays
  job = studio.open_job({})["job"]
  outputs = []
  for out in studio.run_transfer({**form, "job": job}):
    outputs.append(out)
    if len(out["preview"]) > 0:  # the first chunk is on screen: cancel
      assert studio.cancel_job({"job": job})["status"].startswith(
          "Cancelling")
  preview, status = outputs[-1]["preview"], outputs[-1]["status"]
  assert len(preview) == 8
  assert status == "Cancelled after 8 of 10 frames; the last finished " \
      "result is kept."
  assert "result" not in outputs[-1]  # the state is kept
  assert len(studio.job_board) == 0  # the job was closed
  queued = studio.open_job({})["job"]
  studio.cancel_job({"job": queued})  # cancelled while it waited in the queue
  outputs = list(studio.run_transfer({**form, "job": queued}))
  assert outputs == [{"status": "Cancelled before it started."}]
  assert len(studio.job_board) == 0


def test_build_app_wires_the_transfer_endpoint(studio):
  demo = layout.build_app(studio)
  names = {d.api_name for d in demo.fns.values()}
  assert {"transfer", "transfer_ui"} <= names
  api = next(d for d in demo.fns.values() if d.api_name == "transfer")
  assert [c.label for c in api.inputs] == ["context", "target", "preset",
                                           "num_frames", "output_size",
                                           "path_mode"]


# ------------------------------------------- flow models: any output size --


FLOW_CONFIG = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4,
                                      render_output="flow")


@pytest.fixture(scope="module")
def flow_models(tmp_path_factory):
  """A registry whose only (default) model is a tiny flow model (32 px)."""
  folder = testing.write_random_checkpoint(
      tmp_path_factory.mktemp("flow") / "tiny_flow", FLOW_CONFIG,
      image_size=32, name="tiny flow")
  return registry.ModelRegistry(registry.discover_models(folder, defaults={}),
                                batch_size=4)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
  """A 64 x 48 (landscape, not square) context photo."""
  path = tmp_path_factory.mktemp("photo") / "street.png"
  image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), np.uint8)
  Image.fromarray(image).save(path)
  return path


def _flow_request(flow_models, context, resolution=None, frames=5):
  return jobs.TransferRequest(
      flow_models.default_id, (str(context),),
      jobs.MotionRequest("preset", "zoom in"),
      jobs.TransferSettings(num_frames=frames, resolution=resolution))


def test_flow_models_are_known_before_loading(flow_models, models):
  spec = flow_models.spec(None)
  assert spec.render_output == "flow" and not flow_models.is_loaded(
      spec.model_id)
  assert "flow renderer: any output size" in picker.model_facts(flow_models)
  options = picker.resolution_options(spec)
  values = [value for _, value in options["choices"]]
  assert values == ["native", "32", "256", "384", "512", "768", "1024"]
  assert "the photo's size" in options["choices"][0][0]
  assert "samples its output from your photo" in options["info"]
  smaller = picker.resolution_options(spec, uploads.Limits(max_output_size=512))
  assert [v for _, v in smaller["choices"]][-1] == "512"
  # Models with the RGB head, and models not known to be flow models before
  # they load (no config in their model.json), keep today's choices.
  rgb = models.spec(_ids(models)[0])
  assert rgb.render_output in (None, "rgb") and not rgb.renders_any_size
  assert [v for _, v in picker.resolution_options(rgb)["choices"]] == [
      "native", "64", "128", "192", "256", "320", "384", "512"]


def test_flow_output_defaults_to_the_photo_and_samples_it(flow_models,
                                                          library, photo,
                                                          tmp_path):
  result = jobs.transfer(flow_models, library,
                         _flow_request(flow_models, photo), tmp_path)
  # The model runs at 32 px; the output is the photo's shorter side (48).
  assert result.image_size == 32 and result.output_size == 48
  assert result.context.shape == (1, 32, 32, 3)
  assert result.target.shape == (5, 32, 32, 3)
  assert result.generated.shape == (5, 48, 48, 3)
  assert media.read_video(result.video).shape == (5, 48, 48, 3)
  pipe = flow_models.get()
  images = [media.read_image(photo)]
  np.testing.assert_array_equal(result.sample_from,
                                pipe.prepare(images, size=48))
  expected = pipe.render(pipe.prepare(images), result.path,
                         sample_from=pipe.prepare(images, size=48))
  from xfactor_core.inference.model_frames import to_uint8
  np.testing.assert_array_equal(result.generated, to_uint8(expected))
  assert "context[0] is 64 x 48, not square: the model sees its centre " \
      "48 x 48" in result.context_note
  assert result.model_info["render_output"] == "flow"


def test_flow_output_size_choice_reaches_video_scrub_and_export(
    flow_models, library, tmp_path):
  context = library.context("photo: cat").files[0]  # square: no note
  result = jobs.transfer(flow_models, library,
                         _flow_request(flow_models, context, 40), tmp_path)
  assert result.generated.shape == (5, 40, 40, 3) and not result.context_note
  target, frame = jobs.scrub(flow_models, result, 1.5)
  assert target.shape == (32, 32, 3) and frame.shape == (40, 40, 3)
  pipe = flow_models.pipeline(batch_size=1)
  expected = pipe.render(result.context, interpolate_path(result.path, 1.5)[
      None], sample_from=result.sample_from)
  from xfactor_core.inference.model_frames import to_uint8
  np.testing.assert_array_equal(frame, to_uint8(expected[0]))
  archive = export.export_result(result, tmp_path)
  with zipfile.ZipFile(archive) as z:
    settings = json.loads(z.read("settings.json"))
  assert settings["output_size"] == 40 and settings["image_size"] == 32


def test_flow_output_sizes_that_are_not_possible_are_refused(
    flow_models, library, tmp_path):
  context = library.context("photo: cat").files[0]
  cases = [(2000, "output size 2000 px is above this server's limit of 1024 "
                  "px; pick 1024 or less"),
           (20, r"output size 20 px is outside 32..1024 px; pick a size in "
                "that range")]
  for size, message in cases:
    with pytest.raises(ValueError, match=message):
      jobs.transfer(flow_models, library,
                    _flow_request(flow_models, context, size), tmp_path)
  with pytest.raises(uploads.InputError, match="above this server's limit of "
                     "256 px"):
    jobs.transfer(flow_models, library,
                  _flow_request(flow_models, context, 384), tmp_path,
                  uploads.Limits(max_output_size=256))


def test_rgb_models_run_at_the_resolution_as_before(models, library,
                                                    tmp_path):
  sm, _ = _ids(models)
  context = (str(library.context("photo: cat").files[0]),)
  request = jobs.TransferRequest(sm, context,
                                 jobs.MotionRequest("preset", "zoom in"),
                                 jobs.TransferSettings(num_frames=3,
                                                       resolution=128))
  result = jobs.transfer(models, library, request, tmp_path)
  assert result.image_size == result.output_size == 128
  assert result.sample_from is None and result.context.shape == (1, 128, 128,
                                                                 3)
  assert result.target.shape == (3, 128, 128, 3)
  with pytest.raises(registry.RegistryError, match="above the app's limit of "
                     "512 px for this model, whose RGB head .* or a model "
                     "with the flow renderer"):
    jobs.transfer(models, library, dataclasses.replace(
        request, settings=jobs.TransferSettings(num_frames=3,
                                                resolution=1024)), tmp_path)


def test_flow_handlers_show_the_output_size_and_the_crop_note(
    flow_models, library, photo, tmp_path):
  studio = ui.Studio(flow_models, library, work_root=tmp_path / "work")
  model = flow_models.default_id
  assert studio.picker.describe_model({"model": model})["resolution"]["choices"][
      -1] == ("1024", "1024")
  form = {"model": model, "context": [str(photo)], "source": "Preset",
          "preset": "pan left", **OPTIONS, "num_frames": 3,
          "resolution": "40"}
  status = list(studio.run_transfer(form))[-1]["status"]
  assert status.startswith("Done: 3 frames at 40 px (sampled from the "
                           "context photo; the model runs at 32 px)"), status
  assert "Note: context[0] is 64 x 48, not square" in status
  square = {**form, "context": [str(library.context("photo: cat").files[0])],
            "resolution": "native"}
  status = list(studio.run_transfer(square))[-1]["status"]
  assert "frames at 256 px" in status and "Note" not in status
  # The API: the output size is its last parameter, optional.
  video, _ = studio.api_transfer([str(photo)], None, "pan left", 3, 40)
  assert media.read_video(video).shape == (3, 40, 40, 3)
  video, _ = studio.api_transfer([str(photo)], None, "pan left", 3)
  assert media.read_video(video).shape == (3, 48, 48, 3)
  with pytest.raises(gr.Error, match="outside 32..1024 px"):
    studio.api_transfer([str(photo)], None, "pan left", 3, 24)


def test_flow_batch_export_renders_at_the_output_size(flow_models, library,
                                                      photo, tmp_path,
                                                      monkeypatch):
  monkeypatch.setattr(export, "MAX_SHEET_TILE", 32)
  archive, sheet = export.batch_export(
      flow_models, library, None, [[str(photo)]],
      [jobs.MotionRequest("preset", "zoom in"),
       jobs.MotionRequest("preset", "spiral")],
      jobs.TransferSettings(num_frames=3, resolution=40), tmp_path)
  with zipfile.ZipFile(archive) as z:
    z.extractall(tmp_path / "x")
    names = [n for n in z.namelist() if n.endswith(".mp4")]
  assert len(names) == 2
  for name in names:
    assert media.read_video(tmp_path / "x" / name).shape == (3, 40, 40, 3)
  assert sheet.shape[0] == 2 * 32 + 4  # tiles shrunk to MAX_SHEET_TILE


def test_short_api_calls_get_the_trailing_defaults():
  def api(context, target, preset, num_frames, output_size=None):
    del context, target, preset, num_frames, output_size
  assert gate.with_defaults(api, 5, [1, 2, 3, 4]) == [1, 2, 3, 4, None]
  assert gate.with_defaults(api, 5, [1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
  # A missing parameter without a default: left to Gradio to refuse.
  assert gate.with_defaults(api, 5, [1, 2, 3]) == [1, 2, 3]
  # Dict-form handlers take one form, not positional inputs.
  assert gate.with_defaults(lambda values, *args: None, 3, [1]) == [1]


# ------------------------------------- warp models: the camera path choice --


@pytest.fixture(scope="module")
def warp_models(tiny_warp_checkpoint):
  """A registry whose only (default) model is a tiny warp model (32 px)."""
  return registry.ModelRegistry(
      registry.discover_models(tiny_warp_checkpoint, defaults={}),
      batch_size=3)


def _warp_request(warp_models, context, path_mode=None, frames=5, **kw):
  return jobs.TransferRequest(
      warp_models.default_id, (str(context),),
      jobs.MotionRequest("preset", "pan left"),
      jobs.TransferSettings(num_frames=frames, path_mode=path_mode, **kw))


@pytest.fixture(scope="module")
def composed_result(warp_models, library, photo, tmp_path_factory):
  return jobs.transfer(warp_models, library,
                       _warp_request(warp_models, photo, "composed"),
                       tmp_path_factory.mktemp("composed"))


def test_the_model_facts_name_the_warp_renderer(warp_models):
  facts = picker.model_facts(warp_models)
  assert "warp renderer: any output size" in facts
  assert "flow renderer" not in facts


def test_camera_path_choice_shows_for_warp_models_only(warp_models, models,
                                                       monkeypatch):
  spec = warp_models.spec(None)
  # Known from model.json, before the model loads.
  assert spec.render_output == "warp" and not warp_models.is_loaded(
      spec.model_id)
  assert spec.path_modes == ("reference", "composed")
  shown = picker.ModelPicker(warp_models).describe_model(
      {"model": spec.model_id})["path_mode"]
  assert shown["visible"] is True and shown["value"] == "composed"
  assert [value for _, value in shown["choices"]] == ["reference",
                                                      "composed"]
  assert all(label.startswith(f"{value}: ")
             for label, value in shown["choices"])
  rgb = models.spec(_ids(models)[0])
  assert rgb.path_modes == ("reference",)
  hidden = picker.ModelPicker(models).describe_model(
      {"model": rgb.model_id})["path_mode"]
  assert hidden["visible"] is False and hidden["value"] == "reference"
  # One place sets the default of warp models: the spec, the pipeline and
  # the page all follow it; other models keep the reference path.
  assert warp_models.get().default_path_mode == "composed"
  monkeypatch.setattr(camera_paths, "COMPOSABLE_DEFAULT_MODE", "reference")
  assert warp_models.get().default_path_mode == "reference"
  assert picker.path_mode_options(spec)["value"] == "reference"
  assert picker.path_mode_options(rgb)["value"] == "reference"
  assert models.get(rgb.model_id).default_path_mode == "reference"


def test_camera_path_radio_is_on_the_page_for_a_warp_model(warp_models,
                                                           library, tmp_path):
  demo = layout.build_app(ui.Studio(warp_models, library,
                                    work_root=tmp_path / "work"))
  radio = next(b for b in demo.blocks.values()
               if getattr(b, "elem_id", None) == "path-mode")
  assert radio.visible is True and radio.value == "composed"
  assert [value for _, value in radio.choices] == ["reference", "composed"]


def test_composed_transfer_renders_the_chained_steps(warp_models,
                                                     composed_result, photo):
  result = composed_result
  assert result.path_mode == "composed"
  assert result.generated.shape == (5, 48, 48, 3)
  assert media.read_video(result.video).shape == (5, 48, 48, 3)
  assert not result.path[0].any()  # frame 0's step: none
  pipe = warp_models.get()
  images = [media.read_image(photo)]
  target = pipe.prepare(result.target, "target")
  np.testing.assert_allclose(result.path,
                             pipe.camera_path(target, mode="composed"),
                             rtol=1e-5, atol=1e-6)
  expected = pipe.render(pipe.prepare(images), result.path,
                         path_mode="composed",
                         sample_from=pipe.prepare(images, size=48))
  from xfactor_core.inference.model_frames import to_uint8
  assert np.abs(result.generated.astype(int)
                - to_uint8(expected)).max() <= 1
  # The frames move, and differently from the reference path's.
  assert np.abs(result.generated[-1].astype(int)
                - result.generated[0]).mean() > 2
  reference = pipe.render(pipe.prepare(images), pipe.camera_path(target),
                          sample_from=pipe.prepare(images, size=48))
  # (The same path renders to within 1 everywhere, see above; the tiny
  # model's two paths part by a few levels, most where the warp looks past
  # the photo's edge.)
  apart = np.abs(to_uint8(reference[-1]).astype(int) - result.generated[-1])
  assert apart.mean() > 0.3 and apart.max() > 3
  # Scrubbing between frames chains the steps up to there.
  _, frame = jobs.scrub(warp_models, result, 2.999)
  assert frame.shape == (48, 48, 3)
  assert np.abs(frame.astype(int) - result.generated[3]).mean() < 1.5


def test_composed_export_replays_identically(warp_models, library,
                                             composed_result, tmp_path):
  archive = export.export_result(composed_result, tmp_path)
  with zipfile.ZipFile(archive) as z:
    names = set(z.namelist())
    z.extractall(tmp_path / "x")
  assert "camera_path.npz" in names and "camera_path.npy" not in names
  saved = camera_paths.load(tmp_path / "x" / "camera_path.npz")
  assert saved.mode == "composed" and saved.render_output == "warp"
  np.testing.assert_array_equal(saved.latents, composed_result.path)
  settings = json.loads((tmp_path / "x" / "settings.json").read_text())
  assert settings["camera_path"] == {"file": "camera_path.npz",
                                     "mode": "composed",
                                     "render_output": "warp"}
  assert settings["settings"]["path_mode"] == "composed"
  # Uploaded again, the record replays in its own mode, whatever the radio
  # says, to the same frames.
  for asked in (None, "reference", "composed"):
    replay = jobs.transfer(warp_models, library, jobs.TransferRequest(
        warp_models.default_id, composed_result.request.context_files,
        jobs.MotionRequest("path", files=(
            str(tmp_path / "x" / "camera_path.npz"),)),
        jobs.TransferSettings(num_frames=5, path_mode=asked)),
        tmp_path / f"replay_{asked}")
    assert replay.target is None and replay.path_mode == "composed"
    np.testing.assert_array_equal(replay.generated,
                                  composed_result.generated)


def test_reference_path_of_a_warp_model_is_a_record_too(warp_models,
                                                        library, photo,
                                                        tmp_path):
  result = jobs.transfer(warp_models, library,
                         _warp_request(warp_models, photo, "reference"),
                         tmp_path)
  assert result.path_mode == "reference"  # asked for (warp models: composed)
  assert export.camera_path_name(result) == "camera_path.npz"
  saved = camera_paths.load(export.write_camera_path(result, tmp_path))
  assert saved.mode == "reference" and saved.render_output == "warp"


def test_camera_paths_that_do_not_fit_are_refused(warp_models, models,
                                                  library, composed_result,
                                                  photo, tmp_path):
  wrong = camera_paths.save(tmp_path / "wrong.npz", camera_paths.CameraPath(
      np.zeros((4, 5), np.float32), mode="composed", render_output="warp"))
  with pytest.raises(uploads.InputError, match=r"holds N x 5 latents, but "
                     r"this model needs N x 8 latents; replay it with the "
                     r"model that exported it \(a 'warp' model\)"):
    uploads.read_camera_path(str(wrong), 8)
  with pytest.raises(uploads.InputError, match="needs N x 8 latents"):
    jobs.transfer(warp_models, library, jobs.TransferRequest(
        warp_models.default_id, (str(photo),),
        jobs.MotionRequest("path", files=(str(wrong),))), tmp_path)
  # A composed path on a model without the warp renderer.
  sm = _ids(models)[0]
  dim = models.get(sm).config.pose_dim
  composed = camera_paths.save(tmp_path / "steps.npz", camera_paths.CameraPath(
      np.zeros((4, dim), np.float32), mode="composed", render_output="warp"))
  message = (r"is a 'composed' path, .* only a model with the warp renderer "
             r".* this model has 'rgb'; pick the warp model that exported "
             "it, or export a reference path")
  with pytest.raises(uploads.InputError, match=message):
    uploads.read_camera_path(str(composed), dim, render_output="rgb")
  with pytest.raises(uploads.InputError, match=message):
    jobs.transfer(models, library, jobs.TransferRequest(
        sm, (str(photo),), jobs.MotionRequest("path", files=(
            str(composed),))), tmp_path)
  # Asking an RGB model for the composed path, and options a composed path
  # cannot honour.
  with pytest.raises(ValueError, match="composed camera path composes "
                     "explicit warps: it needs a model with render_output"):
    jobs.transfer(models, library, jobs.TransferRequest(
        sm, (str(photo),), jobs.MotionRequest("preset", "pan left"),
        jobs.TransferSettings(num_frames=3, path_mode="composed")), tmp_path)
  with pytest.raises(uploads.InputError, match="ping-pong needs the "
                     "reference camera path"):
    jobs.transfer(warp_models, library, _warp_request(
        warp_models, photo, "composed", ping_pong=True), tmp_path)
  saved = export.write_camera_path(composed_result, tmp_path)
  with pytest.raises(uploads.InputError, match="set the start frame to 0 "
                     "and the stride to 1"):
    jobs.transfer(warp_models, library, jobs.TransferRequest(
        warp_models.default_id, (str(photo),),
        jobs.MotionRequest("path", files=(str(saved),)),
        jobs.TransferSettings(num_frames=3, stride=2)), tmp_path)
  with pytest.raises(uploads.InputError, match="camera path mode 'sideways'"):
    jobs.TransferSettings(path_mode="sideways").validate()


def test_handlers_and_api_take_the_camera_path_choice(warp_models, library,
                                                      studio, photo,
                                                      tmp_path):
  warp = ui.Studio(warp_models, library, work_root=tmp_path / "work")
  form = {"model": warp_models.default_id, "context": [str(photo)],
          "source": "Preset", "preset": "pan left", **OPTIONS,
          "num_frames": 4, "path_mode": "composed"}
  last = list(warp.run_transfer(form))[-1]
  assert last["result"].path_mode == "composed"
  assert "Camera path: composed" in last["status"]
  # /transfer: path_mode is its last parameter; the path comes back as the
  # record, which the endpoint replays in its mode.
  video, path = warp.api_transfer([str(photo)], None, "pan left", 4, None,
                                  "composed")
  assert path.endswith(".npz")
  assert camera_paths.load(path).mode == "composed"
  again, path_again = warp.api_transfer([str(photo)], path, None, 4)
  np.testing.assert_array_equal(media.read_video(again),
                                media.read_video(video))
  np.testing.assert_array_equal(camera_paths.load(path_again).latents,
                                camera_paths.load(path).latents)
  # A model without the warp renderer: the plain .npy of older versions,
  # and the composed path refused with the fix.
  _, plain = studio.api_transfer([str(photo)], None, "pan left", 3)
  assert plain.endswith("camera_path.npy") and np.load(plain).shape[0] == 3
  with pytest.raises(gr.Error, match="use the reference path"):
    studio.api_transfer([str(photo)], None, "pan left", 3, None, "composed")


def test_the_shipped_multi_view_demo_transfers_the_three_view_example(
    library, tmp_path):
  """The offline multi-view demo on its one-click example: three views of a
  synthetic room, a preset motion, the model's composed path, output at the
  views' own size, sharp and moving (skips where the demo is not shipped)."""
  specs = [s for s in registry.discover_models() if s.kind == "multi-view"]
  if not specs:
    pytest.skip("no shipped multi-view demo in assets/models")
  shipped = registry.ModelRegistry(specs, batch_size=4)
  views = tuple(str(f) for f in library.context(
      "synthetic room, 3 views (multi-view)").files)
  result = jobs.transfer(shipped, library, jobs.TransferRequest(
      specs[0].model_id, views, jobs.MotionRequest("preset", "zoom in"),
      jobs.TransferSettings(num_frames=8)), tmp_path)
  pipe = shipped.pipeline(specs[0].model_id)
  assert result.context.shape[0] == 3
  assert result.path_mode == pipe.default_path_mode
  frames = result.generated.astype(np.float32)
  assert np.isfinite(frames).all() and frames.shape[0] == 8
  assert np.abs(frames[-1] - frames[0]).mean() > 2.0  # it moves
  photo = np.stack([media.read_image(f) for f in views])
  # The views' own detail: not the blur of a model-size render.
  assert (motion_metrics.sharpness(result.generated)
          > 0.4 * motion_metrics.sharpness(photo)), "blurred views"
