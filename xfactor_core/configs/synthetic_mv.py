"""Multi-view model trained on the synthetic world at 128 x 128.

    python -m xfactor_core.train --config xfactor_core/configs/synthetic_mv.py \
        --workdir runs/synthetic_mv \
        --config.init_pose_encoder_from=runs/synthetic_sm
    # one GPU: --config xfactor_core/configs/synthetic_mv.py:gpu

Same networks as synthetic_sm (so its pose encoder can start from a trained
synthetic_sm run, as the published multi-view model starts from the
stereo-monocular one), 3 context views on the CPU variant and 5 (the
published count) on the ``gpu`` variant, self-decoding probability 2%.
"""

from typing import Optional

import ml_collections

from xfactor_core.configs import synthetic_sm


def get_config(variant: Optional[str] = None) -> ml_collections.ConfigDict:
  gpu = variant == "gpu"
  config = synthetic_sm.synthetic_config(5 if gpu else 3, variant)
  config.name = "synthetic_mv" + ("_gpu" if gpu else "")
  if not gpu:
    config.batch_size = 8
  return config
