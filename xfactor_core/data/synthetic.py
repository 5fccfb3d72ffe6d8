"""The synthetic multi-view video world: procedural rooms filmed by moving cameras.

A JAX ray caster (`scene_render`) renders procedural rooms (floor, walls and
ceiling with up to 8 boxes, spheres and cylinders) with multi-scale procedural
textures (value-noise fBm, checkers, stripes, gradients through random cosine
palettes, optionally photo tiles from a folder), a directional light with
ambient, soft floor shadows, and analytic texture filtering (plus optional
supersampling). Cameras (`scene_sampling`) are pinholes with a 45..75 degree
field of view on roll-free trajectories: orbit, dolly, truck, pedestal, pan,
tilt and smooth random splines, with small to large baselines, always inside the
room and looking into open space.

Conventions
  * World: right-handed, metres, y up; the room is x in [-W/2, W/2],
    y in [0, H] (floor at 0), z in [-D/2, D/2].
  * `camera_from_world` (4x4, float32): maps homogeneous world points to the
    OpenCV camera frame, x right, y down, z forward (the optical axis).
  * `intrinsics` (3x3, float32): pixels, [[f, 0, c], [0, f, c], [0, 0, 1]] with
    c = (S - 1) / 2, pixel centres at integer coordinates (u column, v row).
  * Frames: uint8 RGB, S x S with S in 64..256.
  * Every sequence is a pure function of (seed, index) (and the arguments):
    JAX's threefry PRNG gives the same parameters on every backend (renders on
    another backend may differ by float rounding).

Trajectories (roll-free; amplitudes over the whole clip, drawn log-uniformly so
that small and large baselines both occur, then shrunk by the largest factor in
1 .. 0.05 that keeps every camera 0.3 m inside the room with >= 1.2 m of free
room along its optical axis; objects keep >= 0.9 m from every camera centre)
  orbit     circle about the vertical through a point 1..2.5 m ahead on the
            first optical axis, looking at it, 10..80 degrees
  dolly     translate along the first optical axis, 0.2..3 m in or out
  truck     translate along the camera x axis, 0.2..3 m left or right
  pedestal  translate along the world vertical, 0.15..1.4 m up or down
  pan       rotate about the world vertical in place, 8..90 degrees
  tilt      rotate about the camera x axis in place, 6..35 degrees
  spline    cubic Bezier paths for the centre (steps of 0.4..2 m) and the
            look-at point
Frames are evenly spaced in time along the path.

Speed (benchmarks/synthetic.py): on the CPU frames render one after another on
one core (about 3 ms per 128 x 128 frame on this project's 2-core machine); on
accelerators frames are vmapped in chunks of MAX_RAYS_PER_CHUNK rays.

Public API
  make_sequence(seed, index, num_frames, size, trajectory=None) -> dict
  make_transfer_pair(seed, index, num_frames, size, trajectory=None) -> (a, b)
  sample_batch(key, batch_size, num_frames, size) -> dict  (jitted, on device)
  write_sequence / read_sequence: the generic layout (see `scene_layout`)
  load_texture_atlas(folder) -> photo atlas for the `texture_atlas` arguments
  TRAJECTORIES: names of the trajectory types.

Generic layout written by the CLI (`python -m xfactor_core.data.synthetic
--out DIR --num-sequences N [--frames F] [--size S] [--seed K]
[--transfer-pairs]`): DIR/<sequence>/frames/00000.png ... and
DIR/<sequence>/cameras.json, or DIR/<pair>/a and DIR/<pair>/b for pairs, where
cameras.json is

  {"format": "xfactor-generic-v1", "convention": "...",
   "image_size": [S, S], "trajectory": "dolly",
   "frames": [{"image": "frames/00000.png",
               "camera_from_world": [[...4 floats...] x 4],
               "intrinsics": [[...3 floats...] x 3]}, ...]}

one entry per frame, matrices row-major, conventions as above.
"""

import argparse
import functools
import logging
import math
import os
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from xfactor_core.data import scene_render
from xfactor_core.data import scene_sampling
from xfactor_core.data.scene_layout import read_sequence  # noqa: F401 (re-export)
from xfactor_core.data.scene_layout import write_sequence  # noqa: F401 (re-export)

TRAJECTORIES = scene_sampling.TRAJECTORIES
FOV_RANGE_DEGREES = scene_sampling.FOV_RANGE_DEGREES
MIN_SIZE = 64
MAX_SIZE = 256
DEFAULT_SUPERSAMPLE = 1
# Rays rendered at once on the device; bounds memory for large batches.
MAX_RAYS_PER_CHUNK = 1 << 22

__all__ = [
    "TRAJECTORIES", "make_sequence", "make_transfer_pair", "sample_batch",
    "write_sequence", "read_sequence", "load_texture_atlas", "atlas_from_images",
]


def _check_arguments(num_frames: int, size: int, batch_size: int = 1,
                     supersample: int = 1) -> None:
  """Raises ValueError with a fix for out-of-range generator arguments."""
  for name, value in (("num_frames", num_frames), ("size", size),
                      ("batch_size", batch_size), ("supersample", supersample)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{name} must be a Python int, got {type(value).__name__}")
  if num_frames < 1:
    raise ValueError(f"num_frames must be at least 1, got {num_frames}")
  if not MIN_SIZE <= size <= MAX_SIZE:
    raise ValueError(f"size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}; "
                     "render at a supported size and resize afterwards")
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  if not 1 <= supersample <= 4:
    raise ValueError(f"supersample must be in 1..4 samples per pixel side, got "
                     f"{supersample}")


def _trajectory_index(trajectory: str | None) -> int:
  if trajectory is None:
    return -1
  if trajectory not in TRAJECTORIES:
    raise ValueError(f"unknown trajectory {trajectory!r}; choose one of "
                     f"{', '.join(TRAJECTORIES)} or None for a random one")
  return TRAJECTORIES.index(trajectory)


def _check_atlas(texture_atlas: Any) -> None:
  if texture_atlas is None:
    return
  shape = getattr(texture_atlas, "shape", None)
  if shape is None or len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3]:
    raise ValueError("texture_atlas must be a (T, L, A, A, 3) float array as "
                     f"returned by load_texture_atlas, got shape {shape}")


def _render_scene_frames(scene: scene_render.Scene, cameras: jax.Array,
                         intrinsics: jax.Array, size: int, supersample: int,
                         texture_atlas: jax.Array | None,
                         sequential: bool, with_depth: bool = False):
  """(F, S, S, 3) uint8 frames of one scene seen from cameras (F, 4, 4), and
  with_depth also their (F, S, S) float32 depth."""

  def render(camera):
    out = scene_render.render_frame(scene, camera, intrinsics, size,
                                    supersample, texture_atlas,
                                    return_depth=with_depth)
    frame, depth = out if with_depth else (out, None)
    frame = jnp.round(frame * 255.0).astype(jnp.uint8)
    return (frame, depth) if with_depth else frame

  if sequential:
    return jax.lax.map(render, cameras)
  return jax.vmap(render)(cameras)


def _render_shots(keys: jax.Array, trajectory_index: jax.Array,
                  texture_atlas: jax.Array | None, num_frames: int, size: int,
                  num_scenes: int, supersample: int,
                  sequential: bool | None = None,
                  world: scene_sampling.WorldSettings = (
                      scene_sampling.WorldSettings()),
                  with_depth: bool = False):
  """Samples and renders B shots of V scenes each.

  On the CPU frames are rendered one after the other (XLA's CPU code for one
  frame at a time is about 2x faster than for a vmapped batch); on accelerators
  frames are vmapped in chunks of at most MAX_RAYS_PER_CHUNK rays. `sequential`
  overrides that choice (None: by backend).

  Returns:
    frames (B, V, F, S, S, 3) uint8, camera_from_world (B, V, F, 4, 4),
    intrinsics (B, 3, 3), trajectory index (B,) int32, and depth
    (B, V, F, S, S) float32 when with_depth (else None).
  """
  shots = jax.vmap(lambda key: scene_sampling.sample_shot(
      key, num_frames, num_scenes, trajectory_index, world))(keys)
  intrinsics = jax.vmap(lambda fov: scene_sampling.intrinsics_matrix(fov, size))(
      shots.fov)
  batch = keys.shape[0]
  scenes = jax.tree.map(lambda x: x.reshape((batch * num_scenes,) + x.shape[2:]),
                        shots.scenes)
  cameras = shots.camera_from_world.reshape(
      (batch * num_scenes, num_frames, 4, 4))
  per_scene_intrinsics = jnp.repeat(intrinsics, num_scenes, axis=0)
  if sequential is None:
    sequential = jax.default_backend() == "cpu"
  if sequential:
    chunk = 1
  else:
    rays_per_scene = num_frames * (size * supersample) ** 2
    chunk = max(1, min(batch * num_scenes, MAX_RAYS_PER_CHUNK // rays_per_scene))

  def render_one(inputs):
    scene, camera, matrix = inputs
    return _render_scene_frames(scene, camera, matrix, size, supersample,
                                texture_atlas, sequential, with_depth)

  rendered = jax.lax.map(render_one, (scenes, cameras, per_scene_intrinsics),
                         batch_size=chunk)
  frames, depth = rendered if with_depth else (rendered, None)
  frames = frames.reshape((batch, num_scenes, num_frames, size, size, 3))
  if depth is not None:
    depth = depth.reshape((batch, num_scenes, num_frames, size, size))
  cameras = cameras.reshape((batch, num_scenes, num_frames, 4, 4))
  return frames, cameras, intrinsics, shots.trajectory_index, depth


@functools.partial(jax.jit, static_argnames=("num_frames", "size",
                                             "num_scenes", "supersample",
                                             "with_depth"))
def _generate(keys, trajectory_index, texture_atlas, world=None, *,
              num_frames, size, num_scenes, supersample, with_depth=False):
  """The jitted generator behind every entry point (one compile per shape).

  Args:
    keys: (B,) PRNG keys, one per shot.
    trajectory_index: () int32 into TRAJECTORIES, negative for random.
    texture_atlas: None or (T, L, A, A, 3).
    world: None (the standard world) or scene_sampling.WorldSettings of
      traced scalars.

  Returns:
    As `_render_shots`.
  """
  if world is None:
    world = scene_sampling.WorldSettings()
  return _render_shots(keys, trajectory_index, texture_atlas, num_frames,
                       size, num_scenes, supersample, world=world,
                       with_depth=with_depth)


def _sequence_key(seed: int, index: int) -> jax.Array:
  for name, value in (("seed", seed), ("index", index)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
      raise ValueError(f"{name} must be non-negative, got {value}")
  return jax.random.fold_in(jax.random.key(int(seed)), int(index))


def _shot_dicts(seed, index, num_frames, size, trajectory, num_scenes,
                supersample, texture_atlas, world=None
                ) -> list[dict[str, Any]]:
  _check_arguments(num_frames, size, supersample=supersample)
  _check_atlas(texture_atlas)
  trajectory_index = _trajectory_index(trajectory)
  key = _sequence_key(seed, index)
  frames, cameras, intrinsics, chosen, _ = _generate(
      key[None], jnp.int32(trajectory_index),
      None if texture_atlas is None else jnp.asarray(texture_atlas, jnp.float32),
      world, num_frames=num_frames, size=size, num_scenes=num_scenes,
      supersample=supersample)
  frames = np.asarray(frames[0])
  cameras = np.asarray(cameras[0], np.float32)
  intrinsics = np.broadcast_to(np.asarray(intrinsics[0], np.float32),
                               (num_frames, 3, 3)).copy()
  name = TRAJECTORIES[int(chosen[0])]
  return [{"frames": frames[v], "camera_from_world": cameras[v],
           "intrinsics": intrinsics.copy(), "trajectory": name}
          for v in range(num_scenes)]


def make_sequence(seed: int, index: int, num_frames: int, size: int,
                  trajectory: str | None = None, *,
                  supersample: int = DEFAULT_SUPERSAMPLE,
                  texture_atlas: np.ndarray | None = None,
                  world: scene_sampling.WorldSettings | None = None
                  ) -> dict[str, Any]:
  """Renders sequence `index` of the world `seed`.

  Args:
    seed: non-negative world seed.
    index: non-negative sequence index; (seed, index) fixes everything.
    num_frames: F >= 1.
    size: S in 64..256 (square frames).
    trajectory: one of TRAJECTORIES, or None for one drawn from (seed, index).
    supersample: samples per pixel side (1 = analytic texture filtering only).
    texture_atlas: optional photo atlas from `load_texture_atlas`.
    world: the world's knobs (scene_sampling.WorldSettings; None: standard).

  Returns:
    dict with numpy arrays 'frames' (F, S, S, 3) uint8, 'camera_from_world'
    (F, 4, 4) float32, 'intrinsics' (F, 3, 3) float32 (the same for every
    frame) and 'trajectory' (str).
  """
  return _shot_dicts(seed, index, num_frames, size, trajectory, 1, supersample,
                     texture_atlas, world)[0]


def make_transfer_pair(seed: int, index: int, num_frames: int, size: int,
                       trajectory: str | None = None, *,
                       supersample: int = DEFAULT_SUPERSAMPLE,
                       texture_atlas: np.ndarray | None = None,
                       world: scene_sampling.WorldSettings | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Two different scenes filmed with the same relative camera motion.

  For every frame i, T_i T_0^-1 (camera_from_world of frame i times the inverse
  of frame 0's) is the same in both sequences, as are the intrinsics and the
  trajectory name; rooms, objects, textures, lighting and start poses differ.
  Arguments as in `make_sequence`; returns (sequence_a, sequence_b).
  """
  first, second = _shot_dicts(seed, index, num_frames, size, trajectory, 2,
                              supersample, texture_atlas, world)
  return first, second


def sample_batch(key: jax.Array, batch_size: int, num_frames: int, size: int,
                 *, supersample: int = DEFAULT_SUPERSAMPLE,
                 texture_atlas: jax.Array | None = None,
                 world: scene_sampling.WorldSettings | None = None,
                 with_depth: bool = False) -> dict[str, jax.Array]:
  """On-device generator: a batch of random sequences.

  Jitted inside (one compile per batch_size, num_frames, size, supersample);
  it can also be traced inside the caller's jit, vmap or shard_map with those
  arguments static. Shot b uses the key jax.random.split(key, batch_size)[b].

  Args:
    key: PRNG key (raw uint32[2] or typed).
    batch_size: B.
    num_frames: F.
    size: S in 64..256.
    supersample: samples per pixel side.
    texture_atlas: optional (T, L, A, A, 3) photo atlas.
    world: the world's knobs (scene_sampling.WorldSettings; None: standard).
    with_depth: also return the depth of every pixel (static).

  Returns:
    dict of jax arrays: 'frames' (B, F, S, S, 3) uint8, 'camera_from_world'
    (B, F, 4, 4) float32, 'intrinsics' (B, F, 3, 3) float32,
    'trajectory_index' (B,) int32 into TRAJECTORIES and, with_depth, 'depth'
    (B, F, S, S) float32 (camera-frame z of every pixel, metres).
  """
  _check_arguments(num_frames, size, batch_size, supersample)
  _check_atlas(texture_atlas)
  keys = jax.random.split(key, batch_size)
  frames, cameras, intrinsics, trajectory_index, depth = _generate(
      keys, jnp.int32(-1), texture_atlas, world, num_frames=num_frames,
      size=size, num_scenes=1, supersample=supersample, with_depth=with_depth)
  batch = {
      "frames": frames[:, 0],
      "camera_from_world": cameras[:, 0],
      "intrinsics": jnp.broadcast_to(intrinsics[:, None],
                                     (batch_size, num_frames, 3, 3)),
      "trajectory_index": trajectory_index,
  }
  if with_depth:
    batch["depth"] = depth[:, 0]
  return batch


def load_texture_atlas(folder: str | os.PathLike, tile_size: int = 64,
                       max_tiles: int = 64) -> np.ndarray:
  """Loads photos from a folder into a mip-mapped, seamless texture atlas.

  Args:
    folder: directory searched (not recursively) for .png/.jpg/.jpeg/.bmp/.webp.
    tile_size: A, a power of two in 16..512.
    max_tiles: at most this many images are used (sorted by name).

  Returns:
    As `atlas_from_images`.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"texture folder {folder} does not exist")
  suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
  paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
  if not paths:
    raise ValueError(f"no images (.png/.jpg/.jpeg/.bmp/.webp) in {folder}")
  images = []
  for path in paths[:max_tiles]:
    with Image.open(path) as image:
      images.append(np.asarray(image.convert("RGB")))
  return atlas_from_images(images, tile_size)


def atlas_from_images(images: Sequence[np.ndarray],
                      tile_size: int = 64) -> np.ndarray:
  """Photos as a mip-mapped, seamless texture atlas.

  Each image is centre-cropped to a square, mirrored into a 2x2 tile (so the
  tile wraps without seams), resized to tile_size and blurred into mip levels
  (level l averages 2^l x 2^l texels, stored at full resolution).

  Args:
    images: ``H x W x 3`` uint8 RGB images.
    tile_size: A, a power of two in 16..512.

  Returns:
    (T, L, A, A, 3) float32 in [0, 1] with L = log2(A) - 1.
  """
  if tile_size < 16 or tile_size > 512 or tile_size & (tile_size - 1):
    raise ValueError(f"tile_size must be a power of two in 16..512, got {tile_size}")
  if not len(images):
    raise ValueError("no images for the texture atlas")
  num_levels = int(math.log2(tile_size)) - 1
  tiles = []
  for array in images:
    image = Image.fromarray(np.asarray(array, np.uint8)).convert("RGB")
    side = min(image.size)
    left = (image.size[0] - side) // 2
    top = (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((tile_size // 2, tile_size // 2), Image.LANCZOS)
    half = np.asarray(image, np.float32) / 255.0
    top_row = np.concatenate([half, half[:, ::-1]], axis=1)
    tile = np.concatenate([top_row, top_row[::-1]], axis=0)
    levels = [tile]
    for level in range(1, num_levels):
      factor = 2 ** level
      pooled = tile.reshape(tile_size // factor, factor, tile_size // factor,
                            factor, 3).mean(axis=(1, 3))
      upsampled = Image.fromarray(
          np.clip(pooled * 255.0, 0, 255).astype(np.uint8)).resize(
              (tile_size, tile_size), Image.BILINEAR)
      levels.append(np.asarray(upsampled, np.float32) / 255.0)
    tiles.append(np.stack(levels))
  return np.stack(tiles).astype(np.float32)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m xfactor_core.data.synthetic",
      description="Write synthetic posed sequences in the generic layout "
      "(DIR/<sequence>/frames/*.png + cameras.json).")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--num-sequences", type=int, required=True,
                      help="number of sequences (or pairs) to write")
  parser.add_argument("--frames", type=int, default=16, help="frames per sequence")
  parser.add_argument("--size", type=int, default=128,
                      help=f"frame side in pixels, {MIN_SIZE}..{MAX_SIZE}")
  parser.add_argument("--seed", type=int, default=0, help="world seed")
  parser.add_argument("--start-index", type=int, default=0,
                      help="index of the first sequence")
  parser.add_argument("--trajectory", choices=TRAJECTORIES, default=None,
                      help="trajectory type (default: random per sequence)")
  parser.add_argument("--transfer-pairs", action="store_true",
                      help="write transfer pairs <pair>/a and <pair>/b")
  parser.add_argument("--supersample", type=int, default=DEFAULT_SUPERSAMPLE,
                      help="samples per pixel side (1..4)")
  parser.add_argument("--texture-folder", default=None,
                      help="optional folder of photos used as extra textures")
  args = parser.parse_args(argv)
  if args.num_sequences < 1:
    parser.error(f"--num-sequences must be at least 1, got {args.num_sequences}")
  if args.frames < 1:
    parser.error(f"--frames must be at least 1, got {args.frames}")
  if not MIN_SIZE <= args.size <= MAX_SIZE:
    parser.error(f"--size must be in {MIN_SIZE}..{MAX_SIZE}, got {args.size}")
  if args.seed < 0 or args.start_index < 0:
    parser.error("--seed and --start-index must be non-negative")
  if not 1 <= args.supersample <= 4:
    parser.error(f"--supersample must be in 1..4, got {args.supersample}")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  """CLI entry point (see the module docstring)."""
  import tqdm  # pylint: disable=import-outside-toplevel

  from xfactor_core import runtime  # pylint: disable=import-outside-toplevel

  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  args = _parse_args(argv)
  runtime.enable_compilation_cache()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  atlas = (load_texture_atlas(args.texture_folder)
           if args.texture_folder else None)
  indices = range(args.start_index, args.start_index + args.num_sequences)
  for index in tqdm.tqdm(indices, desc="pairs" if args.transfer_pairs
                         else "sequences", unit="seq"):
    name = f"{index:06d}"
    if args.transfer_pairs:
      first, second = make_transfer_pair(
          args.seed, index, args.frames, args.size, args.trajectory,
          supersample=args.supersample, texture_atlas=atlas)
      write_sequence(first, out / name / "a")
      write_sequence(second, out / name / "b")
    else:
      write_sequence(make_sequence(args.seed, index, args.frames, args.size,
                                   args.trajectory,
                                   supersample=args.supersample,
                                   texture_atlas=atlas), out / name)
  logging.info("wrote %d %s to %s", args.num_sequences,
               "pairs" if args.transfer_pairs else "sequences", out)


if __name__ == "__main__":
  main()
