"""A model small enough that a few training steps take seconds on a CPU.

    python -m xfactor_core.train --config xfactor_core/configs/synthetic_tiny.py \
        --workdir /tmp/xf_tiny --config.total_steps=20

For tests and smoke runs: 64 x 64 synthetic clips, features 64, 2 + 2 layers,
batch 8, SSIM stand-in for LPIPS, float32.
"""

import ml_collections

from xfactor_core.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.base_config()
  config.name = "synthetic_tiny"
  config.model.update(dict(features=64, num_heads=4, patch_size=8,
                           pose_layers=2, render_layers=2, pose_dim=32,
                           num_global_tokens=4))
  config.image_size = 64
  config.num_context_views = 1
  config.dtype = "float32"
  config.remat = False
  config.attention_impl = "xla"
  config.batch_size = 8
  config.total_steps = 200
  config.log_every = 10
  config.checkpoint_every = 100
  config.eval_every = 100
  config.optimizer.update(dict(peak_lr=1e-3, end_lr=1e-4, warmup_steps=20,
                               decay_steps=2_000))
  config.objective.self_decode_prob = 0.05
  config.eval.num_images = 4
  return config
