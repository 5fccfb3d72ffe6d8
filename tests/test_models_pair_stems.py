"""PoseEnc's pair inputs: shapes, mask isolation, checkpoints, a training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from xfactor_core import checkpoints, models
from xfactor_core.models import pair_stems

STEMS = [k for k in models.PAIR_INPUTS if k != "views"]


def _pose_enc(pair_input, patch_size=8):
  return models.PoseEnc(features=32, num_heads=2, patch_size=patch_size,
                        num_layers=1, pose_dim=8, num_global_tokens=2,
                        pair_input=pair_input)


def _images(key, shape=(2, 3, 32, 32, 3)):
  return jax.random.uniform(jax.random.key(key), shape, minval=-1.0)


@pytest.mark.parametrize("pair_input", models.PAIR_INPUTS)
def test_every_pair_input_gives_zero_reference_and_moving_latents(pair_input):
  pose_enc = _pose_enc(pair_input)
  x = _images(1)
  params = pose_enc.init(jax.random.key(0), x)["params"]
  assert (pair_stems.STEM_MODULES.get(pair_input) in params) == (
      pair_input != "views")
  out = pose_enc.apply({"params": params}, x)
  assert out.shape == (2, 3, 8)
  assert np.all(np.asarray(out[:, 0]) == 0.0)
  assert np.abs(np.asarray(out[:, 1:])).max() > 0
  pmask = np.tile((np.arange(16) % 4 >= 2).astype(np.int32), (2, 1))
  assert pose_enc.apply({"params": params}, x, pmask).shape == (2, 3, 2, 8)


@pytest.mark.parametrize("pair_input", models.PAIR_INPUTS)
@pytest.mark.parametrize("changed_view", [0, 1])
def test_a_mask_half_sees_nothing_of_the_other_half(pair_input, changed_view):
  """Changing the right half of any view (the reference included) leaves the
  left half's latent exactly as it was: no stem leaks across segments."""
  pose_enc = _pose_enc(pair_input)
  x = _images(2, (2, 2, 32, 32, 3))
  params = pose_enc.init(jax.random.key(0), x)["params"]
  pmask = np.tile((np.arange(16) % 4 >= 2).astype(np.int32), (2, 1))
  apply = jax.jit(pose_enc.apply)
  before = apply({"params": params}, x, pmask)
  after = apply({"params": params},
                x.at[:, changed_view, :, 16:].set(0.25), pmask)
  np.testing.assert_array_equal(np.asarray(after[:, 1, 0]),
                                np.asarray(before[:, 1, 0]))
  assert np.abs(np.asarray(after[:, 1, 1] - before[:, 1, 1])).max() > 1e-6


def test_the_correlation_compares_each_token_with_the_reference_around_it():
  """A reference that is view 1 shifted by one token peaks at that shift."""
  stem = pair_stems.CorrelationStem(features=16, patch_size=8, radius=1)
  frame = _images(3, (1, 1, 32, 40, 3))[:, 0]
  shifted = jnp.roll(frame, 8, axis=2)  # content moves one token right
  x = jnp.stack([shifted, frame], axis=1)  # view 0 is the reference
  variables = stem.init(jax.random.key(0), x, None)
  assert stem.apply(variables, x, None).shape == (1, 2, 20, 16)
  corr_volume = _cost_volume(stem, variables, x)
  # interior tokens of view 1: the best match is one token to the right.
  best = corr_volume[0, 1, 1:-1, 1:-2].reshape(-1, 9).argmax(-1)
  assert np.mean(best == 5) > 0.9  # (dy, dx) = (0, +1) in a 3x3 window


def _cost_volume(stem, variables, x):
  captured = {}

  def grab(next_fun, args, kwargs, context):
    if context.module.name == "Dense_1" and context.method_name == "__call__":
      captured["input"] = args[0]
    return next_fun(*args, **kwargs)

  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  with nn.intercept_methods(grab):
    stem.apply(variables, x, None)
  d = (2 * stem.radius + 1) ** 2
  b, v = x.shape[:2]
  gh, gw = x.shape[2] // stem.patch_size, x.shape[3] // stem.patch_size
  return np.asarray(captured["input"])[..., :d].reshape(b, v, gh, gw, d)


@pytest.mark.parametrize("pair_input", STEMS)
def test_checkpoints_know_the_pair_input(pair_input, tmp_path):
  config = checkpoints.ModelConfig(features=32, num_heads=2, patch_size=8,
                                   pose_layers=1, render_layers=1, pose_dim=8,
                                   num_global_tokens=2, pair_input=pair_input)
  shapes = checkpoints.expected_shapes(config)
  assert pair_stems.STEM_MODULES[pair_input] in {
      path.split("/")[0] for path in shapes["PoseEnc"]}
  params = {name: traverse_util.unflatten_dict(
      {tuple(p.split("/")): np.zeros(s, np.float32) for p, s in tree.items()})
      for name, tree in shapes.items()}
  assert checkpoints.infer_config(params) == config
  checkpoints.check_params(params, config)
  published_like = checkpoints.ModelConfig(**{**config.to_dict(),
                                              "pair_input": "views"})
  with pytest.raises(checkpoints.CheckpointError):
    checkpoints.check_params(params, published_like)
  assert checkpoints.ModelConfig.from_dict(config.to_dict()) == config


def test_the_published_encoder_is_unchanged_by_the_option():
  shapes = checkpoints.expected_shapes(checkpoints.PUBLISHED_CONFIG)
  assert not any(path.split("/")[0] in pair_stems.STEM_MODULES.values()
                 for path in shapes["PoseEnc"])
  assert checkpoints.PUBLISHED_CONFIG.pair_input == "views"
  assert "pair_input" not in checkpoints.PUBLISHED_CONFIG.pose_enc_kwargs()


def test_unknown_pair_inputs_and_patch_sizes_are_refused():
  with pytest.raises(ValueError, match="pair_input"):
    checkpoints.ModelConfig(features=32, num_heads=2, patch_size=8,
                            pose_layers=1, render_layers=1, pose_dim=8,
                            pair_input="stacked")
  with pytest.raises(ValueError, match="pair_input"):
    _pose_enc("stacked").init(jax.random.key(0), _images(1))
  with pytest.raises(ValueError, match="divisible by 4"):
    _pose_enc("conv", patch_size=6).init(jax.random.key(0),
                                         _images(1, (1, 2, 12, 12, 3)))


def test_the_fine_correlation_finds_a_one_cell_shift_inside_a_token():
  """A reference that is view 1 shifted by one 4 px cell (a quarter of a
  16 px token, invisible to the token volume's integer shifts) peaks at that
  shift in the fine volume, and the soft argmax reads it."""
  stem = pair_stems.FineCorrelationStem(features=16, patch_size=16)
  frame = _images(4, (1, 1, 64, 64, 3))[:, 0]
  frame = jax.image.resize(frame, (1, 16, 16, 3), "linear")  # smooth content
  frame = jax.image.resize(frame, (1, 64, 64, 3), "linear")
  shifted = jnp.roll(frame, 4, axis=2)  # content moves one cell right
  x = jnp.stack([shifted, frame], axis=1)
  variables = stem.init(jax.random.key(0), x, None)
  assert stem.apply(variables, x, None).shape == (1, 2, 16, 16)
  captured = {}

  def grab(next_fun, args, kwargs, context):
    if context.module.name == "out":
      captured["input"] = args[0]
    return next_fun(*args, **kwargs)

  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  with nn.intercept_methods(grab):
    stem.apply(variables, x, None)
  d_coarse = 2 * (2 * stem.radius + 1) ** 2
  d_fine = (2 * stem.fine_radius + 1) ** 2
  cells = np.asarray(captured["input"])[0, 1, :, d_coarse:].reshape(
      4, 4, 4, 4, d_fine + 2)  # gh gw c c (corr..., dx, dy)
  cells = cells.transpose(0, 2, 1, 3, 4).reshape(16, 16, d_fine + 2)
  interior = cells[3:-3, 3:-3]
  best = interior[..., :d_fine].reshape(-1, d_fine).argmax(-1)
  centre = (d_fine - 1) // 2
  assert np.mean(best == centre + 1) > 0.6  # (dy, dx) = (0, +1)
  shift = interior[..., d_fine:].reshape(-1, 2)
  assert np.median(shift[:, 0]) > 0.4 and abs(np.median(shift[:, 1])) < 0.2


def test_the_soft_argmax_reads_sub_cell_displacements():
  radius = 1
  offsets = np.asarray(pair_stems.window_offsets(radius))
  assert offsets.shape == (9, 2)
  np.testing.assert_array_equal(offsets[5], [1.0, 0.0])  # row-major (dy, dx)
  corr = np.full((2, 9), -1.0, np.float32)
  corr[0, 4] = corr[0, 5] = 1.0  # shared between 0 and +1 in x
  corr[1, 7] = 1.0  # one cell down
  valid = np.ones_like(corr)
  shift = np.asarray(pair_stems.expected_displacement(
      jnp.asarray(corr), jnp.asarray(valid), jnp.float32(50.0), radius))
  np.testing.assert_allclose(shift[0], [0.5, 0.0], atol=1e-3)
  np.testing.assert_allclose(shift[1], [0.0, 1.0], atol=1e-3)
  valid[1, 7] = 0.0  # an invalid peak is never read
  shift = np.asarray(pair_stems.expected_displacement(
      jnp.asarray(corr), jnp.asarray(valid), jnp.float32(50.0), radius))
  assert abs(shift[1, 1]) < 0.2
