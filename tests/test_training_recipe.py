"""Tests of the recipe levers of the training: the gradient term, ground-truth
flow supervision, gradient-spike skipping, the world curriculum in a run, and
the ablation configs (configs/recipe.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xfactor_core.configs import recipe, synthetic_tiny
from xfactor_core.data import synthetic
from xfactor_core.training import (inputs, objective, optim, perceptual,
                                   sharding, step_spec, trainer)
from xfactor_core.training.writer import read_metrics


def test_gradient_l1_sees_blur_that_l1_barely_sees():
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1)
  blurred = 0.5 * (x + jnp.roll(x, 1, axis=2))
  assert float(jnp.mean(objective.gradient_l1(x, x))) == 0.0
  assert float(jnp.mean(objective.gradient_l1(blurred, x))) > 0.2


def test_flow_supervision_weight_decays_to_zero():
  settings = objective.ObjectiveSettings(flow_supervision=2.0,
                                         flow_supervision_steps=100)
  weight = lambda s: float(objective.flow_supervision_weight(
      settings, jnp.int32(s)))
  assert weight(0) == 2.0 and weight(50) == pytest.approx(1.0)
  assert weight(100) == 0.0 and weight(1000) == 0.0
  constant = objective.ObjectiveSettings(flow_supervision=0.5)
  assert float(objective.flow_supervision_weight(constant, jnp.int32(10 ** 6))
               ) == 0.5


def _flow_spec(**objective_changes):
  config = synthetic_tiny.get_config()
  config.model.render_output = "flow"
  config.objective.update(objective_changes)
  return step_spec.make_step_spec(config)


def test_flow_supervision_pulls_the_offsets_to_the_ground_truth():
  spec = _flow_spec(flow_supervision=1.0, self_decode_prob=0.0)
  pose_enc, render = step_spec.build_models(spec)
  params = step_spec.init_params(spec, jax.random.key(0))
  batch = synthetic.sample_batch(jax.random.key(1), 4, 2, spec.image_size,
                                 with_depth=True)
  batch = {"frames": batch["frames"], "reference": jnp.zeros(4, jnp.int32),
           "depth": batch["depth"],
           "camera_from_world": batch["camera_from_world"],
           "intrinsics": batch["intrinsics"][:, 0]}

  def loss(p):
    return objective.xfactor_loss(
        p, batch, jax.random.key(2), pose_enc=pose_enc, render=render,
        settings=spec.objective,
        perceptual_distance=lambda a, b: perceptual.ssim_distance({}, a, b))

  (value, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      params)
  assert np.isfinite(float(value)) and float(metrics["flow_weight"]) == 1.0
  # Zero offsets at initialisation: the error is the ground-truth motion.
  assert float(metrics["flow_error"]) > 0.5
  head = grads["Render"]["AppearanceFlowHead_0"]["view_head"]["Dense_2"]
  assert float(jnp.abs(head["kernel"]).max()) > 0
  without = dict(batch)
  del without["depth"]
  with pytest.raises(ValueError, match="needs depth and cameras"):
    objective.xfactor_loss(params, without, jax.random.key(2),
                           pose_enc=pose_enc, render=render,
                           settings=spec.objective,
                           perceptual_distance=lambda a, b: jnp.zeros(4))


def test_flow_supervision_needs_a_flow_renderer():
  config = synthetic_tiny.get_config()
  config.objective.flow_supervision = 1.0
  spec = step_spec.make_step_spec(config)
  pose_enc, render = step_spec.build_models(spec)
  params = step_spec.init_params(spec, jax.random.key(0))
  batch = {"frames": jnp.zeros((2, 2, 64, 64, 3), jnp.uint8),
           "reference": jnp.zeros(2, jnp.int32)}
  with pytest.raises(ValueError, match="need a flow renderer"):
    objective.xfactor_loss(params, batch, jax.random.key(0), pose_enc=pose_enc,
                           render=render, settings=spec.objective,
                           perceptual_distance=lambda a, b: jnp.zeros(2))


def test_spike_skipping_leaves_the_state_untouched_on_a_spike():
  inner = optax_sgd = optim.make_optimizer(optim.OptimizerSettings(
      init_lr=0.1, peak_lr=0.1, end_lr=0.1, warmup_steps=0, decay_steps=10,
      weight_decay=0.0, grad_clip=1e9))
  del optax_sgd
  tx = optim.skip_gradient_spikes(inner, factor=3.0, warmup=3)
  params = {"w": {"kernel": jnp.ones((2,))}}
  state = tx.init(params)
  normal = {"w": {"kernel": jnp.array([0.3, 0.4])}}  # norm 0.5
  for _ in range(4):
    updates, state = tx.update(normal, state, params)
    assert float(jnp.abs(updates["w"]["kernel"]).max()) > 0
  spike = {"w": {"kernel": jnp.array([3.0, 4.0])}}  # norm 5 > 3 x 0.5
  before = state
  updates, state = tx.update(spike, state, params)
  np.testing.assert_array_equal(updates["w"]["kernel"], 0.0)
  for a, b in zip(jax.tree.leaves(before.inner_state),
                  jax.tree.leaves(state.inner_state)):
    np.testing.assert_array_equal(a, b)
  assert int(state.skipped) == 1 and int(state.count) == 4
  nan = {"w": {"kernel": jnp.array([jnp.nan, 0.0])}}
  updates, state = tx.update(nan, state, params)
  assert int(state.skipped) == 2
  assert np.all(np.isfinite(updates["w"]["kernel"]))
  updates, state = tx.update(normal, state, params)
  assert float(jnp.abs(updates["w"]["kernel"]).max()) > 0
  assert int(optim.skipped_updates(state)) == 2
  with pytest.raises(ValueError, match="spike_factor=0.5"):
    optim.OptimizerSettings(spike_factor=0.5)


def test_recipe_arms_build_and_follow_the_run_length():
  for arm in recipe.ARMS:
    config = recipe.get_config(arm)
    config.total_steps = 1000
    spec = step_spec.make_step_spec(config)
    assert spec.optimizer.decay_steps == 1000, arm
    assert spec.optimizer.warmup_steps == 50, arm
    if arm != "today":
      # The encoder arm takes the pose probe's token grid (patch 16).
      assert spec.model.patch_size == (16 if arm == "encoder" else 8), arm
      assert config.data.world.ramp_steps == 500
      assert not spec.objective.augment
    assert (spec.model.pair_input == recipe.PAIR_INPUT) == (arm == "encoder")
    assert (config.eval.motion_probe_clips > 0) == (arm == "encoder")
    inputs.WorldSchedule(**config.data.world)
  supervised = recipe.get_config("supervised")
  supervised.total_steps = 4000
  assert supervised.objective.flow_supervision_steps == 2400
  assert supervised.model.render_output == "flow"
  assert supervised.data.world.photos == "skimage"
  with pytest.raises(ValueError, match="unknown arm 'best'"):
    recipe.get_config("best")


def test_a_run_with_every_lever(tmp_path):
  config = synthetic_tiny.get_config()
  config.update(dict(total_steps=4, log_every=2, checkpoint_every=4,
                     eval_every=4, progress_bar=False))
  config.eval.num_batches = 1
  config.model.render_output = "flow"
  config.objective.update(dict(flow_supervision=1.0, flow_supervision_steps=2,
                               gradient_weight=0.5, augment=False))
  config.optimizer.update(dict(spike_factor=3.0, spike_warmup=1))
  config.data.world.update(dict(motion_factor_start=0.3, max_objects_start=1,
                                ramp_steps=2, photos="skimage",
                                photo_scene_prob=0.5))
  trainer.train_and_evaluate(config, tmp_path)
  records = [r for r in read_metrics(tmp_path) if "train/loss" in r]
  assert [r["step"] for r in records] == [2, 4]
  assert records[0]["train/flow_weight"] > 0 and records[1][
      "train/flow_weight"] == 0.0
  for key in ("train/flow_error", "train/gradient_l1",
              "train/skipped_updates"):
    assert np.isfinite(records[-1][key]), key
  with pytest.raises(step_spec.ConfigError, match="photo scenes need photos"):
    bad = synthetic_tiny.get_config()
    bad.data.world.photo_scene_prob = 0.5
    trainer.make_train_inputs(bad, step_spec.make_step_spec(bad),
                              sharding.make_mesh(), 8, 0)
