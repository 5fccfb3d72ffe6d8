"""The objective terms of warp renderers (photometric loss, edge-aware
smoothness) and the smooth-warp recipe config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xfactor_core import models
from xfactor_core.configs import smooth_warp
from xfactor_core.training import inputs, objective, step_spec

SIZE = 32


def _photo(size=SIZE + 8, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (size // 4, size // 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(coarse, (size, size, 3), "linear"))


def test_photometric_loss_is_zero_on_equal_images_and_grows_with_a_shift():
  photo = jnp.asarray(_photo())[None]
  same = objective.photometric_loss(photo, photo)
  shifted = objective.photometric_loss(photo[:, :, 1:-1],
                                       photo[:, :, 2:])
  further = objective.photometric_loss(photo[:, :, 1:-3], photo[:, :, 4:])
  assert float(same[0]) == pytest.approx(0.0, abs=1e-6)
  assert 0 < float(shifted[0]) < float(further[0])


def test_edge_aware_smoothness_is_cheaper_across_edges():
  offset = jnp.zeros((1, 1, 8, 8, 2)).at[:, :, :, 4:].set(0.1)
  flat = jnp.zeros((1, 8, 8, 3))
  edge = flat.at[:, :, 4:].set(1.0)  # an image edge where the field steps
  on_flat = float(objective.edge_aware_smoothness(offset, flat)[0])
  on_edge = float(objective.edge_aware_smoothness(offset, edge, 10.0)[0])
  assert on_flat > 0
  # The step lies where the image jumps by 1 in every channel: exp(-10 * 1).
  np.testing.assert_allclose(on_edge, on_flat * np.exp(-10.0), rtol=1e-4)
  assert float(objective.edge_aware_smoothness(
      jnp.zeros_like(offset), edge)[0]) == 0.0


def test_a_tiny_warp_training_run_lowers_the_photometric_loss():
  """The warp renderer learns to move a photo onto its shifted crop (3 px)
  through the photometric loss: the loss falls by half in 60 Adam steps."""
  photo = _photo()
  context = jnp.asarray(photo[4:4 + SIZE, 4:4 + SIZE])[None, None]
  target = jnp.asarray(photo[4:4 + SIZE, 7:7 + SIZE])[None]
  poses = jax.random.normal(jax.random.key(0), (1, 2, 8))
  render = models.Render(features=32, num_heads=2, patch_size=8,
                         num_layers=1, output="warp")
  params = render.init(jax.random.key(1), context, poses)["params"]
  settings = objective.ObjectiveSettings(photometric_weight=1.0,
                                         smoothness_weight=0.05)

  def loss_fn(params):
    image, aux = render.apply({"params": params}, context, poses,
                              return_flow=True)
    photometric = jnp.mean(objective.photometric_loss(image, target))
    smooth = jnp.mean(objective.edge_aware_smoothness(aux["residual"], target))
    return (settings.photometric_weight * photometric
            + settings.smoothness_weight * smooth), photometric

  tx = optax.adam(3e-3)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    (_, photometric), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, photometric

  losses = []
  for _ in range(60):
    params, state, photometric = step(params, state)
    losses.append(float(photometric))
  assert losses[0] > 0.05
  assert np.mean(losses[-5:]) < 0.5 * losses[0], losses[::10]


def test_photometric_terms_need_a_warp_or_flow_renderer():
  with pytest.raises(ValueError, match="photometric_ssim_alpha=1.5"):
    objective.ObjectiveSettings(photometric_ssim_alpha=1.5)


@pytest.mark.parametrize("variant", smooth_warp.VARIANTS)
def test_smooth_warp_configs_build(variant):
  config = smooth_warp.get_config(variant)
  spec = step_spec.make_step_spec(config)
  assert spec.model.render_output == "warp"
  assert spec.model.pair_input == smooth_warp.PAIR_INPUT == "fine_correlation"
  assert spec.objective.photometric_weight > 0
  assert spec.objective.smoothness_weight > 0
  world = inputs.WorldSchedule(**config.data.world)
  assert world.motion_factor_start == 0.3 and world.ramp_steps > 0
  assert world.photos == "skimage"
  if variant != "tiny":
    assert config.eval.motion_probe_clips > 0 and config.eval.stop_step > 0
    assert config.eval_every <= 500
  assert config.num_context_views == (3 if variant == "mv" else 1)
  with pytest.raises(ValueError, match="unknown variant 'xl'"):
    smooth_warp.get_config("xl")
