"""Writes tests/data/frozen_flow/: a tiny "flow" checkpoint and its renders.

Run once, with the code of the commit that added it (before the "warp"
renderer output existed), from the repository root::

  python tests/data/frozen_flow/make_frozen_flow.py

``tests/test_models_warp.py::test_frozen_flow_checkpoint_renders_as_before``
loads the weights with today's code and checks that the renders match.
"""

import json
import pathlib

import jax
import numpy as np

from xfactor_core import checkpoints, models

HERE = pathlib.Path(__file__).resolve().parent


def to_float(codes: np.ndarray) -> np.ndarray:
  """8-bit codes -> float32 in [-1, 1] (how the test rebuilds the inputs)."""
  return codes.astype(np.float32) / 127.5 - 1.0


def main() -> None:
  config = checkpoints.ModelConfig(features=16, num_heads=2, patch_size=8,
                                   pose_layers=1, render_layers=1, pose_dim=8,
                                   num_global_tokens=2, render_output="flow")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x = np.zeros((1, 2, 64, 64, 3), np.float32)
  params = {
      "PoseEnc": pose_enc.init(jax.random.key(0), x)["params"],
      "Render": render.init(jax.random.key(1), x[:, :1],
                            np.zeros((1, 2, 8), np.float32))["params"],
  }
  # Non-zero heads, so that offsets, confidences and the warp all move.
  rd = params["Render"]
  for i, path in enumerate([("AppearanceFlowHead_0", "view_head", "Dense_2"),
                            ("AppearanceFlowHead_0", "fallback_head",
                             "Dense_2"),
                            ("GlobalWarpHead_0", "Dense_2")]):
    node = rd
    for name in path:
      node = node[name]
    node["kernel"] = jax.random.normal(jax.random.key(10 + i),
                                       node["kernel"].shape) * 0.05
  # Inputs stored as 8-bit codes (exact), renders as float16 (relative
  # precision ~5e-4): the whole folder stays under 300 KB.
  rng = np.random.default_rng(0)
  frames_u8 = rng.integers(0, 256, (1, 2, 64, 64, 3), dtype=np.uint8)
  hi_u8 = rng.integers(0, 256, (1, 1, 80, 80, 3), dtype=np.uint8)
  frames = to_float(frames_u8)
  hi = to_float(hi_u8)
  poses = np.asarray(pose_enc.apply({"params": params["PoseEnc"]}, frames))
  out = np.asarray(render.apply({"params": params["Render"]}, frames[:, :1],
                                poses))
  out_hi = np.asarray(render.apply({"params": params["Render"]},
                                   frames[:, :1], poses, sample_from=hi))
  checkpoints.save_params(HERE / "checkpoint", params)
  (HERE / "checkpoint" / checkpoints.MODEL_INFO).write_text(json.dumps({
      "name": "frozen_flow", "kind": "stereo-monocular", "image_size": 64,
      "num_context_views": 1, "config": config.to_dict()}))
  np.savez_compressed(HERE / "renders.npz", frames=frames_u8,
                      sample_from=hi_u8, poses=poses,
                      render=out.astype(np.float16),
                      render_hi=out_hi.astype(np.float16))


if __name__ == "__main__":
  main()
