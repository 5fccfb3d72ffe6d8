"""Random rooms, objects, textures and camera trajectories of the synthetic world.

All samplers are pure functions of a PRNG key with fixed output shapes, so they
jit once and vmap over sequences. Conventions (world y up, OpenCV cameras) are
those of `scene_render`.

Camera paths are built in a "heading frame" attached to the first camera: origin
at its centre, y up, z along its horizontal viewing direction. A path is a list
of (centre, yaw, pitch) in that frame (roll is always zero); a placement (start
centre and heading in the room) maps it into the world. Because the relative
motion T_i T_0^-1 does not depend on the placement, two scenes that share the
path but not the placement are filmed with exactly the same relative motion
(transfer pairs).
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from xfactor_core.data import scene_render

TRAJECTORIES = ("orbit", "dolly", "truck", "pedestal", "pan", "tilt", "spline")
FOV_RANGE_DEGREES = (45.0, 75.0)
ROOM_WIDTH_RANGE = (4.0, 9.0)   # x and z extent, metres.
ROOM_HEIGHT_RANGE = (2.5, 3.6)
PITCH_LIMITS = (math.radians(-60.0), math.radians(45.0))

# Motion amplitude multipliers tried from large to small; the largest one that
# keeps every camera inside the room and facing open space wins.
_MOTION_SCALES = (1.0, 0.75, 0.55, 0.4, 0.28, 0.18, 0.1, 0.05)
_WALL_MARGIN = 0.3       # metres between a camera centre and any room surface.
_MIN_VIEW_DEPTH = 1.2    # metres of free room along every optical axis.
_START_WALL_MARGIN = 0.6
_START_VIEW_DEPTH = 2.0
_OBJECT_CLEARANCE = 0.9  # metres between any camera centre and an object.


class WorldSettings(NamedTuple):
  """Knobs of the world that a training schedule may turn (traced scalars, so
  changing them does not recompile). The defaults are the standard world.

  Attributes:
    motion_factor: multiplies every trajectory's amplitude (camera baseline);
      1 is the standard range, smaller values give smaller baselines.
    max_objects: at most this many objects per room (0..NUM_OBJECT_SLOTS).
    photo_scene_prob: probability that a scene is a photo scene (walls are
      photo backdrops, objects photo-textured planes and boxes); only used
      when a texture atlas of photos is given.
  """
  motion_factor: Any = 1.0
  max_objects: Any = scene_render.NUM_OBJECT_SLOTS
  photo_scene_prob: Any = 0.0


class CameraPath(NamedTuple):
  """A roll-free camera path, leading axes (..., F)."""

  center: jax.Array  # (..., F, 3)
  yaw: jax.Array     # (..., F) radians; 0 looks along +z, grows towards +x.
  pitch: jax.Array   # (..., F) radians; positive looks up.


class Placement(NamedTuple):
  """Where the heading frame sits in the room."""

  origin: jax.Array  # (3,) world position of the first camera centre.
  yaw: jax.Array     # () world yaw of the heading frame's z axis.


def _is_shape(node) -> bool:
  return isinstance(node, tuple)


def draw_uniforms(key: jax.Array, shapes: dict[str, Any]) -> dict[str, Any]:
  """Independent U[0, 1) arrays for a nested dict of shapes, in one PRNG call.

  Every sampler below takes such a dict instead of a key: a single threefry
  call per shot (instead of one per parameter) keeps the compilation of the
  jitted generator short.

  Args:
    key: PRNG key.
    shapes: nested dict whose leaves are shape tuples.

  Returns:
    The same nested dict with float32 arrays of those shapes as leaves.
  """
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=_is_shape)
  sizes = [math.prod(shape) for shape in leaves]
  flat = jax.random.uniform(key, (sum(sizes),))
  arrays, start = [], 0
  for shape, size in zip(leaves, sizes):
    arrays.append(flat[start:start + size].reshape(shape))
    start += size
  return jax.tree.unflatten(treedef, arrays)


def _with_leading(shapes: dict[str, Any], count: int) -> dict[str, Any]:
  return jax.tree.map(lambda shape: (count,) + shape, shapes, is_leaf=_is_shape)


def _uniform(u, low, high):
  return low + u * (high - low)


def _log_uniform(u, low, high):
  return jnp.exp(_uniform(u, math.log(low), math.log(high)))


def _sign(u):
  return jnp.where(u < 0.5, -1.0, 1.0)


def _integer(u, count):
  """Uniform integer in [0, count) from u in [0, 1)."""
  return jnp.minimum(jnp.floor(u * count), count - 1).astype(jnp.int32)


def forward_vector(yaw: jax.Array, pitch: jax.Array) -> jax.Array:
  """Unit viewing direction (..., 3) in the world (or heading) frame."""
  cos_pitch = jnp.cos(pitch)
  return jnp.stack([cos_pitch * jnp.sin(yaw), jnp.sin(pitch),
                    cos_pitch * jnp.cos(yaw)], axis=-1)


def rotation_from_yaw_pitch(yaw: jax.Array, pitch: jax.Array) -> jax.Array:
  """camera_from_world rotation (..., 3, 3): rows are the camera x, y, z axes.

  x (right) is horizontal, y points down-ish, z is the viewing direction.
  """
  forward = forward_vector(yaw, pitch)
  zeros = jnp.zeros_like(yaw)
  right = jnp.stack([-jnp.cos(yaw), zeros, jnp.sin(yaw)], axis=-1)
  down = jnp.cross(forward, right)
  return jnp.stack([right, down, forward], axis=-2)


def camera_from_world_matrix(path: CameraPath) -> jax.Array:
  """4x4 camera_from_world matrices (..., F, 4, 4) of a world-frame path."""
  rotation = rotation_from_yaw_pitch(path.yaw, path.pitch)
  translation = -jnp.einsum("...ij,...j->...i", rotation, path.center)
  top = jnp.concatenate([rotation, translation[..., None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0]),
                            top.shape[:-2] + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def intrinsics_matrix(fov_radians: jax.Array, size: int) -> jax.Array:
  """(3, 3) pixel intrinsics of a square S x S pinhole camera with that FOV."""
  focal = 0.5 * size / jnp.tan(0.5 * jnp.asarray(fov_radians, jnp.float32))
  centre = jnp.full_like(focal, 0.5 * (size - 1))
  zero = jnp.zeros_like(focal)
  one = jnp.ones_like(focal)
  return jnp.stack([jnp.stack([focal, zero, centre]),
                    jnp.stack([zero, focal, centre]),
                    jnp.stack([zero, zero, one])])


def _rotate_about_y(angle: jax.Array, vector: jax.Array) -> jax.Array:
  """Rotates (..., 3) vectors by angle about +y (maps +z to (sin, 0, cos))."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  x, y, z = vector[..., 0], vector[..., 1], vector[..., 2]
  return jnp.stack([c * x + s * z, y, -s * x + c * z], axis=-1)


def _bezier(control: jax.Array, s: jax.Array) -> jax.Array:
  """Cubic Bezier; control (..., 4, 3), s (F,) -> (..., F, 3)."""
  s = s[:, None]
  t = 1.0 - s
  weights = jnp.stack([t ** 3, 3 * t * t * s, 3 * t * s * s, s ** 3], axis=0)
  return jnp.einsum("kf,...kd->...fd", weights[..., 0], control)


HEADING_UNIFORMS = {
    "signs": (5,), "dolly": (), "truck": (), "pedestal": (), "pan": (),
    "tilt": (), "orbit_radius": (), "orbit": (), "step_size": (),
    "steps": (3, 3), "look": (3, 3)}


def heading_paths(u: dict[str, jax.Array], num_frames: int,
                  start_pitch: jax.Array,
                  motion_factor: Any = 1.0) -> CameraPath:
  """Every trajectory type at every motion scale, in the heading frame.

  Args:
    u: uniforms shaped like HEADING_UNIFORMS (speeds, directions, radius...).
    num_frames: F.
    start_pitch: () pitch of the first camera, radians.
    motion_factor: () multiplier of every amplitude (WorldSettings).

  Returns:
    CameraPath with leading axes (len(TRAJECTORIES), len(_MOTION_SCALES), F).
  """
  signs = _sign(u["signs"])
  motion_scales = jnp.asarray(_MOTION_SCALES) * motion_factor  # (C,)
  scales = motion_scales[:, None]  # (C, 1)
  s = jnp.linspace(0.0, 1.0, num_frames)[None, :]  # (1, F)
  progress = scales * s  # (C, F)
  zeros = jnp.zeros_like(progress)
  no_translation = jnp.zeros(progress.shape + (3,))
  pitch0 = jnp.full_like(progress, start_pitch)
  forward0 = forward_vector(jnp.zeros(()), start_pitch)
  right0 = jnp.array([-1.0, 0.0, 0.0])
  up = jnp.array([0.0, 1.0, 0.0])

  def line(direction, distance):
    return CameraPath(progress[..., None] * distance * direction, zeros, pitch0)

  dolly = line(forward0, signs[0] * _log_uniform(u["dolly"], 0.2, 3.0))
  truck = line(right0, signs[1] * _log_uniform(u["truck"], 0.2, 3.0))
  pedestal = line(up, signs[2] * _log_uniform(u["pedestal"], 0.15, 1.4))
  pan_angle = signs[3] * math.radians(1.0) * _log_uniform(u["pan"], 8.0, 90.0)
  pan = CameraPath(no_translation, progress * pan_angle, pitch0)
  # Tilt towards the middle of the pitch range so that it never clips.
  tilt_sign = jnp.where(start_pitch > math.radians(-10.0), -1.0, 1.0)
  tilt_sign = jnp.where(u["signs"][4] < 0.3, -tilt_sign, tilt_sign)
  tilt_angle = tilt_sign * math.radians(1.0) * _log_uniform(u["tilt"], 6.0, 35.0)
  tilt = CameraPath(no_translation, zeros,
                    jnp.clip(start_pitch + progress * tilt_angle, *PITCH_LIMITS))

  # Orbit about the vertical axis through a point on the first optical axis.
  radius = _uniform(u["orbit_radius"], 1.0, 2.5)
  orbit_angle = signs[4] * math.radians(1.0) * _log_uniform(
      u["orbit"], 10.0, 80.0) * progress
  orbit_center = jnp.stack(
      [-radius * jnp.sin(orbit_angle), zeros,
       radius - radius * jnp.cos(orbit_angle)], axis=-1)
  orbit = CameraPath(orbit_center, orbit_angle, pitch0)

  # Smooth random path: Bezier curves for the centre and the look-at point.
  step_size = _log_uniform(u["step_size"], 0.4, 2.0)
  steps = (2.0 * u["steps"] - 1.0) * jnp.array([1.0, 0.3, 1.0]) * step_size
  centre_control = jnp.concatenate(
      [jnp.zeros((1, 3)), jnp.cumsum(steps, axis=0)], axis=0)
  look0 = 2.5 * forward0
  look_offsets = (2.0 * u["look"] - 1.0) * jnp.array([1.5, 0.5, 0.8])
  look_control = look0 + jnp.concatenate([jnp.zeros((1, 3)), look_offsets], 0)
  scale3 = motion_scales[:, None, None]
  centre_control = scale3 * centre_control[None]
  look_control = look0 + scale3 * (look_control[None] - look0)
  spline_centre = _bezier(centre_control, s[0])  # (C, F, 3)
  look = _bezier(look_control, s[0]) - spline_centre
  spline_yaw = jnp.arctan2(look[..., 0], look[..., 2])
  spline_pitch = jnp.clip(
      jnp.arctan2(look[..., 1], jnp.linalg.norm(look[..., (0, 2)], axis=-1)),
      *PITCH_LIMITS)
  spline = CameraPath(spline_centre, spline_yaw, spline_pitch)

  by_name = {"orbit": orbit, "dolly": dolly, "truck": truck,
             "pedestal": pedestal, "pan": pan, "tilt": tilt, "spline": spline}
  paths = [by_name[name] for name in TRAJECTORIES]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *paths)


def place_path(path: CameraPath, placement: Placement) -> CameraPath:
  """Maps a heading-frame path into the world."""
  center = placement.origin + _rotate_about_y(placement.yaw, path.center)
  return CameraPath(center, path.yaw + placement.yaw, path.pitch)


def view_depth(center: jax.Array, direction: jax.Array,
               room_size: jax.Array) -> jax.Array:
  """Distance (...) from centres (..., 3) along directions (..., 3) to the walls."""
  half = jnp.stack([room_size[0] / 2, room_size[1] / 2, room_size[2] / 2])
  offset = jnp.stack([0.0, room_size[1] / 2, 0.0])
  local = center - offset
  safe = jnp.where(jnp.abs(direction) < 1e-9, 1e-9, direction)
  bound = jnp.where(safe > 0, half, -half)
  return jnp.min((bound - local) / safe, axis=-1)


def _inside_room(center: jax.Array, room_size: jax.Array,
                 margin: float) -> jax.Array:
  half = jnp.stack([room_size[0] / 2, room_size[1] / 2, room_size[2] / 2])
  local = center - jnp.stack([0.0, room_size[1] / 2, 0.0])
  return jnp.all(jnp.abs(local) <= half - margin, axis=-1)


def path_is_valid(path: CameraPath, room_size: jax.Array) -> jax.Array:
  """Whether every camera of a world path (..., F) stays clear: (...) bool."""
  depth = view_depth(path.center, forward_vector(path.yaw, path.pitch),
                     room_size)
  ok = _inside_room(path.center, room_size, _WALL_MARGIN) & (
      depth >= _MIN_VIEW_DEPTH)
  return jnp.all(ok, axis=-1)


def sample_room_size(u: jax.Array) -> jax.Array:
  """(3,) width, height, depth of a room from (3,) uniforms."""
  return jnp.stack([_uniform(u[0], *ROOM_WIDTH_RANGE),
                    _uniform(u[1], *ROOM_HEIGHT_RANGE),
                    _uniform(u[2], *ROOM_WIDTH_RANGE)])


def sample_placement(u: jax.Array, room_size: jax.Array,
                     start_pitch: jax.Array) -> Placement:
  """A start camera near the back of the room facing open space.

  Candidates stand between the room centre and the wall behind them; the first
  one with enough margin and free view wins, else the room centre (which always
  sees at least half a room width ahead).

  Args:
    u: (4, P) uniforms for P candidates.
    room_size: (3,).
    start_pitch: () radians.
  """
  yaw = _uniform(u[0], -jnp.pi, jnp.pi)
  heading = forward_vector(yaw, jnp.zeros_like(yaw))  # (P, 3)
  height = _uniform(u[1], 0.8, jnp.minimum(2.0, room_size[1] - 0.5))
  room_centre = jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0]), heading.shape)
  back_room = view_depth(room_centre, -heading, room_size)
  back = _uniform(u[2], 0.3, 0.95) * jnp.maximum(back_room - 0.8, 0.0)
  side = jnp.stack([-heading[:, 2], jnp.zeros_like(yaw), heading[:, 0]], -1)
  lateral = _uniform(u[3], -0.5, 0.5) * jnp.minimum(room_size[0],
                                                    room_size[2]) * 0.5
  origin = (-back[:, None] * heading + lateral[:, None] * side
            + height[:, None] * jnp.array([0.0, 1.0, 0.0]))
  depth = view_depth(origin, forward_vector(yaw, jnp.full_like(yaw, start_pitch)),
                     room_size)
  ok = _inside_room(origin, room_size, _START_WALL_MARGIN) & (
      depth >= _START_VIEW_DEPTH)
  fallback = jnp.array([0.0, 1.4, 0.0])
  first = jnp.argmax(ok)
  any_ok = jnp.any(ok)
  return Placement(jnp.where(any_ok, origin[first], fallback),
                   jnp.where(any_ok, yaw[first], yaw[0]))


def _random_rotation(u: jax.Array) -> jax.Array:
  """Uniform random rotation (3, 3) from three U[0, 1) numbers (Shoemake)."""
  root1, root2 = jnp.sqrt(1.0 - u[0]), jnp.sqrt(u[0])
  angle1, angle2 = 2.0 * jnp.pi * u[1], 2.0 * jnp.pi * u[2]
  x, y = root1 * jnp.sin(angle1), root1 * jnp.cos(angle1)
  z, w = root2 * jnp.sin(angle2), root2 * jnp.cos(angle2)
  return jnp.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ])


def _yaw_rotation(angle: jax.Array) -> jax.Array:
  c, s = jnp.cos(angle), jnp.sin(angle)
  zero, one = jnp.zeros_like(c), jnp.ones_like(c)
  return jnp.stack([jnp.stack([c, zero, s]), jnp.stack([zero, one, zero]),
                    jnp.stack([-s, zero, c])])


def object_uniforms(num_candidates: int = 3) -> dict[str, tuple[int, ...]]:
  """Uniform shapes consumed by sample_objects."""
  k = scene_render.NUM_OBJECT_SLOTS
  shape = (num_candidates, k)
  return {"count": (), "type": (k,), "box": (k, 3), "radius": (k,),
          "height": (k,), "floating": (k,), "yaw": (k,), "rotation": (k, 3),
          "in_view": shape, "distance": shape, "bearing": shape,
          "anywhere": shape + (3,), "float_height": shape}


def sample_objects(u: dict[str, jax.Array], room_size: jax.Array,
                   path: CameraPath, fov: jax.Array,
                   max_objects: Any = scene_render.NUM_OBJECT_SLOTS,
                   photo_scene: Any = False):
  """Object slots placed mostly in view and never near a camera centre.

  Args:
    u: uniforms shaped like object_uniforms(P): P candidate positions per slot.
    room_size: (3,).
    path: the world camera path (F frames) the objects must keep clear of.
    fov: () field of view, radians.
    max_objects: () at most this many active objects.
    photo_scene: () bool; a photo scene has upright boxes only, about half of
      them thin panels (photo planes), larger and always in view.

  Returns:
    active (K,), type (K,) int32, center (K, 3), rotation (K, 3, 3),
    half size (K, 3).
  """
  k = scene_render.NUM_OBJECT_SLOTS
  count = jnp.minimum(_integer(u["count"], k + 1), max_objects)
  object_type = jnp.where(u["type"] < 0.45, scene_render.BOX,
                          jnp.where(u["type"] < 0.72, scene_render.SPHERE,
                                    scene_render.CYLINDER)).astype(jnp.int32)
  object_type = jnp.where(photo_scene, scene_render.BOX, object_type)
  box_size = _log_uniform(u["box"], 0.12, 0.65)
  # Photo panels: 0.4..1.6 m wide and high, 3 cm thick, facing +-z before
  # their yaw; the other photo boxes are as large as the largest boxes.
  panel = photo_scene & (u["type"] < 0.5)
  panel_size = jnp.stack([_uniform(u["box"][:, 0], 0.2, 0.8),
                          _uniform(u["box"][:, 1], 0.2, 0.8),
                          jnp.full((k,), 0.015)], axis=-1)
  box_size = jnp.where(panel[:, None], panel_size,
                       jnp.where(photo_scene, _uniform(u["box"], 0.2, 0.6),
                                 box_size))
  radius = _log_uniform(u["radius"], 0.12, 0.5)
  cylinder_half_height = _log_uniform(u["height"], 0.12, 0.8)
  half_size = jnp.where(
      (object_type == scene_render.BOX)[:, None], box_size,
      jnp.where((object_type == scene_render.SPHERE)[:, None],
                radius[:, None] * jnp.ones(3),
                jnp.stack([radius, cylinder_half_height, radius], -1)))
  floating = (u["floating"] < 0.25) & ~photo_scene
  middle = path.center.shape[0] // 2
  view_yaw = path.yaw[middle]
  # Photo panels face the middle camera to within +-30 degrees.
  yaw = jnp.where(panel, view_yaw + _uniform(u["yaw"], -0.5, 0.5),
                  _uniform(u["yaw"], -jnp.pi, jnp.pi))
  rotation = jnp.where(floating[:, None, None],
                       jax.vmap(_random_rotation)(u["rotation"]),
                       jax.vmap(_yaw_rotation)(yaw))
  extent = jnp.einsum("kij,kj->ki", jnp.abs(rotation), half_size)
  bounding_radius = jnp.linalg.norm(half_size, axis=-1)

  # Candidate horizontal positions: in the middle camera's view or anywhere.
  depth_ahead = view_depth(path.center[middle],
                           forward_vector(view_yaw, jnp.zeros(())), room_size)
  distance = 1.0 + u["distance"] * jnp.maximum(depth_ahead - 1.2, 0.1)
  bearing = view_yaw + _uniform(u["bearing"], -0.4, 0.4) * fov
  ahead = path.center[middle] + distance[..., None] * forward_vector(
      bearing, jnp.zeros_like(bearing))
  anywhere = (u["anywhere"] - 0.5) * room_size
  in_view = (u["in_view"] < 0.7) | photo_scene
  xz = jnp.where(in_view[..., None], ahead, anywhere)
  limit_x = jnp.maximum(room_size[0] / 2 - extent[:, 0] - 0.02, 0.0)
  limit_z = jnp.maximum(room_size[2] / 2 - extent[:, 2] - 0.02, 0.0)
  x = jnp.clip(xz[..., 0], -limit_x, limit_x)
  z = jnp.clip(xz[..., 2], -limit_z, limit_z)
  low = extent[:, 1] + 0.2
  high = jnp.maximum(room_size[1] - extent[:, 1] - 0.1, low)
  y = jnp.where(floating, _uniform(u["float_height"], low, high), extent[:, 1])
  # Photo panels stand on short legs at eye level rather than on the floor.
  y = jnp.where(panel, jnp.minimum(_uniform(u["float_height"], 0.9, 1.5),
                                   high), y)
  center = jnp.stack([x, y, z], axis=-1)  # (P, K, 3)
  gap = jnp.linalg.norm(center[:, :, None, :] - path.center[None, None],
                        axis=-1).min(axis=-1)  # (P, K)
  clear = gap >= bounding_radius + _OBJECT_CLEARANCE
  first = jnp.argmax(clear, axis=0)
  chosen = jnp.take_along_axis(center, first[None, :, None], axis=0)[0]
  active = jnp.any(clear, axis=0) & (jnp.arange(k) < count)
  return active, object_type, chosen, rotation, half_size


_N = scene_render.NUM_SURFACES
TEXTURE_UNIFORMS = {
    "grey": (_N, 1), "tint": (_N, 3), "amplitude": (_N, 1),
    "amplitude_channel": (_N, 3), "mono": (_N, 1), "frequency_mono": (_N, 1),
    "frequency": (_N, 3), "phase_mono": (_N, 1), "phase": (_N, 3),
    "kind": (_N,), "weight": (_N, 1), "noise_weight": (_N,), "period": (_N,),
    "aligned": (_N,), "angle": (_N,), "offset": (_N, 2),
    "noise_frequency": (_N,), "persistence": (_N,), "detail": (_N,),
    "detail_frequency": (_N,),
    "seed": (_N,), "photo": (_N,), "photo_index": (_N,), "photo_period": (_N,)}


def sample_textures(u: dict[str, jax.Array], photo_scene: Any = False,
                    room_size: Any = None, object_half_size: Any = None
                    ) -> scene_render.SurfaceTextures:
  """Procedural texture parameters for every surface from TEXTURE_UNIFORMS.

  In a photo scene (``photo_scene`` True, with ``room_size`` (3,) and
  ``object_half_size`` (K, 3)) the walls and objects show whole photos: one
  photo spans most of each wall (a backdrop) and most of each object face, the
  floor and ceiling keep their procedural texture.
  """
  n = scene_render.NUM_SURFACES
  is_room = jnp.arange(n) < scene_render.NUM_ROOM_SURFACES
  saturation = jnp.where(is_room, 0.7, 1.2)[:, None]
  offset = _uniform(u["grey"], 0.3, 0.68) + _uniform(u["tint"], -0.18,
                                                      0.18) * saturation
  amplitude = _uniform(u["amplitude"], 0.1, 0.38) * _uniform(
      u["amplitude_channel"], 0.6, 1.0)
  mono = u["mono"] < 0.35
  frequency = jnp.where(mono, _uniform(u["frequency_mono"], 0.4, 1.0),
                        _uniform(u["frequency"], 0.3, 1.2))
  phase = jnp.where(mono, u["phase_mono"], u["phase"])
  kind = _integer(u["kind"], 4)
  weights = jax.nn.one_hot(kind, 4) * _uniform(u["weight"], 0.7, 1.3)
  weights = weights.at[:, 3].add(_uniform(u["noise_weight"], 0.15, 0.8))
  period = jnp.where(is_room, _log_uniform(u["period"], 0.2, 1.5),
                     _log_uniform(u["period"], 0.08, 0.6))
  axis_aligned = (u["aligned"] < 0.7) & is_room
  angle = jnp.where(axis_aligned, jnp.where(u["angle"] < 0.5, 0.0, jnp.pi / 2),
                    u["angle"] * jnp.pi)
  photo_weight = (u["photo"] < 0.5).astype(jnp.float32)
  photo_period = _log_uniform(u["photo_period"], 0.5, 2.5)
  if room_size is not None:
    # A tile holds the photo mirrored 2 x 2, so a photo spans half a period.
    wall_width = jnp.array([room_size[2], room_size[2], room_size[0],
                            room_size[0]])
    wall_period = 2.0 * wall_width * _uniform(u["photo_period"][2:6], 0.3,
                                              0.6)
    object_period = 4.0 * jnp.max(object_half_size[:, :2], axis=-1) * (
        _uniform(u["photo_period"][6:], 0.9, 1.2))
    scene_period = jnp.concatenate([photo_period[:2], wall_period,
                                    object_period])
    is_floor_or_ceiling = jnp.arange(n) < 2
    photo_period = jnp.where(photo_scene & ~is_floor_or_ceiling, scene_period,
                             photo_period)
    photo_weight = jnp.where(photo_scene,
                             (~is_floor_or_ceiling).astype(jnp.float32),
                             photo_weight)
  return scene_render.SurfaceTextures(
      palette_offset=offset, palette_amplitude=amplitude,
      palette_frequency=frequency, palette_phase=phase,
      pattern_weights=weights, pattern_period=period, pattern_angle=angle,
      texture_offset=_uniform(u["offset"], -50.0, 50.0),
      noise_frequency=_log_uniform(u["noise_frequency"], 0.7, 5.0),
      detail_frequency=_log_uniform(u["detail_frequency"], 6.0, 24.0),
      noise_persistence=_uniform(u["persistence"], 0.45, 0.65),
      detail_amplitude=_uniform(u["detail"], 0.1, 0.4),
      seed=_integer(u["seed"], 1 << 22),
      photo_weight=photo_weight,
      photo_index=_integer(u["photo_index"], 1 << 20),
      photo_period=photo_period)


def sample_lighting(u: jax.Array):
  """Directional light (3,), light colour (3,) and ambient () from (7,) uniforms."""
  elevation = math.radians(1.0) * _uniform(u[0], 35.0, 75.0)
  azimuth = _uniform(u[1], -jnp.pi, jnp.pi)
  direction = jnp.stack([jnp.cos(elevation) * jnp.sin(azimuth),
                         jnp.sin(elevation),
                         jnp.cos(elevation) * jnp.cos(azimuth)])
  intensity = _uniform(u[2], 0.45, 0.75)
  tint = 1.0 + _uniform(u[3:6], -0.08, 0.08)
  ambient = _uniform(u[6], 0.45, 0.62)
  return direction, intensity * tint, ambient


class Shot(NamedTuple):
  """Scenes and cameras of one sample: one scene, or two for a transfer pair."""

  scenes: scene_render.Scene     # leading axis V (number of scenes).
  camera_from_world: jax.Array   # (V, F, 4, 4)
  fov: jax.Array                 # () radians, shared.
  trajectory_index: jax.Array    # () int32 into TRAJECTORIES.
  motion_scale: jax.Array        # () multiplier applied to the sampled motion.


def sample_shot(key: jax.Array, num_frames: int, num_scenes: int,
                trajectory_index: jax.Array,
                world: WorldSettings = WorldSettings()) -> Shot:
  """Samples num_scenes scenes filmed with one shared relative camera path.

  Args:
    key: PRNG key.
    num_frames: F (static).
    num_scenes: V (static), 1 for a sequence, 2 for a transfer pair.
    trajectory_index: () int32 index into TRAJECTORIES, or negative for a
      uniformly random type.
    world: the world's knobs (defaults: the standard world). The photo-scene
      draw uses its own stream (``fold_in(key, 1)``), so the standard world's
      draws do not change with it.

  Returns:
    A Shot.
  """
  num_placements = 6
  scene_shapes = {"room": (3,), "placement": (4, num_placements),
                  "objects": object_uniforms(), "textures": TEXTURE_UNIFORMS,
                  "lighting": (7,)}
  u = draw_uniforms(key, {"shot": (3,), "heading": HEADING_UNIFORMS,
                          "scenes": _with_leading(scene_shapes, num_scenes)})
  trajectory_index = jnp.where(trajectory_index < 0,
                               _integer(u["shot"][0], len(TRAJECTORIES)),
                               trajectory_index).astype(jnp.int32)
  fov = math.radians(1.0) * _uniform(u["shot"][1], *FOV_RANGE_DEGREES)
  start_pitch = math.radians(1.0) * _uniform(u["shot"][2], -25.0, 10.0)
  all_paths = heading_paths(u["heading"], num_frames, start_pitch,
                            world.motion_factor)
  photo_scenes = jax.random.uniform(jax.random.fold_in(key, 1), (
      num_scenes,)) < world.photo_scene_prob
  paths = jax.tree.map(lambda x: x[trajectory_index], all_paths)  # (C, F)

  def room_and_placement(scene_u):
    room_size = sample_room_size(scene_u["room"])
    placement = sample_placement(scene_u["placement"], room_size, start_pitch)
    valid = path_is_valid(place_path(paths, placement), room_size)  # (C,)
    return room_size, placement, valid

  room_sizes, placements, valid = jax.vmap(room_and_placement)(u["scenes"])
  valid_all = jnp.all(valid, axis=0)
  scale_index = jnp.where(jnp.any(valid_all), jnp.argmax(valid_all),
                          len(_MOTION_SCALES) - 1)
  path = jax.tree.map(lambda x: x[scale_index], paths)  # (F,)

  def build_scene(scene_u, room_size, placement, photo_scene):
    world_path = place_path(path, placement)
    active, object_type, center, rotation, half_size = sample_objects(
        scene_u["objects"], room_size, world_path, fov, world.max_objects,
        photo_scene)
    light_direction, light_color, ambient = sample_lighting(scene_u["lighting"])
    scene = scene_render.Scene(
        room_size=room_size, object_active=active, object_type=object_type,
        object_center=center, object_rotation=rotation,
        object_half_size=half_size,
        textures=sample_textures(scene_u["textures"], photo_scene, room_size,
                                 half_size),
        light_direction=light_direction, light_color=light_color,
        ambient=ambient)
    return scene, camera_from_world_matrix(world_path)

  scenes, camera_from_world = jax.vmap(build_scene)(u["scenes"], room_sizes,
                                                    placements, photo_scenes)
  return Shot(scenes, camera_from_world, fov, trajectory_index,
              jnp.asarray(_MOTION_SCALES)[scale_index])
