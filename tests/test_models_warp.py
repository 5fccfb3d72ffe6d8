"""Tests of the smooth-warp renderer (Render(output="warp"),
xfactor_core.models.warp) and of the frozen appearance-flow checkpoint."""

import json
import pathlib

import jax
import numpy as np

from xfactor_core import checkpoints, models

FROZEN = pathlib.Path(__file__).resolve().parent / "data" / "frozen_flow"


def _codes_to_float(codes: np.ndarray) -> np.ndarray:
  return codes.astype(np.float32) / 127.5 - 1.0


def test_frozen_flow_checkpoint_renders_as_before():
  """A flow checkpoint written before the warp output existed still loads
  (its config inferred from the tree) and renders what it rendered then."""
  params = checkpoints.load_params(FROZEN / "checkpoint")
  config = checkpoints.infer_config(params)
  stored = checkpoints.ModelConfig.from_dict(json.loads(
      (FROZEN / "checkpoint" / checkpoints.MODEL_INFO).read_text())["config"])
  assert config == stored
  assert config.render_output == "flow"
  data = np.load(FROZEN / "renders.npz")
  frames = _codes_to_float(data["frames"])
  hi = _codes_to_float(data["sample_from"])
  poses = models.PoseEnc(**config.pose_enc_kwargs()).apply(
      {"params": params["PoseEnc"]}, frames)
  np.testing.assert_allclose(np.asarray(poses), data["poses"], rtol=1e-4,
                             atol=1e-5 * np.abs(data["poses"]).max())
  render = models.Render(**config.render_kwargs())
  out = render.apply({"params": params["Render"]}, frames[:, :1],
                     data["poses"])
  out_hi = render.apply({"params": params["Render"]}, frames[:, :1],
                        data["poses"], sample_from=hi)
  # float16 storage: relative precision 2^-11 of values up to 1.
  for got, want in ((out, data["render"]), (out_hi, data["render_hi"])):
    want = want.astype(np.float32)
    assert np.abs(want).max() > 0.1  # the check is not against zeros
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=2e-3)
