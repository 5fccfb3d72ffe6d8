"""Tests of the synthetic world's knobs (scene_sampling.WorldSettings), its
photo scenes, depth output and true flow (data/true_flow.py), the photos
(data/photos.py) and the training curriculum (training.inputs.WorldSchedule)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xfactor_core.app import make_presets
from xfactor_core.data import (photos, scene_render, scene_sampling, synthetic,
                               true_flow)
from xfactor_core.training import inputs

SIZE = 64
World = scene_sampling.WorldSettings


@pytest.fixture(scope="module")
def atlas():
  return photos.photo_atlas(tile_size=64)


def test_default_world_settings_are_the_standard_world():
  plain = synthetic.make_sequence(11, 3, 3, SIZE)
  explicit = synthetic.make_sequence(11, 3, 3, SIZE, world=World())
  np.testing.assert_array_equal(plain["frames"], explicit["frames"])
  np.testing.assert_array_equal(plain["camera_from_world"],
                                explicit["camera_from_world"])


def _translation(sequence):
  rel = sequence["camera_from_world"][-1] @ np.linalg.inv(
      sequence["camera_from_world"][0])
  return np.linalg.norm(rel[:3, 3]), np.degrees(np.arccos(np.clip(
      (np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))


def test_motion_factor_scales_the_camera_motion():
  for index, (trajectory, measure) in enumerate(
      (("truck", 0), ("dolly", 0), ("pan", 1))):
    full = _translation(synthetic.make_sequence(5, index, 2, SIZE, trajectory))
    small = _translation(synthetic.make_sequence(
        5, index, 2, SIZE, trajectory, world=World(motion_factor=0.25)))
    # Smaller, but still moving (the full path may itself have been shrunk
    # to fit the room, so the ratio is 0.25 or more).
    assert 0 < small[measure] < full[measure], trajectory


def test_max_objects_zero_leaves_empty_rooms():
  key = jax.random.key(4)
  sample = jax.jit(lambda k, w: jax.vmap(lambda kk: scene_sampling.sample_shot(
      kk, 2, 1, jnp.int32(-1), w))(jax.random.split(k, 16)))
  crowded = sample(key, World())
  empty = sample(key, World(max_objects=np.int32(0)))
  assert np.asarray(crowded.scenes.object_active).sum() > 0
  assert np.asarray(empty.scenes.object_active).sum() == 0


def test_photo_scenes_show_photos_on_walls_and_objects(atlas):
  scene_world = World(photo_scene_prob=1.0)
  seq = synthetic.make_sequence(7, 0, 2, SIZE, texture_atlas=atlas,
                                world=scene_world)
  plain = synthetic.make_sequence(7, 0, 2, SIZE, texture_atlas=atlas)
  assert seq["frames"].shape == (2, SIZE, SIZE, 3)
  assert np.abs(seq["frames"].astype(int) - plain["frames"]).mean() > 5
  shot = jax.jit(lambda k: scene_sampling.sample_shot(
      k, 2, 1, jnp.int32(-1), scene_world))(jax.random.key(7))
  textures = shot.scenes.textures
  weights = np.asarray(textures.photo_weight[0])
  # Walls (surfaces 2..5) and every object show a photo; floor and ceiling not.
  assert np.all(weights[2:] == 1.0) and np.all(weights[:2] == 0.0)
  types = np.asarray(shot.scenes.object_type[0])
  assert np.all(types == scene_render.BOX)
  # A photo spans about a third to most of a wall (half of a mirrored tile).
  room = np.asarray(shot.scenes.room_size[0])
  widths = np.array([room[2], room[2], room[0], room[0]])
  spans = np.asarray(textures.photo_period[0, 2:6]) / 2
  assert np.all((spans >= 0.29 * widths) & (spans <= 0.61 * widths))


def test_depth_matches_the_geometry():
  batch = synthetic.sample_batch(jax.random.key(3), 2, 2, SIZE,
                                 with_depth=True)
  assert batch["depth"].shape == (2, 2, SIZE, SIZE)
  depth = np.asarray(batch["depth"])
  assert np.all(depth > 0.05) and np.all(depth < 20.0)
  without = synthetic.sample_batch(jax.random.key(3), 2, 2, SIZE)
  np.testing.assert_array_equal(np.asarray(without["frames"]),
                                np.asarray(batch["frames"]))
  # The depth warps the context onto the target (ground-truth flow).
  frames = np.asarray(batch["frames"], np.float32) / 127.5 - 1.0
  offset, visible = true_flow.ground_truth_flow(
      batch["depth"], batch["camera_from_world"], batch["intrinsics"][:, 0])
  from xfactor_core.models import flow
  coords = flow.pixel_grid(SIZE, SIZE) + offset
  warped = np.asarray(jax.vmap(flow.sample_bilinear)(frames[:, 0],
                                                     coords[:, 0]))
  for i in range(2):
    seen = np.asarray(visible[i, 0])
    assert seen.mean() > 0.2
    warp_error = np.abs(warped[i] - frames[i, 1]).mean(-1)[seen].mean()
    copy_error = np.abs(frames[i, 0] - frames[i, 1]).mean(-1)[seen].mean()
    assert warp_error < 0.5 * copy_error


def test_held_out_photos_are_the_app_examples_and_never_train():
  examples = {function for function, *_ in make_presets.PHOTOS}
  assert examples == set(photos.HELD_OUT_PHOTOS)
  assert not examples & set(photos.TRAINING_PHOTOS)
  for name in photos.TRAINING_PHOTOS:
    image = photos.load_photo(name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  with pytest.raises(ValueError, match="unknown photo"):
    photos.load_photo("no_such_photo")


def test_photo_atlas_holds_every_training_photo(atlas):
  assert atlas.shape[0] == len(photos.training_images())
  assert atlas.shape[2:] == (64, 64, 3)
  assert 0.0 <= atlas.min() and atlas.max() <= 1.0


def test_world_schedule_ramps_to_the_standard_world():
  schedule = inputs.WorldSchedule(motion_factor_start=0.2,
                                  max_objects_start=2, ramp_steps=100,
                                  photo_scene_prob=0.4, photos="skimage")
  start, middle, end = schedule.at(0), schedule.at(50), schedule.at(500)
  assert np.isclose(start.motion_factor, 0.2) and start.max_objects == 2
  assert np.isclose(middle.motion_factor, 0.6) and middle.max_objects == 5
  assert np.isclose(end.motion_factor, 1.0)
  assert end.max_objects == scene_render.NUM_OBJECT_SLOTS
  assert np.isclose(end.photo_scene_prob, 0.4)
  standard = inputs.WorldSchedule().at(0)
  assert standard.motion_factor == 1.0
  assert standard.max_objects == scene_render.NUM_OBJECT_SLOTS
  with pytest.raises(ValueError, match="photo scenes need photos"):
    inputs.WorldSchedule(photo_scene_prob=0.5)
  with pytest.raises(ValueError, match="motion_factor_start=0"):
    inputs.WorldSchedule(motion_factor_start=0.0)


def test_world_schedule_draws_small_baselines_at_every_stage():
  """motion_factor_min: each step's factor is log-uniform between it and the
  ramped factor, the same for the same step (a resumed run sees the same
  world)."""
  schedule = inputs.WorldSchedule(motion_factor_start=0.3, ramp_steps=100,
                                  motion_factor_min=0.05)
  late = np.array([schedule.at(s).motion_factor for s in range(200, 600)])
  assert late.min() >= 0.05 and late.max() <= 1.0 + 1e-6
  logs = np.log(late)
  # log-uniform on [log 0.05, 0]: half of the draws below the geometric mean.
  assert abs(np.mean(late < np.sqrt(0.05)) - 0.5) < 0.1
  assert logs.std() > 0.6
  early = np.array([schedule.at(s).motion_factor for s in range(0, 20)])
  assert early.max() <= 0.3 + 0.7 * 20 / 100 + 1e-6  # under the ramp
  assert schedule.at(321).motion_factor == schedule.at(321).motion_factor
  assert inputs.WorldSchedule(motion_factor_start=0.3, ramp_steps=100).at(
      321).motion_factor == 1.0  # off by default
  with pytest.raises(ValueError, match="motion_factor_min"):
    inputs.WorldSchedule(motion_factor_start=0.3, motion_factor_min=0.5)
