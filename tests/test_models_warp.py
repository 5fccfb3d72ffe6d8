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


# ------------------------------------------------------- the warp renderer --

import cv2  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from xfactor_core.models import flow, warp  # noqa: E402

SIZE = 32  # model resolution: a 4 x 4 token grid at patch 8
PATCH = 8


def _render(output="warp"):
  return models.Render(features=32, num_heads=2, patch_size=PATCH,
                       num_layers=1, output=output)


def _inputs(views=1, batch=2, seed=0):
  keys = jax.random.split(jax.random.key(seed), 2)
  x = jax.random.uniform(keys[0], (batch, views, SIZE, SIZE, 3), minval=-1)
  poses = jax.random.normal(keys[1], (batch, views + 1, 8))
  return x, poses


def _perturbed(params, scale=0.3, seed=3):
  """Non-zero last layers of every head, so the warp and blend all move."""
  params = jax.tree.map(lambda a: a, params)
  heads = [k for k in params if k in (checkpoints.WARP_HEAD,
                                      checkpoints.FLOW_HEAD)]
  nodes = [params[checkpoints.GLOBAL_WARP_HEAD]["Dense_2"]]
  for head in heads:
    nodes += [params[head]["view_head"]["Dense_2"],
              params[head]["fallback_head"]["Dense_2"]]
  for i, node in enumerate(nodes):
    node["kernel"] = scale * jax.random.normal(jax.random.key(seed + i),
                                               node["kernel"].shape)
  return params


def _textured(size, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (size // 4, size // 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(coarse, (size, size, 3), "linear"))


def test_warp_starts_as_the_identity_and_returns_the_photo():
  render = _render()
  x, poses = _inputs()
  params = jax.jit(render.init)(jax.random.key(1), x, poses)["params"]
  # Fallback weight at init: e^-10 / (1 + e^-10) = 4.5e-5 (negligible by
  # design, see xfactor_core.models.warp); the identity warp is exact.
  fallback = np.exp(warp.FALLBACK_LOGIT_INIT)
  fallback /= 1 + fallback
  for size in (SIZE, 64, 96):
    photo = jax.image.resize(x, (2, 1, size, size, 3), "linear")
    out, aux = render.apply({"params": params}, x, poses, sample_from=photo,
                            return_flow=True)
    assert not np.asarray(aux["offset"]).any()
    np.testing.assert_allclose(np.asarray(aux["weights"][:, -1]), fallback,
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(out), np.asarray(photo[:, 0]),
                               rtol=1e-4, atol=1e-4 * np.abs(photo).max())


def _border_and_inside_steps(offset, grid):
  """Largest |F(x+1) - F(x)| (along x, over everything else) across cell
  borders and inside cells, for ``... x H x W x 2`` offsets on a grid of
  ``grid`` cells per row."""
  width = offset.shape[-2]
  steps = np.abs(np.diff(offset, axis=-2)).max(axis=(-1,) + tuple(
      range(offset.ndim - 2)))  # W-1: per column step, max over the rest
  cell = (np.arange(width) * grid) // width
  border = cell[1:] != cell[:-1]
  return steps[border].max(), steps[~border].max()


@pytest.mark.parametrize("size", [64, 96, 200])
def test_warp_is_continuous_across_patch_and_cell_borders(size):
  x, poses = _inputs(views=2)  # two views: the blend weights move too
  render = _render()
  params = _perturbed(jax.jit(render.init)(jax.random.key(1), x,
                                           poses)["params"])
  photo = jax.image.resize(x, (2, 2, size, size, 3), "linear")
  _, aux = render.apply({"params": params}, x, poses, sample_from=photo,
                        return_flow=True)
  grid = SIZE // PATCH
  for field in (aux["offset"], aux["weights"][..., None]):
    field = np.asarray(field)
    across, inside = _border_and_inside_steps(field, grid)
    # The field moves (the check is not on a constant) ...
    assert inside > 1e-3 * max(np.abs(field).max(), 1e-6)
    # ... and no step across a border exceeds the steps inside a cell (10%
    # for the projective curvature of the homography part).
    assert across <= 1.1 * inside + 1e-7, (size, across, inside)
    # The same along y (transpose the image axes).
    across, inside = _border_and_inside_steps(np.swapaxes(field, -3, -2), grid)
    assert across <= 1.1 * inside + 1e-7, (size, across, inside)
  # The check catches a mosaic: the same coarse residual, upsampled by
  # repeating cells (as a per-patch head can), jumps at every border.
  mosaic = jax.image.resize(aux["field"].residual, (2, 2, size, size, 2),
                            "nearest")
  across, inside = _border_and_inside_steps(np.asarray(mosaic), grid)
  assert across > 1.1 * inside + 1e-7


def _pixel_matrix(a: np.ndarray, size: int) -> np.ndarray:
  """Our normalised-coordinate homography parameters (flow.homography_offsets)
  as the 3 x 3 pixel matrix mapping output pixel (u, v) to the sampled pixel,
  pixel centres at integers (as cv2)."""
  m = np.array([[1 + a[0], a[1], a[2]], [a[3], 1 + a[4], a[5]],
                [0.1 * a[6], 0.1 * a[7], 1.0]], np.float64)
  to_norm = np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1],
                      [0, 0, 1]], np.float64)
  return np.linalg.inv(to_norm) @ m @ to_norm


def test_homography_path_agrees_with_cv2_warp_perspective():
  size = 64
  image = _textured(size, seed=2)
  a = np.array([0.05, -0.03, 0.08, 0.02, -0.04, -0.06, 0.3, -0.2], np.float32)
  offset = flow.homography_offsets(jnp.asarray(a)[None, None], size, size)
  zeros = lambda *shape: jnp.zeros(shape)
  field = warp.WarpField(residual=zeros(1, 1, 4, 4, 2),
                         view_logit=zeros(1, 1, 4, 4), rgb=zeros(1, 4, 4, 3),
                         rgb_logit=jnp.full((1, 4, 4), -1e4))
  ours = warp.render_warp(warp.warp_at(field, offset),
                          jnp.asarray(image)[None, None])[0]
  theirs = cv2.warpPerspective(
      image, _pixel_matrix(a.astype(np.float64), size), (size, size),
      flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
      borderMode=cv2.BORDER_REPLICATE)
  inner = slice(4, size - 4)
  # cv2 keeps 5 fractional bits of the sample position (1/32 px): with
  # pixel-to-pixel steps of up to ~0.3 in this image, errors up to ~1e-2.
  scale = np.abs(image).max()
  np.testing.assert_allclose(np.asarray(ours)[inner, inner],
                             theirs[inner, inner], atol=1.5e-2 * scale)
  assert np.abs(np.asarray(ours) - image).max() > 0.1  # it did move


def test_multi_view_weights_sum_to_one():
  x, poses = _inputs(views=3)
  render = _render()
  params = _perturbed(jax.jit(render.init)(jax.random.key(1), x,
                                           poses)["params"])
  _, aux = render.apply({"params": params}, x, poses, return_flow=True)
  weights = np.asarray(aux["weights"])
  assert weights.shape == (2, 4, SIZE, SIZE)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
  assert (weights >= 0).all() and weights[:, :3].std() > 1e-3


def test_warp_checkpoints_are_recognised(tmp_path):
  config = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4, render_output="warp",
                                   pair_input="correlation")
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  x, poses = _inputs()
  params = {"PoseEnc": pose_enc.init(jax.random.key(0), x[:, :1].repeat(
      2, axis=1))["params"],
            "Render": render.init(jax.random.key(1), x, poses)["params"]}
  assert checkpoints.WARP_HEAD in params["Render"]
  checkpoints.save_params(tmp_path / "ckpt", params)
  loaded = checkpoints.load_params(tmp_path / "ckpt")
  assert checkpoints.infer_config(loaded) == config
  with pytest.raises(checkpoints.CheckpointError,
                     match="renderer has the .warp. head"):
    checkpoints.check_params(
        loaded, checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4,
                                        render_output="flow",
                                        pair_input="correlation"))
  assert checkpoints.ModelConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match="always has the global warp"):
    checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4, render_output="warp",
                            global_warp=False)


def _matrix(a) -> np.ndarray:
  """The normalised 3 x 3 matrix of homography parameters a (8)."""
  a = np.asarray(a, np.float64)
  return np.array([[1 + a[0], a[1], a[2]], [a[3], 1 + a[4], a[5]],
                   [0.1 * a[6], 0.1 * a[7], 1.0]])


def _parameters(m: np.ndarray) -> np.ndarray:
  m = m / m[2, 2]
  return np.array([m[0, 0] - 1, m[0, 1], m[0, 2], m[1, 0], m[1, 1] - 1,
                   m[1, 2], m[2, 0] / 0.1, m[2, 1] / 0.1], np.float32)


def test_composed_step_warps_equal_the_warp_of_the_composed_motion():
  """A chain of three homography steps: the composed coordinates equal the
  field of the product matrix (frame k samples frame k-1 at M_k p, so frame
  3 samples the photo at M1 M2 M3 p)."""
  size = 64
  steps = [np.array([0.02, 0.01, 0.05, -0.01, 0.03, -0.02, 0.1, 0.0]),
           np.array([-0.01, 0.02, 0.04, 0.01, -0.02, 0.03, 0.0, -0.1]),
           np.array([0.03, 0.0, -0.03, 0.0, 0.01, 0.04, -0.05, 0.05])]
  grid = np.asarray(flow.pixel_grid(size, size))
  state = warp.ChainState(coords=jnp.asarray(grid)[None, None],
                          weights=jnp.stack([jnp.ones((1, size, size)),
                                             jnp.zeros((1, size, size))], 1),
                          rgb=jnp.zeros((1, size, size, 3)))
  product = np.eye(3)
  for a in steps:
    offset = flow.homography_offsets(jnp.asarray(a, jnp.float32)[None],
                                     size, size)
    state = warp.chain_step(state, offset)
    product = product @ _matrix(a)
  expected = grid + np.asarray(flow.homography_offsets(
      jnp.asarray(_parameters(product))[None], size, size))[0]
  # Where every intermediate point stays 3 px inside the image (no border
  # clamp reaches the bilinear neighbours).
  inside = np.ones((size, size), bool)
  partial = np.eye(3)
  for a in reversed(steps):
    partial = _matrix(a) @ partial
    p = np.concatenate([grid, np.ones((size, size, 1))], -1) @ partial.T
    p = p[..., :2] / p[..., 2:]
    inside &= (np.abs(p) < 1 - 6.0 / size).all(-1)
  assert inside.mean() > 0.5
  got = np.asarray(state.coords[0, 0])
  motion = np.abs(expected - grid)[inside].max()
  assert motion > 0.05  # a real motion (3 px and more)
  # Bilinear resampling of a projective field: 1% of the motion at most.
  np.testing.assert_allclose(got[inside], expected[inside],
                             atol=0.01 * motion)
  np.testing.assert_allclose(np.asarray(state.weights.sum(1)), 1.0, rtol=1e-5)


# ------------------------------------------------ the shipped demo model --


def identical_pair_warp_px(pipe, frame: np.ndarray) -> np.ndarray:
  """The warp F (in pixels of the model size) that ``pipe``'s warp model
  renders for a pair of identical frames: ``frame`` (S x S x 3 in [-1, 1])
  is both the context and the target. ``S x S x 2``."""
  from xfactor_core.inference.pipeline import _compiled_warp  # pylint: disable=g-import-not-at-top
  latent = pipe.camera_path(np.stack([frame, frame]))[1:]  # 1 x D
  warps, _ = _compiled_warp(pipe.config, pipe.attention_impl, pipe.dtype)
  ordered, context_latents = pipe.context_poses(frame[None])
  warp_out = warps(pipe.params["Render"], ordered, context_latents,
                   latent, ordered)
  return np.asarray(warp_out.offset[0, 0]) * (0.5 * pipe.image_size)


def _shipped_warp_pipeline(kind: str):
  """The shipped ``kind`` demo model's pipeline; skips (naming why) where it
  is not shipped or is not a warp model, which the trained-warp checks need."""
  from xfactor_core.inference.pipeline import (DEFAULT_MODELS,  # pylint: disable=g-import-not-at-top
                                               TransferPipeline)
  folder = DEFAULT_MODELS[kind]
  if not folder.exists():
    pytest.skip(f"no shipped {kind} model at {folder}")
  output = checkpoints.render_output_of(checkpoints.load_params(folder))
  if output != "warp":
    pytest.skip(f"the shipped {kind} model's render_output is {output!r}, "
                "not 'warp': this check is for a trained warp model")
  return TransferPipeline.from_checkpoint(folder, attention_impl="xla")


@pytest.mark.parametrize("kind", ["stereo-monocular", "multi-view"])
def test_identical_frames_give_nearly_the_identity_on_the_shipped_model(kind):
  """After training: a pair of identical frames warps the photo by at most
  1 px anywhere and 0.25 px on average (model size). Each shipped demo model
  is checked when it is a warp model."""
  pipe = _shipped_warp_pipeline(kind)
  frame = pipe.prepare([_textured(pipe.image_size, seed=5)[..., ::-1] * 127.5
                        + 127.5])[0]
  offset = np.linalg.norm(identical_pair_warp_px(pipe, frame), axis=-1)
  assert offset.max() <= 1.0 and offset.mean() <= 0.25, (offset.max(),
                                                         offset.mean())


def test_identical_pair_helper_reads_the_identity_of_an_untrained_warp(
    tmp_path):
  """The helper above on an untrained warp model (F is exactly zero)."""
  from xfactor_core.inference.pipeline import TransferPipeline  # pylint: disable=g-import-not-at-top
  config = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 2, render_output="warp")
  x = np.zeros((1, 2, SIZE, SIZE, 3), np.float32)
  params = {"PoseEnc": models.PoseEnc(**config.pose_enc_kwargs()).init(
      jax.random.key(0), x)["params"],
            "Render": models.Render(**config.render_kwargs()).init(
                jax.random.key(1), x[:, :1], np.zeros((1, 2, 8)))["params"]}
  params["Render"] = _perturbed(params["Render"], scale=0.0)
  pipe = TransferPipeline(params=params, config=config, image_size=SIZE,
                          batch_size=2, attention_impl="xla")
  offset = identical_pair_warp_px(pipe, _textured(SIZE, seed=5))
  assert offset.shape == (SIZE, SIZE, 2)
  np.testing.assert_array_equal(offset, 0.0)


def test_the_views_are_mirrored_past_their_edges_as_cv2_border_reflect():
  """The warp renderer reads its views with a mirrored border (no stretched
  edge pixels), the same samples as cv2.remap with BORDER_REFLECT."""
  size = 48
  image = _textured(size, seed=5)
  grid = np.asarray(flow.pixel_grid(size, size))
  coords = grid + np.array([7.3, -5.6]) * (2.0 / size)  # past two edges
  ours = np.asarray(warp.sample_views(jnp.asarray(image)[None, None],
                                      jnp.asarray(coords)[None, None]))[0, 0]
  pixels = ((coords + 1.0) * (size / 2.0) - 0.5).astype(np.float32)
  theirs = cv2.remap(image, pixels[..., 0], pixels[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
  scale = np.abs(image).max()
  # cv2 keeps 5 fractional bits of the sample position (see above).
  np.testing.assert_allclose(ours, theirs, atol=1.5e-2 * scale)
  clamped = np.asarray(flow.sample_bilinear(jnp.asarray(image),
                                            jnp.asarray(coords)))
  band = (slice(None), slice(size - 7, None))  # where x looks past the edge
  assert np.abs(clamped[band] - ours[band]).max() > 0.1  # mirrored, not clamped
  with pytest.raises(ValueError, match="border"):
    flow.sample_bilinear(jnp.asarray(image), jnp.asarray(coords), border="wrap")


def test_a_chained_translation_continues_past_the_edges():
  """Two steps of a 6 px translation compose to 12 px everywhere, also in
  the band where the steps look past the frame (there the chain continues
  the edge's warp instead of repeating the edge's coordinates)."""
  size = 32
  grid = np.asarray(flow.pixel_grid(size, size))
  state = warp.ChainState(coords=jnp.asarray(grid)[None, None],
                          weights=jnp.stack([jnp.ones((1, size, size)),
                                             jnp.zeros((1, size, size))], 1),
                          rgb=jnp.zeros((1, size, size, 3)))
  step = jnp.broadcast_to(jnp.array([6.0, -6.0]) * (2.0 / size),
                          (1, size, size, 2))
  for _ in range(2):
    state = warp.chain_step(state, step)
  expected = grid + np.array([12.0, -12.0]) * (2.0 / size)
  np.testing.assert_allclose(np.asarray(state.coords[0, 0]), expected,
                             atol=1e-5)


def test_the_shipped_multi_view_model_renders_its_reference_view_at_zero():
  """After training: at the zero latent (the reference view's own pose, where
  every composed path starts and whose blend weights it carries) the shipped
  multi-view model shows the reference view, not a ghosted blend of all
  three: at least 0.8 of the blend weight on it, on the three-view example."""
  from xfactor_core.app import presets  # pylint: disable=g-import-not-at-top
  from xfactor_core.inference import media  # pylint: disable=g-import-not-at-top
  from xfactor_core.inference.pipeline import _compiled_warp  # pylint: disable=g-import-not-at-top
  pipe = _shipped_warp_pipeline("multi-view")
  files = presets.load_presets().context(
      "synthetic room, 3 views (multi-view)").files
  ordered, latents = pipe.context_poses(
      pipe.prepare([media.read_image(f) for f in files]))
  warps, _ = _compiled_warp(pipe.config, pipe.attention_impl, pipe.dtype)
  out = warps(pipe.params["Render"], ordered, latents,
              np.zeros((1, pipe.config.pose_dim), np.float32), ordered)
  weights = np.asarray(out.weights[0]).mean(axis=(1, 2))  # reference first
  assert weights[0] >= 0.8, weights
