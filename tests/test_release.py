"""Tests of xfactor_core.training.release (shipping a run as a model folder)."""

import json

import jax
import numpy as np
from PIL import Image
import pytest

from xfactor_core import checkpoints
from xfactor_core.inference.pipeline import TransferPipeline
from xfactor_core.training import release


def _tiny_run(reference_dir, tmp_path):
  """A training run folder with the reference weights at step 40."""
  params = checkpoints.load_params(reference_dir / "official_format_checkpoint")
  workdir = tmp_path / "run"
  checkpoints.save_checkpoint(workdir / "checkpoints-0",
                              {"step": 40, "params": params,
                               "opt_state": {"mu": np.zeros(3)}})
  (workdir / "model.json").write_text(json.dumps(
      {"name": "tiny", "kind": "stereo-monocular", "image_size": 64,
       "num_context_views": 1}))
  (workdir / "metrics.jsonl").write_text(
      json.dumps({"step": 20, "time": 0.0, "train/loss": 0.9, "train/psnr": 11.0})
      + "\n" + json.dumps({"step": 40, "time": 1800.0, "train/loss": 0.7,
                           "train/psnr": 14.0}) + "\n")
  return workdir, params


def test_release_writes_a_loadable_model_folder(reference_dir, tmp_path):
  workdir, params = _tiny_run(reference_dir, tmp_path)
  out = release.release(workdir, tmp_path / "model", "python -m xfactor_core.train X",
                        strip_seed=1, notes="Still blurry at 40 steps.")
  state, _ = checkpoints.load_state(out)
  assert set(state) == {"step", "params"} and int(state["step"]) == 40
  info = json.loads((out / "model.json").read_text())
  assert info["trained_steps"] == 40 and info["wall_time_hours"] == 0.5
  assert info["num_parameters"] == sum(np.size(x) for x in jax.tree.leaves(params))
  pipe = TransferPipeline.from_checkpoint(out)
  assert pipe.image_size == 64 and pipe.kind == "stereo-monocular"
  strip = np.asarray(Image.open(out / "transfers.png"))
  assert strip.shape[1] == 8 * 64 and strip.shape[0] > 3 * 64
  card = (out / "README.md").read_text()
  assert "python -m xfactor_core.train X" in card and "| training steps | 40 |" in card
  assert "## Notes\n\nStill blurry at 40 steps." in card


def test_refresh_rewrites_the_card_of_a_shipped_folder(reference_dir,
                                                     tmp_path):
  workdir, params = _tiny_run(reference_dir, tmp_path)
  out = release.release(workdir, tmp_path / "model", "old command",
                        strip_seed=1, notes="Old notes.")
  weights = (out / "ckpt-1.flax").read_bytes()
  info = (out / "model.json").read_text()
  notes = tmp_path / "notes.md"
  notes.write_text("New benchmark figures.")
  assert release.main(["--out", str(out), "--refresh", "--command",
                       "new command", "--notes", str(notes)]) == 0
  card = (out / "README.md").read_text()
  assert "new command" in card and "old command" not in card
  assert "New benchmark figures." in card and "Old notes." not in card
  assert "| training steps | 40 |" in card
  # The weights and model.json are left as they were.
  assert (out / "ckpt-1.flax").read_bytes() == weights
  assert (out / "model.json").read_text() == info
  assert (out / "transfers.png").is_file()
  with pytest.raises(SystemExit):  # --refresh takes no run folder
    release.main(["--out", str(out), "--refresh", "--command", "c",
                  "--workdir", str(workdir)])
  with pytest.raises(SystemExit):  # and shipping needs one
    release.main(["--out", str(out), "--command", "c"])


def test_training_time_leaves_out_the_pause_before_a_resume():
  hour = 3600.0
  records = [
      {"step": 50, "time": 0.0, "steps_per_second": 0.5},
      {"step": 100, "time": 100.0, "steps_per_second": 0.5},
      # Stopped at step 100, resumed two hours later from the step-100
      # checkpoint; the first 50 steps after the resume took 100 s.
      {"step": 150, "time": 100.0 + 2 * hour + 100.0, "steps_per_second": 0.5},
      {"step": 200, "time": 100.0 + 2 * hour + 200.0, "steps_per_second": 0.5},
  ]
  assert release.training_seconds(records) == 300.0
  # Without rates, every interval counts as it was logged.
  plain = [{k: v for k, v in r.items() if k != "steps_per_second"}
           for r in records]
  assert release.training_seconds(plain) == 2 * hour + 300.0
  assert release.training_seconds(records[:1]) is None


@pytest.mark.parametrize("mode", ["reference", "composed"])
def test_the_photo_strip_follows_the_default_camera_path(
    tiny_warp_checkpoint, example_clip_dir, monkeypatch, mode):
  """A warp model's card shows the real clip on the model's default path:
  the composed one renders every step (each frame needs the ones before it)
  and shows the same frames a full transfer gives."""
  from xfactor_core.data import photos  # pylint: disable=import-outside-toplevel
  from xfactor_core.inference import camera_path  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(camera_path, "COMPOSABLE_DEFAULT_MODE", mode)
  pipe = TransferPipeline.from_checkpoint(tiny_warp_checkpoint)
  assert pipe.default_path_mode == mode
  # Larger motions, so that the two paths end in visibly different frames.
  head = pipe.params["Render"][checkpoints.GLOBAL_WARP_HEAD]["Dense_2"]
  head["kernel"] = 8.0 * np.asarray(head["kernel"])
  strip = release.photo_strip(pipe, example_clip_dir, num_columns=3, tile=32)
  rows = len(photos.HELD_OUT_PHOTOS)
  assert strip.shape == (rows * 32 + (rows - 1) * 4, 3 * 32 + 12 + 4, 3)
  # The last column is the clip's last frame on that path.
  from xfactor_core.inference import media  # pylint: disable=import-outside-toplevel
  from xfactor_core.inference import model_frames  # pylint: disable=import-outside-toplevel
  target = np.stack([media.read_image(f) for f in sorted(
      (example_clip_dir / "target").iterdir())])
  photo = photos.load_photo(photos.HELD_OUT_PHOTOS[0])
  size = pipe.default_output_size([photo])
  sample_from = (pipe.prepare([photo], size=size)
                 if size != pipe.image_size else None)
  def last_cell(path_mode):
    frames, _ = pipe.transfer(pipe.prepare([photo]), pipe.prepare(target),
                              path_mode=path_mode, sample_from=sample_from)
    return model_frames.to_uint8(model_frames.prepare_frames(
        model_frames.to_uint8(frames[-1:]), 32))[0].astype(int)

  other = "composed" if mode == "reference" else "reference"
  cell = strip[:32, -32:].astype(int)
  this_error = np.abs(cell - last_cell(mode)).mean()
  assert this_error < 1.0
  assert np.abs(cell - last_cell(other)).mean() > 3 * this_error + 1.0
