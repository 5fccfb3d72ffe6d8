"""Models the app offers: discovery and a bounded cache of loaded ones.

Models come from three places: the published checkpoints of
:mod:`xfactor_core.fetch` (always listed; "not downloaded" until they are in
the cache), the shipped offline demo models (``DEFAULT_MODELS``, when their
folders exist), and a folder of published or own checkpoints named by
``--checkpoints DIR`` or ``XFACTOR_CHECKPOINTS``. Discovery reads no weights:
kind, resolution and size come from ``model.json`` (or the fetch table) when
there is one and from the loaded model otherwise. Weights load on first use
and stay in a small LRU cache shared by every session (pipelines are
read-only once loaded).

What the page says about a model lives in :mod:`picker`; how long a
transfer takes, in :mod:`estimates`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import threading

import jax
from typing import Callable, Mapping, Optional, Sequence, Union

from xfactor_core import checkpoints, fetch, models
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference.pipeline import DEFAULT_MODELS, TransferPipeline

PathLike = Union[str, os.PathLike]
CHECKPOINTS_ENV = "XFACTOR_CHECKPOINTS"
DEFAULT_LABELS = {
    "stereo-monocular": "Offline demo stereo-monocular (small: moves your "
                        "photo as one plane)",
    "multi-view": "Offline demo multi-view (small: moves your photos as "
                  "planes from the middle one)"}
PUBLISHED_PREFIX = "published:"
MAX_IMAGE_SIZE = 512
CHECKPOINT_FILE_SUFFIXES = (".flax", ".msgpack")


# A streamed chunk holds about this much work (a fraction of a second of a
# laptop CPU), so that a large model's first frames arrive quickly.
STREAM_CHUNK_FLOPS = 50e9


class RegistryError(ValueError):
  """A model folder or model choice that cannot be used (with the fix)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the app knows about a model before loading it.

  Attributes:
    model_id: unique key (absolute path of the checkpoint file; for the
      published models ``"published:<name>"``, downloaded or not).
    label: the name shown in the model picker.
    path: the checkpoint path given to ``TransferPipeline.from_checkpoint``;
      ``None`` for a published model that is not downloaded yet.
    kind: ``"stereo-monocular"``, ``"multi-view"`` or ``None`` (unknown until
      loaded).
    image_size: native resolution in pixels, or ``None`` until loaded.
    num_context_views: context views the model takes, or ``None``.
    num_parameters: parameter count, or ``None`` until loaded.
    source: ``"published"``, ``"shipped"`` or ``"folder"``.
    render_output: the renderer's head, ``"rgb"`` (renders at the size the
      model runs at), ``"flow"`` or ``"warp"`` (render at any output size;
      warp models also replay composed camera paths), or ``None`` until
      loaded (no ``config`` in ``model.json``).
    published: the fetch name (``"sm"``, ``"mv"``) of a published model.
    download_bytes: the installed size of a published model not downloaded.
    title: the model's name without its state (default: the label).
    problem: why the installed copy of a published model cannot be used (a
      half-finished or damaged install), or ``None``; such a model is not
      available, and a download reinstalls it.
  """
  model_id: str
  label: str
  path: Optional[pathlib.Path]
  kind: Optional[str] = None
  image_size: Optional[int] = None
  num_context_views: Optional[int] = None
  num_parameters: Optional[int] = None
  source: str = "folder"
  render_output: Optional[str] = None
  published: Optional[str] = None
  download_bytes: Optional[int] = None
  title: Optional[str] = None
  problem: Optional[str] = None

  @property
  def available(self) -> bool:
    """Whether the weights are on this machine (published: downloaded)."""
    return self.path is not None

  @property
  def renders_any_size(self) -> bool:
    """Whether the model is known to render at any output size."""
    return self.render_output in models.SAMPLING_OUTPUTS

  @property
  def path_modes(self) -> tuple[str, ...]:
    """The camera path modes the model is known to replay (``"composed"``
    too for the warp renderer)."""
    return camera_paths.modes_for(self.render_output)

  @property
  def default_path_mode(self) -> str:
    """The camera path the model uses when none is picked (as
    ``TransferPipeline.default_path_mode``)."""
    return camera_paths.default_mode(self.render_output)


def _parameter_count_from_info(info: Mapping) -> Optional[int]:
  """Parameter count from ``model.json`` (``num_parameters`` or ``config``)."""
  if isinstance(info.get("num_parameters"), int):
    return info["num_parameters"]
  config = info.get("config")
  if isinstance(config, Mapping):
    try:
      return checkpoints.parameter_count(checkpoints.ModelConfig.from_dict(
          config))
    except (TypeError, ValueError):
      return None
  return None


def describe_checkpoint(path: PathLike, source: str = "folder",
                        label: Optional[str] = None) -> ModelSpec:
  """A :class:`ModelSpec` from a checkpoint path, reading only ``model.json``.

  Raises:
    RegistryError: the path holds no checkpoint.
  """
  path = pathlib.Path(path)
  if path.is_file() and path.suffix.lower() not in CHECKPOINT_FILE_SUFFIXES:
    raise RegistryError(f"{path} is not a checkpoint (expected a folder or a "
                        f"{' / '.join(CHECKPOINT_FILE_SUFFIXES)} file)")
  try:
    resolved = checkpoints.resolve_checkpoint(path)
    info = checkpoints.read_model_info(path)
  except checkpoints.CheckpointError as e:
    raise RegistryError(str(e)) from e
  except (OSError, ValueError) as e:
    raise RegistryError(f"cannot read the model description beside {path} "
                        f"({e}); fix or delete its model.json") from e
  views = info.get("num_context_views")
  kind = info.get("kind") or (None if views is None else
                              checkpoints.model_kind(int(views)))
  size = info.get("image_size")
  config = info.get("config")
  # A config written before the flow renderer existed has no render_output:
  # those models have the RGB head (ModelConfig's default).
  render_output = (str(config.get("render_output", "rgb"))
                   if isinstance(config, Mapping) else None)
  return ModelSpec(
      model_id=os.path.abspath(resolved),
      label=label or str(info.get("name") or path.name),
      path=path, kind=kind,
      image_size=None if size is None else int(size),
      num_context_views=None if views is None else int(views),
      num_parameters=_parameter_count_from_info(info), source=source,
      render_output=render_output)


def reinstall_command(name: str) -> str:
  """The command that replaces a broken install of published model ``name``."""
  return f"python -m xfactor_core.fetch {name} --force"


def published_spec(model: fetch.PublishedModel,
                   root: Optional[PathLike] = None) -> ModelSpec:
  """The picker's entry of a published model: its installed folder, or the
  fetch table's facts while it is not downloaded (or while its installed
  copy cannot be used: then ``problem`` says why)."""
  model_id = PUBLISHED_PREFIX + model.name
  entry = fetch.cache_entry(model.name, root if root is not None
                            else fetch.cache_root())
  path, problem = entry.path, None
  if entry.broken:
    problem = ("its installed copy is broken: the weights are missing or cut "
               "short (an install or a removal was interrupted)")
    logging.warning("installed model %s %s; reinstall it with %s (or press "
                    "Download in the app)", model.name, problem,
                    reinstall_command(model.name))
  if path is not None:
    try:
      spec = describe_checkpoint(path, "published", model.title)
      return dataclasses.replace(spec, model_id=model_id,
                                 published=model.name)
    except RegistryError as e:
      problem = str(e)
      logging.warning(
          "installed model %s unusable (%s); reinstall it with %s (or press "
          "Download in the app)", path, e, reinstall_command(model.name))
  count = (checkpoints.parameter_count(model.config) if model.config
           else None)
  state = "installed copy unusable" if problem else "not downloaded"
  return ModelSpec(
      model_id=model_id,
      label=f"{model.title} · {state} "
            f"({fetch.format_bytes(model.installed_bytes)})",
      path=None, kind=model.kind, image_size=model.image_size,
      num_context_views=model.num_context_views, num_parameters=count,
      source="published", render_output="rgb", published=model.name,
      download_bytes=model.installed_bytes, title=model.title,
      problem=problem)


def discover_models(checkpoints_dir: Optional[PathLike] = None,
                    defaults: Mapping[str, pathlib.Path] = DEFAULT_MODELS,
                    published: Sequence[fetch.PublishedModel] = (),
                    cache_root: Optional[PathLike] = None
                    ) -> list[ModelSpec]:
  """Published models, shipped defaults that exist, then every checkpoint in
  ``checkpoints_dir``.

  ``published`` (e.g. ``fetch.sources().values()``) are always listed,
  downloaded (from ``cache_root``) or not. ``checkpoints_dir`` may itself be
  one checkpoint (a clu directory, a folder holding ``checkpoints-0``, or a
  msgpack file) or a folder whose entries are checkpoints; entries that are
  not are skipped with a log line.

  Raises:
    RegistryError: ``checkpoints_dir`` does not exist or holds no checkpoint.
  """
  specs: list[ModelSpec] = [published_spec(m, cache_root) for m in published]
  for kind, path in defaults.items():
    if pathlib.Path(path).exists():
      try:
        specs.append(describe_checkpoint(path, "shipped",
                                         DEFAULT_LABELS.get(kind)))
      except RegistryError as e:
        logging.warning("shipped model %s unusable: %s", path, e)
  if checkpoints_dir:
    folder = pathlib.Path(checkpoints_dir).expanduser()
    if not folder.exists():
      raise RegistryError(f"checkpoint folder {folder} does not exist; pass "
                          "--checkpoints with a folder of checkpoints")
    found: list[ModelSpec] = []
    try:
      found.append(describe_checkpoint(folder))
    except RegistryError:
      if folder.is_dir():
        for entry in sorted(folder.iterdir()):
          if entry.name.startswith(".") or (
              entry.is_file() and
              entry.suffix.lower() not in CHECKPOINT_FILE_SUFFIXES):
            continue
          try:
            found.append(describe_checkpoint(entry))
          except RegistryError as e:
            logging.info("skipping %s: %s", entry, e)
    if not found:
      raise RegistryError(
          f"no checkpoint found in {folder}; it should hold checkpoint folders "
          "(each with 'checkpoint' + 'ckpt-N.flax', or 'checkpoints-0/')")
    specs.extend(found)
  unique, seen = [], set()
  for spec in specs:
    if spec.model_id not in seen:
      seen.add(spec.model_id)
      unique.append(spec)
  return unique


class ModelRegistry:
  """The models on offer and a bounded cache of loaded pipelines.

  Thread-safe: a model is loaded once even when several sessions ask for it
  at the same time; the least recently used one is dropped beyond
  ``max_loaded``.
  """

  def __init__(self, specs: Sequence[ModelSpec], *, max_loaded: int = 2,
               batch_size: int = 8,
               loader: Callable[..., TransferPipeline] = None):
    if max_loaded < 1:
      raise RegistryError(f"max_loaded must be at least 1, got {max_loaded}")
    self._specs = collections.OrderedDict((s.model_id, s) for s in specs)
    self._max_loaded = max_loaded
    self._batch_size = batch_size
    self._loader = loader or TransferPipeline.from_checkpoint
    self._loaded: collections.OrderedDict[str, TransferPipeline] = (
        collections.OrderedDict())
    self._lock = threading.Lock()
    self._load_locks = {model_id: threading.Lock() for model_id in self._specs}

  @property
  def specs(self) -> list[ModelSpec]:
    return list(self._specs.values())

  @property
  def default_id(self) -> Optional[str]:
    """The model the page starts with: the stereo-monocular default, else the
    first model that is on this machine, else the first listed."""
    return (self.default_for("stereo-monocular")
            or next((s.model_id for s in self.specs if s.available), None)
            or next(iter(self._specs), None))

  def default_for(self, kind: str) -> Optional[str]:
    """The first available model of ``kind`` in the picker's order: the
    published one once it is downloaded, else the shipped demo."""
    with self._lock:
      return next((s.model_id for s in self._specs.values()
                   if s.available and s.kind == kind), None)

  def refresh_published(self, model: fetch.PublishedModel,
                        root: Optional[PathLike] = None) -> ModelSpec:
    """Re-reads a published model's entry from the cache (after a download)."""
    model_id = PUBLISHED_PREFIX + model.name
    spec = published_spec(model, root)
    with self._lock:
      if model_id not in self._specs:
        raise RegistryError(f"{model.name} is not a published model listed "
                            "by this app")
      self._specs[model_id] = spec
    return spec

  def choices(self) -> list[tuple[str, str]]:
    """``(label, model_id)`` pairs for a dropdown."""
    return [(s.label, s.model_id) for s in self._specs.values()]

  def spec(self, model_id: Optional[str]) -> ModelSpec:
    """The spec of ``model_id``, updated with what loading revealed."""
    if not self._specs:
      raise RegistryError(
          "no model is installed: the shipped models are not trained yet; "
          f"start the app with --checkpoints DIR (or set {CHECKPOINTS_ENV})")
    if model_id is None:
      model_id = self.default_id
    with self._lock:
      if model_id not in self._specs:
        raise RegistryError(f"unknown model {model_id!r}; pick one of: "
                            + ", ".join(s.label for s in self._specs.values()))
      return self._specs[model_id]

  def is_loaded(self, model_id: str) -> bool:
    with self._lock:
      return model_id in self._loaded

  def get(self, model_id: Optional[str] = None) -> TransferPipeline:
    """The loaded pipeline of ``model_id`` (loads it on first use)."""
    spec = self.spec(model_id)
    if not spec.available:
      raise RegistryError(
          f"{spec.label}: press "
          "Download beside the model picker, or run python -m "
          f"xfactor_core.fetch {spec.published} on the server")
    with self._lock:
      if spec.model_id in self._loaded:
        self._loaded.move_to_end(spec.model_id)
        return self._loaded[spec.model_id]
    with self._load_locks[spec.model_id]:
      with self._lock:
        if spec.model_id in self._loaded:
          return self._loaded[spec.model_id]
      logging.info("loading model %s from %s", spec.label, spec.path)
      try:
        pipe = self._loader(spec.path, batch_size=self._batch_size)
      except checkpoints.CheckpointError as e:
        raise RegistryError(f"model {spec.label} cannot be loaded: {e}") from e
      pipe.name = spec.label
      pipe.batch_size = self._stream_batch(pipe)
      with self._lock:
        self._specs[spec.model_id] = dataclasses.replace(
            spec, kind=pipe.kind, image_size=pipe.image_size,
            num_context_views=pipe.max_context_views,
            num_parameters=pipe.num_parameters,
            render_output=pipe.config.render_output)
        self._loaded[spec.model_id] = pipe
        while len(self._loaded) > self._max_loaded:
          dropped, _ = self._loaded.popitem(last=False)
          logging.info("dropped model %s from the cache", dropped)
      return pipe

  def pipeline(self, model_id: Optional[str] = None, *,
               image_size: Optional[int] = None,
               batch_size: Optional[int] = None) -> TransferPipeline:
    """The pipeline of a model at another working resolution or chunk size.

    The weights are shared; each (size, chunk) compiles once. (Models that
    render at any size run at their own size; their output size is the
    ``sample_from`` of their render, see ``jobs.output_size``.)
    """
    pipe = self.get(model_id)
    size = image_size or pipe.image_size
    if size > MAX_IMAGE_SIZE:
      raise RegistryError(
          f"resolution {size} px is above the app's limit of {MAX_IMAGE_SIZE} "
          "px for this model, whose RGB head renders at the size the model "
          f"runs at; pick {MAX_IMAGE_SIZE} or less, or a model with the flow "
          "renderer, which renders larger outputs")
    patch = pipe.config.patch_size
    if size % patch:
      raise RegistryError(f"resolution {size} px is not a multiple of this "
                          f"model's patch size {patch}; pick a multiple of "
                          f"{patch} (e.g. {max(patch, size - size % patch)})")
    if size == pipe.image_size and (batch_size in (None, pipe.batch_size)):
      return pipe
    resized = dataclasses.replace(pipe, image_size=size,
                                  batch_size=batch_size or self._batch_size)
    if batch_size is None:
      resized.batch_size = self._stream_batch(resized)
    return resized

  def _stream_batch(self, pipe: TransferPipeline) -> int:
    """Frames per chunk: on a CPU, as many as make about
    ``STREAM_CHUNK_FLOPS`` of work (a large model streams frame by frame,
    which costs it nothing: its matmuls fill the CPU at batch 1); on an
    accelerator, the registry's batch size."""
    if jax.default_backend() != "cpu":
      return self._batch_size
    per_frame = pipe.flops_per_frame(pipe.max_context_views)
    return int(max(1, min(self._batch_size, STREAM_CHUNK_FLOPS // per_frame)))


def checkpoints_dir_from_env(cli_value: Optional[str]) -> Optional[str]:
  """``--checkpoints`` wins over ``XFACTOR_CHECKPOINTS``."""
  return cli_value or os.environ.get(CHECKPOINTS_ENV) or None

