"""Stereo-monocular model trained on the synthetic world at 128 x 128.

    python -m xfactor_core.train --config xfactor_core/configs/synthetic_sm.py \
        --workdir runs/synthetic_sm
    # a larger model and batch for one GPU:
    python -m xfactor_core.train \
        --config xfactor_core/configs/synthetic_sm.py:gpu --workdir runs/sm_gpu

The default (CPU) model: features 192, 4 + 4 layers, patch 16, pose_dim 64,
8 global tokens, about 6.8M parameters; batch 16 (about 1 step/s on 2 CPU
cores, so the 20k-step run takes some 6 hours).
The ``gpu`` variant: features 384, 6 + 6 layers, patch 8 (256 tokens a view),
pose_dim 128, 16 global tokens, batch 64, bfloat16, about 33M parameters.
The objective, optimiser and evaluation are the published ones, except the
schedule, which is shortened to the run length.
"""

from typing import Optional

import ml_collections

from xfactor_core.configs import common


def synthetic_config(num_context_views: int, variant: Optional[str]
                     ) -> ml_collections.ConfigDict:
  """The synthetic-world config shared by synthetic_sm and synthetic_mv."""
  if variant not in (None, "", "cpu", "gpu"):
    raise ValueError(f"unknown variant {variant!r}: use 'cpu' (default) or "
                     "'gpu', e.g. --config xfactor_core/configs/"
                     "synthetic_sm.py:gpu")
  config = common.base_config()
  config.image_size = 128
  config.num_context_views = num_context_views
  config.objective.self_decode_prob = 0.05 if num_context_views == 1 else 0.02
  config.eval.num_batches = 2
  config.eval.transfer_pairs = 8
  config.eval.num_images = 4
  config.log_every = 50
  if variant == "gpu":
    config.model.update(dict(features=384, num_heads=6, patch_size=8,
                             pose_layers=6, render_layers=6, pose_dim=128,
                             num_global_tokens=16))
    config.dtype = "bfloat16"
    config.remat = False
    config.attention_impl = "auto"
    config.batch_size = 64
    config.total_steps = 100_000
    config.checkpoint_every = 2_000
    config.eval_every = 2_000
    config.optimizer.update(dict(peak_lr=4e-4, end_lr=1e-4, warmup_steps=2_000,
                                 decay_steps=100_000))
  else:
    config.model.update(dict(features=192, num_heads=4, patch_size=16,
                             pose_layers=4, render_layers=4, pose_dim=64,
                             num_global_tokens=8))
    config.dtype = "float32"
    config.remat = False
    config.attention_impl = "xla"
    config.batch_size = 16
    config.total_steps = 20_000
    config.checkpoint_every = 500
    config.eval_every = 500
    config.optimizer.update(dict(peak_lr=4e-4, end_lr=1e-4, warmup_steps=500,
                                 decay_steps=20_000))
  return config


def get_config(variant: Optional[str] = None) -> ml_collections.ConfigDict:
  config = synthetic_config(1, variant)
  config.name = "synthetic_sm" + ("_gpu" if variant == "gpu" else "")
  return config
