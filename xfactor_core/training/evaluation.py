"""Evaluation during training: held-out synthetic clips and transfer pairs.

    metrics, images = eval_step(params, batch, motion, key, perceptual_params,
                                spec=spec, perceptual_distance=...)
    evaluator = Evaluator(config, spec, mesh, compiled_eval_step, ...)
    results = evaluator(state, step)   # {"eval/recon_psnr": ..., ...}

The evaluator renders its batches once, from the synthetic world with
``config.eval.seed`` (held out: it must differ from the training seed), and
at every evaluation writes the batch means of :func:`eval_step`'s metrics and
the picture ``<workdir>/eval/step_NNNNNNN.png`` (``media.eval_grid``: context
| target | reconstruction || motion source reference, target | transfer).
With ``config.eval.transfer_pairs`` it also renders scene pairs filmed along
the same camera path and reports the transfer PSNR against the true frames
(``eval/transfer_psnr``, picture ``step_NNNNNNN_transfer.png``).
With ``config.eval.motion_probe_clips`` it fits a ridge probe from the latent
poses of held-out frame pairs (``data.motion_pairs``) to their global image
motion (``metrics.global_motion``) and reports its R2 per term on other pairs
(``eval/probe_r2_shift_x`` ...): whether the latents carry the motion a
viewer sees, long before the renderer uses it. ``eval.stop_step`` and
``eval.stop_below_shift_r2`` stop a run whose mean shift R2 is still below
the bar at that step (:meth:`Evaluator.should_stop`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from xfactor_core.data import motion_pairs
from xfactor_core.inference import media
from xfactor_core.metrics import global_motion
from xfactor_core.metrics import image as image_metrics
from xfactor_core.training import inputs
from xfactor_core.training import objective
from xfactor_core.training import perceptual as perceptual_lib
from xfactor_core.training import sharding
from xfactor_core.training import step_spec
from xfactor_core.training import train_state
from xfactor_core.training.writer import MetricWriter

Params = Any
EVAL_DIR = "eval"
# Separates the evaluation's PRNG stream from the trainer's (tags 0 and 1).
_EVAL_TAG = 3
# The motion probe's pairs come from worlds eval.seed + offset (+1).
MOTION_PROBE_SEED_OFFSET = 104_729


def eval_step(params: Params, batch: inputs.Batch,
              motion: Optional[inputs.Batch], key: jax.Array,
              perceptual_params: Any, *, spec: step_spec.StepSpec,
              perceptual_distance: perceptual_lib.DistanceFn
              ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Evaluation of one batch.

  Computes the training objective without augmentation and self-decoding, the
  inference-mode reconstruction (no masks, latents of clean pairs), the copy
  baseline (the reference frame as the prediction) and a transfer: the
  target latent of ``motion`` (another batch with its own reference; None:
  the batch rolled by one example) rendered on this batch's context.

  Returns:
    ``(metrics, images)``: metrics are batch means (loss, l1, perceptual,
    psnr, recon_psnr, copy_psnr, transfer_psnr); images ``B x ...`` in
    [-1, 1]: context ``B x (V-1) x S x S x 3``, target, reconstruction,
    motion_reference, motion_target, transfer (``B x S x S x 3``).
    ``transfer_psnr`` compares the transfer with this batch's target: it is
    meaningful when ``motion`` has the same camera motion (synthetic pairs).
  """
  pose_enc, render = step_spec.build_models(spec)
  order_key, loss_key = jax.random.split(key)
  settings = dataclasses.replace(spec.objective, augment=False,
                                 self_decode_prob=0.0, flow_supervision=0.0)
  distance = functools.partial(perceptual_distance, perceptual_params)
  _, metrics = objective.xfactor_loss(
      params, batch, loss_key, pose_enc=pose_enc, render=render,
      settings=settings, perceptual_distance=distance)
  if motion is None:
    motion = jax.tree.map(lambda x: jnp.roll(x, 1, axis=0), batch)

  pose_apply = lambda x, m: pose_enc.apply({"params": params["PoseEnc"]}, x, m)
  render_apply = lambda context, poses: render.apply(
      {"params": params["Render"]}, context, poses)
  encoding = spec.objective.pose_encoding
  views = objective.order_views(order_key, objective.to_float_images(
      batch["frames"]), batch["reference"])
  motion_views = objective.order_views(order_key, objective.to_float_images(
      motion["frames"]), motion["reference"])
  latents = objective.pose_latents(pose_apply, views, None, encoding)
  motion_latents = objective.pose_latents(pose_apply, motion_views, None,
                                          encoding)
  target = views[:, -1]
  reconstruction = render_apply(views[:, :-1], latents)
  transfer = render_apply(views[:, :-1],
                          latents.at[:, -1].set(motion_latents[:, -1]))
  psnr = lambda x: jnp.mean(image_metrics.psnr(x, target))
  metrics.update(recon_psnr=psnr(reconstruction), copy_psnr=psnr(views[:, 0]),
                 transfer_psnr=psnr(transfer))
  images = {"context": views[:, :-1], "target": target,
            "reconstruction": reconstruction,
            "motion_reference": motion_views[:, 0],
            "motion_target": motion_views[:, -1], "transfer": transfer}
  return metrics, images


EvalStep = Callable[..., tuple[dict[str, jax.Array], dict[str, jax.Array]]]


class Evaluator:
  """Held-out synthetic batches (a different seed) and optional scene pairs.

  Args:
    config: the training config (its ``eval`` section, ``seed`` and
      ``data.supersample``).
    spec: sizes and settings.
    mesh: the device mesh.
    compiled_eval_step: :func:`eval_step` jitted for ``spec``,
      ``(params, batch, motion, key, perceptual_params) -> (metrics,
      images)``.
    perceptual_params: constants of the perceptual distance (replicated).
    micro_batch: clips per batch when ``config.eval.batch_size`` is 0.
    workdir: the run's work directory (pictures go to ``workdir/eval``).
    writer: where the pictures are also logged.

  Raises:
    step_spec.ConfigError: ``eval.seed`` equals the training seed.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               spec: step_spec.StepSpec, mesh: Mesh,
               compiled_eval_step: EvalStep, perceptual_params: Any,
               micro_batch: int, workdir: pathlib.Path, writer: MetricWriter):
    if int(config.eval.seed) == int(config.seed):
      raise step_spec.ConfigError(
          f"eval.seed={config.eval.seed} equals the training seed; held-out "
          "data needs a different seed")
    self._eval_step = compiled_eval_step
    self._perceptual_params = perceptual_params
    self._writer = writer
    self._dir = workdir / EVAL_DIR
    self._rows = int(config.eval.num_images)
    self._is_main = jax.process_index() == 0
    batch_size = int(config.eval.batch_size) or micro_batch
    source = inputs.SyntheticInputs(mesh, batch_size, spec.num_views,
                                    spec.image_size, seed=int(config.eval.seed),
                                    supersample=int(config.data.supersample))
    self._batches = [source.batch(i)
                     for i in range(int(config.eval.num_batches))]
    self._key = jax.random.fold_in(jax.random.key(int(config.eval.seed)),
                                   _EVAL_TAG)
    self._pairs = None
    self._num_pairs = int(config.eval.transfer_pairs)
    self._pair_args = (int(config.eval.seed), spec.num_views, spec.image_size,
                       mesh)
    self._probe_clips = int(config.eval.motion_probe_clips)
    self._probe_data = None
    pose_enc = step_spec.build_models(spec)[0]
    self._encode = jax.jit(lambda p, frames: pose_enc.apply(
        {"params": p}, objective.to_float_images(frames))[:, 1])
    self._image_size = spec.image_size
    self._stop_step = int(config.eval.stop_step)
    self._stop_r2 = float(config.eval.stop_below_shift_r2)

  def motion_probe(self, pose_params: Params) -> dict[str, float]:
    """R2 per global-motion term of a ridge probe on the latent poses
    (``{"eval/probe_r2_<term>": ...}``; empty without motion_probe_clips)."""
    if self._probe_clips <= 0:
      return {}
    seed = int(self._pair_args[0]) + MOTION_PROBE_SEED_OFFSET
    if self._probe_data is None:
      self._probe_data = [motion_pairs.motion_dataset(
          seed + i, self._probe_clips, self._image_size) for i in (0, 1)]
    params = jax.tree.map(sharding.to_host, pose_params)
    latents = [np.concatenate([np.asarray(self._encode(params,
                                                       d["frames"][i:i + 32]))
                               for i in range(0, len(d["frames"]), 32)])
               for d in self._probe_data]
    scores = global_motion.ridge_r2(latents[0], self._probe_data[0]["terms"],
                                    latents[1], self._probe_data[1]["terms"])
    return {f"eval/probe_r2_{k}": v for k, v in scores.items()}

  def should_stop(self, results: dict[str, float], step: int) -> bool:
    """True when the run reached ``eval.stop_step`` and the mean shift R2
    of the motion probe is below ``eval.stop_below_shift_r2``."""
    if (self._stop_step <= 0 or step < self._stop_step
        or "eval/probe_r2_shift_x" not in results):
      return False
    shift = 0.5 * (results["eval/probe_r2_shift_x"]
                   + results["eval/probe_r2_shift_y"])
    return shift < self._stop_r2

  def _transfer_pairs(self):
    """Scene B (targets) and scene A (motion) clips with equal camera motion."""
    if self._pairs is None and self._num_pairs > 0:
      from xfactor_core.data import synthetic  # pylint: disable=g-import-not-at-top,line-too-long
      seed, views, size, mesh = self._pair_args
      count = self._num_pairs
      shards = mesh.shape[sharding.DATA_AXIS]
      count += (-count) % shards
      pairs = [synthetic.make_transfer_pair(seed, i, views, size)
               for i in range(count)]
      split = sharding.batch_sharding(mesh)
      reference = np.full((count,), inputs.reference_index(views), np.int32)
      as_batch = lambda clips: {
          "frames": sharding.global_array(np.stack(clips), split),
          "reference": sharding.global_array(reference, split)}
      self._pairs = (as_batch([b["frames"] for _, b in pairs]),
                     as_batch([a["frames"] for a, _ in pairs]))
    return self._pairs

  def __call__(self, state: train_state.TrainState,
               step: int) -> dict[str, float]:
    """Evaluates ``state.params``; returns ``{"eval/<metric>": mean}``."""
    totals: dict[str, float] = {}
    first_images = None
    for i, batch in enumerate(self._batches):
      metrics, images = self._eval_step(
          state.params, batch, None, jax.random.fold_in(self._key, i),
          self._perceptual_params)
      for name, value in metrics.items():
        if name != "transfer_psnr":
          totals[name] = totals.get(name, 0.0) + float(sharding.to_host(value))
      if first_images is None:
        first_images = images
    results = {f"eval/{k}": v / len(self._batches) for k, v in totals.items()}
    pair_images = None
    pairs = self._transfer_pairs()
    if pairs is not None:
      metrics, pair_images = self._eval_step(
          state.params, pairs[0], pairs[1], self._key, self._perceptual_params)
      results["eval/transfer_psnr"] = float(sharding.to_host(
          metrics["transfer_psnr"]))
      results["eval/transfer_recon_psnr"] = float(sharding.to_host(
          metrics["recon_psnr"]))
    results.update(self.motion_probe(state.params["PoseEnc"]))
    self._write_images(step, first_images, "")
    if pair_images is not None:
      self._write_images(step, pair_images, "_transfer")
    return results

  def _write_images(self, step: int, images: dict[str, jax.Array],
                    suffix: str) -> None:
    host = {k: sharding.to_host(v) for k, v in images.items()}
    if not self._is_main:
      return
    grid = media.eval_grid(host, self._rows)
    self._dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(self._dir / f"step_{step:07d}{suffix}.png")
    self._writer.write_image(step, f"eval/images{suffix}", grid)
