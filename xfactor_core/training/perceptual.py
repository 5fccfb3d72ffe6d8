"""The perceptual term of the loss: LPIPS-VGG when weights are given, else SSIM.

The published objective uses LPIPS with a VGG16 backbone. Its weights (VGG16
trained on ImageNet plus LPIPS' linear heads) cannot be downloaded here, so the
trainer takes them from a local file (``config.perceptual.weights``) and falls
back to a structural stand-in, ``1 - SSIM``, when none is given. Which one runs
is logged at start and recorded in the checkpoint and in ``model.json``
(``"perceptual": "lpips-vgg"`` or ``"ssim"``).

Providing LPIPS-VGG weights
---------------------------
On any machine with PyTorch and the ``lpips`` package, save LPIPS' state dict as
a numpy ``.npz`` (one entry per tensor, the PyTorch names kept)::

    import lpips, numpy as np
    model = lpips.LPIPS(net="vgg")          # downloads VGG16 + the LPIPS heads
    np.savez("lpips_vgg.npz",
             **{k: v.detach().numpy() for k, v in model.state_dict().items()})

and train with ``--config.perceptual.weights=/path/lpips_vgg.npz``. Accepted
names: ``net.slice{k}.{i}.weight/.bias`` (as above) or torchvision's
``features.{i}.weight/.bias`` for the VGG16 convolutions (``i`` in 0, 2, 5, 7,
10, 12, 14, 17, 19, 21, 24, 26, 28; kernels ``out x in x 3 x 3``), and
``lin{j}.model.1.weight`` or ``lin{j}`` (``1 x C x 1 x 1`` or ``C``) for the
five linear heads. Other entries (e.g. ``scaling_layer.*``) are ignored. A flax
msgpack file (``.msgpack``) of a dictionary with the same keys, flat or nested
with the name parts as levels, works too.

The LPIPS distance: inputs in [-1, 1] are shifted and scaled by LPIPS' fixed
constants, run through the VGG16 convolutions, and at relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3 the features are normalised to unit length per
pixel; the squared differences are weighted per channel by the linear heads,
averaged over the image and summed over the five layers.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax import traverse_util

from xfactor_core.metrics import image as image_metrics

PathLike = Union[str, os.PathLike]
KINDS = ("auto", "lpips", "ssim")
LPIPS_NAME = "lpips-vgg"
SSIM_NAME = "ssim"

# VGG16 "features": conv layer index -> (in, out) channels; max-pool after
# the layers listed in _POOL_AFTER; LPIPS taps after the layers in _TAPS.
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128),
               10: (128, 256), 12: (256, 256), 14: (256, 256),
               17: (256, 512), 19: (512, 512), 21: (512, 512),
               24: (512, 512), 26: (512, 512), 28: (512, 512)}
_POOL_AFTER = (2, 7, 14, 21)
_TAPS = (2, 7, 14, 21, 28)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)

DistanceFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class PerceptualError(ValueError):
  """Perceptual-loss weights that are missing or do not fit LPIPS-VGG."""


class Perceptual(NamedTuple):
  """A perceptual distance.

  Attributes:
    name: "lpips-vgg" or "ssim" (recorded in checkpoints).
    params: its constant weights (a pytree; empty for SSIM), passed to
      ``distance`` as an argument so they are not baked into compiled code.
    distance: ``(params, prediction, target) -> B`` for ``B x H x W x 3``
      images in [-1, 1].
  """
  name: str
  params: Any
  distance: DistanceFn


# ------------------------------------------------------------------ SSIM --


def ssim(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean SSIM (Gaussian window 11, sigma 1.5) per image of ``B x H x W x 3``
  inputs in [-1, 1]: ``B``. Needs H, W >= 11."""
  if min(prediction.shape[1:3]) < 11:
    raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got "
                     f"{prediction.shape[1:3]}")
  return image_metrics.ssim(prediction, target)


def ssim_distance(params: Any, prediction: jax.Array,
                  target: jax.Array) -> jax.Array:
  """``1 - SSIM`` per image (``params`` unused): ``B``."""
  del params
  return 1.0 - ssim(prediction, target)


# ----------------------------------------------------------------- LPIPS --


def lpips_distance(params: Any, prediction: jax.Array,
                   target: jax.Array) -> jax.Array:
  """LPIPS-VGG per image of ``B x H x W x 3`` inputs in [-1, 1]: ``B``.

  ``params``: ``{"conv": {i: {"kernel": 3x3xIxO, "bias": O}}, "lin": [C_j]}``
  as returned by :func:`load_lpips_weights`.
  """
  b = prediction.shape[0]
  x = jnp.concatenate([prediction, target]).astype(jnp.float32)
  x = (x - _SHIFT) / _SCALE
  total = jnp.zeros((b,), jnp.float32)
  tap = 0
  for index in sorted(VGG16_CONVS):
    conv = params["conv"][str(index)]
    x = jax.lax.conv_general_dilated(
        x, conv["kernel"], window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]
    x = jax.nn.relu(x)
    if index in _TAPS:
      features = x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10)
      diff = jnp.square(features[:b] - features[b:])
      total = total + jnp.mean(jnp.sum(diff * params["lin"][tap], axis=-1),
                               axis=(1, 2))
      tap += 1
    if index in _POOL_AFTER:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                                (1, 2, 2, 1), "VALID")
  return total


def _flat_arrays(path: pathlib.Path) -> dict[str, np.ndarray]:
  if path.suffix == ".npz":
    with np.load(path) as data:
      return {k: np.asarray(data[k]) for k in data.files}
  try:
    tree = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several unrelated types
    raise PerceptualError(f"cannot read LPIPS weights {path} as .npz or flax "
                          f"msgpack ({type(e).__name__}: {e})") from e
  if not isinstance(tree, dict):
    raise PerceptualError(f"{path} does not hold a dictionary of arrays")
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(tree, sep=".").items()}


def _conv_index(name: str) -> Optional[tuple[int, str]]:
  match = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", name)
  return (int(match.group(1)), match.group(2)) if match else None


def _lin_index(name: str) -> Optional[int]:
  match = re.fullmatch(r"lin(\d)(?:\.model\.1\.weight)?", name)
  return int(match.group(1)) if match else None


def load_lpips_weights(path: PathLike) -> dict[str, Any]:
  """Reads LPIPS-VGG weights (see the module docstring for the file format).

  Returns:
    ``{"conv": {"<index>": {"kernel": 3 x 3 x in x out, "bias": out}},
    "lin": [five (C,) arrays]}`` as float32 numpy arrays.

  Raises:
    PerceptualError: naming the missing or misshapen entry.
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise PerceptualError(
        f"LPIPS weights file {path} does not exist; convert them as described "
        "in xfactor_core/training/perceptual.py, or leave "
        "config.perceptual.weights empty to train with the SSIM stand-in")
  arrays = _flat_arrays(path)
  conv: dict[str, dict[str, np.ndarray]] = {}
  lin: dict[int, np.ndarray] = {}
  for name, value in arrays.items():
    if (ci := _conv_index(name)) is not None:
      conv.setdefault(str(ci[0]), {})[ci[1]] = value
    elif (li := _lin_index(name)) is not None:
      lin[li] = value
  out_conv = {}
  for index, (c_in, c_out) in VGG16_CONVS.items():
    entry = conv.get(str(index), {})
    weight, bias = entry.get("weight"), entry.get("bias")
    if weight is None or bias is None:
      raise PerceptualError(
          f"{path}: VGG16 convolution {index} (weight and bias) is missing; "
          "is this an LPIPS-VGG state dict?")
    if weight.shape != (c_out, c_in, 3, 3) or bias.shape != (c_out,):
      raise PerceptualError(
          f"{path}: VGG16 convolution {index} has shapes {weight.shape}, "
          f"{bias.shape}; expected ({c_out}, {c_in}, 3, 3) and ({c_out},)")
    out_conv[str(index)] = {
        "kernel": np.transpose(weight, (2, 3, 1, 0)).astype(np.float32),
        "bias": bias.astype(np.float32)}
  out_lin = []
  for j, channels in enumerate(LPIPS_CHANNELS):
    if j not in lin:
      raise PerceptualError(f"{path}: LPIPS linear head lin{j} is missing")
    if lin[j].size != channels:
      raise PerceptualError(f"{path}: lin{j} has {lin[j].size} weights, "
                            f"expected {channels}")
    out_lin.append(lin[j].reshape(channels).astype(np.float32))
  return {"conv": out_conv, "lin": out_lin}


# ---------------------------------------------------------------- choice --


def make_perceptual(kind: str = "auto",
                    weights: Optional[PathLike] = None) -> Perceptual:
  """Chooses the perceptual distance and logs which one runs.

  Args:
    kind: "lpips" (weights required), "ssim", or "auto" (LPIPS-VGG when
      ``weights`` is set, else SSIM).
    weights: path of LPIPS-VGG weights (.npz or .msgpack), or None / "".

  Returns:
    a :class:`Perceptual`.
  """
  if kind not in KINDS:
    raise PerceptualError(f"unknown perceptual loss {kind!r}; choose one of "
                          f"{KINDS}")
  if kind == "lpips" and not weights:
    raise PerceptualError(
        "perceptual kind 'lpips' needs weights: set config.perceptual.weights "
        "to a converted LPIPS-VGG file (see xfactor_core/training/"
        "perceptual.py), or use kind 'auto' / 'ssim'")
  if kind != "ssim" and weights:
    params = jax.tree.map(jnp.asarray, load_lpips_weights(weights))
    logging.info("perceptual loss: LPIPS-VGG with weights from %s", weights)
    return Perceptual(LPIPS_NAME, params, lpips_distance)
  logging.warning(
      "perceptual loss: SSIM stand-in (1 - SSIM), not the published "
      "LPIPS-VGG%s",
      "" if kind == "ssim" else ": no config.perceptual.weights given (see "
      "xfactor_core/training/perceptual.py for how to provide them)")
  return Perceptual(SSIM_NAME, {}, ssim_distance)
