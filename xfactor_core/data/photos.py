"""Real photographs for the synthetic world, from scikit-image's bundled images.

The synthetic world can texture its walls and objects with photos (see
``WorldSettings.photo_scene_prob``), so that the networks see real image
statistics. The photos come with scikit-image (a dependency), nothing is
downloaded. The photos the app shows as example contexts are held out, so
that checks on them measure generalisation to unseen photos.
"""

from __future__ import annotations

import numpy as np

# The app's example contexts (xfactor_core.app.make_presets.PHOTOS): never
# used for training.
HELD_OUT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# Every other photo scikit-image ships with its wheel (colour and grey).
TRAINING_PHOTOS = (
    "motorcycle_left", "motorcycle_right", "camera", "brick", "grass",
    "gravel", "coins", "moon", "page", "text", "hubble_deep_field",
    "immunohistochemistry", "retina", "clock", "colorwheel", "cell")
# Extra square crops (photo, fraction of the short side, centre x, centre y)
# of the scene-like photos, for more variety in the atlas.
_CROPS = (("motorcycle_left", 0.6, 0.3, 0.5), ("motorcycle_right", 0.6, 0.7, 0.5),
          ("camera", 0.5, 0.35, 0.4), ("hubble_deep_field", 0.4, 0.6, 0.6))


def load_photo(name: str) -> np.ndarray:
  """A bundled scikit-image photo as ``H x W x 3`` uint8 RGB."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  if name in ("motorcycle_left", "motorcycle_right"):
    left, right, _ = skimage.data.stereo_motorcycle()
    image = left if name == "motorcycle_left" else right
  elif hasattr(skimage.data, name):
    image = getattr(skimage.data, name)()
  else:
    raise ValueError(f"unknown photo {name!r}; the photos are "
                     f"{TRAINING_PHOTOS + HELD_OUT_PHOTOS}")
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _square_crop(image: np.ndarray, fraction: float, cx: float,
                 cy: float) -> np.ndarray:
  h, w = image.shape[:2]
  side = int(min(h, w) * fraction)
  left = int(np.clip(cx * w - side / 2, 0, w - side))
  top = int(np.clip(cy * h - side / 2, 0, h - side))
  return image[top:top + side, left:left + side]


def training_images() -> list[np.ndarray]:
  """The training photos (and extra crops), ``H x W x 3`` uint8 each."""
  images = [load_photo(name) for name in TRAINING_PHOTOS]
  images += [_square_crop(load_photo(name), fraction, cx, cy)
             for name, fraction, cx, cy in _CROPS]
  return images


def photo_atlas(tile_size: int = 256) -> np.ndarray:
  """The training photos as a texture atlas (``synthetic.atlas_from_images``):
  ``(T, L, A, A, 3)`` float32 with T = 20 tiles of side ``tile_size``."""
  from xfactor_core.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.atlas_from_images(training_images(), tile_size)
