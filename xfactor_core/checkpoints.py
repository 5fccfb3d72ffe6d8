"""Reading and writing XFactor checkpoints in the published clu format.

A published checkpoint is a clu checkpoint directory::

    <dir>/checkpoint        text index: model_checkpoint_path: "ckpt-N"
    <dir>/ckpt-N.flax       flax msgpack of the whole train state
    <dir>/ckpt-N.index, .data-*   the TensorFlow half (no model data)

with the weights at ``state["params"]["PoseEnc"]`` and ``state["params"]["Render"]``.
Training work directories hold such a directory as ``<workdir>/checkpoints-0``.
We read all of it without TensorFlow, and write the same format so that
``clu.checkpoint.load_state_dict(dir)["params"]`` reads our checkpoints too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import tempfile
import time
from typing import (Any, BinaryIO, Callable, Collection, Mapping, Optional,
                    Union)

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax import traverse_util

from xfactor_core import msgpack_stream

PathLike = Union[str, os.PathLike]
Params = dict[str, Any]

CHECKPOINT_INDEX = "checkpoint"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.flax$")
_INDEX_RE = re.compile(r'^model_checkpoint_path:\s*"([^"]+)"', re.MULTILINE)


class CheckpointError(ValueError):
  """A checkpoint is missing, unreadable, or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of a PoseEnc + Render pair (published: 1024, 16, 16, 8, 8, 256).

  ``render_output`` is the renderer's head: "rgb" (published), "flow" (the
  appearance-flow head, see ``xfactor_core.models.flow``) or "warp" (the
  smooth warp: homography + coarse residual, ``xfactor_core.models.warp``);
  ``global_warp`` whether a flow head adds the latents' homography
  (``GlobalWarpHead``); a "warp" renderer always has it, an "rgb" renderer
  has no warp and ignores it.
  """
  features: int  # Token width of both networks.
  num_heads: int  # Attention heads (features / num_heads divisible by 4).
  patch_size: int  # Pixels per side of a patch token.
  pose_layers: int  # Transformer layers of PoseEnc.
  render_layers: int  # Transformer layers of Render.
  pose_dim: int  # Width of a pose latent.
  num_global_tokens: int = 32  # PoseEnc's global tokens per mask half.
  render_output: str = "rgb"  # Render's head: "rgb", "flow" or "warp".
  # A flow head's homography from the latents (GlobalWarpHead); "rgb" ignores it.
  global_warp: bool = True
  # What PoseEnc's tokens see of the reference view: "views" (published),
  # "fused", "conv" or "correlation" (xfactor_core.models.pair_stems).
  pair_input: str = "views"

  def __post_init__(self):
    from xfactor_core.models import PAIR_INPUTS, RENDER_OUTPUTS  # pylint: disable=g-import-not-at-top
    if self.render_output not in RENDER_OUTPUTS:
      raise ValueError(f"render_output={self.render_output!r}: use one of "
                       f"{RENDER_OUTPUTS}")
    if self.pair_input not in PAIR_INPUTS:
      raise ValueError(f"pair_input={self.pair_input!r}: use one of "
                       f"{PAIR_INPUTS}")
    if self.render_output == "warp" and not self.global_warp:
      raise ValueError("render_output='warp' always has the global warp "
                       "(its homography is part of F): global_warp=False "
                       "applies to 'flow' only")

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
    """From a mapping of field values (ints, and the render_output name)."""
    values = dict(values)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown model fields {unknown}; the fields are those "
                       "of xfactor_core.checkpoints.ModelConfig")
    convert = {"render_output": str, "global_warp": bool, "pair_input": str}
    return cls(**{k: convert.get(k, int)(v) for k, v in values.items()})

  def pose_enc_kwargs(self) -> dict[str, Any]:
    kwargs = dict(features=self.features, num_heads=self.num_heads,
                  patch_size=self.patch_size, num_layers=self.pose_layers,
                  pose_dim=self.pose_dim,
                  num_global_tokens=self.num_global_tokens)
    if self.pair_input != "views":
      kwargs.update(pair_input=self.pair_input)
    return kwargs

  def render_kwargs(self) -> dict[str, int]:
    kwargs = dict(features=self.features, num_heads=self.num_heads,
                  patch_size=self.patch_size, num_layers=self.render_layers)
    if self.render_output != "rgb":
      kwargs.update(output=self.render_output, global_warp=self.global_warp)
    return kwargs

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


PUBLISHED_CONFIG = ModelConfig(features=1024, num_heads=16, patch_size=16,
                               pose_layers=8, render_layers=8, pose_dim=256)


# ------------------------------------------------------------- durability --


def fsync_file(handle: BinaryIO) -> None:
  """Flushes ``handle`` and asks the OS to put its bytes on disk, so that a
  rename after it never points at a file that a crash leaves empty."""
  handle.flush()
  os.fsync(handle.fileno())


def fsync_dir(directory: PathLike) -> None:
  """Puts a folder's entries (renames, new files) on disk, where the OS can:
  POSIX opens folders for this; Windows cannot and commits renames itself."""
  if os.name == "nt":
    return
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some file systems refuse fsync on folders
    pass
  finally:
    os.close(fd)


# ---------------------------------------------------------------- locating --


def newest_checkpoint(names: Collection[str],
                      read_text: Callable[[str], str]) -> Optional[str]:
  """The newest ``ckpt-N.flax`` among ``names`` (a folder's files or a zip's
  members, as ``/``-separated paths), or ``None`` if there is none.

  The clu index file (``checkpoint``) beside the candidates wins when the file
  it names is present; otherwise the highest ``N``.

  Args:
    names: the paths to choose from.
    read_text: reads one of ``names`` (an index file) as text.
  """
  found = [(int(m.group(1)), name) for name in names
           if (m := _CKPT_RE.match(name.rpartition("/")[2]))]
  if not found:
    return None
  present = set(names)
  for folder in sorted({name.rpartition("/")[0] for _, name in found}):
    prefix = f"{folder}/" if folder else ""
    if prefix + CHECKPOINT_INDEX not in present:
      continue
    match = _INDEX_RE.search(read_text(prefix + CHECKPOINT_INDEX))
    if match:  # the index may hold an absolute path: keep its last part
      wanted = prefix + pathlib.PurePath(match.group(1)).name + ".flax"
      if wanted in present:
        return wanted
  return max(found)[1]


def _newest_flax_file(directory: pathlib.Path) -> pathlib.Path:
  name = newest_checkpoint(
      [p.name for p in directory.iterdir()],
      lambda n: (directory / n).read_text(errors="replace"))
  if name is None:
    raise CheckpointError(
        f"no checkpoint in {directory}: expected a clu checkpoint directory "
        f"('checkpoint' + 'ckpt-N.flax'), its parent holding 'checkpoints-0', "
        f"or a flax msgpack file")
  return directory / name


def resolve_checkpoint(path: PathLike) -> pathlib.Path:
  """Finds the msgpack file a checkpoint path refers to.

  Accepts a msgpack file, ``<dir>/ckpt-N`` (a named step), a clu checkpoint
  directory (its newest checkpoint), or a directory holding ``checkpoints-0``.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_file():
    return path
  if not path.exists():
    named = path.with_name(path.name + ".flax")
    if named.is_file():
      return named
    raise CheckpointError(f"checkpoint not found: {path} does not exist; pass a "
                          "checkpoint directory, ckpt-N, or a .msgpack file")
  for sub in ("checkpoints-0", "checkpoints"):
    if (path / sub).is_dir() and not (path / CHECKPOINT_INDEX).exists():
      return _newest_flax_file(path / sub)
  return _newest_flax_file(path)


# ----------------------------------------------------------------- reading --


def _read_msgpack(file: pathlib.Path) -> Any:
  data = file.read_bytes()
  if not data:
    raise CheckpointError(f"checkpoint file {file} is empty")
  try:
    return serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types
    raise CheckpointError(
        f"checkpoint file {file} is corrupt or truncated ({type(e).__name__}: "
        f"{e}); re-copy or re-download it") from e


def _extract_params(state: Any, file: pathlib.Path) -> Params:
  if not isinstance(state, Mapping):
    raise CheckpointError(f"{file} does not hold a dictionary of weights")
  params = state.get("params", state)
  if isinstance(params, Mapping) and "params" in params and "PoseEnc" not in params:
    params = params["params"]
  missing = [k for k in ("PoseEnc", "Render") if k not in params]
  if missing:
    raise CheckpointError(
        f"{file} has no {' or '.join(missing)} weights (top-level keys: "
        f"{sorted(params)[:8]}); is it an XFactor checkpoint?")
  return {"PoseEnc": params["PoseEnc"], "Render": params["Render"]}


def load_state(path: PathLike) -> tuple[dict[str, Any], pathlib.Path]:
  """The whole stored state dictionary and the file it came from."""
  file = resolve_checkpoint(path)
  state = _read_msgpack(file)
  if not isinstance(state, dict):
    raise CheckpointError(f"{file} does not hold a dictionary")
  return state, file


def load_params(path: PathLike,
                config: Optional[ModelConfig] = None) -> Params:
  """Loads ``{"PoseEnc": ..., "Render": ...}`` (numpy arrays) from a checkpoint.

  Only the params are decoded; the rest of a train state (optimiser moments,
  LPIPS weights, ...) is skipped as it is read, so a published train state of
  several GB loads with the params' memory alone.

  Args:
    path: a clu checkpoint directory (newest checkpoint), ``<dir>/ckpt-N``, its
      parent holding ``checkpoints-0``, or a single flax msgpack file.
    config: when given, every parameter is checked against it; otherwise the
      configuration is inferred and the tree checked against that.

  Raises:
    CheckpointError: naming the path and, for a mismatch, the first offending
      parameter with both shapes.
  """
  file = resolve_checkpoint(path)
  if file.stat().st_size == 0:
    raise CheckpointError(f"checkpoint file {file} is empty")
  with open(file, "rb") as stream:
    state = read_state_stream(stream, file)
  return params_from_state(state, file, config=config)


def read_state_stream(stream: BinaryIO, source: Any,
                      keys: Collection[str] = ("params", "step", "PoseEnc", "Render")
                      ) -> dict[str, Any]:
  """The ``keys`` entries of a flax msgpack train state read from ``stream``
  (a file, a zip member), skipping every other entry as it streams by.

  Raises:
    CheckpointError: the stream is not a flax msgpack state or is truncated.
  """
  try:
    return msgpack_stream.read_entries(stream, set(keys))
  except (msgpack_stream.StreamFormatError, ValueError, TypeError) as e:
    raise CheckpointError(
        f"checkpoint file {source} is corrupt or truncated ({e}); re-copy or "
        "re-download it") from e


def params_from_state(state: Mapping[str, Any], file: PathLike,
                      config: Optional[ModelConfig] = None) -> Params:
  """``{"PoseEnc": ..., "Render": ...}`` of a state already read with
  ``load_state`` (from ``file``), checked as ``load_params`` checks them."""
  params = _extract_params(state, file)
  check_params(params, config or infer_config(params, source=file), source=file)
  return params


# ---------------------------------------------------- configuration checks --


def _shape(tree: Mapping[str, Any], path: str, source: Any) -> tuple[int, ...]:
  node: Any = tree
  for part in path.split("/"):
    if not isinstance(node, Mapping) or part not in node:
      raise CheckpointError(f"{source}: parameter {path} is missing; the file "
                            "is not an XFactor PoseEnc/Render checkpoint")
    node = node[part]
  return tuple(np.shape(node))


# The parameter subtree of the appearance-flow head in Render.
FLOW_HEAD = "AppearanceFlowHead_0"
# ... and of the smooth-warp head (render_output "warp").
WARP_HEAD = "CoarseWarpHead_0"
GLOBAL_WARP_HEAD = "GlobalWarpHead_0"


def render_output_of(params: Params) -> str:
  """The renderer head a parameter tree holds: "flow", "warp" or "rgb"."""
  rd = params.get("Render", {})
  if FLOW_HEAD in rd:
    return "flow"
  if WARP_HEAD in rd:
    return "warp"
  return "rgb"


def infer_config(params: Params, source: Any = "checkpoint") -> ModelConfig:
  """Reads the model sizes off the weights."""
  pe, rd = params["PoseEnc"], params["Render"]
  features = _shape(pe, "Dense_0/kernel", source)[1]
  patch_in = _shape(pe, "Dense_0/kernel", source)[0]
  patch_size = int(round((patch_in / 3) ** 0.5))
  if 3 * patch_size * patch_size != patch_in:
    raise CheckpointError(f"{source}: PoseEnc/Dense_0/kernel input {patch_in} is "
                          "not 3 * patch_size^2")
  num_heads = _shape(pe, "layers_0/RMSNorm_0/alpha", source)[0]
  pose_dim = _shape(pe, "PoseHead_0/MLP3_0/Dense_2/kernel", source)[1]
  num_global = _shape(pe, "global_embed", source)[0]
  count = lambda tree: sum(1 for k in tree if re.fullmatch(r"layers_\d+", k))
  output = render_output_of(params)
  from xfactor_core.models import pair_stems  # pylint: disable=g-import-not-at-top
  stems = [kind for kind, name in pair_stems.STEM_MODULES.items() if name in pe]
  if len(stems) > 1:
    raise CheckpointError(f"{source}: PoseEnc holds several pair stems "
                          f"{stems}; a PoseEnc has at most one")
  return ModelConfig(features=features, num_heads=num_heads,
                     patch_size=patch_size, pose_layers=count(pe),
                     render_layers=count(rd), pose_dim=pose_dim,
                     num_global_tokens=num_global, render_output=output,
                     global_warp=(GLOBAL_WARP_HEAD in rd if output != "rgb"
                                  else ModelConfig.global_warp),
                     pair_input=stems[0] if stems else "views")


def expected_shapes(config: ModelConfig) -> dict[str, dict[str, tuple[int, ...]]]:
  """Every parameter path and shape of the two networks for ``config``."""
  from xfactor_core import models  # Local import keeps this module light.
  p = config.patch_size
  key = jax.random.key(0)
  pair = jax.ShapeDtypeStruct((1, 2, 2 * p, 2 * p, 3), jnp.float32)
  context = jax.ShapeDtypeStruct((1, 1, 2 * p, 2 * p, 3), jnp.float32)
  poses = jax.ShapeDtypeStruct((1, 2, config.pose_dim), jnp.float32)
  trees = {
      "PoseEnc": jax.eval_shape(models.PoseEnc(**config.pose_enc_kwargs()).init,
                                key, pair),
      "Render": jax.eval_shape(models.Render(**config.render_kwargs()).init,
                               key, context, poses),
  }
  return {name: {path: tuple(leaf.shape) for path, leaf in
                 traverse_util.flatten_dict(tree["params"], sep="/").items()}
          for name, tree in trees.items()}


@functools.lru_cache(maxsize=32)
def parameter_count(config: ModelConfig) -> int:
  """Number of parameters of the two networks of ``config`` (no weights are
  made: shapes only)."""
  return sum(math.prod(shape) for tree in expected_shapes(config).values()
             for shape in tree.values())


def check_params(params: Params, config: ModelConfig,
                 source: Any = "checkpoint") -> None:
  """Raises CheckpointError at the first parameter that does not fit ``config``."""
  found = render_output_of(params)
  if found != config.render_output:
    head = {"flow": FLOW_HEAD, "warp": WARP_HEAD}
    present = (f"Render/{head[found]} present" if found in head else
               f"Render/{FLOW_HEAD} and Render/{WARP_HEAD} absent")
    raise CheckpointError(
        f"{source}: the checkpoint's renderer has the {found!r} head "
        f"({present}) but "
        f"the model is configured with render_output={config.render_output!r}; "
        f"use render_output={found!r} (checkpoints.infer_config reads it off "
        "the weights)")
  for name, shapes in expected_shapes(config).items():
    flat = traverse_util.flatten_dict(params[name], sep="/")
    for path, shape in shapes.items():
      if path not in flat:
        raise CheckpointError(
            f"{source}: {name}/{path} is missing (expected shape {shape}); the "
            f"checkpoint does not match the model {config}")
      got = tuple(np.shape(flat[path]))
      if got != shape:
        raise CheckpointError(
            f"{source}: {name}/{path} has shape {got} but the model {config} "
            f"needs {shape}; use the model configuration of the checkpoint")
    extra = sorted(set(flat) - set(shapes))
    if extra:
      raise CheckpointError(
          f"{source}: {name}/{extra[0]} is not a parameter of the model "
          f"{config}; the checkpoint comes from a different architecture")


# ----------------------------------------------------------------- writing --


def _to_numpy(tree: Any) -> Any:
  """Arrays to host numpy; strings and bytes stay as they are (msgpack native)."""
  return jax.tree.map(
      lambda x: x if isinstance(x, (str, bytes)) else np.asarray(jax.device_get(x)),
      tree)


def save_checkpoint(directory: PathLike, state: Mapping[str, Any], *,
                    max_to_keep: int = 5) -> pathlib.Path:
  """Writes ``ckpt-N.flax`` (N = previous + 1) and the ``checkpoint`` index.

  The layout is the one clu's ``Checkpoint`` writes, so the published loading
  code reads it. Files are written to a temporary name and renamed, so a kill
  mid-write never leaves a truncated newest checkpoint.

  Args:
    directory: the clu checkpoint directory (e.g. ``<workdir>/checkpoints-0``).
    state: dictionary with at least ``"params": {"PoseEnc", "Render"}``.
    max_to_keep: older ``ckpt-N.flax`` files beyond this many are deleted.

  Returns:
    The path of the written ``.flax`` file.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  existing = sorted(int(m.group(1)) for p in directory.iterdir()
                    if (m := _CKPT_RE.match(p.name)))
  number = (existing[-1] + 1) if existing else 1
  target = directory / f"ckpt-{number}.flax"
  with tempfile.NamedTemporaryFile(dir=directory, delete=False,
                                   suffix=".tmp") as f:
    try:  # leaf by leaf: memory never holds the encoded file
      msgpack_stream.write_tree(f, dict(state), leaf=_to_numpy)
      fsync_file(f)
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.chmod(f.name, 0o644)  # NamedTemporaryFile creates it private
  os.replace(f.name, target)
  kept = (existing + [number])[-max_to_keep:]
  for old in existing:
    if old not in kept:
      for stale in directory.glob(f"ckpt-{old}.*"):
        stale.unlink()
  now = time.time()
  lines = [f'model_checkpoint_path: "ckpt-{number}"']
  lines += [f'all_model_checkpoint_paths: "ckpt-{n}"' for n in kept]
  lines += [f"all_model_checkpoint_timestamps: {now}" for _ in kept]
  lines += [f"last_preserved_timestamp: {now}"]
  index_tmp = directory / (CHECKPOINT_INDEX + ".tmp")
  with open(index_tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
    fsync_file(f)
  os.replace(index_tmp, directory / CHECKPOINT_INDEX)
  fsync_dir(directory)
  return target


def save_params(directory: PathLike, params: Params, *, step: int = 0,
                extra: Optional[Mapping[str, Any]] = None) -> pathlib.Path:
  """Writes weights only (plus ``extra`` entries) as a clu checkpoint."""
  state = {"step": step, "params": {"PoseEnc": params["PoseEnc"],
                                    "Render": params["Render"]}}
  state.update(extra or {})
  return save_checkpoint(directory, state)


# ------------------------------------------------------------- model.json --

MODEL_INFO = "model.json"


def model_kind(num_context_views: int) -> str:
  """The kind of a model: "stereo-monocular" with one context view,
  "multi-view" with more."""
  return "multi-view" if num_context_views > 1 else "stereo-monocular"


def read_model_info(path: PathLike) -> dict[str, Any]:
  """Metadata (``image_size``, ``num_context_views``, ...) stored as
  ``model.json`` beside our own checkpoints; ``{}`` for published ones."""
  file = resolve_checkpoint(path)
  for candidate in (file.parent / MODEL_INFO, file.parent.parent / MODEL_INFO):
    if candidate.is_file():
      return json.loads(candidate.read_text())
  return {}


def write_model_info(directory: PathLike, *, name: str, image_size: int,
                     num_context_views: int, **extra: Any) -> pathlib.Path:
  """Writes ``<directory>/model.json``, read by :func:`read_model_info`.

  The file is written under a temporary name and renamed, so a reader never
  sees half of it.

  Args:
    directory: the folder holding the checkpoint (or its ``checkpoints-0``).
    name: the model's display name.
    image_size: the square frame size the model was trained at.
    num_context_views: context views the model takes (1: stereo-monocular).
    **extra: further JSON fields (``config``, ``perceptual``, the model
      card's facts, ...). A ``kind`` among them must agree with
      :func:`model_kind`, which sets it.

  Returns:
    The path of the written file.
  """
  kind = model_kind(int(num_context_views))
  given = extra.pop("kind", kind)
  if given != kind:
    raise ValueError(f"a model with {num_context_views} context view(s) is "
                     f"{kind!r}, not {given!r}")
  info = {"name": name, "kind": kind, "image_size": int(image_size),
          "num_context_views": int(num_context_views), **extra}
  path = pathlib.Path(directory) / MODEL_INFO
  tmp = path.with_suffix(".json.tmp")
  with open(tmp, "w") as f:
    f.write(json.dumps(info, indent=1) + "\n")
    fsync_file(f)
  os.replace(tmp, path)
  fsync_dir(path.parent)
  return path


# ------------------------------------------------------- split weight files --

SPLIT_INDEX = "weights.json"


def save_split_params(directory: PathLike, params: Params, *,
                      dtype: Any = jnp.bfloat16,
                      max_bytes: int = 15 * 2 ** 20) -> list[pathlib.Path]:
  """Writes ``{"PoseEnc", "Render"}`` weights as msgpack parts of at most
  ``max_bytes`` each (cast to ``dtype``), plus ``weights.json`` naming them.

  For moving weights through channels that limit file sizes (the GPU
  machine's output folder): ``load_split_params`` reads them back as float32.
  A single parameter larger than ``max_bytes`` is an error.

  Returns:
    The written files, the index last.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  flat = traverse_util.flatten_dict(
      {"PoseEnc": params["PoseEnc"], "Render": params["Render"]}, sep="/")
  parts: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name in sorted(flat):
    leaf = np.asarray(jax.device_get(flat[name])).astype(dtype)
    if leaf.nbytes > max_bytes:
      raise CheckpointError(f"parameter {name} is {leaf.nbytes} bytes, more "
                            f"than one part may hold ({max_bytes})")
    if size + leaf.nbytes > max_bytes and parts[-1]:
      parts.append({})
      size = 0
    parts[-1][name] = leaf
    size += leaf.nbytes
  written = []
  for i, part in enumerate(parts):
    file = directory / f"weights_{i:02d}.msgpack"
    file.write_bytes(serialization.msgpack_serialize(part))
    written.append(file)
  index = directory / SPLIT_INDEX
  index.write_text(json.dumps({"parts": [f.name for f in written],
                               "dtype": jnp.dtype(dtype).name}, indent=1))
  return written + [index]


def load_split_params(directory: PathLike) -> Params:
  """Reads weights written by :func:`save_split_params` (float32 numpy)."""
  directory = pathlib.Path(directory)
  index = directory / SPLIT_INDEX
  if not index.is_file():
    raise CheckpointError(f"{directory} has no {SPLIT_INDEX}: not a folder "
                          "written by save_split_params")
  flat = {}
  for name in json.loads(index.read_text())["parts"]:
    flat.update(_read_msgpack(directory / name))
  params = traverse_util.unflatten_dict(
      {k: np.asarray(v, np.float32) for k, v in flat.items()}, sep="/")
  check_params(params, infer_config(params, source=directory),
               source=directory)
  return params
