"""The fields every training config has, with the published values as defaults.

Configs in this folder start from :func:`base_config` and change what differs.
Every field can be overridden on the command line, e.g.
``--config.total_steps=1000 --config.model.features=256``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import ml_collections
from ml_collections import config_dict

_Settings = TypeVar("_Settings")


def settings_from_config(cls: type[_Settings], config: Any,
                         what: str) -> _Settings:
  """A settings dataclass from a ConfigDict/mapping; unknown fields are errors."""
  values = dict(config)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"unknown {what} settings {unknown}; the settings are "
                     f"{sorted(names)}")
  return cls(**values)


def base_config() -> ml_collections.ConfigDict:
  """All trainer fields (published stereo-monocular settings where they apply).

  Fields:
    name: model name written to ``model.json``.
    model: network sizes (``xfactor_core.checkpoints.ModelConfig`` fields).
    image_size: square frame size in pixels (an even multiple of the patch).
    num_context_views: 1 (stereo-monocular) or more (multi-view); clips have
      ``num_context_views + 1`` frames.
    dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
    remat: recompute each layer in the backward pass (saves memory).
    attention_impl: "auto", "xla", "split" (half the attention work for the
      balanced quadrant masks) or "cudnn".
    attention_dtype: None, or "bfloat16" to round q, k, v as the published
      kernels did.
    batch_size: the true (global) batch per optimiser step.
    micro_batch_size: clips per forward/backward pass (0: batch_size); the
      gradients of batch_size / micro_batch_size passes are accumulated.
    total_steps: optimiser steps to train.
    log_every, checkpoint_every, eval_every: intervals in optimiser steps.
    max_checkpoints_to_keep: older checkpoints are deleted.
    seed: initialisation, objective and synthetic-data seed.
    optimizer: ``training.optim.OptimizerSettings`` fields.
    objective: ``training.objective.ObjectiveSettings`` fields.
    perceptual.kind: "auto" (LPIPS-VGG if weights are set, else SSIM),
      "lpips" or "ssim"; perceptual.weights: LPIPS-VGG weights file.
    data.source: "synthetic" (rendered on the devices) or "datasets".
    data.roots: dataset root per published dataset name (re10k, dl3dv, co3d,
      mvimgnet); the non-empty ones are used with the published sampler
      settings of the model kind.
    data.datasets: explicit loader configs (``loader.default_dataset_config``
      fields) used instead of data.roots when non-empty.
    data.worker_count, data.read_threads, data.prefetch_batches: grain
      settings; data.device_prefetch: batches in flight on the devices.
    data.supersample: synthetic-world samples per pixel side.
    data.world: the synthetic world's curriculum and photos
      (``training.inputs.WorldSchedule`` fields).
    eval.batch_size: clips per evaluation batch (0: the micro-batch size);
      eval.num_batches: batches per evaluation (0: no evaluation); eval.seed:
      the held-out synthetic world (a seed other than training's);
      eval.num_images:
      rows of the PNG written to ``<workdir>/eval/``; eval.transfer_pairs:
      synthetic scene pairs with the same camera motion, for a transfer PSNR
      (0: off).
    init_pose_encoder_from: a checkpoint whose PoseEnc initialises this model
      (the multi-view model starts from the stereo-monocular one).
    init_params_from: a checkpoint whose PoseEnc and Render both initialise
      this model (the networks do not depend on the number of context views,
      so a multi-view model can start from a whole stereo-monocular one);
      it takes precedence over init_pose_encoder_from.
    distributed: coordinator_address ("" = single process unless the
      XFACTOR_COORDINATOR_ADDRESS environment variable is set, "auto" = let JAX
      detect the cluster), num_processes, process_id (or XFACTOR_NUM_PROCESSES,
      XFACTOR_PROCESS_ID).
    debug.nan_at_step: k >= 0 makes the loss NaN in the step that starts at
      state.step == k (logged as step k + 1); tests the NaN stop.
    progress_bar: show a tqdm bar.
  """
  config = ml_collections.ConfigDict()
  config.name = "xfactor"
  config.model = ml_collections.ConfigDict(dict(
      features=1024, num_heads=16, patch_size=16, pose_layers=8,
      render_layers=8, pose_dim=256, num_global_tokens=32,
      render_output="rgb", global_warp=True))
  config.image_size = 256
  config.num_context_views = 1
  config.dtype = "bfloat16"
  config.remat = True
  config.attention_impl = "auto"
  config.attention_dtype = config_dict.placeholder(str)

  config.batch_size = 256
  config.micro_batch_size = 0
  config.total_steps = 100_000
  config.log_every = 100
  config.checkpoint_every = 5_000
  config.eval_every = 5_000
  config.max_checkpoints_to_keep = 3
  config.seed = 0

  config.optimizer = ml_collections.ConfigDict(dict(
      peak_lr=4e-4, init_lr=1e-12, end_lr=1e-4, warmup_steps=4_000,
      decay_steps=100_000, b1=0.9, b2=0.95, eps=1e-8, weight_decay=5e-3,
      grad_clip=1.0, spike_factor=0.0, spike_warmup=50))
  config.objective = ml_collections.ConfigDict(dict(
      self_decode_prob=0.05, all_zero_mask_prob=0.05, l1_weight=1.0,
      perceptual_weight=0.5, augment=True, brightness=0.2, contrast=0.2,
      saturation=0.2, hue=0.05, jitter_prob=0.9, blur_prob=0.3,
      blur_sigma_min=0.1, blur_sigma_max=2.0, blur_kernel=7,
      pose_encoding="pairs", gradient_weight=0.0, flow_supervision=0.0,
      flow_supervision_steps=0, fallback_penalty=0.0))
  config.perceptual = ml_collections.ConfigDict(dict(kind="auto", weights=""))

  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"
  config.data.roots = ml_collections.ConfigDict(dict(
      re10k="", dl3dv="", co3d="", mvimgnet=""))
  config.data.datasets = ()
  config.data.worker_count = 0
  config.data.read_threads = 2
  config.data.prefetch_batches = 2
  config.data.device_prefetch = 2
  config.data.supersample = 1
  config.data.world = ml_collections.ConfigDict(dict(
      motion_factor_start=1.0, max_objects_start=8, ramp_steps=0,
      photo_scene_prob=0.0, photos=""))

  config.eval = ml_collections.ConfigDict(dict(
      batch_size=0, num_batches=1, seed=1_000_003, num_images=4,
      transfer_pairs=0))
  config.init_pose_encoder_from = ""
  config.init_params_from = ""
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0))
  config.debug = ml_collections.ConfigDict(dict(nan_at_step=-1))
  config.progress_bar = True
  return config
