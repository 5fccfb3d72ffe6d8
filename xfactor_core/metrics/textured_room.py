"""A tiny ray-cast textured room, for checking pose oracles against known poses.

Not the project's synthetic training world (that lives in `xfactor_core.data`):
just enough texture and depth variation for SIFT + COLMAP to reconstruct a few
frames in a second or two.

The room is the box x in [-4, 4], y in [-3, 1.5], z in [-4, 8] (OpenCV axes:
y points down, so the floor is y = 1.5); each of its six walls carries its own
multi-scale noise texture.
"""

import numpy as np

ROOM_MIN = np.array([-4.0, -3.0, -4.0])
ROOM_MAX = np.array([4.0, 1.5, 8.0])


def look_at_camera_from_world(centre: np.ndarray, target: np.ndarray,
                              down: np.ndarray = np.array([0.0, 1.0, 0.0])
                             ) -> np.ndarray:
  """Camera-from-world pose of a camera at `centre` looking at `target`.

  Args:
    centre: (3,) camera centre in world coordinates.
    target: (3,) point the optical axis (+z) goes through.
    down: (3,) world direction that should appear downwards (+y) in the image.

  Returns:
    (4, 4) camera-from-world matrix.
  """
  forward = target - centre
  forward = forward / np.linalg.norm(forward)
  right = np.cross(down, forward)
  right = right / np.linalg.norm(right)
  image_down = np.cross(forward, right)
  rotation = np.stack([right, image_down, forward])  # rows: camera axes.
  pose = np.eye(4)
  pose[:3, :3] = rotation
  pose[:3, 3] = -rotation @ centre
  return pose


def _wall_textures(rng: np.random.Generator, size: int) -> np.ndarray:
  """(6, size, size) grey textures in [0, 1] mixing several noise scales."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  textures = np.zeros((6, size, size))
  for wall in range(6):
    for cells, weight in ((8, 0.5), (32, 0.3), (128, 0.2)):
      noise = rng.random((cells, cells)).astype(np.float32)
      upsampled = Image.fromarray(noise, mode="F").resize((size, size),
                                                          Image.BICUBIC)
      textures[wall] += weight * np.asarray(upsampled)
  low = textures.min(axis=(1, 2), keepdims=True)
  high = textures.max(axis=(1, 2), keepdims=True)
  return (textures - low) / (high - low)


def render_textured_room(camera_from_world: np.ndarray,
                         height: int = 128,
                         width: int = 128,
                         focal: float = 110.0,
                         seed: int = 0,
                         texture_size: int = 512) -> np.ndarray:
  """Renders the room seen by each camera.

  Args:
    camera_from_world: (N, 4, 4) poses; the centres must lie inside the room.
    height: image height in pixels.
    width: image width in pixels.
    focal: focal length in pixels (principal point at the image centre).
    seed: seed of the wall textures (same seed, same room).
    texture_size: texture resolution per wall; one texel covers 12/size units.

  Returns:
    (N, height, width, 3) uint8 frames (grey, tinted per wall).
  """
  camera_from_world = np.asarray(camera_from_world, dtype=np.float64)
  rng = np.random.default_rng(seed)
  textures = _wall_textures(rng, texture_size)
  tints = 0.6 + 0.4 * rng.random((6, 3))
  rows, cols = np.mgrid[0:height, 0:width] + 0.5
  directions_camera = np.stack([(cols - width / 2) / focal,
                                (rows - height / 2) / focal,
                                np.ones_like(rows)], axis=-1).reshape(-1, 3)
  extent = ROOM_MAX - ROOM_MIN
  frames = []
  for pose in camera_from_world:
    rotation, translation = pose[:3, :3], pose[:3, 3]
    centre = -rotation.T @ translation
    if np.any(centre <= ROOM_MIN) or np.any(centre >= ROOM_MAX):
      raise ValueError(f"camera centre {centre} is outside the room "
                       f"{ROOM_MIN}..{ROOM_MAX}; move it inside.")
    directions = directions_camera @ rotation  # R^T d for each row.
    with np.errstate(divide="ignore", invalid="ignore"):
      # Distance to the wall each ray leaves through, per axis.
      bounds = np.where(directions > 0, ROOM_MAX, ROOM_MIN)
      distances = (bounds - centre) / directions
    distances[~np.isfinite(distances) | (distances <= 0)] = np.inf
    axis = np.argmin(distances, axis=1)
    distance = distances[np.arange(axis.size), axis]
    points = centre + distance[:, None] * directions
    wall = 2 * axis + (directions[np.arange(axis.size), axis] > 0)
    # Texture coordinates: the two coordinates other than the wall's axis.
    other_axes = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    coordinates = np.take_along_axis(points - ROOM_MIN, other_axes, axis=1)
    coordinates = coordinates / extent.max() * (texture_size - 1)
    texel = np.clip(np.round(coordinates).astype(int), 0, texture_size - 1)
    grey = textures[wall, texel[:, 1], texel[:, 0]]
    shading = 1.0 / (1.0 + 0.02 * distance)
    colour = grey[:, None] * tints[wall] * shading[:, None]
    frames.append((np.clip(colour, 0, 1) * 255).round().astype(np.uint8)
                  .reshape(height, width, 3))
  return np.stack(frames)


def orbit_path(num_frames: int = 8, sideways: float = 1.6,
               forward: float = 0.8) -> np.ndarray:
  """A short hand-held-like path: sideways and forward, looking at the back.

  Args:
    num_frames: N.
    sideways: total motion along x.
    forward: total motion along z.

  Returns:
    (N, 4, 4) camera-from-world poses inside the room.
  """
  poses = []
  for step in np.linspace(0.0, 1.0, num_frames):
    centre = np.array([-sideways / 2 + sideways * step, -0.3 * step,
                       -1.0 + forward * step])
    target = np.array([0.8 - 1.6 * step, 0.0, 8.0])
    poses.append(look_at_camera_from_world(centre, target))
  return np.stack(poses)
