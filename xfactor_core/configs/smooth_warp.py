"""The smooth-warp demo model (issue 26): the "warp" renderer driven by the
fine correlation pose encoder, warm-started from the pose probe.

Variants (``--config xfactor_core/configs/smooth_warp.py:VARIANT``):

  sm    (default) stereo-monocular, 128 x 128 synthetic clips: the recipe's
        ``encoder`` arm (``recipe.py``: patch 16, features 128, 4 heads of
        32, 4 + 4 layers, pose_dim 64, 8 global tokens, batch 8, photos in
        the world, the decaying ground-truth flow supervision, the gradient
        L1 and the fallback penalty) with ``render_output="warp"``
        (``xfactor_core.models.warp``: a homography per view + a token-grid
        residual, upsampled bilinearly), the photometric loss (L1 + SSIM,
        ``objective.photometric_loss``) and the edge-aware smoothness of the
        residual, and the fine correlation pair input of PoseEnc
        (``PAIR_INPUT``: the token cost volume plus one of 4 px cells, which
        reads zoom and one-pixel motion; the first run used the token volume
        alone, ``--config.model.pair_input=correlation``).
  mv    the same networks with 3 context views (start it from the sm run:
        ``--config.init_params_from``; shipped as ``mv_default`` after a
        second stage with ``--config.objective.self_decode_prob=0.3``, which
        makes it show the reference view itself at the reference pose).
  tiny  64 x 64, features 64, patch 8, batch 4: a smoke run of the recipe in
        a CPU minute (tests and ``--config.total_steps=40``).

The world: small camera baselines first (motion factor 0.3, which read real
25 fps clips best in ``../shared/notes/smooth-warp-probe.md``), growing
linearly to the standard world's full baselines over the first half of the
run (``data.world.motion_factor_start`` / ``ramp_steps``), with the skimage
photos as textures and photo scenes in 40% of clips.

Every ``eval_every`` (250) steps the trainer writes the evaluation figures
and the motion probe of the latents (``eval.motion_probe_clips``); a run whose
probe's mean shift R2 is still below ``eval.stop_below_shift_r2`` (0.2) at
``eval.stop_step`` (500) stops early.

Run it (the pose probe's fine correlation encoder first, benchmarks/README.md
"The smooth-warp demo: second run")::

    python benchmarks/pose_probe.py --workdir workdirs/pose_probe \\
        --arms fine_correlation@0.3 --max-steps 1200 --minutes 30 --parallel 1
    python -m xfactor_core.train \\
        --config xfactor_core/configs/smooth_warp.py:sm \\
        --workdir workdirs/smooth_warp/sm --config.total_steps=7000 \\
        --config.init_pose_encoder_from=workdirs/pose_probe/fine_correlation@0.3
    # resume: the same command (the trainer resumes from <workdir>);
    python -m xfactor_core.train \\
        --config xfactor_core/configs/smooth_warp.py:mv \\
        --workdir workdirs/smooth_warp/mv --config.total_steps=2500 \\
        --config.init_params_from=workdirs/smooth_warp/sm
    python -m xfactor_core.train \\
        --config xfactor_core/configs/smooth_warp.py:mv \\
        --workdir workdirs/smooth_warp/mv_self --config.total_steps=1000 \\
        --config.init_params_from=workdirs/smooth_warp/mv \\
        --config.objective.self_decode_prob=0.3
    # the held-out synthetic table (motion, sharpness, margin over shuffled
    # latents) and a real clip:
    python -m xfactor_core.evaluate --checkpoint workdirs/smooth_warp/sm \\
        --num-pairs 16 --oracle none --json workdirs/smooth_warp/sm_eval.json
    python -m xfactor_core.evaluate --checkpoint workdirs/smooth_warp/sm \\
        --target ../shared/reference/example_videos/target \\
        --context presets/contexts/room_1/view_0.jpg

Transfers with either camera path (the composed one chains the step warps,
``models.warp.chain_step``; the default for warp models, which the run
shipped as ``sm_default`` meets the bar of issue 26 with)::

    python -m xfactor_core.transfer --checkpoint workdirs/smooth_warp/sm \\
        --context photo.jpg --target clip.mp4 --out out.mp4 \\
        --camera-path-mode composed --save-path walk.npz
    python -m xfactor_core.transfer --checkpoint workdirs/smooth_warp/sm \\
        --context photo.jpg --camera-path walk.npz --out replay.mp4

(``python -m xfactor_core.train`` writes ``<workdir>/checkpoints-0``; every
command above takes the work directory as the checkpoint.)

``--config.total_steps`` sets the run length; the schedules (warm-up,
cosine, the world's ramp, the supervision's decay) follow it.
"""

from typing import Optional

import ml_collections

from xfactor_core.configs import recipe
from xfactor_core.configs import synthetic_tiny

VARIANTS = ("sm", "mv", "tiny")
# The pose encoder's pair input (benchmarks/README.md, "Pose probe"): at small
# baselines its fine cell volume reads zoom R2 0.45 where the token volume
# alone reads 0.20.
PAIR_INPUT = "fine_correlation"


def apply_smooth_warp(config: ml_collections.ConfigDict
                      ) -> ml_collections.ConfigDict:
  """The warp renderer and its photometric objective, in place."""
  config.model.update(dict(render_output="warp", global_warp=True,
                           pair_input=PAIR_INPUT))
  config.objective.update(dict(photometric_weight=1.0,
                               photometric_ssim_alpha=0.85,
                               smoothness_weight=0.05,
                               smoothness_edge_scale=10.0))
  config.eval.update(dict(motion_probe_clips=64, stop_step=500,
                          stop_below_shift_r2=0.2))
  config.eval_every = 250
  config.checkpoint_every = 250
  return config


def get_config(variant: Optional[str] = "sm") -> ml_collections.ConfigDict:
  variant = variant or "sm"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}: use one of "
                     f"{', '.join(VARIANTS)}, e.g. --config "
                     "xfactor_core/configs/smooth_warp.py:sm")
  if variant == "tiny":
    config = synthetic_tiny.get_config()
    recipe.apply_arm(config, "encoder")
    config.model.update(dict(features=64, num_heads=2, patch_size=8,
                             pose_layers=2, render_layers=2, pose_dim=32,
                             num_global_tokens=2))
    config.batch_size = 4
    config.image_size = 64
    config.total_steps = 40
    apply_smooth_warp(config)
    config.eval.update(dict(motion_probe_clips=0, stop_step=0))
    config.eval_every = 40
    config.checkpoint_every = 40
    config.log_every = 5
  else:
    config = recipe.get_config("encoder")
    config.total_steps = 6_000
    apply_smooth_warp(config)
    if variant == "mv":
      config.num_context_views = 3
      config.objective.self_decode_prob = 0.02
  config.name = f"smooth_warp_{variant}"
  return config
