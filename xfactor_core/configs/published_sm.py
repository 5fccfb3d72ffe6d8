"""The published stereo-monocular training run (docs/ARCHITECTURE.md).

    python -m xfactor_core.train --config xfactor_core/configs/published_sm.py \
        --workdir runs/published_sm \
        --config.data.roots.re10k=/data/re10k --config.data.roots.dl3dv=/data/dl3dv \
        --config.data.roots.co3d=/data/co3d --config.data.roots.mvimgnet=/data/mvimgnet

Networks: features 1024, 16 heads, patch 16, 8 + 8 layers, pose_dim 256 at
256 x 256 (305M parameters). AdamW b1 0.9, b2 0.95, weight decay 5e-3 (not on
norms, LayerScale, biases, embeddings), clip 1.0, learning rate 1e-12 -> 4e-4
over 4,000 steps -> 1e-4 at 100k (cosine), batch 256, bfloat16, remat. Loss
L1 + 0.5 LPIPS-VGG (give converted weights with --config.perceptual.weights,
see xfactor_core/training/perceptual.py; without them the SSIM stand-in runs).
Datasets with the published sampler settings (window warm-up 50k steps) for
every non-empty root. Use --config.micro_batch_size to accumulate gradients
when 256 clips do not fit the devices at once.
"""

import ml_collections

from xfactor_core.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.base_config()
  config.name = "published_sm"
  config.num_context_views = 1
  config.objective.self_decode_prob = 0.05
  config.data.source = "datasets"
  config.data.worker_count = 8
  config.total_steps = 100_000
  config.eval.transfer_pairs = 8
  return config
