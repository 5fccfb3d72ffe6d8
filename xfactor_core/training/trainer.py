"""The XFactor trainer, for stereo-monocular and multi-view models alike.

    state = create_train_state(config, jax.random.key(0))
    state, metrics = train_step(state, batch, perceptual_params, spec=..., ...)
    train_and_evaluate(config, workdir)   # the whole run, resumable

Data parallel with ``jax.sharding``: one mesh axis ``data`` over all devices of
all processes; batches are split over it, parameters and optimiser state are
replicated, and XLA inserts the gradient all-reduce. The same command runs on
one CPU or many GPUs (several hosts: see :func:`initialize_distributed`).

Work directory layout::

    <workdir>/checkpoints-0/     clu-format checkpoints (see checkpoints.py)
    <workdir>/model.json         name, kind, image_size, num_context_views,
                                 config (ModelConfig), perceptual
    <workdir>/metrics.jsonl      one JSON object per log/eval line
    <workdir>/events.out.tfevents.*   TensorBoard
    <workdir>/eval/step_NNNNNNN.png   context | target | reconstruction ||
                                      motion source (ref, target) | transfer

A checkpoint holds ``step``, ``params`` {PoseEnc, Render}, ``opt_state``
(optax.MultiSteps, the published layout), ``key`` (the run's base PRNG key
data), ``data`` (source, seed, next step), ``perceptual`` and ``config`` (both
as UTF-8 bytes in a uint8 array, see :func:`decode_text`), ``multi_steps``.
Running the same command on the same work directory resumes from the newest
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
import json
import logging
import math
import os
import pathlib
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization
from flax import struct
from flax import traverse_util
from jax.sharding import Mesh
from PIL import Image
from tqdm import tqdm

from xfactor_core import checkpoints
from xfactor_core import models
from xfactor_core.training import inputs
from xfactor_core.training import objective
from xfactor_core.training import optim
from xfactor_core.training import perceptual as perceptual_lib
from xfactor_core.training.writer import MetricWriter

PathLike = Union[str, os.PathLike]
Params = Any
CHECKPOINT_DIR = "checkpoints-0"
EVAL_DIR = "eval"
# Tags that separate the PRNG streams derived from the seed.
_INIT_TAG, _OBJECTIVE_TAG, _EVAL_TAG = 0, 1, 3


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; training stopped."""


class ConfigError(ValueError):
  """A training config that cannot run (the message says what to change)."""


@struct.dataclass
class TrainState:
  """What one training step reads and writes.

  Attributes:
    step: optimiser steps done (int32 scalar).
    params: ``{"PoseEnc": ..., "Render": ...}``.
    opt_state: ``optax.MultiSteps`` state.
    key: the run's base PRNG key as raw ``uint32[2]`` key data.
  """
  step: jax.Array
  params: Params
  opt_state: Any
  key: jax.Array


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything the compiled step functions depend on (hashable)."""
  model: checkpoints.ModelConfig
  image_size: int
  num_views: int
  dtype: Optional[str]
  remat: bool
  attention_impl: str
  attention_dtype: Optional[str]
  objective: objective.ObjectiveSettings
  optimizer: optim.OptimizerSettings
  accumulation_steps: int

  @property
  def num_context_views(self) -> int:
    return self.num_views - 1


# ------------------------------------------------------------ the config --


def _dtype_name(name: Optional[str], field: str) -> Optional[str]:
  if name in (None, "", "none", "None"):
    return None
  if name not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"config.{field}={name!r}: use float32, bfloat16 or "
                      "float16")
  return name


def model_config(config: ml_collections.ConfigDict) -> checkpoints.ModelConfig:
  """The network sizes of a training config."""
  try:
    return checkpoints.ModelConfig.from_dict(config.model)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from e


def batch_layout(config: ml_collections.ConfigDict,
                 num_devices: int) -> tuple[int, int]:
  """``(micro_batch_size, accumulation_steps)``, checked against the devices."""
  batch = int(config.batch_size)
  micro = int(config.micro_batch_size) or batch
  if batch < 1 or micro < 1:
    raise ConfigError(f"batch_size={batch} and micro_batch_size={micro} must "
                      "be positive")
  if batch % micro:
    raise ConfigError(f"batch_size={batch} is not a multiple of "
                      f"micro_batch_size={micro}; pick sizes that divide")
  if micro % num_devices:
    raise ConfigError(
        f"micro-batch {micro} cannot be split over {num_devices} devices; use "
        f"a multiple of {num_devices} (--config.micro_batch_size or "
        "--config.batch_size)")
  return micro, batch // micro


def make_step_spec(config: ml_collections.ConfigDict,
                   accumulation_steps: int = 1) -> StepSpec:
  """Validates a config and extracts what the compiled functions need."""
  model = model_config(config)
  size, patch = int(config.image_size), model.patch_size
  if size % (2 * patch):
    raise ConfigError(
        f"image_size={size} must be an even multiple of the patch size "
        f"{patch} (the quadrant masks split the patch grid in halves)")
  head_dim, remainder = divmod(model.features, model.num_heads)
  if remainder or head_dim % 4:
    raise ConfigError(
        f"features={model.features} / num_heads={model.num_heads} must give a "
        "head size divisible by 4 (2-D rotary embedding)")
  views = int(config.num_context_views)
  if views < 1:
    raise ConfigError(f"num_context_views={views} must be at least 1")
  if config.attention_impl not in models.IMPLEMENTATIONS:
    raise ConfigError(f"attention_impl={config.attention_impl!r}: use one of "
                      f"{models.IMPLEMENTATIONS}")
  try:
    objective_settings = objective.ObjectiveSettings.from_config(
        config.objective)
    optimizer_settings = optim.OptimizerSettings.from_config(config.optimizer)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  return StepSpec(
      model=model, image_size=size, num_views=views + 1,
      dtype=_dtype_name(config.dtype, "dtype"), remat=bool(config.remat),
      attention_impl=str(config.attention_impl),
      attention_dtype=_dtype_name(config.attention_dtype, "attention_dtype"),
      objective=objective_settings, optimizer=optimizer_settings,
      accumulation_steps=int(accumulation_steps))


def model_kind(num_context_views: int) -> str:
  return "multi-view" if num_context_views > 1 else "stereo-monocular"


# ------------------------------------------------------------- the model --


def build_models(spec: StepSpec) -> tuple[models.PoseEnc, models.Render]:
  """The two modules with the spec's sizes and compute options."""
  dtype = None if spec.dtype is None else jnp.dtype(spec.dtype)
  attention_dtype = (None if spec.attention_dtype is None
                     else jnp.dtype(spec.attention_dtype))
  options = dict(remat=spec.remat, attention_impl=spec.attention_impl,
                 attention_dtype=attention_dtype, dtype=dtype)
  return (models.PoseEnc(**spec.model.pose_enc_kwargs(), **options),
          models.Render(**spec.model.render_kwargs(), **options))


def init_params(spec: StepSpec, key: jax.Array) -> Params:
  """Fresh parameters ``{"PoseEnc": ..., "Render": ...}`` (float32)."""
  pose_enc, render = build_models(spec)
  s = spec.image_size
  pose_key, render_key = jax.random.split(key)
  pair = jnp.zeros((1, 2, s, s, 3), jnp.float32)
  context = jnp.zeros((1, spec.num_views - 1, s, s, 3), jnp.float32)
  poses = jnp.zeros((1, spec.num_views, spec.model.pose_dim), jnp.float32)
  return {"PoseEnc": pose_enc.init(pose_key, pair)["params"],
          "Render": render.init(render_key, context, poses)["params"]}


def make_optimizer(spec: StepSpec) -> optax.GradientTransformation:
  return optim.make_optimizer(spec.optimizer, spec.accumulation_steps)


def _new_state(spec: StepSpec, key: jax.Array) -> TrainState:
  params = init_params(spec, jax.random.fold_in(key, _INIT_TAG))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=make_optimizer(spec).init(params),
                    key=jax.random.key_data(key))


def create_train_state(config: Union[ml_collections.ConfigDict, StepSpec],
                       key: jax.Array, *, mesh: Optional[Mesh] = None
                       ) -> TrainState:
  """A fresh train state, replicated over ``mesh`` (default: all devices).

  Args:
    config: a training config or a :class:`StepSpec`.
    key: the run's base PRNG key (typed key).
    mesh: the device mesh.
  """
  spec = config if isinstance(config, StepSpec) else make_step_spec(config)
  mesh = mesh or inputs.make_mesh()
  return step_functions(spec, mesh).init(key)


# -------------------------------------------------------------- the steps --


def _step_key(state: TrainState) -> jax.Array:
  base = jax.random.wrap_key_data(state.key)
  base = jax.random.fold_in(base, _OBJECTIVE_TAG)
  return jax.random.fold_in(jax.random.fold_in(base, state.step),
                            state.opt_state.mini_step)


def train_step(state: TrainState, batch: inputs.Batch, perceptual_params: Any,
               nan_at_step: Union[int, jax.Array] = -1, *, spec: StepSpec,
               perceptual_distance: perceptual_lib.DistanceFn
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One micro-step: loss, gradients, (accumulating) optimiser update.

  Args:
    state: the train state.
    batch: ``frames`` ``B x V x S x S x 3`` uint8 (clip order) and
      ``reference`` ``B`` int32.
    perceptual_params: constants of the perceptual distance.
    nan_at_step: debug knob (config.debug.nan_at_step): the loss, and so the
      gradients, become NaN when ``state.step`` equals it; -1 never. Traced,
      so changing it does not recompile.
    spec: sizes and settings.
    perceptual_distance: ``(params, prediction, target) -> B``.

  Returns:
    ``(new state, metrics)``; ``state.step`` advances once every
    ``spec.accumulation_steps`` calls, when the parameters change.
  """
  pose_enc, render = build_models(spec)
  tx = make_optimizer(spec)
  distance = functools.partial(perceptual_distance, perceptual_params)

  def loss_fn(params):
    loss, metrics = objective.xfactor_loss(
        params, batch, _step_key(state), pose_enc=pose_enc, render=render,
        settings=spec.objective, perceptual_distance=distance,
        step=state.step)
    loss = loss * jnp.where(state.step == nan_at_step, jnp.nan, 1.0)
    metrics["loss"] = loss
    return loss, metrics

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


def eval_step(params: Params, batch: inputs.Batch,
              motion: Optional[inputs.Batch], key: jax.Array,
              perceptual_params: Any, *, spec: StepSpec,
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
  pose_enc, render = build_models(spec)
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
  metrics.update(
      recon_psnr=jnp.mean(objective.psnr(reconstruction, target)),
      copy_psnr=jnp.mean(objective.psnr(views[:, 0], target)),
      transfer_psnr=jnp.mean(objective.psnr(transfer, target)))
  images = {"context": views[:, :-1], "target": target,
            "reconstruction": reconstruction,
            "motion_reference": motion_views[:, 0],
            "motion_target": motion_views[:, -1], "transfer": transfer}
  return metrics, images


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """Jitted ``init(key) -> state``, ``train_step(state, batch,
  perceptual_params, nan_at_step) -> (state, metrics)`` (donates the state) and
  ``eval_step(params, batch, motion, key, perceptual_params)``."""
  init: Callable[[jax.Array], TrainState]
  train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  eval_step: Callable[..., tuple[dict[str, jax.Array], dict[str, jax.Array]]]


@functools.lru_cache(maxsize=16)
def step_functions(spec: StepSpec, mesh: Mesh,
                   perceptual_distance: perceptual_lib.DistanceFn = (
                       perceptual_lib.ssim_distance)) -> StepFunctions:
  """The jitted step functions of a spec on a mesh: parameters and optimiser
  state replicated, batches split over the ``data`` axis. Cached, so runs in
  one process that share a spec compile once."""
  replicated = inputs.replicated(mesh)
  batch = inputs.batch_sharding(mesh)
  init = jax.jit(functools.partial(_new_state, spec), out_shardings=replicated)
  step = jax.jit(
      functools.partial(train_step, spec=spec,
                        perceptual_distance=perceptual_distance),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
  evaluate = jax.jit(
      functools.partial(eval_step, spec=spec,
                        perceptual_distance=perceptual_distance),
      out_shardings=(replicated, batch))
  return StepFunctions(init=init, train_step=step, eval_step=evaluate)


# ------------------------------------------------------------ checkpoints --


def encode_text(text: str) -> np.ndarray:
  """Text as a uint8 array (msgpack checkpoints hold arrays, not strings)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).copy()


def decode_text(value: Any) -> str:
  """Inverse of :func:`encode_text` (also accepts str and bytes)."""
  if isinstance(value, str):
    return value
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return np.asarray(value, np.uint8).tobytes().decode("utf-8")


def _host_tree(tree: Any) -> Any:
  return jax.tree.map(inputs.to_host, tree)


def state_dict(state: TrainState, *, config: ml_collections.ConfigDict,
               perceptual_name: str, data_state: dict[str, Any],
               accumulation_steps: int) -> dict[str, Any]:
  """The checkpoint dictionary (numpy) of a train state."""
  return {
      "step": np.int64(inputs.to_host(state.step)),
      "params": _host_tree(state.params),
      "opt_state": serialization.to_state_dict(_host_tree(state.opt_state)),
      "key": inputs.to_host(state.key),
      "data": {k: (encode_text(v) if isinstance(v, str) else np.int64(v))
               for k, v in data_state.items()},
      "perceptual": encode_text(perceptual_name),
      "config": encode_text(config.to_json_best_effort(sort_keys=True)),
      "multi_steps": np.int64(accumulation_steps),
  }


def _check_same_shapes(template: Any, restored: Any, what: str,
                       source: Any) -> None:
  flat_t = traverse_util.flatten_dict(serialization.to_state_dict(template),
                                      sep="/")
  flat_r = traverse_util.flatten_dict(serialization.to_state_dict(restored),
                                      sep="/")
  for path, leaf in flat_t.items():
    if path not in flat_r:
      raise checkpoints.CheckpointError(
          f"{source}: {what}/{path} is missing; the work directory holds a "
          "checkpoint of a different model or optimiser. Use a new --workdir "
          "or the config the checkpoint was trained with")
    if np.shape(leaf) != np.shape(flat_r[path]):
      raise checkpoints.CheckpointError(
          f"{source}: {what}/{path} has shape {np.shape(flat_r[path])} but "
          f"this config needs {np.shape(leaf)}; use a new --workdir or the "
          "config the checkpoint was trained with")


def restore_state(template: TrainState, directory: PathLike,
                  mesh: Mesh) -> tuple[TrainState, dict[str, Any]]:
  """Loads the newest checkpoint of ``directory`` into ``template``'s shape.

  Returns:
    ``(state replicated over mesh, the stored dictionary)``.
  """
  stored, file = checkpoints.load_state(directory)
  for field in ("step", "params", "opt_state", "key"):
    if field not in stored:
      raise checkpoints.CheckpointError(
          f"{file} has no {field!r}: it holds weights only, not a train "
          "state; resume needs a checkpoint written by the trainer (to start "
          "from weights, use init_pose_encoder_from or a new --workdir)")
  host_template = _host_tree(template)
  params = serialization.from_state_dict(host_template.params,
                                         stored["params"])
  _check_same_shapes(host_template.params, params, "params", file)
  opt_state = serialization.from_state_dict(host_template.opt_state,
                                            stored["opt_state"])
  _check_same_shapes(host_template.opt_state, opt_state, "opt_state", file)
  restored = TrainState(step=np.asarray(stored["step"], np.int32),
                        params=params, opt_state=opt_state,
                        key=np.asarray(stored["key"], np.uint32))
  restored = jax.tree.map(
      lambda t, x: np.asarray(x, dtype=np.asarray(t).dtype),
      host_template, restored)
  sharding = inputs.replicated(mesh)
  return jax.tree.map(lambda x: inputs.global_array(x, sharding),
                      restored), stored


def load_init_params(path: PathLike, spec: StepSpec,
                     networks: Sequence[str], option: str) -> Params:
  """The weights of ``networks`` ("PoseEnc", "Render") in another checkpoint,
  checked against ``spec``'s model.

  Args:
    path: the checkpoint (a folder or file that ``checkpoints.load_params``
      reads).
    spec: this run's model.
    networks: which networks to take.
    option: the config field that named ``path``, for error messages.

  Returns:
    ``{network: parameter tree}`` (float32 numpy) in this model's structure.

  Raises:
    ConfigError: naming the first parameter whose shape differs.
  """
  stored = checkpoints.load_params(path)
  wanted = jax.eval_shape(lambda: init_params(spec, jax.random.key(0)))
  loaded = {}
  for network in networks:
    flat_new = traverse_util.flatten_dict(stored.get(network, {}), sep="/")
    for name, leaf in traverse_util.flatten_dict(wanted[network],
                                                 sep="/").items():
      if name not in flat_new or np.shape(flat_new[name]) != tuple(leaf.shape):
        got = np.shape(flat_new[name]) if name in flat_new else "missing"
        raise ConfigError(
            f"{option}={path}: {network}/{name} is {got} there but this model "
            f"needs {tuple(leaf.shape)}; the sizes and renderer head "
            "(config.model) must match the checkpoint's")
    loaded[network] = jax.tree.map(
        lambda t, x: np.asarray(x, t.dtype), wanted[network],
        serialization.from_state_dict(wanted[network], stored[network]))
  return loaded


def with_params(state: TrainState, new_params: Params,
                mesh: Mesh) -> TrainState:
  """``state`` with the networks in ``new_params`` replaced (replicated over
  ``mesh``)."""
  sharding = inputs.replicated(mesh)
  new_params = jax.tree.map(lambda x: inputs.global_array(x, sharding),
                            new_params)
  return state.replace(params={**state.params, **new_params})


def write_model_info(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                     spec: StepSpec, perceptual_name: str) -> None:
  """``<workdir>/model.json`` for ``TransferPipeline.from_checkpoint``."""
  info = {
      "name": str(config.name),
      "kind": model_kind(spec.num_context_views),
      "image_size": spec.image_size,
      "num_context_views": spec.num_context_views,
      "config": spec.model.to_dict(),
      "perceptual": perceptual_name,
  }
  path = workdir / checkpoints.MODEL_INFO
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(info, indent=1) + "\n")
  os.replace(tmp, path)


# ----------------------------------------------------------- distribution --


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins a multi-process run when configured (call before any JAX work).

  ``config.distributed.coordinator_address`` (or the environment variable
  XFACTOR_COORDINATOR_ADDRESS) ``host:port`` with num_processes and process_id
  (or XFACTOR_NUM_PROCESSES / XFACTOR_PROCESS_ID) starts
  ``jax.distributed.initialize``; "auto" lets JAX detect the cluster (SLURM,
  Open MPI, cloud TPU); empty: a single process.
  """
  settings = config.get("distributed", ml_collections.ConfigDict())
  address = (settings.get("coordinator_address", "")
             or os.environ.get("XFACTOR_COORDINATOR_ADDRESS", ""))
  if not address:
    return
  if address == "auto":
    jax.distributed.initialize()
  else:
    processes = int(os.environ.get("XFACTOR_NUM_PROCESSES",
                                   settings.get("num_processes", 1)))
    process_id = int(os.environ.get("XFACTOR_PROCESS_ID",
                                    settings.get("process_id", 0)))
    if not 0 <= process_id < processes:
      raise ConfigError(f"process_id={process_id} must lie in [0, "
                        f"{processes}) (num_processes={processes})")
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=processes, process_id=process_id)
  logging.info("process %d of %d; %d local and %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


# ------------------------------------------------------------ evaluation --


def _to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0,
                 255).astype(np.uint8)


def eval_grid(images: dict[str, np.ndarray], rows: int) -> np.ndarray:
  """One row per example: context views | target | reconstruction, then,
  after a gap, motion source reference | motion source target | transfer."""
  gap = 4
  lines = []
  for i in range(min(rows, len(images["target"]))):
    left = list(images["context"][i]) + [images["target"][i],
                                         images["reconstruction"][i]]
    right = [images["motion_reference"][i], images["motion_target"][i],
             images["transfer"][i]]
    size = left[0].shape[0]
    spacer = np.ones((size, gap, 3), np.float32)
    cells = []
    for tile in left:
      cells += [tile, spacer]
    cells += [spacer, spacer]
    for tile in right:
      cells += [tile, spacer]
    lines += [np.concatenate(cells[:-1], axis=1),
              np.ones((gap, sum(c.shape[1] for c in cells[:-1]), 3))]
  return _to_uint8(np.concatenate(lines[:-1], axis=0))


class _Evaluator:
  """Held-out synthetic batches (a different seed) and optional scene pairs."""

  def __init__(self, config: ml_collections.ConfigDict, spec: StepSpec,
               mesh: Mesh, compiled: StepFunctions, perceptual_params: Any,
               micro_batch: int, workdir: pathlib.Path, writer: MetricWriter):
    self._compiled = compiled
    self._perceptual_params = perceptual_params
    self._writer = writer
    self._dir = workdir / EVAL_DIR
    self._rows = int(config.eval.num_images)
    self._is_main = jax.process_index() == 0
    batch_size = int(config.eval.batch_size) or micro_batch
    if int(config.eval.seed) == int(config.seed):
      raise ConfigError(f"eval.seed={config.eval.seed} equals the training "
                        "seed; held-out data needs a different seed")
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

  def _transfer_pairs(self):
    """Scene B (targets) and scene A (motion) clips with equal camera motion."""
    if self._pairs is None and self._num_pairs > 0:
      from xfactor_core.data import synthetic  # pylint: disable=g-import-not-at-top,line-too-long
      seed, views, size, mesh = self._pair_args
      count = self._num_pairs
      shards = mesh.shape[inputs.DATA_AXIS]
      count += (-count) % shards
      pairs = [synthetic.make_transfer_pair(seed, i, views, size)
               for i in range(count)]
      sharding = inputs.batch_sharding(mesh)
      reference = np.full((count,), inputs.reference_index(views), np.int32)
      as_batch = lambda clips: {
          "frames": inputs.global_array(np.stack(clips), sharding),
          "reference": inputs.global_array(reference, sharding)}
      self._pairs = (as_batch([b["frames"] for _, b in pairs]),
                     as_batch([a["frames"] for a, _ in pairs]))
    return self._pairs

  def __call__(self, state: TrainState, step: int) -> dict[str, float]:
    totals: dict[str, float] = {}
    first_images = None
    for i, batch in enumerate(self._batches):
      metrics, images = self._compiled.eval_step(
          state.params, batch, None, jax.random.fold_in(self._key, i),
          self._perceptual_params)
      for name, value in metrics.items():
        if name != "transfer_psnr":
          totals[name] = totals.get(name, 0.0) + float(inputs.to_host(value))
      if first_images is None:
        first_images = images
    results = {f"eval/{k}": v / len(self._batches) for k, v in totals.items()}
    pair_images = None
    pairs = self._transfer_pairs()
    if pairs is not None:
      metrics, pair_images = self._compiled.eval_step(
          state.params, pairs[0], pairs[1], self._key, self._perceptual_params)
      results["eval/transfer_psnr"] = float(inputs.to_host(
          metrics["transfer_psnr"]))
      results["eval/transfer_recon_psnr"] = float(inputs.to_host(
          metrics["recon_psnr"]))
    self._write_images(step, first_images, "")
    if pair_images is not None:
      self._write_images(step, pair_images, "_transfer")
    return results

  def _write_images(self, step: int, images: dict[str, jax.Array],
                    suffix: str) -> None:
    host = {k: inputs.to_host(v) for k, v in images.items()}
    if not self._is_main:
      return
    grid = eval_grid(host, self._rows)
    self._dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(self._dir / f"step_{step:07d}{suffix}.png")
    self._writer.write_image(step, f"eval/images{suffix}", grid)


# -------------------------------------------------------------- the loop --


def make_train_inputs(config: ml_collections.ConfigDict, spec: StepSpec,
                       mesh: Mesh, micro_batch: int, start_step: int):
  source = config.data.source
  if source == "synthetic":
    try:
      schedule = inputs.WorldSchedule(**config.data.world)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.data.world: {e}") from e
    return inputs.SyntheticInputs(
        mesh, micro_batch, spec.num_views, spec.image_size,
        seed=int(config.seed),
        supersample=int(config.data.supersample), schedule=schedule,
        with_geometry=spec.objective.flow_supervision > 0)
  if source != "datasets":
    raise ConfigError(f"data.source={source!r}: use 'synthetic' or 'datasets'")
  from xfactor_core.data import loader  # pylint: disable=g-import-not-at-top
  datasets = list(config.data.datasets)
  if not datasets:
    roots = {k: v for k, v in config.data.roots.items() if v}
    if not roots:
      raise ConfigError(
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
  else:
    for dataset in datasets:
      if int(dataset.get("num_views", spec.num_views)) != spec.num_views:
        raise ConfigError(f"dataset {dataset.get('name')} has num_views="
                          f"{dataset.num_views} but the model takes "
                          f"{spec.num_views} (num_context_views + 1)")
  return inputs.DatasetInputs(
      datasets, mesh, micro_batch, seed=int(config.seed),
      start_step=start_step, batches_per_step=spec.accumulation_steps,
      worker_count=int(config.data.worker_count),
      read_threads=int(config.data.read_threads),
      prefetch_batches=int(config.data.prefetch_batches),
      device_prefetch=int(config.data.device_prefetch))


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *history)
  return {k: float(inputs.to_host(v)) for k, v in stacked.items()}


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
    ConfigError: the config cannot run on these devices.
  """
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  mesh = inputs.make_mesh()
  micro_batch, accumulation = batch_layout(config, mesh.size)
  spec = make_step_spec(config, accumulation)
  total_steps = int(config.total_steps)
  perceptual = perceptual_lib.make_perceptual(
      str(config.perceptual.kind), str(config.perceptual.weights or "") or None)
  compiled = step_functions(spec, mesh, perceptual.distance)
  checkpoint_dir = workdir / CHECKPOINT_DIR
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)

  resumed = checkpoint_dir.is_dir() and any(checkpoint_dir.glob("ckpt-*.flax"))
  initial, init_source = None, ""
  if not resumed and config.get("init_params_from"):
    init_source = str(config.init_params_from)
    initial = load_init_params(init_source, spec, ("PoseEnc", "Render"),
                               "init_params_from")
  elif not resumed and config.init_pose_encoder_from:
    init_source = str(config.init_pose_encoder_from)
    initial = load_init_params(init_source, spec, ("PoseEnc",),
                               "init_pose_encoder_from")
  state = compiled.init(jax.random.key(int(config.seed)))
  if resumed:
    state, stored = restore_state(state, checkpoint_dir, mesh)
    stored_data = stored.get("data", {})
    if int(stored.get("multi_steps", accumulation)) != accumulation:
      logging.warning("the checkpoint accumulated %d micro-batches per step, "
                      "this run %d", int(stored["multi_steps"]), accumulation)
    if "perceptual" in stored and decode_text(stored["perceptual"]) != (
        perceptual.name):
      logging.warning("resuming a run trained with the %s perceptual loss "
                      "with %s", decode_text(stored["perceptual"]),
                      perceptual.name)
    logging.info("resumed from %s at step %d (data: %s)", checkpoint_dir,
                 int(inputs.to_host(state.step)),
                 {k: (decode_text(v) if np.asarray(v).dtype == np.uint8 else
                      int(v)) for k, v in stored_data.items()})
  elif initial is not None:
    state = with_params(state, initial, mesh)
    logging.info("%s initialised from %s", " and ".join(initial), init_source)
  start_step = int(inputs.to_host(state.step))
  if is_main:
    write_model_info(workdir, config, spec, perceptual.name)

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  logging.info(
      "%s model %s, %d parameters, %d x %d, %d context view(s); batch %d = %d "
      "x %d micro-batches on %d device(s) (%d process(es)); perceptual %s",
      model_kind(spec.num_context_views), spec.model, num_params,
      spec.image_size, spec.image_size, spec.num_context_views,
      int(config.batch_size), micro_batch, accumulation, mesh.size,
      jax.process_count(), perceptual.name)

  perceptual_params = jax.tree.map(
      lambda x: inputs.global_array(x, inputs.replicated(mesh)),
      perceptual.params)
  writer = MetricWriter(workdir, enabled=is_main)
  if start_step >= total_steps:
    logging.info("step %d >= total_steps %d: nothing to train", start_step,
                 total_steps)
    writer.close()
    return state
  train_inputs = make_train_inputs(config, spec, mesh, micro_batch,
                                    start_step)
  evaluator = (_Evaluator(config, spec, mesh, compiled, perceptual_params,
                          micro_batch, workdir, writer)
               if int(config.eval.num_batches) > 0 else None)
  if not resumed and is_main:
    writer.write_text(start_step, "config", config.to_json_best_effort(
        indent=1))

  def save(step: int) -> None:
    data_state = train_inputs.state(step)
    payload = state_dict(state, config=config, perceptual_name=perceptual.name,
                         data_state=data_state,
                         accumulation_steps=accumulation)
    if is_main:
      file = checkpoints.save_checkpoint(
          checkpoint_dir, payload,
          max_to_keep=int(config.max_checkpoints_to_keep))
      logging.info("step %d: saved %s", step, file)

  def check_finite(step: int, metrics: dict[str, jax.Array]) -> None:
    loss = float(inputs.to_host(metrics["loss"]))
    if math.isfinite(loss):
      return
    grad_norm = float(inputs.to_host(metrics["grad_norm"]))
    writer.write_scalars(step, {"train/loss": loss})
    raise NonFiniteLossError(
        f"the training loss is {loss} at step {step} (gradient norm "
        f"{grad_norm}); training stopped and nothing after it was saved: "
        f"{_latest_checkpoint_note(checkpoint_dir)}. Lower "
        "optimizer.peak_lr, check the data, or try dtype=float32; rerunning "
        "the command resumes from that checkpoint")

  nan_at_step = np.int32(config.debug.nan_at_step)
  log_every = max(int(config.log_every), 1)
  checkpoint_every = max(int(config.checkpoint_every), 1)
  eval_every = max(int(config.eval_every), 1)
  history: list[dict[str, jax.Array]] = []
  pending: Optional[tuple[int, dict[str, jax.Array]]] = None
  last_log_time, last_log_step = time.perf_counter(), start_step
  progress = tqdm(total=total_steps, initial=start_step, unit="step",
                  dynamic_ncols=True,
                  disable=not (is_main and bool(config.progress_bar)))
  try:
    for step in range(start_step, total_steps):
      micro_metrics = []
      for micro in range(accumulation):
        batch = train_inputs.batch(step, micro)
        state, metrics = compiled.train_step(state, batch, perceptual_params,
                                             nan_at_step)
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
        scalars = _mean_metrics(history)
        elapsed = time.perf_counter() - last_log_time
        steps = done - last_log_step
        scalars["samples_per_second"] = (
            steps * int(config.batch_size) / max(elapsed, 1e-9))
        scalars["steps_per_second"] = steps / max(elapsed, 1e-9)
        writer.write_scalars(done, {
            (k if k.endswith("_per_second") else f"train/{k}"): v
            for k, v in scalars.items()})
        progress.set_postfix(loss=f"{scalars['loss']:.4f}",
                             psnr=f"{scalars['psnr']:.2f}")
        logging.info("step %d: loss %.5f, psnr %.2f dB, lr %.3g, grad norm "
                     "%.3g, %.2f samples/s", done, scalars["loss"],
                     scalars["psnr"], scalars["learning_rate"],
                     scalars["grad_norm"], scalars["samples_per_second"])
        history = []
        last_log_time, last_log_step = time.perf_counter(), done

      if evaluator is not None and (done % eval_every == 0
                                    or done == total_steps):
        check_finite(*pending)
        results = evaluator(state, done)
        writer.write_scalars(done, results)
        logging.info("step %d: eval %s", done, ", ".join(
            f"{k.split('/')[-1]} {v:.4g}" for k, v in sorted(results.items())))

      if done % checkpoint_every == 0 or done == total_steps:
        check_finite(*pending)
        save(done)
  finally:
    progress.close()
    train_inputs.close()
    writer.close()
  return state
