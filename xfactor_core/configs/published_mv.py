"""The published multi-view training run: 5 context views, 200k steps.

    python -m xfactor_core.train --config xfactor_core/configs/published_mv.py \
        --workdir runs/published_mv \
        --config.init_pose_encoder_from=runs/published_sm \
        --config.data.roots.re10k=/data/re10k ...

As published_sm, except: clips of 6 frames (the reference nearest the middle of
the clip, see data/sampling.py, with the published multi-view window settings
and long-window weighting), self-decoding probability 2%, 200k steps, and the
pose encoder initialised from the stereo-monocular model
(init_pose_encoder_from; empty starts from scratch).
"""

import ml_collections

from xfactor_core.configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.base_config()
  config.name = "published_mv"
  config.num_context_views = 5
  config.objective.self_decode_prob = 0.02
  config.data.source = "datasets"
  config.data.worker_count = 8
  config.total_steps = 200_000
  config.eval.transfer_pairs = 8
  return config
