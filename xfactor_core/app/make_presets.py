"""Generates the app's presets: camera-motion clips and example context scenes.

    python -m xfactor_core.app.make_presets [--out presets] [--frames 24]

Motion presets are short target clips (128 px MP4, H.264) rendered with the
synthetic world, named as camera-control demos name them (orbit left, zoom in,
pan right, ...). Most come straight from :func:`synthetic.make_sequence` with
the matching trajectory type: sequence indices are searched until the sampled
direction and size of the motion fit the name. Spiral and the combined path
are not trajectory types of the synthetic world; they are built here from its
public camera and rendering functions in a scene sampled for a forward dolly
(so the room and the objects are clear of the path).

Context examples are synthetic rooms (one view, and a three-view set for
multi-view models) and public-domain / CC0 photos shipped with scikit-image.
Every asset gets a JSON file beside it that describes it (motion measured from
the cameras, source, licence).

Layout written::

    <out>/motions/<slug>.mp4 + <slug>.json
    <out>/contexts/<slug>/view_0.jpg ... + <out>/contexts/<slug>.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import pathlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from xfactor_core.app import presets as preset_store
from xfactor_core.inference import model_frames as frame_utils

MOTION_SIZE = 128
CONTEXT_SIZE = 256
FPS = 12.0
WORLD_SEED = 2510
MAX_SEARCH = 400
JPEG_QUALITY = 90
ROOM_INDICES = (3, 6, 12)  # synthetic rooms picked for the context examples
MP4_CRF = 28  # H.264 quality: keeps the 15 clips at a few hundred KB in all


# ------------------------------------------------------------ measuring --


def measure_motion(camera_from_world: np.ndarray) -> dict[str, float]:
  """Motion of the last camera relative to the first, in the first camera's
  OpenCV frame.

  Args:
    camera_from_world: ``F x 4 x 4``.

  Returns:
    ``right_m``, ``down_m``, ``forward_m`` (centre displacement, metres),
    ``yaw_right_deg`` (viewing direction turned right), ``pitch_up_deg``.
  """
  cams = np.asarray(camera_from_world, np.float64)
  rot0, rot1 = cams[0, :3, :3], cams[-1, :3, :3]
  centre0 = -rot0.T @ cams[0, :3, 3]
  centre1 = -rot1.T @ cams[-1, :3, 3]
  shift = rot0 @ (centre1 - centre0)
  forward = rot0 @ rot1.T @ np.array([0.0, 0.0, 1.0])
  return {
      "right_m": float(shift[0]), "down_m": float(shift[1]),
      "forward_m": float(shift[2]),
      "yaw_right_deg": math.degrees(math.atan2(forward[0], forward[2])),
      "pitch_up_deg": math.degrees(math.atan2(
          -forward[1], math.hypot(forward[0], forward[2]))),
  }


def _path_length(camera_from_world: np.ndarray) -> float:
  cams = np.asarray(camera_from_world, np.float64)
  centres = -np.einsum("fji,fj->fi", cams[:, :3, :3], cams[:, :3, 3])
  return float(np.linalg.norm(np.diff(centres, axis=0), axis=-1).sum())


# -------------------------------------------------------------- motions --


@dataclasses.dataclass(frozen=True)
class MotionSpec:
  """One motion preset.

  Attributes:
    name: the name users know (``"orbit left"``).
    description: one line for the UI.
    trajectory: the synthetic trajectory type searched (``None``: custom path).
    accept: predicate on :func:`measure_motion`'s dict (searched presets).
    custom: ``"spiral"`` or ``"zoom_pan"`` for the paths built here.
  """
  name: str
  description: str
  trajectory: Optional[str] = None
  accept: Optional[Callable[[dict[str, float]], bool]] = None
  custom: Optional[str] = None

  @property
  def slug(self) -> str:
    return preset_store.slugify(self.name)


MOTIONS: tuple[MotionSpec, ...] = (
    MotionSpec("orbit left", "circle the scene to the left, keeping it in view",
               "orbit",
               lambda m: m["right_m"] < -0.3 and m["yaw_right_deg"] > 12),
    MotionSpec("orbit right",
               "circle the scene to the right, keeping it in view",
               "orbit",
               lambda m: m["right_m"] > 0.3 and m["yaw_right_deg"] < -12),
    MotionSpec("zoom in", "move the camera forward (dolly in)",
               "dolly", lambda m: m["forward_m"] > 0.6),
    MotionSpec("zoom out", "move the camera backward (dolly out)",
               "dolly", lambda m: m["forward_m"] < -0.6),
    MotionSpec("move left", "slide the camera to the left (truck left)",
               "truck", lambda m: m["right_m"] < -0.5),
    MotionSpec("move right", "slide the camera to the right (truck right)",
               "truck", lambda m: m["right_m"] > 0.5),
    MotionSpec("move up", "raise the camera (pedestal up)",
               "pedestal", lambda m: m["down_m"] < -0.35),
    MotionSpec("move down", "lower the camera (pedestal down)",
               "pedestal", lambda m: m["down_m"] > 0.35),
    MotionSpec("pan left", "turn the camera to the left in place",
               "pan", lambda m: m["yaw_right_deg"] < -20),
    MotionSpec("pan right", "turn the camera to the right in place",
               "pan", lambda m: m["yaw_right_deg"] > 20),
    MotionSpec("tilt up", "turn the camera up in place",
               "tilt", lambda m: m["pitch_up_deg"] > 12),
    MotionSpec("tilt down", "turn the camera down in place",
               "tilt", lambda m: m["pitch_up_deg"] < -12),
    MotionSpec("spiral", "move forward on a widening spiral", custom="spiral"),
    MotionSpec("zoom in + pan right",
               "combined: move forward while turning right", custom="zoom_pan"),
    MotionSpec("free path", "a smooth hand-held-like path through the room",
               "spline", lambda m: _path_len_ok(m)),
)


def _path_len_ok(measured: dict[str, float]) -> bool:
  return measured.get("path_length_m", 0.0) > 0.8


def search_sequence(spec: MotionSpec, num_frames: int, size: int,
                    seed: int = WORLD_SEED, max_search: int = MAX_SEARCH
                    ) -> tuple[dict[str, Any], int]:
  """First sequence of ``spec.trajectory`` whose motion ``spec.accept``s.

  Returns:
    ``(sequence dict of make_sequence, index)``.
  """
  from xfactor_core.data import synthetic  # heavy: only for generation
  for index in range(max_search):
    sequence = synthetic.make_sequence(seed, index, num_frames, size,
                                       spec.trajectory)
    measured = measure_motion(sequence["camera_from_world"])
    measured["path_length_m"] = _path_length(sequence["camera_from_world"])
    if spec.accept(measured):
      return sequence, index
  raise RuntimeError(f"no {spec.trajectory} sequence among {max_search} fits "
                     f"{spec.name!r}; widen the search or relax its predicate")


@functools.partial(jax.jit, static_argnames=("size",))
def _render_frames(scene, camera_from_world, intrinsics, *, size: int):
  from xfactor_core.data import scene_render
  def one(camera):
    frame = scene_render.render_frame(scene, camera, intrinsics, size)
    return jnp.round(jnp.clip(frame, 0.0, 1.0) * 255.0).astype(jnp.uint8)
  return jax.lax.map(one, camera_from_world)


def custom_heading_path(kind: str, num_frames: int, distance: float):
  """Heading-frame path (centre, yaw, pitch), first camera at the origin.

  The heading frame has y up and z along the first view; +x is the camera's
  LEFT and positive yaw turns left (``scene_sampling`` conventions).
  """
  from xfactor_core.data import scene_sampling
  s = jnp.linspace(0.0, 1.0, num_frames)
  zeros = jnp.zeros_like(s)
  forward = distance * s
  if kind == "spiral":
    radius = 0.22 * s
    angle = 2.0 * jnp.pi * 1.25 * s
    centre = jnp.stack([radius * jnp.sin(angle), radius * (1 - jnp.cos(angle)),
                        forward], axis=-1)
    yaw = zeros
  elif kind == "zoom_pan":
    centre = jnp.stack([zeros, zeros, forward], axis=-1)
    yaw = -math.radians(30.0) * s  # negative yaw turns right
  else:
    raise ValueError(f"unknown custom path {kind!r}; use 'spiral' or "
                     "'zoom_pan'")
  return scene_sampling.CameraPath(centre, yaw, zeros)


def render_custom(spec: MotionSpec, num_frames: int, size: int,
                  seed: int = WORLD_SEED, max_search: int = MAX_SEARCH
                  ) -> tuple[dict[str, Any], int]:
  """A custom path filmed in the first forward-dolly scene it fits in."""
  from xfactor_core.data import scene_sampling
  dolly = scene_sampling.TRAJECTORIES.index("dolly")
  for index in range(max_search):
    key = jax.random.fold_in(jax.random.key(seed), index)
    shot = scene_sampling.sample_shot(key, num_frames, 1, jnp.int32(dolly))
    cams = np.asarray(shot.camera_from_world[0])
    measured = measure_motion(cams)
    if measured["forward_m"] < 0.9:
      continue
    rot0 = cams[0, :3, :3]
    start = -rot0.T @ cams[0, :3, 3]
    view = rot0[2]
    yaw0 = math.atan2(view[0], view[2])
    pitch0 = math.asin(float(np.clip(view[1], -1, 1)))
    heading = custom_heading_path(spec.custom, num_frames,
                                  0.9 * measured["forward_m"])
    heading = heading._replace(pitch=heading.pitch + pitch0)
    placement = scene_sampling.Placement(jnp.asarray(start, jnp.float32),
                                         jnp.float32(yaw0))
    world = scene_sampling.place_path(heading, placement)
    scene = jax.tree.map(lambda x: x[0], shot.scenes)
    if not bool(scene_sampling.path_is_valid(world, scene.room_size)):
      continue
    camera_from_world = scene_sampling.camera_from_world_matrix(world)
    intrinsics = scene_sampling.intrinsics_matrix(shot.fov, size)
    frames = _render_frames(scene, camera_from_world, intrinsics, size=size)
    return {"frames": np.asarray(frames),
            "camera_from_world": np.asarray(camera_from_world, np.float32),
            "trajectory": spec.custom}, index
  raise RuntimeError(f"no dolly scene among {max_search} fits {spec.name!r}")


def write_motion(spec: MotionSpec, out: pathlib.Path, num_frames: int,
                 size: int, seed: int = WORLD_SEED) -> dict[str, Any]:
  """Renders one motion preset; writes ``<slug>.mp4`` and ``<slug>.json``."""
  if spec.custom:
    sequence, index = render_custom(spec, num_frames, size, seed)
    how = (f"custom {spec.custom} path built in xfactor_core.app.make_presets, "
           f"rendered in scene_sampling.sample_shot(fold_in(key({seed}), "
           f"{index}), trajectory 'dolly')")
  else:
    sequence, index = search_sequence(spec, num_frames, size, seed)
    how = (f"synthetic.make_sequence(seed={seed}, index={index}, num_frames="
           f"{num_frames}, size={size}, trajectory={spec.trajectory!r})")
  clip = out / "motions" / f"{spec.slug}.mp4"
  write_small_mp4(clip, sequence["frames"], fps=FPS)
  measured = measure_motion(sequence["camera_from_world"])
  measured["path_length_m"] = _path_length(sequence["camera_from_world"])
  info = {
      "name": spec.name, "description": spec.description,
      "clip": clip.relative_to(out).as_posix(), "num_frames": num_frames,
      "size": size, "fps": FPS, "source": "synthetic world", "generator": how,
      "motion": {k: round(v, 3) for k, v in measured.items()},
      "licence": "generated by this project (same licence as the code)",
      "order": MOTIONS.index(spec),
  }
  (out / "motions" / f"{spec.slug}.json").write_text(json.dumps(info, indent=1))
  return info


def write_small_mp4(path: pathlib.Path, frames: np.ndarray, fps: float,
                    crf: int = MP4_CRF) -> pathlib.Path:
  """uint8 ``F x H x W x 3`` -> a compact browser-playable MP4 (H.264)."""
  import imageio.v2 as imageio
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264",
                              pixelformat="yuv420p", quality=None,
                              macro_block_size=1,
                              output_params=["-crf", str(crf), "-preset",
                                             "veryslow"])
  try:
    for frame in frames:
      writer.append_data(np.asarray(frame, np.uint8))
  finally:
    writer.close()
  return path


# ------------------------------------------------------------- contexts --

PHOTOS = (
    ("astronaut", "astronaut", "Eileen Collins, NASA Great Images database",
     "public domain (no known copyright restrictions, NASA)"),
    ("chelsea", "cat", "Chelsea the cat, photo by Stefan van der Walt",
     "CC0 (no copyright restrictions)"),
    ("coffee", "coffee cup", "Coffee cup, photo by Rachel Michetti, courtesy "
     "of Pikolo Espresso Bar", "CC0 (no copyright restrictions)"),
    ("rocket", "rocket launch", "Launch of DSCOVR on Falcon 9, SpaceX photos",
     "public domain (released by SpaceX)"),
)


def _save_jpeg(image: np.ndarray, path: pathlib.Path, size: int) -> None:
  square = frame_utils.to_uint8(frame_utils.prepare_frame(image, size))
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(square).save(path, quality=JPEG_QUALITY)


def write_context(out: pathlib.Path, slug: str, name: str,
                  views: Sequence[np.ndarray], size: int,
                  **fields: Any) -> dict[str, Any]:
  """Writes ``contexts/<slug>/view_<i>.jpg`` and ``contexts/<slug>.json``."""
  files = []
  for i, view in enumerate(views):
    path = out / "contexts" / slug / f"view_{i}.jpg"
    _save_jpeg(view, path, size)
    files.append(path.relative_to(out).as_posix())
  info = {"name": name, "files": files, "num_views": len(files), "size": size,
          **fields}
  (out / "contexts" / f"{slug}.json").write_text(json.dumps(info, indent=1))
  return info


def write_contexts(out: pathlib.Path, size: int,
                   seed: int = WORLD_SEED) -> list[dict[str, Any]]:
  """Synthetic rooms (3 single views, one 3-view set) and the photos."""
  import skimage
  import skimage.data
  from xfactor_core.data import synthetic
  written = []
  for order, index in enumerate(ROOM_INDICES):
    seq = synthetic.make_sequence(seed + 1, index, 1, size, "pan")
    written.append(write_context(
        out, f"room_{order + 1}", f"synthetic room {order + 1}",
        [seq["frames"][0]], size, source="synthetic world",
        generator=f"synthetic.make_sequence(seed={seed + 1}, index={index}, "
                  f"num_frames=1, size={size})",
        licence="generated by this project (same licence as the code)",
        order=order))
  orbit = MotionSpec("wide orbit", "", "orbit",
                     lambda m: abs(m["right_m"]) > 1.0)
  seq, index = search_sequence(orbit, 9, size, seed + 2)
  written.append(write_context(
      out, "room_3_views", "synthetic room, 3 views (multi-view)",
      [seq["frames"][i] for i in (0, 4, 8)], size, source="synthetic world",
      generator=f"synthetic.make_sequence(seed={seed + 2}, index={index}, "
                f"num_frames=9, size={size}, trajectory='orbit'), "
                "frames 0, 4, 8",
      licence="generated by this project (same licence as the code)",
      order=3))
  for order, (function, name, credit, licence) in enumerate(PHOTOS):
    image = getattr(skimage.data, function)()
    written.append(write_context(
        out, function, f"photo: {name}", [image], size,
        source=(f"skimage.data.{function}() "
                f"(scikit-image {skimage.__version__})"),
        credit=credit, licence=licence, order=10 + order))
  return written


def main(argv: Optional[Sequence[str]] = None) -> None:
  """CLI entry point (see the module docstring)."""
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  parser = argparse.ArgumentParser(
      prog="python -m xfactor_core.app.make_presets",
      description="Render the app's motion presets and example contexts.")
  parser.add_argument("--out", default=str(preset_store.PRESETS_DIR),
                      help="output folder (default: the repo's presets/)")
  parser.add_argument("--frames", type=int, default=30,
                      help="frames per motion clip")
  parser.add_argument("--size", type=int, default=MOTION_SIZE,
                      help="motion clip side in pixels")
  parser.add_argument("--context-size", type=int, default=CONTEXT_SIZE,
                      help="context image side in pixels")
  parser.add_argument("--seed", type=int, default=WORLD_SEED,
                      help="synthetic world seed")
  parser.add_argument("--only", nargs="*", default=None,
                      help="only these motion names (default: all)")
  args = parser.parse_args(argv)
  if args.frames < 2:
    parser.error(f"--frames must be at least 2, got {args.frames}")
  out = pathlib.Path(args.out)
  specs = [s for s in MOTIONS if not args.only or s.name in args.only]
  for spec in tqdm(specs, desc="motions", unit="clip"):
    info = write_motion(spec, out, args.frames, args.size, args.seed)
    logging.info("%s: %s", spec.name, info["motion"])
  if not args.only:
    write_contexts(out, args.context_size, args.seed)
  total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  logging.info("wrote presets to %s (%.0f KB)", out, total / 1024)


if __name__ == "__main__":
  main()
