"""Camera-motion transfer: target clip -> latent camera path -> new views.

>>> pipe = TransferPipeline.from_checkpoint("assets/models/sm_default")
>>> context = pipe.prepare(context_images)        # V x S x S x 3 in [-1, 1]
>>> target = pipe.prepare(target_images)          # N x S x S x 3
>>> path = pipe.camera_path(target)               # N x pose_dim, path[0] == 0
>>> frames = pipe.render(context, path)           # N x S x S x 3 in [-1, 1]

Stereo-monocular models take one context view, multi-view models several;
the code path is the same, with V context views.

Models with the appearance-flow or smooth-warp renderer
(``config.render_output`` "flow" or "warp")
render at any output size: the flow they predict at the model size samples
the context views prepared at the output size
(``pipe.render(context, path, sample_from=pipe.prepare(images, size=512))``),
so the output keeps the detail of the user's photo. Models with the
published RGB head render at the model size. For V > 1 the view nearest
the middle of the list becomes the reference (index 0), as the published
multi-view model expects. Work runs in fixed-size chunks (padded), so each
(chunk, image size, V) compiles once, whatever the number of frames, and memory
stays bounded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core import checkpoints, fetch, models
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import model_frames as frame_utils
from xfactor_core.models import warp as warp_lib

PathLike = Union[str, os.PathLike]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODELS = {
    "stereo-monocular": REPO_ROOT / "assets" / "models" / "sm_default",
    "multi-view": REPO_ROOT / "assets" / "models" / "mv_default",
}
DEFAULT_CHECKPOINT = DEFAULT_MODELS["stereo-monocular"]
PUBLISHED_IMAGE_SIZE = 256
# Output sizes of flow models (pixels per side).
MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE = 32, 1024
DEFAULT_MAX_OUTPUT_SIZE = 512  # the default output of a flow model at most


class TransferError(ValueError):
  """Inputs that cannot be transferred (with what to do instead)."""


def _batched_views(context: jax.Array, context_poses: jax.Array,
                   target_poses: jax.Array
                   ) -> tuple[Callable[[jax.Array], jax.Array], jax.Array,
                              jax.Array]:
  """What Render takes for B target poses of one context: ``(batched,
  context B x V x S x S x 3, poses B x (V+1) x D)``, where ``batched``
  repeats any per-context array B times."""
  b = target_poses.shape[0]
  batched = lambda x: jnp.broadcast_to(x[None], (b,) + x.shape)
  poses = jnp.concatenate([batched(context_poses), target_poses[:, None]],
                          axis=1)
  return batched, batched(context), poses


@functools.lru_cache(maxsize=16)
def _compiled(config: checkpoints.ModelConfig, attention_impl: str,
              dtype: Optional[str]) -> tuple[Callable, Callable]:
  """Jitted encode/render functions, shared by every pipeline of a config."""
  kwargs = dict(attention_impl=attention_impl,
                dtype=None if dtype is None else jnp.dtype(dtype))
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs(), **kwargs)
  render = models.Render(**config.render_kwargs(), **kwargs)

  @jax.jit
  def encode_pairs(params, first, second):
    """first, second: B x S x S x 3 -> B x pose_dim (second relative to first)."""
    pairs = jnp.stack([first, second], axis=1)
    return pose_enc.apply({"params": params}, pairs)[:, 1]

  @jax.jit
  def render_views(params, context, context_poses, target_poses,
                   sample_from=None):
    """context V x S x S x 3, context_poses V x D, target_poses B x D ->
    B x S x S x 3 (flow models with sample_from V x S' x S' x 3: B x S' x S' x 3)."""
    batched, views, poses = _batched_views(context, context_poses,
                                           target_poses)
    if sample_from is None:
      return render.apply({"params": params}, views, poses)
    return render.apply({"params": params}, views, poses,
                        sample_from=batched(sample_from))

  return encode_pairs, render_views


@functools.lru_cache(maxsize=16)
def _compiled_warp(config: checkpoints.ModelConfig, attention_impl: str,
                   dtype: Optional[str]) -> tuple[Callable, Callable]:
  """Jitted functions of a composed camera path (warp renderers)."""
  kwargs = dict(attention_impl=attention_impl,
                dtype=None if dtype is None else jnp.dtype(dtype))
  render = models.Render(**config.render_kwargs(), **kwargs)

  @jax.jit
  def warps(params, context, context_poses, target_poses, sources):
    """context V x S x S x 3, poses V x D and B x D, sources V x S' x S' x 3
    -> models.warp.Warp at S' x S' (leading axis B)."""
    batched, views, poses = _batched_views(context, context_poses,
                                           target_poses)
    _, aux = render.apply({"params": params}, views, poses,
                          sample_from=batched(sources), return_flow=True)
    return aux["warp"]

  @jax.jit
  def chain(state, step_offsets, sources):
    """Steps a ChainState (leading axis 1) through ``K x S' x S' x 2`` step
    offsets: ``(last state, K x S' x S' x 3 frames)``."""
    def one(state, offset):
      state = warp_lib.chain_step(state, offset[None])
      frame = warp_lib.blend(sources[None], state.coords, state.weights,
                             state.rgb)[0]
      return state, frame
    return jax.lax.scan(one, state, step_offsets)

  return warps, chain


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
  for start in range(0, n, size):
    yield start, min(start + size, n)


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  pad = np.repeat(x[-1:], size - x.shape[0], axis=0)
  return np.concatenate([x, pad], axis=0)


def interpolate_path(path: np.ndarray, positions: Union[float, Sequence[float]]
                     ) -> np.ndarray:
  """Latents at fractional frame positions: linear blend of the neighbours.

  Args:
    path: ``N x D`` latent camera path.
    positions: scalar or ``M`` positions in ``[0, N-1]``.

  Returns:
    ``D`` for a scalar position, else ``M x D``.
  """
  path = np.asarray(path, np.float32)
  pos = np.clip(np.asarray(positions, np.float64), 0, len(path) - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, len(path) - 1)
  w = (pos - lo)[..., None].astype(np.float32)
  return path[lo] * (1 - w) + path[hi] * w


def reference_order(num_views: int) -> list[int]:
  """Multi-view context order: the view nearest the middle first, then the rest."""
  ref = (num_views - 1) // 2 if num_views > 1 else 0
  return [ref] + [i for i in range(num_views) if i != ref]


@dataclasses.dataclass
class TransferPipeline:
  """A loaded model and the jitted functions that run it.

  Attributes:
    params: ``{"PoseEnc": ..., "Render": ...}``.
    config: the model sizes.
    image_size: square input/output size in pixels (multiple of the patch).
    max_context_views: context views the model was trained with (1 for
      stereo-monocular); more are allowed up to ``hard_max_context_views``.
    batch_size: frames per chunk (bounds memory; each chunk size compiles once).
    attention_impl, dtype: see :class:`xfactor_core.models.PoseEnc`.
    name: a label for UIs and logs.
  """
  params: dict[str, Any]
  config: checkpoints.ModelConfig
  image_size: int = PUBLISHED_IMAGE_SIZE
  max_context_views: int = 1
  batch_size: int = 8
  attention_impl: str = "auto"
  dtype: Optional[str] = None
  name: str = "model"
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    p = self.config.patch_size
    if self.image_size < p or self.image_size % p:
      raise TransferError(f"image size {self.image_size} must be a positive "
                          f"multiple of the model's patch size {p}")
    if self.batch_size < 1:
      raise TransferError(f"batch size must be at least 1, got {self.batch_size}")
    self.params = jax.device_put(self.params)

  @classmethod
  def from_checkpoint(cls, path: PathLike = DEFAULT_CHECKPOINT, *,
                      image_size: Optional[int] = None,
                      **kwargs) -> "TransferPipeline":
    """Loads a checkpoint (see :func:`xfactor_core.checkpoints.load_params`).

    ``path`` may also name a published model fetched with
    :mod:`xfactor_core.fetch` (``"sm"``, ``"mv"``). The image size and number
    of context views come from ``model.json`` beside fetched and our own
    checkpoints; other published checkpoints default to 256 and, with 5
    context views allowed, work both as stereo-monocular and multi-view.
    """
    path = pathlib.Path(fetch.checkpoint_path(path))
    if not path.exists() and path == DEFAULT_CHECKPOINT:
      raise TransferError(
          f"the default model {path} is missing; train it (see README) or pass "
          "--checkpoint with a published or own checkpoint")
    params = checkpoints.load_params(path)
    config = checkpoints.infer_config(params, source=path)
    info = checkpoints.read_model_info(path)
    published = config == checkpoints.PUBLISHED_CONFIG
    size = image_size or info.get("image_size") or PUBLISHED_IMAGE_SIZE
    views = info.get("num_context_views", 5 if published else 1)
    return cls(params=params, config=config, image_size=int(size),
               max_context_views=int(views), name=info.get("name", path.name),
               info=info, **kwargs)

  @property
  def kind(self) -> str:
    return checkpoints.model_kind(self.max_context_views)

  @property
  def renders_any_size(self) -> bool:
    """Whether the model renders at any output size (the flow and warp
    renderers)."""
    return self.config.render_output in models.SAMPLING_OUTPUTS

  def default_output_size(self, images: Sequence[np.ndarray]) -> int:
    """The output size for context images when the user picks none: flow
    models render at the photos' own resolution (their shorter side, at most
    DEFAULT_MAX_OUTPUT_SIZE, at least the model size); others at the model
    size."""
    if not self.renders_any_size or not len(images):
      return self.image_size
    side = min(min(np.shape(im)[:2]) for im in images)
    return int(np.clip(side, self.image_size,
                       max(DEFAULT_MAX_OUTPUT_SIZE, self.image_size)))

  def check_output_size(self, size: Optional[int]) -> int:
    """The output size in pixels for a requested one (None: the model size).

    Raises:
      TransferError: a size the model cannot render, with what to do.
    """
    if size is None or size == self.image_size:
      return self.image_size
    if not self.renders_any_size:
      raise TransferError(
          f"output size {size} px: this model has the published RGB head, "
          f"which renders at its own size ({self.image_size} px) only; use "
          f"{self.image_size}, or a model with the flow renderer "
          "(render_output 'flow', e.g. the default models)")
    if not MIN_OUTPUT_SIZE <= size <= MAX_OUTPUT_SIZE:
      raise TransferError(f"output size {size} px is outside "
                          f"{MIN_OUTPUT_SIZE}..{MAX_OUTPUT_SIZE} px; pick a "
                          "size in that range")
    return int(size)

  @property
  def num_parameters(self) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(self.params))

  def _fns(self):
    return _compiled(self.config, self.attention_impl, self.dtype)

  # ------------------------------------------------------------- inputs --

  def prepare(self, images: Sequence[np.ndarray], name: str = "frames",
              size: Optional[int] = None) -> np.ndarray:
    """Images (any dtype/channels/size) -> ``N x S x S x 3`` in [-1, 1], at
    the model size or at an output size (``check_output_size``)."""
    return frame_utils.prepare_frames(images, self.check_output_size(size),
                                      name)

  def _check_frames(self, x: np.ndarray, name: str, min_count: int = 1):
    s = self.image_size
    if x.ndim != 4 or x.shape[1:] != (s, s, 3):
      raise TransferError(f"{name} must be N x {s} x {s} x 3 (use "
                          f"pipeline.prepare), got shape {x.shape}")
    if x.shape[0] < min_count:
      raise TransferError(f"{name} has {x.shape[0]} frame(s); at least "
                          f"{min_count} needed")

  # -------------------------------------------------------- camera path --

  def encode_pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Latent pose of ``second[i]`` relative to ``first[i]``: ``N x pose_dim``."""
    first, second = np.asarray(first, np.float32), np.asarray(second, np.float32)
    self._check_frames(first, "first frames")
    self._check_frames(second, "second frames")
    encode, _ = self._fns()
    out = []
    for a, b in _chunks(len(second), self.batch_size):
      n = b - a
      lat = encode(self.params["PoseEnc"], _pad_to(first[a:b], self.batch_size),
                   _pad_to(second[a:b], self.batch_size))
      out.append(np.asarray(lat)[:n])
    return np.concatenate(out)

  def camera_path(self, target: np.ndarray, reference: int = 0,
                  mode: str = "reference") -> np.ndarray:
    """Target clip ``N x S x S x 3`` -> latent path ``N x pose_dim``.

    ``mode="reference"`` (default): frame i relative to frame ``reference``
    (0: the first; a pair gives N = 2). ``mode="composed"`` (warp models):
    frame i relative to frame i-1, the steps that :meth:`render` with
    ``path_mode="composed"`` composes (frame 0's step is 0); see
    :mod:`xfactor_core.inference.camera_path`.
    """
    target = np.asarray(target, np.float32)
    self._check_frames(target, "target clip", min_count=2)
    self.check_path_mode(mode)
    if mode == "composed":
      path = np.concatenate([np.zeros((1, self.config.pose_dim), np.float32),
                             self.encode_pairs(target[:-1], target[1:])])
      return path
    first = np.broadcast_to(target[reference], target.shape)
    path = self.encode_pairs(first, target)
    path[reference] = 0.0  # exact: the reference relative to itself
    return path

  @property
  def default_path_mode(self) -> str:
    """The camera path mode when none is asked for (warp models:
    ``camera_path.COMPOSABLE_DEFAULT_MODE``; others: ``"reference"``)."""
    return camera_paths.default_mode(self.config.render_output)

  def check_path_mode(self, mode: str) -> str:
    """``mode`` if this model can replay it, else TransferError."""
    if mode not in camera_paths.CAMERA_PATH_MODES:
      raise TransferError(f"camera path mode {mode!r}: use one of "
                          f"{camera_paths.CAMERA_PATH_MODES}")
    if (mode == "composed" and self.config.render_output
        not in camera_paths.COMPOSABLE_OUTPUTS):
      raise TransferError(
          f"the composed camera path composes explicit warps: it needs a "
          f"model with render_output in {camera_paths.COMPOSABLE_OUTPUTS}, "
          f"this one has {self.config.render_output!r}; use the reference "
          "path")
    return mode

  def path_record(self, latents: np.ndarray, mode: str = "reference"
                  ) -> camera_paths.CameraPath:
    """The saveable record of a path this model made (camera_path.save)."""
    return camera_paths.CameraPath(latents=np.asarray(latents, np.float32),
                                   mode=self.check_path_mode(mode),
                                   render_output=self.config.render_output)

  def context_poses(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorders context views (reference first) and encodes their latents.

    Returns:
      ``(ordered context V x S x S x 3, latents V x pose_dim)``, latents[0] = 0.
    """
    context = np.asarray(context, np.float32)
    self._check_frames(context, "context")
    v = context.shape[0]
    if v > max(self.max_context_views, 1):
      raise TransferError(
          f"{v} context views given but this {self.kind} model takes at most "
          f"{self.max_context_views}; drop views or pick a multi-view model")
    ordered = context[reference_order(v)]
    latents = np.zeros((v, self.config.pose_dim), np.float32)
    if v > 1:
      ref = np.broadcast_to(ordered[:1], ordered[1:].shape)
      latents[1:] = self.encode_pairs(ref, ordered[1:])
    return ordered, latents

  # ----------------------------------------------------------- rendering --

  def _renderer(self, context: np.ndarray, sample_from: Optional[np.ndarray]
                ) -> Callable[[np.ndarray], np.ndarray]:
    """Checks the context (and ``sample_from``), encodes the context views'
    latents once, and returns ``render(latents B x D) -> B x S x S x 3``
    (padded to the chunk size, so each chunk size compiles once)."""
    ordered, ctx_latents = self.context_poses(context)
    sources = self._sources(context, sample_from)
    if sources is not None:
      sources = jnp.asarray(sources)
    _, render = self._fns()
    ordered, ctx_latents = jnp.asarray(ordered), jnp.asarray(ctx_latents)

    def render_chunk(latents: np.ndarray) -> np.ndarray:
      out = render(self.params["Render"], ordered, ctx_latents,
                   _pad_to(latents, self.batch_size), sources)
      return np.asarray(out)[: len(latents)]
    return render_chunk

  def _sources(self, context: np.ndarray, sample_from: Optional[np.ndarray]
               ) -> Optional[np.ndarray]:
    """``sample_from`` checked against the context (V x S' x S' x 3, S' a
    size this model renders) and put in the order of the context poses
    (reference first); None without it."""
    if sample_from is None:
      return None
    sample_from = np.asarray(sample_from, np.float32)
    size = sample_from.shape[1] if sample_from.ndim == 4 else -1
    if sample_from.shape != (len(context), size, size, 3):
      raise TransferError(
          f"sample_from must hold the {len(context)} context view(s) as "
          f"V x S' x S' x 3 (pipeline.prepare(images, size=S')), got shape "
          f"{sample_from.shape}")
    self.check_output_size(size)
    return sample_from[reference_order(len(context))]

  @staticmethod
  def _check_strength(motion_strength: float) -> np.float32:
    if not 0.0 <= motion_strength <= 1.5:
      raise TransferError(f"motion strength {motion_strength} is outside [0, 1.5]")
    # The no-motion latent (context paired with itself) is exactly zero, so
    # the blend between it and the transferred latent is a scaling.
    return np.float32(motion_strength)

  def render_chunks(self, context: np.ndarray, path: np.ndarray, *,
                    motion_strength: float = 1.0,
                    sample_from: Optional[np.ndarray] = None,
                    path_mode: str = "reference"
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(start index, frames chunk)`` as chunks render (for streaming,
    progress bars and cancellation). ``sample_from``: the context views at
    the output size (flow models; see :meth:`render`). ``path`` may be a
    :class:`camera_path.CameraPath`, whose mode then overrides
    ``path_mode``."""
    if isinstance(path, camera_paths.CameraPath):
      path, path_mode = path.latents, path.mode
    path = np.asarray(path, np.float32)
    if path.ndim != 2 or path.shape[1] != self.config.pose_dim:
      raise TransferError(f"camera path must be N x {self.config.pose_dim} "
                          f"latents for this model, got shape {path.shape}")
    strength = self._check_strength(motion_strength)
    if self.check_path_mode(path_mode) == "composed":
      composer = self._composer(context, sample_from)
      for a, b in _chunks(len(path), self.batch_size):
        yield a, composer(path[a:b] * strength, first=a == 0)
      return
    render_chunk = self._renderer(context, sample_from)
    for a, b in _chunks(len(path), self.batch_size):
      yield a, render_chunk(path[a:b] * strength)

  def _composer(self, context: np.ndarray, sample_from: Optional[np.ndarray]
                ) -> Callable[..., np.ndarray]:
    """``compose(step latents B x D, first) -> B x S' x S' x 3``, called on
    consecutive chunks of a composed path: it carries the chain state from
    one chunk to the next. Frame 0 (``first``) is the render at its latent
    (0: the context itself); frame k samples frame k-1's warp at p + F_k(p),
    F_k the reference view's warp at step latent k."""
    ordered, ctx_latents = self.context_poses(context)
    sources = self._sources(context, sample_from)
    if sources is None:
      sources = ordered
    warps, chain = _compiled_warp(self.config, self.attention_impl,
                                  self.dtype)
    ordered, ctx_latents = jnp.asarray(ordered), jnp.asarray(ctx_latents)
    sources = jnp.asarray(sources)
    state = []

    def compose(latents: np.ndarray, first: bool) -> np.ndarray:
      n = len(latents)
      warp = warps(self.params["Render"], ordered, ctx_latents,
                   _pad_to(latents, self.batch_size), sources)
      frames = []
      if first:
        head = jax.tree.map(lambda x: x[:1], warp)
        state[:] = [warp_lib.chain_start(head)]
        frames.append(np.asarray(warp_lib.blend(
            sources[None], state[0].coords, state[0].weights,
            state[0].rgb))[0])
      start = 1 if first else 0
      if n > start:
        steps = warp.offset[start:n, 0]  # the reference view's F: K H W 2
        state[0], out = chain(state[0], steps, sources)
        frames.extend(np.asarray(out))
      return np.stack(frames)
    return compose

  def transfer_chunks(self, context: np.ndarray, target: np.ndarray, *,
                      motion_strength: float = 1.0,
                      sample_from: Optional[np.ndarray] = None,
                      path_mode: str = "reference"
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The camera motion of ``target`` onto ``context``, chunk by chunk.

    Each chunk's latents are encoded just before the chunk renders, so the
    first frames arrive after one chunk's work rather than after the whole
    camera path (at the published size on a CPU: seconds instead of a
    minute).

    Yields:
      ``(start index, latents chunk B x pose_dim, frames chunk B x S x S x
      3)``; the latents are those of :meth:`camera_path` in ``path_mode``
      (reference: frame i relative to frame 0; composed: to frame i-1),
      before ``motion_strength``.
    """
    target = np.asarray(target, np.float32)
    self._check_frames(target, "target clip", min_count=2)
    strength = self._check_strength(motion_strength)
    if self.check_path_mode(path_mode) == "composed":
      composer = self._composer(context, sample_from)
      for a, b in _chunks(len(target), self.batch_size):
        previous = target[max(a - 1, 0):b - 1]
        latents = self.encode_pairs(previous, target[max(a, 1):b])
        if a == 0:
          latents = np.concatenate(
              [np.zeros((1, self.config.pose_dim), np.float32), latents])
        yield a, latents, composer(latents * strength, first=a == 0)
      return
    render_chunk = self._renderer(context, sample_from)
    for a, b in _chunks(len(target), self.batch_size):
      latents = self.encode_pairs(
          np.broadcast_to(target[0], target[a:b].shape), target[a:b])
      if a == 0:
        latents[0] = 0.0  # exact: the reference relative to itself
      yield a, latents, render_chunk(latents * strength)

  def flops_per_frame(self, num_context_views: int = 1) -> float:
    """Estimated FLOPs of one transferred frame: its pair through PoseEnc and
    its view through Render with ``num_context_views`` views (matmuls as 2 x
    parameters x tokens, attention as 4 x tokens^2 x width per layer; within
    some 20% of XLA's count, see benchmarks/app.py)."""
    c = self.config
    tokens = (self.image_size // c.patch_size) ** 2
    counts = {name: sum(int(np.size(x)) for x in jax.tree.leaves(tree))
              for name, tree in self.params.items()}
    pose_tokens = 2 * tokens + 2 * c.num_global_tokens
    render_tokens = (num_context_views + 1) * tokens
    return float(
        2 * counts["PoseEnc"] * pose_tokens
        + 4 * c.pose_layers * pose_tokens ** 2 * c.features
        + 2 * counts["Render"] * render_tokens
        + 4 * c.render_layers * render_tokens ** 2 * c.features)

  def render(self, context: np.ndarray, path: np.ndarray, *,
             motion_strength: float = 1.0,
             sample_from: Optional[np.ndarray] = None,
             progress: Optional[Callable[[int, int], None]] = None,
             path_mode: str = "reference") -> np.ndarray:
    """Renders ``path`` (``N x pose_dim``) onto ``context`` (``V x S x S x 3``).

    Returns ``N x S x S x 3`` in [-1, 1]; with ``sample_from`` (flow models:
    the same context views at an output size S', from ``prepare(images,
    size=S')``) ``N x S' x S' x 3``, sampled from those views.
    ``progress(done, total)`` is called after every chunk. ``path_mode``:
    how ``path`` was made (:meth:`camera_path`); a
    :class:`camera_path.CameraPath` carries its own.
    """
    out = []
    total = len(path.latents if isinstance(path, camera_paths.CameraPath)
                else path)
    for start, chunk in self.render_chunks(context, path,
                                           motion_strength=motion_strength,
                                           sample_from=sample_from,
                                           path_mode=path_mode):
      out.append(chunk)
      if progress is not None:
        progress(start + len(chunk), total)
    return np.concatenate(out)

  def transfer(self, context: np.ndarray, target: np.ndarray, *,
               path_mode: str = "reference", **kwargs
               ) -> tuple[np.ndarray, np.ndarray]:
    """Camera motion of ``target`` onto ``context``: ``(frames, path)``
    (``path`` in ``path_mode``; :meth:`path_record` makes it saveable)."""
    path = self.camera_path(target, mode=path_mode)
    return self.render(context, path, path_mode=path_mode, **kwargs), path
