"""Ray caster of the synthetic world: scene pytrees, intersection, texturing, shading.

Everything here is pure JAX, written per frame on flat arrays of rays and
vectorised over rays x object slots, so that `jax.vmap` can batch it over frames
and scenes and `jax.jit` compiles it once per (size, supersample) pair.

World frame: right-handed, metres, y points up. The room is the axis-aligned box
x in [-W/2, W/2], y in [0, H], z in [-D/2, D/2] (floor at y = 0).
Camera frame (OpenCV): x right, y down, z forward. A 4x4 `camera_from_world`
maps homogeneous world points into that frame. Pixel (u, v) = (column, row) has
its centre at integer coordinates; the principal point of an S x S image is
((S - 1) / 2, (S - 1) / 2).

Surfaces: index 0..5 are the room (floor, ceiling, +x wall, -x wall, +z wall,
-z wall), index 6 + k is object slot k.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

NUM_OBJECT_SLOTS = 8
NUM_ROOM_SURFACES = 6
NUM_SURFACES = NUM_ROOM_SURFACES + NUM_OBJECT_SLOTS
BOX, SPHERE, CYLINDER = 0, 1, 2
NOISE_BAND_OCTAVES = 3  # octaves in each of the pattern and detail bands.

_FAR = 1e6
_INFINITE_SLAB = 1e4


class SurfaceTextures(NamedTuple):
  """Procedural texture parameters, leading axis = surface (NUM_SURFACES).

  The albedo of a surface point with texture coordinates (u, v) in metres is a
  cosine palette  offset + amplitude * cos(2 pi (frequency * p + phase))  of a
  pattern value p = weights . (checker, stripes, gradient, low-octave noise),
  multiplied by (1 + detail_amplitude * high-octave noise) and optionally blended
  with a photo tile of the texture atlas.
  """

  palette_offset: jax.Array     # (N, 3)
  palette_amplitude: jax.Array  # (N, 3)
  palette_frequency: jax.Array  # (N, 3)
  palette_phase: jax.Array      # (N, 3)
  pattern_weights: jax.Array    # (N, 4): checker, stripes, gradient, noise.
  pattern_period: jax.Array     # (N,) metres per checker cell / stripe.
  pattern_angle: jax.Array      # (N,) radians, rotation of (u, v).
  texture_offset: jax.Array     # (N, 2) metres, shift of (u, v).
  noise_frequency: jax.Array    # (N,) cycles per metre, pattern noise octave 0.
  detail_frequency: jax.Array   # (N,) cycles per metre, detail noise octave 0.
  noise_persistence: jax.Array  # (N,) amplitude ratio between noise octaves.
  detail_amplitude: jax.Array   # (N,) strength of the fine noise.
  seed: jax.Array               # (N,) int32, seeds the noise lattice hash.
  photo_weight: jax.Array       # (N,) 0 (procedural) .. 1 (photo).
  photo_index: jax.Array        # (N,) int32 tile of the atlas.
  photo_period: jax.Array       # (N,) metres covered by one photo tile.


class Scene(NamedTuple):
  """One room with up to NUM_OBJECT_SLOTS objects; a fixed-size pytree."""

  room_size: jax.Array        # (3,) width (x), height (y), depth (z), metres.
  object_active: jax.Array    # (K,) bool; inactive slots are never hit.
  object_type: jax.Array      # (K,) int32: BOX, SPHERE or CYLINDER.
  object_center: jax.Array    # (K, 3) world position of the object centre.
  object_rotation: jax.Array  # (K, 3, 3) world_from_object rotation.
  object_half_size: jax.Array  # (K, 3) half extents along the object axes
  #                             (cylinder: radius x, half height y, radius z).
  textures: SurfaceTextures   # leading axis NUM_SURFACES.
  light_direction: jax.Array  # (3,) unit vector towards the light.
  light_color: jax.Array      # (3,) directional light intensity per channel.
  ambient: jax.Array          # () ambient intensity.


def _texture_table(textures: SurfaceTextures) -> jax.Array:
  """Packs the texture fields into one (N, 29) float table (one gather per pixel)."""
  columns = [
      textures.palette_offset, textures.palette_amplitude,
      textures.palette_frequency, textures.palette_phase,
      textures.pattern_weights, textures.pattern_period[:, None],
      jnp.cos(textures.pattern_angle)[:, None],
      jnp.sin(textures.pattern_angle)[:, None], textures.texture_offset,
      textures.noise_frequency[:, None], textures.noise_persistence[:, None],
      textures.detail_frequency[:, None],
      textures.detail_amplitude[:, None],
      textures.seed.astype(jnp.float32)[:, None],
      textures.photo_weight[:, None],
      textures.photo_index.astype(jnp.float32)[:, None],
      textures.photo_period[:, None],
  ]
  return jnp.concatenate([c.astype(jnp.float32) for c in columns], axis=-1)


def _hash_to_unit(ix: jax.Array, iy: jax.Array, seed: jax.Array) -> jax.Array:
  """Integer lattice hash -> float in [0, 1); inputs int32 of equal shape."""
  h = (ix.astype(jnp.uint32) * jnp.uint32(0x8DA6B343)
       ^ iy.astype(jnp.uint32) * jnp.uint32(0xD8163841)
       ^ seed.astype(jnp.uint32) * jnp.uint32(0xCB1AB31F))
  h = (h ^ (h >> 15)) * jnp.uint32(0x2C1B3C6D)
  h = (h ^ (h >> 12)) * jnp.uint32(0x297A2D39)
  h = h ^ (h >> 15)
  return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _value_noise(x: jax.Array, y: jax.Array, seed: jax.Array) -> jax.Array:
  """Smooth value noise in [-1, 1] with unit lattice spacing; shape of x."""
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  fx = x - x0
  fy = y - y0
  sx = fx * fx * (3.0 - 2.0 * fx)
  sy = fy * fy * (3.0 - 2.0 * fy)
  ix = x0.astype(jnp.int32)
  iy = y0.astype(jnp.int32)
  n00 = _hash_to_unit(ix, iy, seed)
  n10 = _hash_to_unit(ix + 1, iy, seed)
  n01 = _hash_to_unit(ix, iy + 1, seed)
  n11 = _hash_to_unit(ix + 1, iy + 1, seed)
  top = n00 + sx * (n10 - n00)
  bottom = n01 + sx * (n11 - n01)
  return 2.0 * (top + sy * (bottom - top)) - 1.0


def _cos_cycles(t: jax.Array) -> jax.Array:
  """cos(2 pi t) by range reduction and an even polynomial (error < 3e-5).

  Several times cheaper than jnp.cos on the CPU backend.
  """
  r = t - jnp.round(t)  # [-0.5, 0.5]
  # cos(2 pi r) = -cos(2 pi (|r| - 1/2)); use the half-period closer to 0.
  a = jnp.abs(r)
  flip = a > 0.25
  x = jnp.where(flip, 0.5 - a, a) * (2.0 * jnp.pi)  # [0, pi/2]
  x2 = x * x
  c = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (
      1.0 / 40320.0))))
  return jnp.where(flip, -c, c)


def _atan2(y: jax.Array, x: jax.Array) -> jax.Array:
  """atan2 by octant reduction and an odd polynomial (error < 1e-5 rad).

  Several times cheaper than jnp.arctan2 on the CPU backend.
  """
  ax, ay = jnp.abs(x), jnp.abs(y)
  low = jnp.minimum(ax, ay)
  high = jnp.maximum(jnp.maximum(ax, ay), 1e-30)
  z = low / high  # [0, 1]
  z2 = z * z
  # Minimax-style polynomial for atan on [0, 1].
  angle = z * (0.99997726 + z2 * (-0.33262347 + z2 * (0.19354346 + z2 * (
      -0.11643287 + z2 * (0.05265332 + z2 * -0.01172120)))))
  angle = jnp.where(ay > ax, 0.5 * jnp.pi - angle, angle)
  angle = jnp.where(x < 0, jnp.pi - angle, angle)
  return jnp.where(y < 0, -angle, angle)


def _octave_fade(cycles_per_footprint: jax.Array) -> jax.Array:
  """Weight of a band whose frequency times the pixel footprint is given.

  1 well below the Nyquist limit (0.5 cycles per sample), 0 above it: the band is
  replaced by its mean instead of aliasing.
  """
  return jnp.clip((0.55 - cycles_per_footprint) / 0.35, 0.0, 1.0)


def _filtered_square_wave(x: jax.Array, width: jax.Array) -> jax.Array:
  """Box-filtered square wave (+1 on [0,1), -1 on [1,2), period 2) in [-1, 1].

  Exact average of the wave over [x - width/2, x + width/2], from the difference
  of its integral (a triangle wave).
  """
  width = jnp.maximum(width, 1e-3)

  def integral(z):
    return 1.0 - jnp.abs(1.0 - jnp.mod(z, 2.0))

  return (integral(x + 0.5 * width) - integral(x - 0.5 * width)) / width


def shade_albedo(uv: jax.Array, footprint: jax.Array, params: jax.Array,
                 texture_atlas: jax.Array | None) -> jax.Array:
  """Albedo of surface points.

  Args:
    uv: (N, 2) texture coordinates in metres.
    footprint: (N,) width of the pixel footprint on the surface, metres.
    params: (N, 29) rows of the packed texture table.
    texture_atlas: None or (T, L, A, A, 3) float32 photo tiles with L mip levels.

  Returns:
    (N, 3) albedo in [0, 1].
  """
  offset = params[:, 0:3]
  amplitude = params[:, 3:6]
  frequency = params[:, 6:9]
  phase = params[:, 9:12]
  weights = params[:, 12:16]
  period = params[:, 16]
  cos_a = params[:, 17]
  sin_a = params[:, 18]
  shift = params[:, 19:21]
  noise_frequency = params[:, 21]
  persistence = params[:, 22]
  detail_frequency = params[:, 23]
  detail_amplitude = params[:, 24]
  seed = params[:, 25].astype(jnp.int32)
  photo_weight = params[:, 26]
  photo_index = params[:, 27].astype(jnp.int32)
  photo_period = params[:, 28]

  u = uv[:, 0] + shift[:, 0]
  v = uv[:, 1] + shift[:, 1]
  ru = cos_a * u - sin_a * v
  rv = sin_a * u + cos_a * v

  # Periodic patterns, box filtered over the footprint (in pattern units).
  cell_width = footprint / period
  square_u = _filtered_square_wave(ru / period, cell_width)
  square_v = _filtered_square_wave(rv / period, cell_width)
  checker = square_u * square_v
  stripes = _filtered_square_wave(ru / (0.5 * period), 2.0 * cell_width)
  gradient = rv / (6.0 * period)

  # Two value-noise fBm bands of NOISE_BAND_OCTAVES octaves each: the pattern
  # band starts at noise_frequency, the detail band at detail_frequency; each
  # octave doubles the frequency, is rotated to hide the lattice and fades out
  # where it would alias. A fori_loop (rather than an unrolled loop) keeps XLA
  # from duplicating the noise into several fusions.
  def octave_step(octave, bands):
    in_detail = octave >= NOISE_BAND_OCTAVES
    band_octave = jnp.where(in_detail, octave - NOISE_BAND_OCTAVES, octave)
    frequency = jnp.where(in_detail, detail_frequency, noise_frequency) * (
        2.0 ** band_octave.astype(jnp.float32))
    angle = 0.6 * octave.astype(jnp.float32)
    ca, sa = jnp.cos(angle), jnp.sin(angle)
    x = (ca * u - sa * v) * frequency + 17.0 * octave.astype(jnp.float32)
    y = (sa * u + ca * v) * frequency - 11.0 * octave.astype(jnp.float32)
    # persistence ** band_octave without a per-pixel pow (slow on CPU).
    weight = jnp.where(band_octave == 0, 1.0,
                       jnp.where(band_octave == 1, persistence,
                                 persistence * persistence))
    band = weight * _value_noise(x, y, seed + octave) * _octave_fade(
        frequency * footprint)
    # One (2, N) carry (pattern band, detail band): a single fusion per octave.
    selector = jnp.stack([~in_detail, in_detail]).astype(band.dtype)
    return bands + selector[:, None] * band[None]

  low_noise, high_noise = jax.lax.fori_loop(
      0, 2 * NOISE_BAND_OCTAVES, octave_step, jnp.zeros((2,) + u.shape))

  pattern = (weights[:, 0] * 0.5 * checker + weights[:, 1] * 0.5 * stripes
             + weights[:, 2] * gradient + weights[:, 3] * low_noise)
  albedo = offset + amplitude * _cos_cycles(frequency * pattern[:, None] + phase)

  if texture_atlas is not None:
    photo = _sample_atlas(texture_atlas, photo_index, u / photo_period,
                          v / photo_period, footprint / photo_period)
    albedo = albedo + photo_weight[:, None] * (photo - albedo)

  albedo = albedo * (1.0 + detail_amplitude * high_noise)[:, None]
  return jnp.clip(albedo, 0.0, 1.0)


def _sample_atlas(atlas: jax.Array, tile: jax.Array, s: jax.Array,
                  t: jax.Array, footprint_tiles: jax.Array) -> jax.Array:
  """Trilinear, wrapping lookup into a mip-mapped photo atlas.

  Args:
    atlas: (T, L, A, A, 3); level l is blurred by 2^l texels and stored at full
      resolution, so every level is addressed with the same coordinates.
    tile: (N,) int32 tile index.
    s, t: (N,) coordinates in tiles (wrapping).
    footprint_tiles: (N,) pixel footprint in tiles.

  Returns:
    (N, 3) colour.
  """
  num_tiles, num_levels, resolution = atlas.shape[0], atlas.shape[1], atlas.shape[2]
  tile = jnp.mod(tile, num_tiles)
  level = jnp.clip(jnp.log2(jnp.maximum(footprint_tiles * resolution, 1.0)),
                   0.0, num_levels - 1.0)
  level0 = jnp.floor(level).astype(jnp.int32)
  level1 = jnp.minimum(level0 + 1, num_levels - 1)
  level_blend = (level - level0)[:, None]
  x = (s - jnp.floor(s)) * resolution - 0.5
  y = (t - jnp.floor(t)) * resolution - 0.5
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  wx = (x - x0)[:, None]
  wy = (y - y0)[:, None]
  ix0 = jnp.mod(x0.astype(jnp.int32), resolution)
  iy0 = jnp.mod(y0.astype(jnp.int32), resolution)
  ix1 = jnp.mod(ix0 + 1, resolution)
  iy1 = jnp.mod(iy0 + 1, resolution)

  def bilinear(level_index):
    def texel(iy, ix):
      return atlas[tile, level_index, iy, ix]

    top = texel(iy0, ix0) + wx * (texel(iy0, ix1) - texel(iy0, ix0))
    bottom = texel(iy1, ix0) + wx * (texel(iy1, ix1) - texel(iy1, ix0))
    return top + wy * (bottom - top)

  color0 = bilinear(level0)
  color1 = bilinear(level1)
  return color0 + level_blend * (color1 - color0)


def _room_hit(origin: jax.Array, dx: jax.Array, dy: jax.Array, dz: jax.Array,
              room_size: jax.Array):
  """Exit point of rays starting inside the room box.

  Args:
    origin: (3,) camera centre (inside the room).
    dx, dy, dz: (N,) unit ray direction components.
    room_size: (3,) width, height, depth.

  Returns:
    distance (N,), surface index (N,) int32 in 0..5, normal (nx, ny, nz) and
    texture coordinates (u, v), each (N,).
  """
  half_w, height, half_d = room_size[0] / 2, room_size[1], room_size[2] / 2

  def axis_exit(d, low, high, o):
    safe = jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)
    return (jnp.where(safe > 0, high, low) - o) / safe, safe > 0

  tx, px = axis_exit(dx, -half_w, half_w, origin[0])
  ty, py = axis_exit(dy, 0.0, height, origin[1])
  tz, pz = axis_exit(dz, -half_d, half_d, origin[2])
  on_x = (tx <= ty) & (tx <= tz)
  on_y = ~on_x & (ty <= tz)
  on_z = ~on_x & ~on_y
  distance = jnp.where(on_x, tx, jnp.where(on_y, ty, tz))
  # Floor 0, ceiling 1, +x wall 2, -x wall 3, +z wall 4, -z wall 5.
  surface = jnp.where(on_x, jnp.where(px, 2, 3),
                      jnp.where(on_y, jnp.where(py, 1, 0),
                                jnp.where(pz, 4, 5))).astype(jnp.int32)
  zero = jnp.zeros_like(distance)
  nx = jnp.where(on_x, jnp.where(px, -1.0, 1.0), zero)
  ny = jnp.where(on_y, jnp.where(py, -1.0, 1.0), zero)
  nz = jnp.where(on_z, jnp.where(pz, -1.0, 1.0), zero)
  x = origin[0] + distance * dx
  y = origin[1] + distance * dy
  z = origin[2] + distance * dz
  u = jnp.where(on_x, z, x)
  v = jnp.where(on_y, z, y)
  return distance, surface, (nx, ny, nz), (u, v)


def _object_shape_constants(object_type: jax.Array):
  """Per-slot slab extents (K, 3) and quadric masks (K, 3) of each primitive.

  Every primitive is the intersection of three slabs |x_i| <= e_i and, unless
  the mask is all zero, the quadric sum_i m_i x_i^2 <= 1, in unit object
  coordinates (the object's half size scaled to 1).
  """
  is_box = object_type == BOX
  is_sphere = object_type == SPHERE
  slab_x = jnp.where(is_box, 1.0, _INFINITE_SLAB)
  slab_y = jnp.where(is_sphere, _INFINITE_SLAB, 1.0)
  slabs = jnp.stack([slab_x, slab_y, slab_x], axis=-1)
  mask_xz = jnp.where(is_box, 0.0, 1.0)
  mask_y = jnp.where(is_sphere, 1.0, 0.0)
  quadric = jnp.stack([mask_xz, mask_y, mask_xz], axis=-1)
  return slabs, quadric


def _unit_from_world(scene: Scene) -> jax.Array:
  """(K, 3, 3) maps world vectors into unit object coordinates."""
  return (jnp.swapaxes(scene.object_rotation, -1, -2)
          / scene.object_half_size[:, :, None])


def _object_hits(origin: jax.Array, dx: jax.Array, dy: jax.Array,
                 dz: jax.Array, scene: Scene):
  """Nearest object hit along each ray.

  A fori_loop over the K slots keeps a running minimum in (N,) arrays: each
  iteration is one fused elementwise pass, and the loop carry is materialised
  (a Python-unrolled loop lets XLA fuse, and so recompute, the whole chain into
  every consumer; an argmin over (N, K) is a slow variadic reduction on CPU).

  Returns:
    distance (N,) (_FAR where nothing is hit), slot (N,) int32.
  """
  matrix = _unit_from_world(scene)  # (K, 3, 3)
  local_origin = (matrix @ (origin - scene.object_center)[:, :, None])[..., 0]
  slabs, quadric = _object_shape_constants(scene.object_type)
  uses_quadric = scene.object_type != BOX

  def one_slot(k, carry):
    best_distance, best_slot = carry
    near, far = None, None
    local = []
    for i in range(3):
      d = dx * matrix[k, i, 0] + dy * matrix[k, i, 1] + dz * matrix[k, i, 2]
      d = jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)
      o = local_origin[k, i]
      inverse = 1.0 / d
      t_low = (-slabs[k, i] - o) * inverse
      t_high = (slabs[k, i] - o) * inverse
      axis_near = jnp.minimum(t_low, t_high)
      axis_far = jnp.maximum(t_low, t_high)
      near = axis_near if near is None else jnp.maximum(near, axis_near)
      far = axis_far if far is None else jnp.minimum(far, axis_far)
      local.append(d)
    lx, ly, lz = local
    ox, oy, oz = local_origin[k, 0], local_origin[k, 1], local_origin[k, 2]
    qx, qy, qz = quadric[k, 0], quadric[k, 1], quadric[k, 2]
    a = qx * lx * lx + qy * ly * ly + qz * lz * lz
    b = qx * ox * lx + qy * oy * ly + qz * oz * lz
    c = qx * ox * ox + qy * oy * oy + qz * oz * oz - 1.0
    discriminant = b * b - a * c
    root = jnp.sqrt(jnp.maximum(discriminant, 0.0))
    quadric_k = uses_quadric[k]
    inverse_a = 1.0 / jnp.where(quadric_k, a, 1.0)
    near = jnp.where(quadric_k, jnp.maximum(near, (-b - root) * inverse_a), near)
    far = jnp.where(quadric_k, jnp.minimum(far, (-b + root) * inverse_a), far)
    hit = ((near <= far) & (near > 1e-4) & scene.object_active[k]
           & ((discriminant >= 0.0) | ~quadric_k))
    closer = hit & (near < best_distance)
    return (jnp.where(closer, near, best_distance),
            jnp.where(closer, k, best_slot))

  initial = (jnp.full_like(dx, _FAR), jnp.zeros(dx.shape, jnp.int32))
  return jax.lax.fori_loop(0, scene.object_active.shape[0], one_slot, initial)


def _object_surface(origin: jax.Array, dx: jax.Array, dy: jax.Array,
                    dz: jax.Array, distance: jax.Array, slot: jax.Array,
                    scene: Scene):
  """Normal (nx, ny, nz) and texture coordinates (u, v) on the hit slot, (N,) each."""
  table = jnp.concatenate([
      scene.object_rotation.reshape(-1, 9), scene.object_center,
      scene.object_half_size, scene.object_type.astype(jnp.float32)[:, None]],
                          axis=-1)[slot]  # (N, 16)
  rotation = [[table[:, 3 * i + j] for j in range(3)] for i in range(3)]
  center = [table[:, 9 + i] for i in range(3)]
  half = [table[:, 12 + i] for i in range(3)]
  object_type = table[:, 15]
  world = [origin[0] + distance * dx - center[0],
           origin[1] + distance * dy - center[1],
           origin[2] + distance * dz - center[2]]
  # Local metric coordinates: rotation^T (world point - centre).
  lx, ly, lz = [rotation[0][j] * world[0] + rotation[1][j] * world[1]
                + rotation[2][j] * world[2] for j in range(3)]
  ux, uy, uz = lx / half[0], ly / half[1], lz / half[2]
  ax, ay, az = jnp.abs(ux), jnp.abs(uy), jnp.abs(uz)
  sx = jnp.where(ux >= 0, 1.0, -1.0)
  sy = jnp.where(uy >= 0, 1.0, -1.0)
  sz = jnp.where(uz >= 0, 1.0, -1.0)
  zero = jnp.zeros_like(ux)

  # Box: the face is the axis where the unit point reaches 1.
  face_x = (ax >= ay) & (ax >= az)
  face_y = ~face_x & (ay >= az)
  face_z = ~face_x & ~face_y
  box_n = (jnp.where(face_x, sx, zero), jnp.where(face_y, sy, zero),
           jnp.where(face_z, sz, zero))
  box_u = jnp.where(face_x, lz, lx)
  box_v = jnp.where(face_y, lz, ly)
  # Cylinder: cap where |y| dominates the radial coordinate; the side and the
  # sphere wrap the longitude (scaled to metres) around the y axis.
  radial = jnp.sqrt(ux * ux + uz * uz)
  on_cap = ay > radial
  longitude = _atan2(uz, ux) * 0.5 * (half[0] + half[2])
  is_box = object_type == BOX
  is_sphere = object_type == SPHERE
  nx = jnp.where(is_box, box_n[0], jnp.where(is_sphere | ~on_cap, ux, zero))
  ny = jnp.where(is_box, box_n[1], jnp.where(is_sphere, uy,
                                             jnp.where(on_cap, sy, zero)))
  nz = jnp.where(is_box, box_n[2], jnp.where(is_sphere | ~on_cap, uz, zero))
  cap = ~is_sphere & on_cap
  u = jnp.where(is_box, box_u, jnp.where(cap, lx, longitude))
  v = jnp.where(is_box, box_v, jnp.where(cap, lz, ly))
  # Normals transform with the inverse transpose of diag(half size).
  nx, ny, nz = nx / half[0], ny / half[1], nz / half[2]
  world_normal = [rotation[i][0] * nx + rotation[i][1] * ny
                  + rotation[i][2] * nz for i in range(3)]
  inverse_length = jax.lax.rsqrt(world_normal[0] ** 2 + world_normal[1] ** 2
                                 + world_normal[2] ** 2)
  return tuple(n * inverse_length for n in world_normal), (u, v)


def _floor_shadow(x: jax.Array, z: jax.Array, scene: Scene) -> jax.Array:
  """Soft blob shadows of the objects on the floor at (x, 0, z): (N,) in [0, 1]."""
  light = scene.light_direction
  elevation = jnp.maximum(light[1], 0.2)
  centers = scene.object_center  # (K, 3)
  shadow_x = centers[:, 0] - light[0] * centers[:, 1] / elevation
  shadow_z = centers[:, 2] - light[2] * centers[:, 1] / elevation
  # Horizontal radius of the object's bounding cylinder.
  extent = jnp.einsum("kij,kj->ki", jnp.abs(scene.object_rotation),
                      scene.object_half_size)
  radius = jnp.maximum(0.5 * (extent[:, 0] + extent[:, 2]), 0.05)
  bottom = jnp.maximum(centers[:, 1] - extent[:, 1], 0.0)
  softness = 1.0 + 1.5 * bottom / (radius + bottom)
  horizontal = jnp.maximum(jnp.sqrt(light[0] ** 2 + light[2] ** 2), 1e-6)
  along_x, along_z = light[0] / horizontal, light[2] / horizontal
  inverse_radius = 1.0 / (radius * softness)
  strength = jnp.where(scene.object_active, 0.75 / softness / 1.69, 0.0)

  def one_slot(k, light_left):
    offset_x = x - shadow_x[k]
    offset_z = z - shadow_z[k]
    parallel = (offset_x * along_x + offset_z * along_z) * elevation
    perpendicular = offset_z * along_x - offset_x * along_z
    distance = jnp.sqrt(parallel * parallel + perpendicular * perpendicular
                        ) * inverse_radius[k]
    occlusion = strength[k] * jnp.square(jnp.clip(1.3 - distance, 0.0, 1.0))
    return light_left * (1.0 - occlusion)

  return jax.lax.fori_loop(0, centers.shape[0], one_slot, jnp.ones_like(x))


def camera_rays(camera_from_world: jax.Array, intrinsics: jax.Array,
                size: int, supersample: int):
  """Unit ray directions of an S x S image, supersample^2 samples per pixel.

  Args:
    camera_from_world: (4, 4).
    intrinsics: (3, 3) pixel intrinsics (OpenCV).
    size: image side S in pixels.
    supersample: samples per pixel side.

  Returns:
    origin (3,), directions (S*s, S*s, 3) in world coordinates, rows first.
  """
  rotation = camera_from_world[:3, :3]
  translation = camera_from_world[:3, 3]
  origin = -rotation.T @ translation
  samples = size * supersample
  coords = (jnp.arange(samples, dtype=jnp.float32) + 0.5) / supersample - 0.5
  fx, fy = intrinsics[0, 0], intrinsics[1, 1]
  cx, cy = intrinsics[0, 2], intrinsics[1, 2]
  x = jnp.broadcast_to(((coords - cx) / fx)[None, :], (samples, samples))
  y = jnp.broadcast_to(((coords - cy) / fy)[:, None], (samples, samples))
  camera_dirs = jnp.stack([x, y, jnp.ones_like(x)], axis=-1)
  camera_dirs = camera_dirs / jnp.linalg.norm(camera_dirs, axis=-1,
                                              keepdims=True)
  return origin, camera_dirs @ rotation  # row vector d^T R = (R^T d)^T


def render_frame(scene: Scene, camera_from_world: jax.Array,
                 intrinsics: jax.Array, size: int, supersample: int = 1,
                 texture_atlas: jax.Array | None = None,
                 return_depth: bool = False):
  """Renders one frame.

  Args:
    scene: the scene (unbatched).
    camera_from_world: (4, 4) OpenCV camera_from_world; the camera must be
      inside the room.
    intrinsics: (3, 3) pixel intrinsics.
    size: output side S (static).
    supersample: samples per pixel side (static); textures are always filtered
      analytically over the sample footprint, supersampling also smooths
      silhouettes.
    texture_atlas: None or (T, L, A, A, 3) float32 mip-mapped photo tiles.
    return_depth: also return the depth (static).

  Returns:
    (S, S, 3) float32 linear colour in [0, 1]; with return_depth also the
    (S, S) float32 depth of every pixel: the z coordinate in the camera frame
    (metres along the optical axis), averaged over its samples.
  """
  origin, directions = camera_rays(camera_from_world, intrinsics, size,
                                   supersample)
  directions = directions.reshape(-1, 3)
  dx, dy, dz = directions[:, 0], directions[:, 1], directions[:, 2]
  room_distance, room_surface, room_normal, room_uv = _room_hit(
      origin, dx, dy, dz, scene.room_size)
  object_distance, slot = _object_hits(origin, dx, dy, dz, scene)
  object_normal, object_uv = _object_surface(origin, dx, dy, dz,
                                             object_distance, slot, scene)
  on_object = object_distance < room_distance
  distance = jnp.where(on_object, object_distance, room_distance)
  surface = jnp.where(on_object, NUM_ROOM_SURFACES + slot, room_surface)
  nx, ny, nz = (jnp.where(on_object, a, b)
                for a, b in zip(object_normal, room_normal))
  u, v = (jnp.where(on_object, a, b) for a, b in zip(object_uv, room_uv))

  # Footprint of one sample on the surface; the 1/cos growth at grazing angles
  # is tempered (geometric compromise between the two footprint axes).
  cosine = jnp.abs(nx * dx + ny * dy + nz * dz)
  sample_angle = 1.0 / (intrinsics[0, 0] * supersample)
  footprint = distance * sample_angle / jnp.maximum(cosine, 0.08) ** 0.6

  params = _texture_table(scene.textures)[surface]
  albedo = shade_albedo(jnp.stack([u, v], axis=-1), footprint, params,
                        texture_atlas)

  light = scene.light_direction
  lit = jnp.maximum(nx * light[0] + ny * light[1] + nz * light[2], 0.0)
  shadow = jnp.where(surface == 0, _floor_shadow(origin[0] + distance * dx,
                                                 origin[2] + distance * dz,
                                                 scene), 1.0)
  sky = 0.8 + 0.2 * ny  # brighter ambient on up-facing surfaces.
  irradiance = (scene.ambient * sky * (0.6 + 0.4 * shadow))[:, None] + (
      (lit * shadow)[:, None] * scene.light_color)
  color = albedo * irradiance
  color = color.reshape(size, supersample, size, supersample, 3)
  color = jnp.clip(color.mean(axis=(1, 3)), 0.0, 1.0)
  if not return_depth:
    return color
  optical_axis = camera_from_world[2, :3]  # world direction of camera z
  depth = distance * (directions @ optical_axis)
  depth = depth.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
  return color, depth
