"""The fields every training config has, with the published values as defaults.

Configs in this folder start from :func:`base_config` and change what differs.
Every field can be overridden on the command line, e.g.
``--config.total_steps=1000 --config.model.features=256``.

The sections ``model``, ``optimizer``, ``objective`` and ``data.world`` are
built from the settings dataclasses that read them, so their defaults and the
comment on each field live in one place:
``xfactor_core.checkpoints.ModelConfig``,
``xfactor_core.training.optim.OptimizerSettings``,
``xfactor_core.training.objective.ObjectiveSettings`` and
``xfactor_core.training.inputs.WorldSchedule``.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from xfactor_core import checkpoints
from xfactor_core.training import inputs
from xfactor_core.training import objective
from xfactor_core.training import optim


def _section(settings: object) -> ml_collections.ConfigDict:
  """A config section with the fields and values of a settings dataclass."""
  return ml_collections.ConfigDict(dataclasses.asdict(settings))


def base_config() -> ml_collections.ConfigDict:
  """All trainer fields (published stereo-monocular settings where they apply).
  """
  config = ml_collections.ConfigDict()
  config.name = "xfactor"  # Written to model.json.
  config.model = _section(checkpoints.PUBLISHED_CONFIG)  # Network sizes.
  config.image_size = 256  # Square frames; an even multiple of the patch.
  # 1 (stereo-monocular) or more (multi-view); clips have
  # num_context_views + 1 frames.
  config.num_context_views = 1
  config.dtype = "bfloat16"  # Compute dtype; parameters stay float32.
  config.remat = True  # Recompute each layer in the backward pass.
  # "auto", "xla", "split" (half the attention work for the balanced quadrant
  # masks) or "cudnn".
  config.attention_impl = "auto"
  # None, or "bfloat16" to round q, k, v as the published kernels did.
  config.attention_dtype = config_dict.placeholder(str)

  config.batch_size = 256  # The global batch per optimiser step.
  # Clips per forward/backward pass (0: batch_size); the gradients of
  # batch_size / micro_batch_size passes are accumulated.
  config.micro_batch_size = 0
  config.total_steps = 100_000  # Optimiser steps.
  config.log_every = 100  # Intervals in optimiser steps.
  config.checkpoint_every = 5_000
  config.eval_every = 5_000
  config.max_checkpoints_to_keep = 3  # Older checkpoints are deleted.
  config.seed = 0  # Initialisation, objective and synthetic-data seed.

  config.optimizer = _section(optim.OptimizerSettings())
  config.objective = _section(objective.ObjectiveSettings())
  config.perceptual = ml_collections.ConfigDict()
  # "auto" (LPIPS-VGG if weights are set, else SSIM), "lpips" or "ssim".
  config.perceptual.kind = "auto"
  config.perceptual.weights = ""  # LPIPS-VGG weights file.

  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"  # Rendered on the devices, or "datasets".
  # Dataset root per published dataset; the non-empty ones are used with the
  # published sampler settings of the model kind.
  config.data.roots = ml_collections.ConfigDict(dict(
      re10k="", dl3dv="", co3d="", mvimgnet=""))
  # Explicit loader configs (data.loader.default_dataset_config fields), used
  # instead of data.roots when non-empty.
  config.data.datasets = ()
  config.data.worker_count = 0  # Grain settings.
  config.data.read_threads = 2
  config.data.prefetch_batches = 2
  config.data.device_prefetch = 2  # Batches in flight on the devices.
  config.data.supersample = 1  # Synthetic-world samples per pixel side.
  # The synthetic world's curriculum and photos.
  config.data.world = _section(inputs.WorldSchedule())

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 0  # Clips per evaluation batch (0: micro-batch).
  config.eval.num_batches = 1  # Batches per evaluation (0: no evaluation).
  # The held-out synthetic world: a seed other than training's.
  config.eval.seed = 1_000_003
  config.eval.num_images = 4  # Rows of the PNG written to <workdir>/eval/.
  # Synthetic scene pairs with the same camera motion, for a transfer PSNR
  # (0: off).
  config.eval.transfer_pairs = 0
  # Synthetic clips (each gives 3 frame pairs) for the ridge probe from latent
  # poses to the global image motion, and as many held-out (0: off).
  config.eval.motion_probe_clips = 0
  # Stop a run at this step (0: never) if the probe's mean shift R2 is below
  # stop_below_shift_r2 (the latents do not carry the motion).
  config.eval.stop_step = 0
  config.eval.stop_below_shift_r2 = 0.2
  # A checkpoint whose PoseEnc initialises this model (the multi-view model
  # starts from the stereo-monocular one).
  config.init_pose_encoder_from = ""
  # A checkpoint whose PoseEnc and Render both initialise this model (the
  # networks do not depend on the number of context views, so a multi-view
  # model can start from a whole stereo-monocular one); it takes precedence
  # over init_pose_encoder_from.
  config.init_params_from = ""

  config.distributed = ml_collections.ConfigDict()
  # "": a single process unless XFACTOR_COORDINATOR_ADDRESS is set; "auto":
  # JAX detects the cluster; else host:port of process 0.
  config.distributed.coordinator_address = ""
  # Or XFACTOR_NUM_PROCESSES and XFACTOR_PROCESS_ID.
  config.distributed.num_processes = 1
  config.distributed.process_id = 0
  config.progress_bar = True  # A tqdm bar.
  return config
