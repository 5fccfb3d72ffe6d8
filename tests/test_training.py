"""Tests of xfactor_core.training: objective pieces, optimiser, perceptual
losses, and short synthetic_tiny runs in this process (resume, NaN stop,
learning, pose-encoder initialisation)."""

import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization
from flax import traverse_util
from PIL import Image

from xfactor_core import checkpoints
from xfactor_core.configs import (common, published_mv, published_sm,
                                  synthetic_mv, synthetic_sm, synthetic_tiny)
from xfactor_core.inference.pipeline import TransferPipeline
from xfactor_core.training import (inputs, objective, optim, perceptual,
                                   step_spec, train_state, trainer)
from xfactor_core.training.writer import read_metrics

# ------------------------------------------------------------------ masks --


def test_quadrant_masks_pick_two_quadrants():
  grid = 6
  pmask, all_zero = objective.quadrant_masks(jax.random.key(0), 4000, grid,
                                             grid, 0.05)
  pmask, all_zero = np.asarray(pmask), np.asarray(all_zero)
  assert pmask.shape == (4000, grid * grid) and pmask.dtype == np.int32
  assert set(np.unique(pmask)) <= {0, 1}
  quadrant = objective.quadrant_ids(grid, grid)
  np.testing.assert_array_equal(quadrant.reshape(grid, grid)[:3, :3], 0)
  np.testing.assert_array_equal(quadrant.reshape(grid, grid)[3:, 3:], 3)
  split = pmask[~all_zero]
  per_quadrant = np.stack([split[:, quadrant == q].mean(axis=1)
                           for q in range(4)], axis=1)
  # Every quadrant is uniformly 0 or 1, and exactly two are 1.
  assert set(np.unique(per_quadrant)) == {0.0, 1.0}
  np.testing.assert_array_equal(per_quadrant.sum(axis=1), 2)
  np.testing.assert_array_equal(split.sum(axis=1), grid * grid // 2)
  assert len({tuple(r) for r in per_quadrant}) == 6  # all six pairs occur
  assert np.all(pmask[all_zero] == 0)


def test_all_zero_mask_frequency():
  _, all_zero = objective.quadrant_masks(jax.random.key(1), 40_000, 4, 4, 0.05)
  assert 0.045 < float(np.mean(all_zero)) < 0.055
  _, none = objective.quadrant_masks(jax.random.key(1), 1000, 4, 4, 0.0)
  assert not np.any(none)


def test_quadrant_masks_need_an_even_grid():
  with pytest.raises(ValueError, match="even patch grid"):
    objective.quadrant_ids(5, 6)


def test_swap_halves():
  poses = jnp.arange(2 * 3 * 2 * 4, dtype=jnp.float32).reshape(2, 3, 2, 4)
  out = np.asarray(objective.swap_halves(poses, jnp.array([False, True])))
  np.testing.assert_array_equal(out[0, :, 0], poses[0, :, 1])
  np.testing.assert_array_equal(out[0, :, 1], poses[0, :, 0])
  # All-zero mask: no swap possible, both halves use half 0.
  np.testing.assert_array_equal(out[1, :, 0], poses[1, :, 0])
  np.testing.assert_array_equal(out[1, :, 1], poses[1, :, 0])


# ----------------------------------------------------------- augmentation --


def _random_views(key, b=6, v=3, s=16):
  return jax.random.uniform(key, (b, v, s, s, 3), minval=-1.0, maxval=1.0)


_augment = jax.jit(objective.augment, static_argnums=2)


def test_augmentation_is_the_same_for_every_frame_of_an_example():
  frame = _random_views(jax.random.key(0), b=64, v=1)
  views = jnp.repeat(frame, 3, axis=1)  # three identical frames per example
  settings = objective.ObjectiveSettings(jitter_prob=1.0, blur_prob=0.5)
  out = np.asarray(_augment(jax.random.key(1), views, settings))
  assert out.shape == views.shape and out.min() >= -1.0 and out.max() <= 1.0
  np.testing.assert_array_equal(out[:, 1], out[:, 0])
  np.testing.assert_array_equal(out[:, 2], out[:, 0])
  change = np.abs(out[:, 0] - np.asarray(frame[:, 0])).mean(axis=(1, 2, 3))
  assert np.all(change > 1e-3)  # every example was jittered
  assert len(np.unique(np.round(change, 6))) > 50  # with different parameters


def test_augmentation_identity_when_disabled():
  views = _random_views(jax.random.key(2))
  off = objective.ObjectiveSettings(augment=False)
  assert objective.augment(jax.random.key(3), views, off) is views
  never = objective.ObjectiveSettings(jitter_prob=0.0, blur_prob=0.0)
  np.testing.assert_array_equal(_augment(jax.random.key(3), views, never),
                                views)


def test_blur_only_smooths():
  views = _random_views(jax.random.key(4), b=2, v=2, s=32)
  blurred = jax.jit(objective.gaussian_blur, static_argnums=2)(
      views, jnp.array([0.1, 2.0]), 7)
  # sigma 0.1 is nearly the identity; sigma 2 removes most pixel noise.
  assert float(jnp.abs(blurred[0] - views[0]).max()) < 1e-3
  assert float(jnp.std(blurred[1])) < 0.5 * float(jnp.std(views[1]))
  np.testing.assert_allclose(jnp.mean(blurred[1]), jnp.mean(views[1]),
                             atol=0.02)


def test_hsv_round_trip_and_hue_shift():
  rgb = jax.random.uniform(jax.random.key(5), (500, 3))
  round_trip = jax.jit(lambda x: objective.hsv_to_rgb(objective.rgb_to_hsv(x)))
  np.testing.assert_allclose(round_trip(rgb), rgb, atol=1e-5)
  red = jnp.array([[[[[1.0, 0.0, 0.0]]]]])
  ones = jnp.ones((1,))
  green = jax.jit(objective.color_jitter)(red, ones, ones, ones,
                                          jnp.array([1 / 3]))
  np.testing.assert_allclose(green[0, 0, 0, 0], [0.0, 1.0, 0.0], atol=1e-5)


# ------------------------------------------------------ views and targets --


def test_order_views_puts_reference_first_and_target_last():
  b, v = 2000, 6
  labels = jnp.broadcast_to(jnp.arange(v), (b, v))
  reference = jax.random.randint(jax.random.key(6), (b,), 0, v)
  out = np.asarray(jax.jit(objective.order_views)(jax.random.key(7), labels,
                                                  reference))
  np.testing.assert_array_equal(out[:, 0], reference)
  assert np.all(out[:, -1] != out[:, 0])
  for row in out[:50]:
    assert sorted(row) == list(range(v))
    middle = row[1:-1]
    assert list(middle) == sorted(middle)  # the rest keep clip order
  # The target is uniform over the non-reference views.
  counts = np.bincount(out[reference == 0, -1], minlength=v)
  assert counts[0] == 0 and counts[1:].min() > 0.6 * counts[1:].max()
  stereo = objective.order_views(jax.random.key(8), labels[:, :2],
                                 jnp.zeros((b,), jnp.int32))
  np.testing.assert_array_equal(stereo, np.broadcast_to([0, 1], (b, 2)))


def test_self_decode_replaces_the_target_by_a_context_view():
  b, v = 20_000, 4
  labels = jnp.broadcast_to(jnp.arange(v), (b, v))
  out, replaced = jax.jit(objective.self_decode, static_argnums=2)(
      jax.random.key(9), labels, 0.05)
  out, replaced = np.asarray(out), np.asarray(replaced)
  assert 0.045 < replaced.mean() < 0.055
  np.testing.assert_array_equal(out[:, :-1], labels[:, :-1])
  np.testing.assert_array_equal(out[~replaced, -1], v - 1)
  assert set(np.unique(out[replaced, -1])) == {0, 1, 2}
  stereo, flags = objective.self_decode(jax.random.key(9), labels[:, :2], 1.0)
  assert np.all(flags) and np.all(np.asarray(stereo)[:, 1] == 0)


# ---------------------------------------------------------------- latents --


def _tiny_spec(**changes):
  config = synthetic_tiny.get_config()
  for name, value in changes.items():
    config[name] = value
  return step_spec.make_step_spec(config)


@pytest.fixture(scope="module")
def tiny_models():
  spec = _tiny_spec()
  params = jax.jit(lambda key: step_spec.init_params(spec, key))(
      jax.random.key(0))
  return spec, step_spec.build_models(spec), params


def test_pair_latents_match_separate_pair_calls(tiny_models):
  spec, (pose_enc, _), params = tiny_models
  views = _random_views(jax.random.key(10), b=2, v=4, s=spec.image_size)
  pmask, _ = objective.quadrant_masks(jax.random.key(11), 2, 8, 8, 0.0)
  apply = jax.jit(lambda x, m: pose_enc.apply({"params": params["PoseEnc"]},
                                              x, m))
  pairs = objective.pose_latents(apply, views, pmask, "pairs")
  assert pairs.shape == (2, 4, 2, spec.model.pose_dim)
  np.testing.assert_array_equal(pairs[:, 0], 0.0)
  # The same pairs, batched view-major: (ref, view_i) for i = 1..3.
  separate = jnp.stack([jnp.stack([views[:, 0], views[:, i]], axis=1)
                        for i in range(1, 4)]).reshape(6, 2, 64, 64, 3)
  expected = apply(separate, jnp.tile(pmask, (3, 1)))[:, 1].reshape(
      3, 2, 2, spec.model.pose_dim)
  np.testing.assert_allclose(pairs[:, 1:], jnp.swapaxes(expected, 0, 1),
                             atol=1e-5)
  joint = objective.pose_latents(apply, views, pmask, "joint")
  np.testing.assert_array_equal(joint, apply(views, pmask))


# -------------------------------------------------------------- optimiser --


def test_weight_decay_mask_picks_weight_matrices(tiny_models):
  _, _, params = tiny_models
  mask = traverse_util.flatten_dict(optim.weight_decay_mask(params), sep="/")
  assert mask["PoseEnc/Dense_0/kernel"] and mask[
      "Render/layers_1/Dense_0/kernel"]
  for name in ("PoseEnc/global_embed", "PoseEnc/Dense_0/bias",
               "PoseEnc/layers_0/LayerScale_0/alpha",
               "PoseEnc/layers_0/RMSNorm_2/alpha",
               "PoseEnc/layers_0/LayerNorm_0/scale",
               "Render/layers_0/LayerNorm_1/bias",
               "Render/LayerNorm_0/scale", "Render/MLP3_0/Dense_2/bias"):
    assert not mask[name], name
  decayed = {k for k, v in mask.items() if v}
  assert decayed == {k for k in mask if k.endswith("/kernel")}


def test_schedule_values():
  settings = optim.OptimizerSettings()
  lr = optim.learning_rate_schedule(settings)
  assert float(lr(0)) == pytest.approx(1e-12, abs=1e-15)
  assert float(lr(2000)) == pytest.approx(2e-4, rel=1e-3)
  assert float(lr(4000)) == pytest.approx(4e-4, rel=1e-6)
  assert float(lr(52_000)) == pytest.approx(2.5e-4, rel=1e-3)  # cosine middle
  assert float(lr(100_000)) == pytest.approx(1e-4, rel=1e-6)
  assert float(lr(200_000)) == pytest.approx(1e-4, rel=1e-6)
  with pytest.raises(ValueError, match="decay_steps"):
    optim.OptimizerSettings(warmup_steps=10, decay_steps=5)


def test_gradient_accumulation_averages_micro_batches():
  settings = optim.OptimizerSettings(init_lr=0.1, peak_lr=0.1, end_lr=0.1,
                                     warmup_steps=0, decay_steps=10,
                                     weight_decay=0.0, grad_clip=1e9)
  params = {"w": {"kernel": jnp.ones((3,))}}
  grads = [{"w": {"kernel": jnp.array([1.0, 2.0, 3.0])}},
           {"w": {"kernel": jnp.array([3.0, 2.0, 1.0])}}]
  tx = optim.make_optimizer(settings, accumulation_steps=2)
  state = tx.init(params)
  updates, state = tx.update(grads[0], state, params)
  np.testing.assert_array_equal(updates["w"]["kernel"], 0.0)
  updates, state = tx.update(grads[1], state, params)
  single = optim.make_optimizer(settings)
  expected, _ = single.update({"w": {"kernel": jnp.full((3,), 2.0)}},
                              single.init(params), params)
  np.testing.assert_allclose(updates["w"]["kernel"], expected["w"]["kernel"],
                             rtol=1e-6)
  assert float(jnp.abs(updates["w"]["kernel"]).min()) > 0.0


# ------------------------------------------------------------- perceptual --


def test_ssim_distance():
  x = _random_views(jax.random.key(14), b=3, v=1, s=32)[:, 0]
  y = jnp.clip(x + 0.3 * jax.random.normal(jax.random.key(15), x.shape), -1, 1)
  distance = jax.jit(perceptual.ssim_distance)
  np.testing.assert_allclose(distance({}, x, x), 0.0, atol=1e-5)
  far = distance({}, x, y)
  assert far.shape == (3,) and np.all(np.asarray(far) > 0.1)
  assert perceptual.make_perceptual("auto", None).name == "ssim"
  with pytest.raises(perceptual.PerceptualError, match="needs weights"):
    perceptual.make_perceptual("lpips", None)


def _fake_lpips_state_dict(rng, torchvision_names: bool):
  out = {"scaling_layer.shift": np.zeros((1, 3, 1, 1), np.float32)}
  slices = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4,
            24: 5, 26: 5, 28: 5}
  for index, (c_in, c_out) in perceptual.VGG16_CONVS.items():
    prefix = (f"features.{index}" if torchvision_names
              else f"net.slice{slices[index]}.{index}")
    std = math.sqrt(2.0 / (9 * c_in))
    out[f"{prefix}.weight"] = (rng.standard_normal((c_out, c_in, 3, 3)) * std
                               ).astype(np.float32)
    out[f"{prefix}.bias"] = np.zeros(c_out, np.float32)
  for j, c in enumerate(perceptual.LPIPS_CHANNELS):
    out[f"lin{j}.model.1.weight"] = rng.uniform(0, 0.1, (1, c, 1, 1)).astype(
        np.float32)
  return out


def test_lpips_weights_from_npz_and_msgpack(tmp_path):
  rng = np.random.default_rng(0)
  state = _fake_lpips_state_dict(rng, torchvision_names=False)
  np.savez(tmp_path / "lpips.npz", **state)
  chosen = perceptual.make_perceptual("auto", tmp_path / "lpips.npz")
  assert chosen.name == "lpips-vgg"
  x = _random_views(jax.random.key(16), b=2, v=1, s=32)[:, 0]
  y = jnp.roll(x, 5, axis=1)
  distance = jax.jit(chosen.distance)
  np.testing.assert_allclose(distance(chosen.params, x, x), 0.0, atol=1e-6)
  assert np.all(np.asarray(distance(chosen.params, x, y)) > 0)
  # torchvision names in a flax msgpack file give the same weights.
  renamed = _fake_lpips_state_dict(np.random.default_rng(0),
                                   torchvision_names=True)
  (tmp_path / "lpips.msgpack").write_bytes(serialization.msgpack_serialize(
      renamed))
  loaded = perceptual.load_lpips_weights(tmp_path / "lpips.msgpack")
  np.testing.assert_array_equal(loaded["conv"]["28"]["kernel"],
                                chosen.params["conv"]["28"]["kernel"])
  del state["net.slice3.12.bias"]
  np.savez(tmp_path / "broken.npz", **state)
  with pytest.raises(perceptual.PerceptualError, match="convolution 12"):
    perceptual.load_lpips_weights(tmp_path / "broken.npz")
  with pytest.raises(perceptual.PerceptualError, match="does not exist"):
    perceptual.make_perceptual("lpips", tmp_path / "missing.npz")


# ---------------------------------------------------------------- configs --


def test_configs_build_and_published_size():
  for module in (synthetic_tiny, synthetic_sm, synthetic_mv, published_sm,
                 published_mv):
    config = module.get_config()
    spec = step_spec.make_step_spec(config)
    assert spec.image_size == config.image_size
  for module in (synthetic_sm, synthetic_mv):
    gpu = step_spec.make_step_spec(module.get_config("gpu"))
    assert gpu.dtype == "bfloat16"
  sm, mv = published_sm.get_config(), published_mv.get_config()
  assert (sm.num_context_views, mv.num_context_views) == (1, 5)
  assert (sm.objective.self_decode_prob, mv.objective.self_decode_prob) == (
      0.05, 0.02)
  assert sm.batch_size == 256 and sm.dtype == "bfloat16" and sm.remat
  spec = step_spec.make_step_spec(sm)
  assert spec.model == checkpoints.PUBLISHED_CONFIG
  shapes = jax.eval_shape(
      lambda: step_spec.init_params(spec, jax.random.key(0)))
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(shapes["PoseEnc"]) == 148_013_312
  assert count(shapes["Render"]) == 157_165_312
  small = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(jax.eval_shape(
      lambda: step_spec.init_params(step_spec.make_step_spec(
          synthetic_sm.get_config()), jax.random.key(0)))))
  assert 2e6 < small < 1e7  # "a few million parameters"


def test_config_sections_are_the_settings_defaults():
  config = common.base_config()
  assert dict(config.objective) == dataclasses.asdict(
      objective.ObjectiveSettings())
  assert dict(config.optimizer) == dataclasses.asdict(
      optim.OptimizerSettings())
  assert dict(config.data.world) == dataclasses.asdict(inputs.WorldSchedule())
  assert checkpoints.ModelConfig(**config.model) == (
      checkpoints.PUBLISHED_CONFIG)
  config.objective.l1_weigth = 1.0
  with pytest.raises(step_spec.ConfigError,
                     match=r"unknown objective settings \['l1_weigth'\]"):
    step_spec.make_step_spec(config)


def test_config_errors():
  config = synthetic_tiny.get_config()
  config.image_size = 72  # 9 x 9 patches: no quadrants
  with pytest.raises(step_spec.ConfigError, match="even multiple"):
    step_spec.make_step_spec(config)
  config = synthetic_tiny.get_config()
  config.micro_batch_size = 3
  with pytest.raises(step_spec.ConfigError, match="not a multiple"):
    step_spec.batch_layout(config, 1)
  config.micro_batch_size = 4
  with pytest.raises(step_spec.ConfigError, match="3 devices"):
    step_spec.batch_layout(config, 3)
  assert step_spec.batch_layout(config, 2) == (4, 2)
  config.objective.pose_encoding = "both"
  with pytest.raises(step_spec.ConfigError, match="pose_encoding"):
    step_spec.make_step_spec(config)


# ---------------------------------------------------------- training runs --


def _tiny_config(**changes):
  config = synthetic_tiny.get_config()
  config.progress_bar = False
  config.log_every = 1
  config.checkpoint_every = 2
  config.eval_every = 1000
  config.eval.num_batches = 1
  for name, value in changes.items():
    node = config
    *parents, leaf = name.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _flat(tree):
  return traverse_util.flatten_dict(serialization.to_state_dict(tree), sep="/")


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
  """The same 4 steps run at once and as 2 + 2 (interrupted and resumed)."""
  root = tmp_path_factory.mktemp("runs")
  whole = trainer.train_and_evaluate(_tiny_config(total_steps=4),
                                     root / "whole")
  # Evaluation does not touch the train state; only the first run needs it.
  no_eval = {"eval.num_batches": 0}
  trainer.train_and_evaluate(_tiny_config(total_steps=2, **no_eval),
                             root / "resumed")
  resumed = trainer.train_and_evaluate(_tiny_config(total_steps=4, **no_eval),
                                       root / "resumed")
  return root, whole, resumed


def test_resumed_run_equals_uninterrupted_run(resumed_runs):
  root, whole, resumed = resumed_runs
  assert int(whole.step) == int(resumed.step) == 4
  for name in ("params", "opt_state"):
    a = _flat(jax.device_get(getattr(whole, name)))
    b = _flat(jax.device_get(getattr(resumed, name)))
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}/{key}")
  on_disk = checkpoints.load_params(root / "resumed")
  for x, y in zip(jax.tree.leaves(on_disk), jax.tree.leaves(
      jax.device_get(whole.params))):
    np.testing.assert_array_equal(x, y)
  losses = lambda run: {r["step"]: r["train/loss"]
                        for r in read_metrics(root / run) if "train/loss" in r}
  assert losses("whole") == losses("resumed")
  assert sorted(losses("whole")) == [1, 2, 3, 4]
  for record in read_metrics(root / "whole"):
    if "train/loss" in record:
      assert record["train/loss"] == pytest.approx(
          record["train/l1"] + 0.5 * record["train/perceptual"], rel=1e-5)
      assert 0.0 < record["train/l1"] < 2.0 and record["train/grad_norm"] > 0


def test_run_writes_the_published_layout(resumed_runs):
  root, _, _ = resumed_runs
  workdir = root / "whole"
  state, file = checkpoints.load_state(workdir)
  assert file.name == "ckpt-2.flax" and int(state["step"]) == 4
  assert {"step", "params", "opt_state", "key", "data", "perceptual",
          "config", "multi_steps"} <= set(state)
  assert {"mini_step", "gradient_step", "inner_opt_state",
          "acc_grads"} <= set(state["opt_state"])
  assert train_state.decode_text(state["perceptual"]) == "ssim"
  assert train_state.decode_text(state["data"]["source"]) == "synthetic"
  assert int(state["data"]["next_step"]) == 4
  stored_config = json.loads(train_state.decode_text(state["config"]))
  assert stored_config["image_size"] == 64
  info = json.loads((workdir / "model.json").read_text())
  assert info["kind"] == "stereo-monocular" and info["image_size"] == 64
  assert info["num_context_views"] == 1 and info["perceptual"] == "ssim"
  assert checkpoints.ModelConfig(**info["config"]) == step_spec.model_config(
      synthetic_tiny.get_config())
  pipe = TransferPipeline.from_checkpoint(workdir, batch_size=2)
  assert pipe.image_size == 64 and pipe.kind == "stereo-monocular"
  context = np.zeros((1, 64, 64, 3), np.float32)
  target = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(
      np.float32)
  frames, path = pipe.transfer(context, target)
  assert frames.shape == (2, 64, 64, 3) and np.all(np.isfinite(frames))
  evals = [r for r in read_metrics(workdir) if "eval/recon_psnr" in r]
  assert evals and evals[-1]["step"] == 4
  assert "eval/copy_psnr" in evals[-1] and "samples_per_second" in read_metrics(
      workdir)[0]
  assert (workdir / "eval" / "step_0000004.png").is_file()
  assert list(workdir.glob("events.out.tfevents.*"))


class _NanBatchAt:
  """Training inputs whose batch for one optimiser step holds NaN frames
  (float frames pass through the objective as they are), so that step's loss
  is NaN."""

  def __init__(self, source, nan_step: int):
    self._source = source
    self._nan_step = nan_step

  def batch(self, step: int, micro: int = 0):
    batch = self._source.batch(step, micro)
    if step == self._nan_step:
      batch = {**batch, "frames": batch["frames"].astype(jnp.float32) * jnp.nan}
    return batch

  def state(self, next_step: int):
    return self._source.state(next_step)

  def close(self):
    self._source.close()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path,
                                                           monkeypatch):
  make_train_inputs = trainer.make_train_inputs
  monkeypatch.setattr(trainer, "make_train_inputs", lambda *args: _NanBatchAt(
      make_train_inputs(*args), nan_step=3))  # logged as step 4
  config = _tiny_config(total_steps=6, **{"eval.num_batches": 0})
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"nan at step 4.*ckpt-1\.flax \(step 2\)"):
    trainer.train_and_evaluate(config, tmp_path)
  state, file = checkpoints.load_state(tmp_path)
  assert file.name == "ckpt-1.flax" and int(state["step"]) == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))
  assert not (tmp_path / "checkpoints-0" / "ckpt-2.flax").exists()


def _assert_same_networks(params, reference, networks):
  for network in networks:
    for x, y in zip(jax.tree.leaves(jax.device_get(params[network])),
                    jax.tree.leaves(jax.device_get(reference[network]))):
      np.testing.assert_array_equal(x, y)


def test_multi_view_pose_encoder_starts_from_a_stereo_checkpoint(resumed_runs,
                                                                  tmp_path):
  root, whole, _ = resumed_runs
  config = _tiny_config(total_steps=0, num_context_views=3,
                        init_pose_encoder_from=str(root / "whole"))
  state = trainer.train_and_evaluate(config, tmp_path)
  _assert_same_networks(state.params, whole.params, ("PoseEnc",))
  info = json.loads((tmp_path / "model.json").read_text())
  assert info["kind"] == "multi-view" and info["num_context_views"] == 3
  bigger = _tiny_config(total_steps=0, init_pose_encoder_from=str(
      root / "whole"), **{"model.features": 32})
  with pytest.raises(step_spec.ConfigError, match="PoseEnc/.* must match"):
    trainer.train_and_evaluate(bigger, tmp_path / "other")


def test_multi_view_model_starts_from_a_whole_stereo_checkpoint(resumed_runs,
                                                                tmp_path):
  root, whole, _ = resumed_runs
  config = _tiny_config(total_steps=0, num_context_views=3,
                        init_params_from=str(root / "whole"))
  state = trainer.train_and_evaluate(config, tmp_path)
  _assert_same_networks(state.params, whole.params, ("PoseEnc", "Render"))
  flow = _tiny_config(total_steps=0, init_params_from=str(root / "whole"),
                      **{"model.render_output": "flow"})
  with pytest.raises(step_spec.ConfigError,
                     match="init_params_from=.*Render/.*renderer head"):
    trainer.train_and_evaluate(flow, tmp_path / "flow")


def _write_video_folders(root: pathlib.Path, videos: int, frames: int):
  """root/vidNN/frames/NNNNN.png: a texture sliding sideways (64 x 64)."""
  rng = np.random.default_rng(0)
  for v in range(videos):
    texture = rng.integers(0, 256, (64, 64 + 4 * frames, 3), dtype=np.uint8)
    folder = root / f"vid{v:02d}" / "frames"
    folder.mkdir(parents=True)
    for f in range(frames):
      Image.fromarray(texture[:, 4 * f:4 * f + 64]).save(
          folder / f"{f:05d}.png")


def test_training_on_video_folders_resumes_in_step(tmp_path):
  """data.source='datasets': the grain loader feeds the trainer, and a resumed
  run continues the loader at its step (same losses as without a break)."""
  _write_video_folders(tmp_path / "videos", videos=4, frames=8)
  dataset = {"name": "generic", "root": str(tmp_path / "videos"),
             "split": "all", "image_size": 64, "num_views": 2,
             "window_start": 2, "window_end": 5, "window_warmup_steps": 4,
             "cache_dir": str(tmp_path / "cache")}
  def run(workdir, steps):
    config = _tiny_config(total_steps=steps, **{
        "eval.num_batches": 0, "data.source": "datasets",
        "data.read_threads": 1})
    config.data.datasets = (dataset,)
    trainer.train_and_evaluate(config, workdir)
    return {r["step"]: r["train/loss"] for r in read_metrics(workdir)
            if "train/loss" in r}
  whole = run(tmp_path / "whole", 3)
  run(tmp_path / "resumed", 2)
  resumed = run(tmp_path / "resumed", 3)
  assert sorted(whole) == [1, 2, 3] and all(np.isfinite(list(whole.values())))
  assert resumed == whole
  state, _ = checkpoints.load_state(tmp_path / "resumed")
  assert train_state.decode_text(state["data"]["source"]) == "datasets"
  assert int(state["data"]["next_step"]) == 3


def _learning_run(workdir, steps):
  config = _tiny_config(total_steps=steps, log_every=10, checkpoint_every=1000,
                        eval_every=1000, **{"eval.num_batches": 0 if steps < 100
                                            else 2})
  trainer.train_and_evaluate(config, workdir)
  return read_metrics(workdir)


def test_it_learns(tmp_path):
  """synthetic_tiny on a fixed seed: the loss drops clearly within 60 steps."""
  records = _learning_run(tmp_path, 60)
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) == 6
  assert losses[-1] < 0.85 * losses[0], losses


@pytest.mark.slow
def test_it_learns_beyond_copying_the_context(tmp_path):
  """300 steps: reconstructions beat the copy-the-context baseline."""
  records = _learning_run(tmp_path, 300)
  final = [r for r in records if "eval/recon_psnr" in r][-1]
  assert final["step"] == 300
  assert final["eval/recon_psnr"] > final["eval/copy_psnr"] + 1.0, final


def test_a_pair_encoder_run_probes_its_latents_and_stops_when_they_do_not_learn(
    tmp_path):
  """A correlation-encoder run measures the motion probe at each evaluation
  and stops at eval.stop_step when the shift R2 is below the bar (set
  unreachably high here), keeping that step's checkpoint."""
  config = _tiny_config(**{"total_steps": 6, "eval_every": 2,
                           "model.pair_input": "correlation",
                           "eval.motion_probe_clips": 6, "eval.stop_step": 4,
                           "eval.stop_below_shift_r2": 2.0})
  state = trainer.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 4
  rows = read_metrics(tmp_path)
  probes = [r for r in rows if "eval/probe_r2_shift_x" in r]
  assert [r["step"] for r in probes] == [2, 4]
  assert all(-10 < r["eval/probe_r2_parallax"] <= 1 for r in probes)
  params = checkpoints.load_params(tmp_path / "checkpoints-0")
  assert checkpoints.infer_config(params).pair_input == "correlation"
