"""The recipe ablation of the default models: one config per arm, each adding
levers to the one before (configs as code; the arms of benchmarks/ablation.py).

    python -m xfactor_core.train --config xfactor_core/configs/recipe.py:flow \\
        --workdir runs/ablation/flow --config.total_steps=N

Arms (stereo-monocular, 128 x 128 synthetic clips, one CPU core each):

  today     the shipped recipe (``synthetic_sm.py``): features 192, 4 + 4
            layers, patch 16 (8 x 8 tokens a view), 8 global tokens, the
            published augmentation, batch 16, rgb head.
  levers    the CPU-budget levers: patch 8 (16 x 16 tokens a view), 2 global
            tokens, a narrower model (features 128), no colour-jitter/blur
            augmentation on synthetic data, gradient-spike skipping (3x the
            running mean norm), a smaller camera baseline and simpler rooms at
            first (motion factor 0.3 -> 1 and at most 2 -> 8 objects over the
            first half of the run), batch 8.
  flow      + the appearance-flow renderer head, and an image-gradient L1
            term (weight 1) against hedging with blurry blends.
  photos    + real photos in the world: skimage photos as textures and photo
            scenes (photo backdrops, photo panels and boxes) in 40% of clips.
  supervised  + ground-truth flow supervision of the flow head on the
            synthetic clips (weight 1, decaying to 0 at 60% of the run), so
            that the latent learns motion early; the end of the run is the
            self-supervised objective alone.
  warp      + the global warp (a homography per context view computed from
            the latents alone, under the per-pixel offsets: a short path from
            the pose encoder to moving pixels), a penalty of 0.3 on the RGB
            fallback's blend weight (against hedging with a grey blur), and 2
            attention heads of 64 features instead of 4 of 32 (the same FLOPs,
            24% less CPU time per step).
  encoder   + the pose encoder's pair input of the pose probe's winner
            (``model.pair_input``, benchmarks/README.md "Pose probe"): every
            token sees the reference view at its place; the probe's token
            grid and heads (patch 16, 4 heads of 32, 8 global tokens), so
            that a probe-trained encoder can start the run
            (``--config.init_pose_encoder_from=workdirs/pose_probe/<arm>``);
            and the motion probe of the latents at each evaluation
            (``eval.motion_probe_clips``).

``--config.total_steps`` sets the run length; the schedules (warm-up, cosine,
curriculum ramps, the decay of the supervision) follow it (they are field
references to it).
"""

from typing import Optional

import ml_collections

from xfactor_core.configs import synthetic_sm

ARMS = ("today", "levers", "flow", "photos", "supervised", "warp", "encoder")
# The pose probe's winner (benchmarks/pose_probe.py).
PAIR_INPUT = "correlation"


def apply_arm(config: ml_collections.ConfigDict,
              arm: str) -> ml_collections.ConfigDict:
  """Applies the levers of ``arm`` (and of every arm before it) in place; the
  schedules follow ``config.total_steps``."""
  if arm not in ARMS:
    raise ValueError(f"unknown arm {arm!r}: use one of {', '.join(ARMS)}, "
                     "e.g. --config xfactor_core/configs/recipe.py:flow")
  level = ARMS.index(arm)
  total_steps = config.get_ref("total_steps")
  config.optimizer.update(dict(warmup_steps=total_steps // 20,
                               decay_steps=total_steps, peak_lr=4e-4,
                               end_lr=2e-5))
  if level >= ARMS.index("levers"):
    config.model.update(dict(features=128, num_heads=4, patch_size=8,
                             pose_layers=4, render_layers=4, pose_dim=64,
                             num_global_tokens=2))
    config.batch_size = 8
    config.objective.augment = False
    config.optimizer.update(dict(spike_factor=3.0, spike_warmup=50,
                                 peak_lr=6e-4))
    config.data.world.update(dict(motion_factor_start=0.3,
                                  max_objects_start=2,
                                  ramp_steps=total_steps // 2))
  if level >= ARMS.index("flow"):
    config.model.update(dict(render_output="flow", global_warp=False))
    config.objective.gradient_weight = 1.0
  if level >= ARMS.index("photos"):
    config.data.world.update(dict(photos="skimage", photo_scene_prob=0.4))
  if level >= ARMS.index("supervised"):
    config.objective.flow_supervision = 1.0
    config.objective.flow_supervision_steps = (total_steps * 0.6).to_int()
  if level >= ARMS.index("warp"):
    config.model.update(dict(global_warp=True, num_heads=2))
    config.objective.fallback_penalty = 0.3
  if level >= ARMS.index("encoder"):
    config.model.update(dict(pair_input=PAIR_INPUT, patch_size=16,
                             num_heads=4, num_global_tokens=8))
    config.eval.motion_probe_clips = 64
  return config


def get_config(arm: Optional[str] = "warp") -> ml_collections.ConfigDict:
  config = synthetic_sm.get_config()
  arm = arm or "warp"
  config.name = f"recipe_{arm}"
  config.total_steps = 2_000
  apply_arm(config, arm)
  config.eval_every = 500
  config.checkpoint_every = 250
  return config
