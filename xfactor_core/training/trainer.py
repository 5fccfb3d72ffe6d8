"""The XFactor trainer, for stereo-monocular and multi-view models alike.

    state = create_train_state(config, jax.random.key(0))
    state, metrics = train_step(state, batch, perceptual_params, spec=..., ...)
    train_and_evaluate(config, workdir)   # the whole run, resumable

Data parallel with ``jax.sharding`` (``training/sharding.py``): one mesh axis
``data`` over all devices of all processes; batches are split over it,
parameters and optimiser state are replicated, and XLA inserts the gradient
all-reduce. The same command runs on one CPU or many GPUs (several hosts: see
``xfactor_core.runtime.initialize_distributed``).

Work directory layout::

    <workdir>/checkpoints-0/     clu-format checkpoints (see checkpoints.py)
    <workdir>/model.json         name, kind, image_size, num_context_views,
                                 config (ModelConfig), perceptual
    <workdir>/metrics.jsonl      one JSON object per log/eval line
    <workdir>/events.out.tfevents.*   TensorBoard
    <workdir>/eval/step_NNNNNNN.png   context | target | reconstruction ||
                                      motion source (ref, target) | transfer

What a checkpoint holds is described in ``training/train_state.py``. Running
the same command on the same work directory resumes from the newest
checkpoint: step, optimiser state, RNG and data position, and so continues
exactly as an uninterrupted run.

Randomness: the objective's key for optimiser step ``s``, micro-batch ``m`` is
``fold_in(fold_in(run key, s), m)``; synthetic data uses its own key the same
way; real data is a pure function of the batch number (see data/loader.py).
Nothing depends on the device count, so 1 and N devices train the same model
(up to the order of floating-point sums).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import pathlib
import time
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm import tqdm

from xfactor_core import checkpoints
from xfactor_core.training import evaluation
from xfactor_core.training import inputs
from xfactor_core.training import objective
from xfactor_core.training import optim
from xfactor_core.training import perceptual as perceptual_lib
from xfactor_core.training import sharding
from xfactor_core.training import step_spec
from xfactor_core.training import train_state
from xfactor_core.training.train_state import TrainState
from xfactor_core.training.writer import MetricWriter

PathLike = Union[str, os.PathLike]
CHECKPOINT_DIR = "checkpoints-0"
# Tags that separate the PRNG streams derived from the seed (evaluation.py
# uses 3).
_INIT_TAG, _OBJECTIVE_TAG = 0, 1
Metrics = dict[str, jax.Array]


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; training stopped."""


# ------------------------------------------------------------- the state --


def _new_state(spec: step_spec.StepSpec, key: jax.Array) -> TrainState:
  params = step_spec.init_params(spec, jax.random.fold_in(key, _INIT_TAG))
  tx = optim.make_optimizer(spec.optimizer, spec.accumulation_steps)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    key=jax.random.key_data(key))


def create_train_state(
    config: Union[ml_collections.ConfigDict, step_spec.StepSpec],
    key: jax.Array, *, mesh: Optional[Mesh] = None) -> TrainState:
  """A fresh train state, replicated over ``mesh`` (default: all devices).

  Args:
    config: a training config or a :class:`step_spec.StepSpec`.
    key: the run's base PRNG key (typed key).
    mesh: the device mesh.
  """
  spec = (config if isinstance(config, step_spec.StepSpec)
          else step_spec.make_step_spec(config))
  mesh = mesh or sharding.make_mesh()
  return step_functions(spec, mesh).init(key)


# -------------------------------------------------------------- the steps --


def _step_key(state: TrainState) -> jax.Array:
  base = jax.random.wrap_key_data(state.key)
  base = jax.random.fold_in(base, _OBJECTIVE_TAG)
  return jax.random.fold_in(jax.random.fold_in(base, state.step),
                            state.opt_state.mini_step)


def train_step(state: TrainState, batch: inputs.Batch, perceptual_params: Any,
               *, spec: step_spec.StepSpec,
               perceptual_distance: perceptual_lib.DistanceFn
               ) -> tuple[TrainState, Metrics]:
  """One micro-step: loss, gradients, (accumulating) optimiser update.

  Args:
    state: the train state.
    batch: ``frames`` ``B x V x S x S x 3`` uint8 (clip order) and
      ``reference`` ``B`` int32.
    perceptual_params: constants of the perceptual distance.
    spec: sizes and settings.
    perceptual_distance: ``(params, prediction, target) -> B``.

  Returns:
    ``(new state, metrics)``; ``state.step`` advances once every
    ``spec.accumulation_steps`` calls, when the parameters change.
  """
  pose_enc, render = step_spec.build_models(spec)
  tx = optim.make_optimizer(spec.optimizer, spec.accumulation_steps)
  distance = functools.partial(perceptual_distance, perceptual_params)

  def loss_fn(params):
    return objective.xfactor_loss(
        params, batch, _step_key(state), pose_enc=pose_enc, render=render,
        settings=spec.objective, perceptual_distance=distance,
        step=state.step)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optim.global_norm(grads)
  if spec.optimizer.spike_factor > 0:
    metrics["skipped_updates"] = optim.skipped_updates(opt_state)
  metrics["learning_rate"] = optim.learning_rate_schedule(spec.optimizer)(
      state.step)
  completed = (opt_state.mini_step == 0).astype(state.step.dtype)
  return state.replace(step=state.step + completed, params=params,
                       opt_state=opt_state), metrics


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """Jitted ``init(key) -> state``, ``train_step(state, batch,
  perceptual_params) -> (state, metrics)`` (donates the state) and
  ``eval_step(params, batch, motion, key, perceptual_params)``
  (``evaluation.eval_step``)."""
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[..., tuple[TrainState, Metrics]]
  eval_step: evaluation.EvalStep


@functools.lru_cache(maxsize=16)
def step_functions(spec: step_spec.StepSpec, mesh: Mesh,
                   perceptual_distance: perceptual_lib.DistanceFn = (
                       perceptual_lib.ssim_distance)) -> StepFunctions:
  """The jitted step functions of a spec on a mesh: parameters and optimiser
  state replicated, batches split over the ``data`` axis. Cached, so runs in
  one process that share a spec compile once."""
  replicated = sharding.replicated(mesh)
  batch = sharding.batch_sharding(mesh)
  init = jax.jit(functools.partial(_new_state, spec), out_shardings=replicated)
  step = jax.jit(
      functools.partial(train_step, spec=spec,
                        perceptual_distance=perceptual_distance),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  evaluate = jax.jit(
      functools.partial(evaluation.eval_step, spec=spec,
                        perceptual_distance=perceptual_distance),
      out_shardings=(replicated, batch))
  return StepFunctions(init=init, train_step=step, eval_step=evaluate)


# ------------------------------------------------------------- the inputs --


def make_train_inputs(config: ml_collections.ConfigDict,
                      spec: step_spec.StepSpec, mesh: Mesh, micro_batch: int,
                      start_step: int
                      ) -> Union[inputs.SyntheticInputs, inputs.DatasetInputs]:
  """The training batches of ``config.data``, from ``start_step`` on."""
  source = config.data.source
  if source == "synthetic":
    try:
      schedule = inputs.WorldSchedule(**config.data.world)
    except (TypeError, ValueError) as e:
      raise step_spec.ConfigError(f"config.data.world: {e}") from e
    return inputs.SyntheticInputs(
        mesh, micro_batch, spec.num_views, spec.image_size,
        seed=int(config.seed),
        supersample=int(config.data.supersample), schedule=schedule,
        with_geometry=spec.objective.flow_supervision > 0)
  if source != "datasets":
    raise step_spec.ConfigError(
        f"data.source={source!r}: use 'synthetic' or 'datasets'")
  return inputs.DatasetInputs(
      _dataset_configs(config, spec), mesh, micro_batch, seed=int(config.seed),
      start_step=start_step, batches_per_step=spec.accumulation_steps,
      worker_count=int(config.data.worker_count),
      read_threads=int(config.data.read_threads),
      prefetch_batches=int(config.data.prefetch_batches),
      device_prefetch=int(config.data.device_prefetch))


def _dataset_configs(config: ml_collections.ConfigDict,
                     spec: step_spec.StepSpec) -> list[Any]:
  """``config.data.datasets``, or the published ones of ``config.data.roots``
  with the model's number of views."""
  from xfactor_core.data import loader  # pylint: disable=g-import-not-at-top
  datasets = list(config.data.datasets)
  if datasets:
    for dataset in datasets:
      if int(dataset.get("num_views", spec.num_views)) != spec.num_views:
        raise step_spec.ConfigError(
            f"dataset {dataset.get('name')} has num_views="
            f"{dataset.num_views} but the model takes {spec.num_views} "
            "(num_context_views + 1)")
    return datasets
  roots = {k: v for k, v in config.data.roots.items() if v}
  if not roots:
    raise step_spec.ConfigError(
        "data.source='datasets' but no dataset is configured: set a root, "
        "e.g. --config.data.roots.re10k=/data/re10k, or data.datasets")
  datasets = loader.published_dataset_configs(
      "stereo" if spec.num_views == 2 else "multiview", roots,
      image_size=spec.image_size)
  for dataset in datasets:
    if int(dataset.num_views) != spec.num_views:
      dataset.num_views = spec.num_views
      dataset.min_video_frames = max(int(dataset.min_video_frames),
                                     spec.num_views + 1)
  return datasets


# --------------------------------------------------------------- the run --


def _initial_state(config: ml_collections.ConfigDict, spec: step_spec.StepSpec,
                   compiled: StepFunctions, mesh: Mesh,
                   checkpoint_dir: pathlib.Path,
                   perceptual_name: str) -> tuple[TrainState, bool]:
  """The newest checkpoint's state, else a fresh one (with the PoseEnc and
  Render of ``config.init_params_from``, or else the PoseEnc of
  ``config.init_pose_encoder_from``, if set). Returns ``(state, resumed)``."""
  resumed = checkpoint_dir.is_dir() and any(checkpoint_dir.glob("ckpt-*.flax"))
  initial, init_source = None, ""
  if not resumed and config.init_params_from:
    init_source = str(config.init_params_from)
    initial = train_state.load_init_params(
        init_source, spec, ("PoseEnc", "Render"), "init_params_from")
  elif not resumed and config.init_pose_encoder_from:
    init_source = str(config.init_pose_encoder_from)
    initial = train_state.load_init_params(
        init_source, spec, ("PoseEnc",), "init_pose_encoder_from")
  state = compiled.init(jax.random.key(int(config.seed)))
  if resumed:
    state, stored = train_state.restore_state(state, checkpoint_dir, mesh)
    _warn_about_changes(stored, spec.accumulation_steps, perceptual_name)
    decode = train_state.decode_text
    logging.info("resumed from %s at step %d (data: %s)", checkpoint_dir,
                 int(sharding.to_host(state.step)),
                 {k: (decode(v) if np.asarray(v).dtype == np.uint8 else int(v))
                  for k, v in stored.get("data", {}).items()})
  elif initial is not None:
    state = train_state.with_params(state, initial, mesh)
    logging.info("%s initialised from %s", " and ".join(initial), init_source)
  return state, resumed


def _warn_about_changes(stored: dict[str, Any], accumulation: int,
                        perceptual_name: str) -> None:
  """Warns when a resumed run accumulates or measures differently."""
  if int(stored.get("multi_steps", accumulation)) != accumulation:
    logging.warning("the checkpoint accumulated %d micro-batches per step, "
                    "this run %d", int(stored["multi_steps"]), accumulation)
  stored_perceptual = train_state.decode_text(
      stored.get("perceptual", perceptual_name))
  if stored_perceptual != perceptual_name:
    logging.warning("resuming a run trained with the %s perceptual loss "
                    "with %s", stored_perceptual, perceptual_name)


def _mean_metrics(history: list[Metrics]) -> dict[str, float]:
  stacked = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *history)
  return {k: float(sharding.to_host(v)) for k, v in stacked.items()}


def _latest_checkpoint_note(directory: pathlib.Path) -> str:
  try:
    stored, file = checkpoints.load_state(directory)
    return (f"the last good checkpoint is {file} (step "
            f"{int(stored['step'])})")
  except checkpoints.CheckpointError:
    return "no checkpoint was written yet"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: PathLike) -> TrainState:
  """Trains (or resumes) a model in ``workdir`` and returns the final state.

  Raises:
    NonFiniteLossError: the loss became NaN/inf; nothing after the last good
      checkpoint is saved.
    step_spec.ConfigError: the config cannot run on these devices.
  """
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  mesh = sharding.make_mesh()
  micro_batch, accumulation = step_spec.batch_layout(config, mesh.size)
  spec = step_spec.make_step_spec(config, accumulation)
  total_steps = int(config.total_steps)
  perceptual = perceptual_lib.make_perceptual(
      str(config.perceptual.kind), str(config.perceptual.weights or "") or None)
  compiled = step_functions(spec, mesh, perceptual.distance)
  checkpoint_dir = workdir / CHECKPOINT_DIR
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)

  state, resumed = _initial_state(config, spec, compiled, mesh, checkpoint_dir,
                                  perceptual.name)
  start_step = int(sharding.to_host(state.step))
  if is_main:
    checkpoints.write_model_info(
        workdir, name=str(config.name), image_size=spec.image_size,
        num_context_views=spec.num_context_views, config=spec.model.to_dict(),
        perceptual=perceptual.name)

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  logging.info(
      "%s model %s, %d parameters, %d x %d, %d context view(s); batch %d = %d "
      "x %d micro-batches on %d device(s) (%d process(es)); perceptual %s",
      checkpoints.model_kind(spec.num_context_views), spec.model, num_params,
      spec.image_size, spec.image_size, spec.num_context_views,
      int(config.batch_size), micro_batch, accumulation, mesh.size,
      jax.process_count(), perceptual.name)

  perceptual_params = jax.tree.map(
      lambda x: sharding.global_array(x, sharding.replicated(mesh)),
      perceptual.params)
  writer = MetricWriter(workdir, enabled=is_main)
  if start_step >= total_steps:
    logging.info("step %d >= total_steps %d: nothing to train", start_step,
                 total_steps)
    writer.close()
    return state
  train_inputs = make_train_inputs(config, spec, mesh, micro_batch,
                                   start_step)
  evaluator = (evaluation.Evaluator(config, spec, mesh, compiled.eval_step,
                                    perceptual_params, micro_batch, workdir,
                                    writer)
               if int(config.eval.num_batches) > 0 else None)
  if not resumed and is_main:
    writer.write_text(start_step, "config", config.to_json_best_effort(
        indent=1))

  def save(step: int) -> None:
    payload = train_state.state_dict(
        state, config=config, perceptual_name=perceptual.name,
        data_state=train_inputs.state(step), accumulation_steps=accumulation)
    if is_main:
      file = checkpoints.save_checkpoint(
          checkpoint_dir, payload,
          max_to_keep=int(config.max_checkpoints_to_keep))
      logging.info("step %d: saved %s", step, file)

  def check_finite(step: int, metrics: Metrics) -> None:
    loss = float(sharding.to_host(metrics["loss"]))
    if math.isfinite(loss):
      return
    grad_norm = float(sharding.to_host(metrics["grad_norm"]))
    writer.write_scalars(step, {"train/loss": loss})
    raise NonFiniteLossError(
        f"the training loss is {loss} at step {step} (gradient norm "
        f"{grad_norm}); training stopped and nothing after it was saved: "
        f"{_latest_checkpoint_note(checkpoint_dir)}. Lower "
        "optimizer.peak_lr, check the data, or try dtype=float32; rerunning "
        "the command resumes from that checkpoint")

  def log(step: int, history: list[Metrics], elapsed: float,
          steps: int) -> None:
    scalars = _mean_metrics(history)
    scalars["samples_per_second"] = (
        steps * int(config.batch_size) / max(elapsed, 1e-9))
    scalars["steps_per_second"] = steps / max(elapsed, 1e-9)
    writer.write_scalars(step, {
        (k if k.endswith("_per_second") else f"train/{k}"): v
        for k, v in scalars.items()})
    progress.set_postfix(loss=f"{scalars['loss']:.4f}",
                         psnr=f"{scalars['psnr']:.2f}")
    logging.info("step %d: loss %.5f, psnr %.2f dB, lr %.3g, grad norm "
                 "%.3g, %.2f samples/s", step, scalars["loss"],
                 scalars["psnr"], scalars["learning_rate"],
                 scalars["grad_norm"], scalars["samples_per_second"])

  log_every = max(int(config.log_every), 1)
  checkpoint_every = max(int(config.checkpoint_every), 1)
  eval_every = max(int(config.eval_every), 1)
  history: list[Metrics] = []
  pending: Optional[tuple[int, Metrics]] = None
  last_log_time, last_log_step = time.perf_counter(), start_step
  progress = tqdm(total=total_steps, initial=start_step, unit="step",
                  dynamic_ncols=True,
                  disable=not (is_main and bool(config.progress_bar)))
  try:
    for step in range(start_step, total_steps):
      micro_metrics = []
      for micro in range(accumulation):
        batch = train_inputs.batch(step, micro)
        state, metrics = compiled.train_step(state, batch, perceptual_params)
        micro_metrics.append(metrics)
      metrics = (micro_metrics[0] if accumulation == 1 else
                 jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)),
                              *micro_metrics))
      # The previous step's loss is checked once this step is queued, so the
      # host never stalls the device pipeline.
      done = step + 1  # steps are counted from 1 in logs and metrics
      if pending is not None:
        check_finite(*pending)
      pending = (done, metrics)
      history.append(metrics)
      progress.update(1)

      if done % log_every == 0 or done == total_steps:
        check_finite(*pending)
        log(done, history, time.perf_counter() - last_log_time,
            done - last_log_step)
        history = []
        last_log_time, last_log_step = time.perf_counter(), done

      if evaluator is not None and (done % eval_every == 0
                                    or done == total_steps):
        check_finite(*pending)
        results = evaluator(state, done)
        writer.write_scalars(done, results)
        logging.info("step %d: eval %s", done, ", ".join(
            f"{k.split('/')[-1]} {v:.4g}" for k, v in sorted(results.items())))
        if evaluator.should_stop(results, done):
          save(done)  # the loss was checked before the evaluation
          logging.warning(
              "step %d: stopped early: the latent poses do not carry the "
              "image motion (motion probe shift R2 %.2f / %.2f, below "
              "eval.stop_below_shift_r2=%g); the last checkpoint is kept",
              done, results["eval/probe_r2_shift_x"],
              results["eval/probe_r2_shift_y"],
              float(config.eval.stop_below_shift_r2))
          break

      if done % checkpoint_every == 0 or done == total_steps:
        check_finite(*pending)
        save(done)
  finally:
    progress.close()
    train_inputs.close()
    writer.close()
  return state
