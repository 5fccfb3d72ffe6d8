"""Tests of the appearance-flow renderer (xfactor_core.models.flow and
Render(output="flow"))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from xfactor_core import checkpoints, models
from xfactor_core.models import flow

SIZE = 32


def _render(**kwargs):
  return models.Render(features=32, num_heads=2, patch_size=8, num_layers=1,
                       output="flow", **kwargs)


def _inputs(views=1, batch=2, seed=0):
  keys = jax.random.split(jax.random.key(seed), 2)
  x = jax.random.uniform(keys[0], (batch, views, SIZE, SIZE, 3), minval=-1)
  poses = jax.random.normal(keys[1], (batch, views + 1, 8))
  return x, poses


def _textured(size, seed=0):
  """A smooth random RGB image in [-1, 1] (bilinear sampling reproduces it)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (size // 4, size // 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(coarse, (size, size, 3), "linear"))


def test_flow_head_starts_as_a_blend_of_context_and_grey():
  render = _render()
  x, poses = _inputs()
  params = jax.jit(render.init)(jax.random.key(1), x, poses)["params"]
  out, aux = render.apply({"params": params}, x, poses, return_flow=True)
  # Zero-initialised offsets copy each context pixel in place; the fallback is
  # grey (0) with logit -2 against the view's 0.
  view_weight = 1.0 / (1.0 + np.exp(-2.0))
  np.testing.assert_allclose(np.asarray(aux["weights"][:, 0]), view_weight,
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out), view_weight * np.asarray(x[:, 0]),
                             rtol=1e-5, atol=1e-6)
  assert not np.asarray(aux["field"].offset).any()


def test_flow_parameters_do_not_depend_on_the_number_of_views():
  render = _render()
  one = jax.eval_shape(render.init, jax.random.key(0), *_inputs(views=1))
  three = jax.eval_shape(render.init, jax.random.key(0), *_inputs(views=3))
  shapes = lambda tree: {k: v.shape for k, v in traverse_util.flatten_dict(
      tree["params"], sep="/").items()}
  assert shapes(one) == shapes(three)
  assert checkpoints.FLOW_HEAD in one["params"]
  # ... and a stereo-monocular flow renderer runs multi-view as it is.
  params = jax.jit(render.init)(jax.random.key(0), *_inputs(views=1))["params"]
  out = render.apply({"params": params}, *_inputs(views=3))
  assert out.shape == (2, SIZE, SIZE, 3)


def test_sample_from_renders_at_the_output_resolution():
  render = _render()
  x, poses = _inputs()
  params = jax.jit(render.init)(jax.random.key(1), x, poses)["params"]
  hi = jax.image.resize(x, (2, 1, 96, 96, 3), "linear")
  out, aux = render.apply({"params": params}, x, poses, sample_from=hi,
                          return_flow=True)
  assert out.shape == (2, 96, 96, 3)
  assert aux["weights"].shape == (2, 2, 96, 96)
  assert aux["field"].offset.shape == (2, 1, SIZE, SIZE, 2)
  # At zero offsets the output is the full-resolution context, weighted.
  view_weight = 1.0 / (1.0 + np.exp(-2.0))
  # (images span [-1, 1]; the sample positions carry float32 rounding)
  np.testing.assert_allclose(np.asarray(out), view_weight * np.asarray(hi[:, 0]),
                             rtol=1e-4, atol=2e-5)
  with pytest.raises(ValueError, match="sample_from must hold the same 1"):
    render.apply({"params": params}, x, poses, sample_from=hi[:1])


def test_rgb_renderer_refuses_flow_options():
  render = models.Render(features=32, num_heads=2, patch_size=8, num_layers=1)
  x, poses = _inputs()
  params = jax.jit(render.init)(jax.random.key(1), x, poses)["params"]
  assert checkpoints.FLOW_HEAD not in params
  with pytest.raises(ValueError, match="need a flow renderer"):
    render.apply({"params": params}, x, poses, sample_from=x)
  with pytest.raises(ValueError, match="need a flow renderer"):
    render.apply({"params": params}, x, poses, return_flow=True)
  with pytest.raises(ValueError, match="output='depth'"):
    models.Render(features=32, num_heads=2, patch_size=8, num_layers=1,
                  output="depth").init(jax.random.key(0), x, poses)


def test_compose_moves_pixels_by_the_offsets():
  image = _textured(SIZE)
  shift = 3  # pixels: sample from 3 columns to the right
  offset = np.zeros((1, 1, SIZE, SIZE, 2), np.float32)
  offset[..., 0] = shift * 2.0 / SIZE
  field = flow.FlowField(offset=jnp.asarray(offset),
                         view_logit=jnp.zeros((1, 1, SIZE, SIZE)),
                         rgb=jnp.zeros((1, SIZE, SIZE, 3)),
                         rgb_logit=jnp.full((1, SIZE, SIZE), -1e4))
  out, weights = flow.compose(field, jnp.asarray(image)[None, None])
  np.testing.assert_allclose(np.asarray(weights[:, 0]), 1.0, rtol=1e-6)
  expected = image[:, shift:]
  np.testing.assert_allclose(np.asarray(out[0, :, :SIZE - shift]), expected,
                             rtol=1e-4, atol=1e-5)
  # Off the image the lookup clamps to the border column.
  np.testing.assert_allclose(np.asarray(out[0, :, -1]), image[:, -1],
                             rtol=1e-4, atol=1e-5)


def test_sampling_is_differentiable_in_the_offsets():
  image = jnp.asarray(_textured(SIZE, seed=1))
  target = jnp.roll(image, -2, axis=1)

  def loss(dx):
    coords = flow.pixel_grid(SIZE, SIZE) + jnp.stack(
        [jnp.full((SIZE, SIZE), dx), jnp.zeros((SIZE, SIZE))], -1)
    return jnp.mean(jnp.abs(flow.sample_bilinear(image, coords) - target))

  # Moving the samples towards the true shift (2 px = 0.125) lowers the loss.
  grad = jax.grad(loss)(0.06)
  assert np.isfinite(grad) and grad < 0
  assert loss(0.125) < loss(0.06) < loss(0.0)


def test_flow_checkpoints_are_recognised(tmp_path):
  config = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4, render_output="flow")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x, poses = _inputs()
  params = {"PoseEnc": pose_enc.init(jax.random.key(0), x[:, :1].repeat(
      2, axis=1))["params"],
            "Render": render.init(jax.random.key(1), x, poses)["params"]}
  checkpoints.save_params(tmp_path / "ckpt", params)
  loaded = checkpoints.load_params(tmp_path / "ckpt")
  assert checkpoints.infer_config(loaded) == config
  rgb = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4)
  with pytest.raises(checkpoints.CheckpointError, match="renderer has the .flow. head"):
    checkpoints.check_params(loaded, rgb)
  assert checkpoints.ModelConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match="render_output='mesh'"):
    checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4, render_output="mesh")
