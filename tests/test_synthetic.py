"""Tests of the synthetic world (xfactor_core.data.synthetic and its helpers).

Every rendering test uses the same (frames, size) so that the jitted generator
compiles once per entry point.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from xfactor_core.data import scene_render
from xfactor_core.data import scene_sampling
from xfactor_core.data import synthetic

FRAMES = 6
SIZE = 64
SEED = 11


def _centres(camera_from_world: np.ndarray) -> np.ndarray:
  """(F, 3) camera centres in the world."""
  rotation = camera_from_world[:, :3, :3].astype(np.float64)
  translation = camera_from_world[:, :3, 3].astype(np.float64)
  return -np.einsum("fji,fj->fi", rotation, translation)


def _world_rotations(camera_from_world: np.ndarray) -> np.ndarray:
  """(F, 3, 3) world-frame rotations Q_i with R_i^T = Q_i R_0^T."""
  rotation = camera_from_world[:, :3, :3].astype(np.float64)
  return np.einsum("fji,jk->fik", rotation, rotation[0])


def _rotation_angle_axis(matrix: np.ndarray) -> tuple[float, np.ndarray]:
  angle = np.arccos(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))
  axis = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0],
                   matrix[1, 0] - matrix[0, 1]])
  norm = np.linalg.norm(axis)
  return float(np.degrees(angle)), axis / max(norm, 1e-12)


def _unit(vector: np.ndarray) -> np.ndarray:
  return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def sequences() -> dict[str, dict]:
  """One sequence per trajectory type."""
  return {name: synthetic.make_sequence(SEED, index, FRAMES, SIZE, name)
          for index, name in enumerate(synthetic.TRAJECTORIES)}


def test_shapes_and_dtypes(sequences):
  for name, sequence in sequences.items():
    assert sequence["frames"].shape == (FRAMES, SIZE, SIZE, 3)
    assert sequence["frames"].dtype == np.uint8
    assert sequence["camera_from_world"].shape == (FRAMES, 4, 4)
    assert sequence["camera_from_world"].dtype == np.float32
    assert sequence["intrinsics"].shape == (FRAMES, 3, 3)
    assert sequence["intrinsics"].dtype == np.float32
    assert sequence["trajectory"] == name


def test_deterministic_from_seed_and_index(sequences):
  again = synthetic.make_sequence(SEED, 1, FRAMES, SIZE, synthetic.TRAJECTORIES[1])
  first = sequences[synthetic.TRAJECTORIES[1]]
  for key in ("frames", "camera_from_world", "intrinsics"):
    np.testing.assert_array_equal(again[key], first[key])
  other = synthetic.make_sequence(SEED, 2, FRAMES, SIZE, synthetic.TRAJECTORIES[1])
  assert np.abs(other["frames"].astype(int) - first["frames"].astype(int)).mean() > 5
  # Without a trajectory name the type is drawn from (seed, index) too.
  random_a = synthetic.make_sequence(SEED, 40, FRAMES, SIZE)
  random_b = synthetic.make_sequence(SEED, 40, FRAMES, SIZE)
  assert random_a["trajectory"] == random_b["trajectory"]
  assert random_a["trajectory"] in synthetic.TRAJECTORIES
  np.testing.assert_array_equal(random_a["frames"], random_b["frames"])


def test_poses_are_rigid_and_roll_free(sequences):
  for sequence in sequences.values():
    matrices = sequence["camera_from_world"].astype(np.float64)
    rotation = matrices[:, :3, :3]
    np.testing.assert_allclose(rotation @ np.swapaxes(rotation, 1, 2),
                               np.broadcast_to(np.eye(3), rotation.shape),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-5)
    np.testing.assert_array_equal(matrices[:, 3], np.tile([0, 0, 0, 1], (FRAMES, 1)))
    # OpenCV camera x (right) stays horizontal in the y-up world: no roll, and
    # camera y (down) points downwards.
    np.testing.assert_allclose(rotation[:, 0, 1], 0.0, atol=1e-5)
    assert np.all(rotation[:, 1, 1] < 0)


def test_intrinsics_match_fov_range(sequences):
  fovs = []
  for sequence in sequences.values():
    intrinsics = sequence["intrinsics"]
    np.testing.assert_array_equal(intrinsics, np.broadcast_to(intrinsics[0],
                                                              intrinsics.shape))
    matrix = intrinsics[0]
    assert matrix[0, 0] == pytest.approx(matrix[1, 1])
    assert matrix[0, 2] == pytest.approx((SIZE - 1) / 2)
    assert matrix[1, 2] == pytest.approx((SIZE - 1) / 2)
    np.testing.assert_array_equal(matrix[2], [0, 0, 1])
    assert matrix[0, 1] == 0 and matrix[1, 0] == 0
    fovs.append(np.degrees(2 * np.arctan(SIZE / 2 / matrix[0, 0])))
  low, high = synthetic.FOV_RANGE_DEGREES
  assert all(low - 1e-3 <= fov <= high + 1e-3 for fov in fovs)
  assert max(fovs) - min(fovs) > 1.0  # the FOV is drawn, not fixed


def _assert_pure_translation(sequence, direction):
  rotations = _world_rotations(sequence["camera_from_world"])
  np.testing.assert_allclose(rotations, np.broadcast_to(np.eye(3), rotations.shape),
                             atol=1e-5)
  offsets = _centres(sequence["camera_from_world"]) - _centres(
      sequence["camera_from_world"])[0]
  travel = np.linalg.norm(offsets[-1])
  assert travel > 0.01
  for offset in offsets[1:]:
    assert abs(np.dot(_unit(offset), direction)) > 0.9999


def test_dolly_moves_along_the_viewing_axis(sequences):
  sequence = sequences["dolly"]
  _assert_pure_translation(sequence, sequence["camera_from_world"][0, 2, :3])


def test_truck_moves_along_the_camera_x_axis(sequences):
  sequence = sequences["truck"]
  _assert_pure_translation(sequence, sequence["camera_from_world"][0, 0, :3])


def test_pedestal_moves_along_the_vertical(sequences):
  _assert_pure_translation(sequences["pedestal"], np.array([0.0, 1.0, 0.0]))


def _assert_rotation_in_place(sequence, axis):
  centres = _centres(sequence["camera_from_world"])
  np.testing.assert_allclose(centres, np.broadcast_to(centres[0], centres.shape),
                             atol=1e-4)
  rotations = _world_rotations(sequence["camera_from_world"])
  angle, found_axis = _rotation_angle_axis(rotations[-1])
  assert angle > 1.0
  assert abs(np.dot(found_axis, _unit(axis))) > 0.9999
  angles = [_rotation_angle_axis(r)[0] for r in rotations]
  assert np.all(np.diff(angles) > 0)  # monotonic sweep


def test_pan_rotates_about_the_vertical_with_fixed_centre(sequences):
  _assert_rotation_in_place(sequences["pan"], np.array([0.0, 1.0, 0.0]))


def test_tilt_rotates_about_the_camera_x_axis_with_fixed_centre(sequences):
  sequence = sequences["tilt"]
  _assert_rotation_in_place(sequence, sequence["camera_from_world"][0, 0, :3])


def test_orbit_circles_a_point_it_keeps_looking_at(sequences):
  matrices = sequences["orbit"]["camera_from_world"].astype(np.float64)
  centres = _centres(matrices)
  axes = matrices[:, 2, :3]
  # Least-squares point closest to every optical axis.
  projectors = np.eye(3) - axes[:, :, None] * axes[:, None, :]
  target = np.linalg.solve(projectors.sum(0),
                           np.einsum("fij,fj->i", projectors, centres))
  miss = np.linalg.norm(np.einsum("fij,fj->fi", projectors, target - centres),
                        axis=-1)
  assert miss.max() < 1e-3
  horizontal = np.linalg.norm((centres - target)[:, (0, 2)], axis=-1)
  np.testing.assert_allclose(horizontal, horizontal[0], rtol=1e-4)
  np.testing.assert_allclose(centres[:, 1], centres[0, 1], atol=1e-5)
  angle, axis = _rotation_angle_axis(_world_rotations(matrices)[-1])
  assert angle > 1.0 and abs(axis[1]) > 0.9999
  assert np.linalg.norm(centres[-1] - centres[0]) > 0.01


def test_spline_moves_smoothly(sequences):
  matrices = sequences["spline"]["camera_from_world"].astype(np.float64)
  centres = _centres(matrices)
  steps = np.diff(centres, axis=0)
  assert np.linalg.norm(steps, axis=-1).sum() > 0.05
  # A cubic curve sampled uniformly: steps change gradually.
  assert np.abs(np.diff(steps, axis=0)).max() <= 0.5 * np.abs(steps).max() + 1e-6


def test_frames_have_texture_and_motion(sequences):
  for name, sequence in sequences.items():
    frames = sequence["frames"].astype(np.float32)
    assert frames.std(axis=(1, 2, 3)).min() > 8.0, name
    gradient = np.abs(np.diff(frames, axis=2)).mean(axis=(1, 2, 3))
    assert gradient.min() > 1.5, name  # fine detail, not flat shading
    change = np.abs(frames[-1] - frames[0]).mean()
    assert change > 1.0, name  # the camera motion shows


def test_transfer_pair_shares_relative_motion():
  first, second = synthetic.make_transfer_pair(SEED, 3, FRAMES, SIZE, "orbit")
  assert first["trajectory"] == second["trajectory"] == "orbit"
  np.testing.assert_array_equal(first["intrinsics"], second["intrinsics"])

  def relative(matrices):
    matrices = matrices.astype(np.float64)
    return matrices @ np.linalg.inv(matrices[0])

  np.testing.assert_allclose(relative(first["camera_from_world"]),
                             relative(second["camera_from_world"]), atol=2e-5)
  assert not np.allclose(first["camera_from_world"][0],
                         second["camera_from_world"][0], atol=1e-2)
  difference = np.abs(first["frames"].astype(int) - second["frames"].astype(int))
  assert difference.mean() > 10
  # Random trajectory types work for pairs too.
  pair = synthetic.make_transfer_pair(SEED, 4, FRAMES, SIZE)
  np.testing.assert_allclose(relative(pair[0]["camera_from_world"]),
                             relative(pair[1]["camera_from_world"]), atol=2e-5)


@pytest.fixture(scope="module")
def shots() -> scene_sampling.Shot:
  """42 sampled shots (scenes and cameras, not rendered), 6 of each type.

  Shot i is the shot of make_sequence(SEED, i, FRAMES, SIZE, TRAJECTORIES[i % 7]).
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(SEED), i))(
      jnp.arange(42))
  types = jnp.arange(42) % len(synthetic.TRAJECTORIES)
  return jax.jit(jax.vmap(lambda key, kind: scene_sampling.sample_shot(
      key, FRAMES, 1, kind)))(keys, types)


def test_cameras_stay_inside_the_room_facing_open_space(shots):
  room = np.asarray(shots.scenes.room_size[:, 0])  # (B, 3)
  matrices = np.asarray(shots.camera_from_world[:, 0], np.float64)
  for b in range(len(room)):
    centres = _centres(matrices[b])
    half = room[b] / 2
    assert np.all(np.abs(centres[:, 0]) <= half[0] - 0.29)
    assert np.all(np.abs(centres[:, 2]) <= half[2] - 0.29)
    assert np.all((centres[:, 1] >= 0.29) & (centres[:, 1] <= room[b, 1] - 0.29))
    depth = scene_sampling.view_depth(centres, matrices[b, :, 2, :3], room[b])
    assert float(np.min(depth)) >= 1.19
    # No active object near any camera centre.
    active = np.asarray(shots.scenes.object_active[b, 0])
    object_centres = np.asarray(shots.scenes.object_center[b, 0])
    radius = np.linalg.norm(np.asarray(shots.scenes.object_half_size[b, 0]), axis=-1)
    gaps = np.linalg.norm(object_centres[:, None] - centres[None], axis=-1).min(1)
    assert np.all(gaps[active] >= radius[active] + 0.89)
  assert np.asarray(shots.scenes.object_active).sum() > 42  # objects are placed


def test_vmapped_frames_match_sequential_frames(shots, sequences):
  """The accelerator path (vmapped frames) renders what the CPU path renders."""
  sequence = sequences[synthetic.TRAJECTORIES[0]]  # index 0 = shot 0
  # Two XLA programs (vmapped and not): float32 poses of magnitude ~2 agree
  # to a few tens of ulps (1.2e-7 each at 1).
  np.testing.assert_allclose(np.asarray(shots.camera_from_world[0, 0]),
                             sequence["camera_from_world"], atol=1e-5)
  scene = jax.tree.map(lambda x: x[0, 0], shots.scenes)
  intrinsics = scene_sampling.intrinsics_matrix(shots.fov[0], SIZE)

  def render(camera):
    frame = scene_render.render_frame(scene, camera, intrinsics, SIZE)
    return jnp.round(frame * 255.0).astype(jnp.uint8)

  batched = jax.jit(jax.vmap(render))(shots.camera_from_world[0, 0])
  difference = np.abs(np.asarray(batched, np.int32)
                      - sequence["frames"].astype(np.int32))
  # Off by at most one rounding step, except where a ray grazes an object's
  # edge: there an ulp of camera difference can pick the other surface.
  assert np.count_nonzero(difference > 1) <= 1e-3 * difference.size


def test_sample_batch_shapes_and_randomness():
  # batch_size 1 shares its compiled generator with make_sequence.
  batch = synthetic.sample_batch(jax.random.key(0), 1, FRAMES, SIZE)
  assert batch["frames"].shape == (1, FRAMES, SIZE, SIZE, 3)
  assert batch["frames"].dtype == jnp.uint8
  assert batch["camera_from_world"].shape == (1, FRAMES, 4, 4)
  assert batch["camera_from_world"].dtype == jnp.float32
  assert batch["intrinsics"].shape == (1, FRAMES, 3, 3)
  assert batch["trajectory_index"].shape == (1,)
  assert 0 <= int(batch["trajectory_index"][0]) < len(synthetic.TRAJECTORIES)
  again = synthetic.sample_batch(jax.random.key(0), 1, FRAMES, SIZE)
  np.testing.assert_array_equal(np.asarray(again["frames"]),
                                np.asarray(batch["frames"]))
  other = synthetic.sample_batch(jax.random.key(1), 1, FRAMES, SIZE)
  difference = np.abs(np.asarray(other["frames"], np.float32)
                      - np.asarray(batch["frames"], np.float32))
  assert difference.mean() > 5


@pytest.mark.slow
def test_sample_batch_with_several_shots_inside_an_outer_jit():
  wrapped = jax.jit(synthetic.sample_batch, static_argnums=(1, 2, 3))
  batch = wrapped(jax.random.key(2), 3, FRAMES, SIZE)
  assert batch["frames"].shape == (3, FRAMES, SIZE, SIZE, 3)
  frames = np.asarray(batch["frames"], np.float32)
  assert np.abs(frames[0] - frames[1]).mean() > 5
  assert np.abs(frames[1] - frames[2]).mean() > 5


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="size must be in 64..256"):
    synthetic.make_sequence(0, 0, FRAMES, 32)
  with pytest.raises(ValueError, match="size must be in 64..256"):
    synthetic.make_sequence(0, 0, FRAMES, 300)
  with pytest.raises(ValueError, match="num_frames must be at least 1"):
    synthetic.make_sequence(0, 0, 0, SIZE)
  with pytest.raises(ValueError, match="unknown trajectory 'zoom'"):
    synthetic.make_sequence(0, 0, FRAMES, SIZE, "zoom")
  with pytest.raises(ValueError, match="seed must be non-negative"):
    synthetic.make_sequence(-1, 0, FRAMES, SIZE)
  with pytest.raises(TypeError, match="size must be a Python int"):
    synthetic.make_sequence(0, 0, FRAMES, 64.0)
  with pytest.raises(ValueError, match="size must be in 64..256"):
    synthetic.sample_batch(jax.random.key(0), 1, FRAMES, 512)
  with pytest.raises(ValueError, match="batch_size must be at least 1"):
    synthetic.sample_batch(jax.random.key(0), 0, FRAMES, SIZE)
  with pytest.raises(ValueError, match="num_frames must be at least 1"):
    synthetic.make_transfer_pair(0, 0, 0, SIZE)
  with pytest.raises(SystemExit):
    synthetic.main(["--out", "unused", "--num-sequences", "1", "--size", "20"])


def test_cli_writes_generic_layout_and_read_round_trips(tmp_path, sequences):
  out = tmp_path / "world"
  synthetic.main(["--out", str(out), "--num-sequences", "2", "--frames",
                  str(FRAMES), "--size", str(SIZE), "--seed", str(SEED),
                  "--trajectory", "truck"])
  for index in range(2):
    directory = out / f"{index:06d}"
    assert sorted(p.name for p in (directory / "frames").iterdir()) == [
        f"{i:05d}.png" for i in range(FRAMES)]
    document = json.loads((directory / "cameras.json").read_text())
    assert document["format"] == "xfactor-generic-v1"
    assert document["image_size"] == [SIZE, SIZE]
    assert len(document["frames"]) == FRAMES
    entry = document["frames"][0]
    assert entry["image"] == "frames/00000.png"
    assert np.asarray(entry["camera_from_world"]).shape == (4, 4)
    assert np.asarray(entry["intrinsics"]).shape == (3, 3)
    loaded = synthetic.read_sequence(directory)
    expected = synthetic.make_sequence(SEED, index, FRAMES, SIZE, "truck")
    for key in ("frames", "camera_from_world", "intrinsics"):
      np.testing.assert_array_equal(loaded[key], expected[key])
      assert loaded[key].dtype == expected[key].dtype
    assert loaded["trajectory"] == "truck"
  # write_sequence + read_sequence round-trip an arbitrary sequence.
  sequence = sequences["pan"]
  synthetic.write_sequence(sequence, tmp_path / "copy")
  loaded = synthetic.read_sequence(tmp_path / "copy")
  for key in ("frames", "camera_from_world", "intrinsics"):
    np.testing.assert_array_equal(loaded[key], sequence[key])
  assert loaded["trajectory"] == "pan"


def test_cli_writes_transfer_pairs(tmp_path):
  synthetic.main(["--out", str(tmp_path), "--num-sequences", "1", "--frames",
                  str(FRAMES), "--size", str(SIZE), "--seed", str(SEED),
                  "--transfer-pairs"])
  first = synthetic.read_sequence(tmp_path / "000000" / "a")
  second = synthetic.read_sequence(tmp_path / "000000" / "b")
  def relative(matrices):
    matrices = matrices.astype(np.float64)
    return matrices @ np.linalg.inv(matrices[0])

  np.testing.assert_allclose(relative(first["camera_from_world"]),
                             relative(second["camera_from_world"]), atol=2e-5)
  assert first["trajectory"] == second["trajectory"]


def test_layout_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="cameras.json"):
    synthetic.read_sequence(tmp_path)
  with pytest.raises(ValueError, match="'frames' must be uint8"):
    synthetic.write_sequence({"frames": np.zeros((2, 8, 8, 3), np.float32),
                              "camera_from_world": np.zeros((2, 4, 4)),
                              "intrinsics": np.zeros((2, 3, 3))}, tmp_path / "x")
  with pytest.raises(ValueError, match="camera_from_world"):
    synthetic.write_sequence({"frames": np.zeros((2, 8, 8, 3), np.uint8),
                              "camera_from_world": np.zeros((3, 4, 4)),
                              "intrinsics": np.zeros((2, 3, 3))}, tmp_path / "y")


def test_texture_atlas_loads_and_is_sampled(tmp_path):
  rng = np.random.default_rng(0)
  for index in range(2):
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    image[..., index] = 255  # tile 0 is red-heavy, tile 1 green-heavy
    Image.fromarray(image).save(tmp_path / f"photo{index}.png")
  (tmp_path / "notes.txt").write_text("not an image")
  atlas = synthetic.load_texture_atlas(tmp_path, tile_size=16)
  assert atlas.shape == (2, 3, 16, 16, 3)
  assert atlas.dtype == np.float32 and 0 <= atlas.min() and atlas.max() <= 1
  # Deeper mip levels are blurrier.
  assert atlas[:, 2].std() < atlas[:, 0].std()
  # A surface with photo weight 1 takes the atlas colours.
  textures = jax.jit(lambda key: scene_sampling.sample_textures(
      scene_sampling.draw_uniforms(key, scene_sampling.TEXTURE_UNIFORMS)))(
          jax.random.key(0))
  textures = textures._replace(
      photo_weight=jnp.ones_like(textures.photo_weight),
      photo_index=jnp.arange(scene_render.NUM_SURFACES) % 2,
      detail_amplitude=jnp.zeros_like(textures.detail_amplitude))
  table = scene_render._texture_table(textures)  # pylint: disable=protected-access
  uv = jnp.asarray(rng.uniform(0, 3, (256, 2)), jnp.float32)
  footprint = jnp.full((256,), 1e-3)
  shade = jax.jit(scene_render.shade_albedo)
  for tile in range(2):
    params = jnp.broadcast_to(table[tile], (256, table.shape[1]))
    albedo = np.asarray(shade(uv, footprint, params, jnp.asarray(atlas)))
    assert albedo[:, tile].mean() > 0.95
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no images"):
    synthetic.load_texture_atlas(tmp_path / "empty")
