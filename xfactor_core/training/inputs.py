"""Training inputs on the device mesh: the synthetic world or real datasets.

Both sources give, for optimiser step ``s`` and micro-batch ``m``, a dict of
global arrays sharded over the batch on the mesh's ``data`` axis::

    frames     B x V x S x S x 3 uint8, clip order
    reference  B int32, the view nearest the middle of the clip

* :class:`SyntheticInputs` renders the clips on the devices themselves
  (``xfactor_core.data.synthetic.sample_batch`` inside a ``shard_map``: every
  device renders its own examples, nothing crosses the host). Example ``i`` of
  a batch is ``sample_batch(fold_in(key(s, m), i), 1, V, S)``, so the data does
  not depend on the number of devices or processes. Frames come in temporal
  order; the reference is ``sampling.reference_view`` of them.
* :class:`DatasetInputs` reads real videos with the grain loader
  (``xfactor_core.data.loader.make_loader``, one shard per process, the window
  growing with the step) and keeps ``device_prefetch`` batches in flight on the
  devices from a background thread, so loading overlaps the training step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import queue
import threading
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from xfactor_core.data import sampling
from xfactor_core.data import scene_sampling
from xfactor_core.data.scene_render import NUM_OBJECT_SLOTS
from xfactor_core.training import sharding

Batch = dict[str, jax.Array]


def reference_index(num_views: int) -> int:
  """The reference of a clip in temporal order (``sampling.reference_view``)."""
  return int(sampling.reference_view(np.arange(num_views)))


@dataclasses.dataclass(frozen=True)
class WorldSchedule:
  """How the synthetic world changes over training (a curriculum); the
  defaults are the standard world throughout and the ``data.world`` section
  of every training config (``xfactor_core/configs/common.py``)."""
  # Camera-motion amplitude factor at step 0, growing linearly to 1 (the
  # standard world) over ramp_steps.
  motion_factor_start: float = 1.0
  # > 0: each step's factor is drawn log-uniformly between this and the
  # ramped factor (from a generator seeded by the step, so a resumed run sees
  # the same world), so that a run keeps meeting small baselines: a training
  # pair spans a whole trajectory, while consecutive frames of a clip (the
  # steps of a composed camera path) move a fraction of that.
  motion_factor_min: float = 0.0
  # Objects per room at most at step 0, growing linearly to every slot over
  # ramp_steps (simple rooms first, clutter later).
  max_objects_start: int = NUM_OBJECT_SLOTS
  ramp_steps: int = 0  # Length of both ramps (0: no ramp).
  photo_scene_prob: float = 0.0  # Probability of a photo scene (needs photos).
  # "" (procedural textures only) or "skimage": the training photos of
  # xfactor_core.data.photos as textures, with the per-surface photo textures
  # of the standard world and photo scenes.
  photos: str = ""

  def __post_init__(self):
    problems = []
    if not 0.0 < self.motion_factor_start <= 1.0:
      problems.append(f"motion_factor_start={self.motion_factor_start} must "
                      "lie in (0, 1]")
    if not 0 <= self.max_objects_start <= NUM_OBJECT_SLOTS:
      problems.append(f"max_objects_start={self.max_objects_start} must lie "
                      f"in 0..{NUM_OBJECT_SLOTS}")
    if not 0.0 <= self.motion_factor_min <= self.motion_factor_start:
      problems.append(f"motion_factor_min={self.motion_factor_min} must lie "
                      f"in [0, motion_factor_start]")
    if self.ramp_steps < 0:
      problems.append(f"ramp_steps={self.ramp_steps} must be >= 0")
    if not 0.0 <= self.photo_scene_prob <= 1.0:
      problems.append(f"photo_scene_prob={self.photo_scene_prob} must lie in "
                      "[0, 1]")
    if self.photos not in ("", "skimage"):
      problems.append(f"photos={self.photos!r}: use '' or 'skimage'")
    if self.photo_scene_prob > 0 and not self.photos:
      problems.append("photo scenes need photos: set photos='skimage'")
    if problems:
      raise ValueError("invalid world schedule: " + "; ".join(problems))

  def at(self, step: int) -> scene_sampling.WorldSettings:
    """The world's knobs at optimiser step ``step`` (numpy scalars)."""
    ramp = 1.0 if self.ramp_steps <= 0 else min(step / self.ramp_steps, 1.0)
    motion = self.motion_factor_start + ramp * (1.0 - self.motion_factor_start)
    if self.motion_factor_min > 0:
      u = np.random.default_rng([int(step), 0x5EED]).uniform()
      motion = math.exp(math.log(self.motion_factor_min)
                        + u * (math.log(motion)
                               - math.log(self.motion_factor_min)))
    objects = self.max_objects_start + ramp * (
        NUM_OBJECT_SLOTS - self.max_objects_start)
    return scene_sampling.WorldSettings(
        motion_factor=np.float32(motion),
        max_objects=np.int32(round(objects)),
        photo_scene_prob=np.float32(self.photo_scene_prob))


@functools.lru_cache(maxsize=4)
def texture_atlas(photos: str) -> Optional[np.ndarray]:
  """The photo atlas a WorldSchedule names (cached), or None."""
  if not photos:
    return None
  from xfactor_core.data import photos as photo_lib  # pylint: disable=g-import-not-at-top
  return photo_lib.photo_atlas()


@functools.lru_cache(maxsize=32)
def synthetic_generator(mesh: Mesh, batch_size: int, num_views: int,
                        image_size: int, supersample: int = 1,
                        with_geometry: bool = False
                        ) -> Callable[..., Batch]:
  """A jitted ``(key, world, atlas) -> batch`` rendering ``batch_size`` clips
  on the mesh (``world``: a WorldSettings, ``atlas``: None or a replicated
  photo atlas).

  With ``with_geometry`` the batch also holds ``depth`` ``B x V x S x S``
  float32, ``camera_from_world`` ``B x V x 4 x 4`` and ``intrinsics``
  ``B x 3 x 3`` (for the objective's optional flow supervision).
  Cached per (mesh, sizes) so repeated trainers in one process compile once.
  """
  from xfactor_core.data import synthetic  # pylint: disable=g-import-not-at-top
  shards = mesh.shape[sharding.DATA_AXIS]
  if batch_size % shards:
    raise ValueError(f"batch size {batch_size} is not divisible by the "
                     f"{shards} devices; use a multiple of {shards}")
  per_shard = batch_size // shards
  # Rendering one example after the other is fastest on CPUs; accelerators
  # render the examples of a device together.
  chunk = 1 if jax.default_backend() == "cpu" else per_shard
  reference = reference_index(num_views)

  def render_shard(key, world, atlas):
    first = jax.lax.axis_index(sharding.DATA_AXIS) * per_shard
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
        first + jnp.arange(per_shard))

    def render(k):
      sample = synthetic.sample_batch(
          k, 1, num_views, image_size, supersample=supersample,
          texture_atlas=atlas, world=world, with_depth=with_geometry)
      out = {"frames": sample["frames"][0]}
      if with_geometry:
        out.update(depth=sample["depth"][0],
                   camera_from_world=sample["camera_from_world"][0],
                   intrinsics=sample["intrinsics"][0, 0])
      return out

    batch = jax.lax.map(render, keys, batch_size=chunk)
    batch["reference"] = jnp.full((per_shard,), reference, jnp.int32)
    return batch

  generate = jax.shard_map(render_shard, mesh=mesh,
                           in_specs=(PartitionSpec(), PartitionSpec(),
                                     PartitionSpec()),
                           out_specs=PartitionSpec(sharding.DATA_AXIS),
                           check_vma=False)
  return jax.jit(generate)


class SyntheticInputs:
  """Clips of the synthetic world rendered on the devices.

  Batch (step s, micro-batch m) uses the key ``fold_in(fold_in(key(seed), s),
  m)`` and the world ``schedule.at(s)``; it is a pure function of (seed, s, m,
  sizes, schedule).
  """

  def __init__(self, mesh: Mesh, batch_size: int, num_views: int,
               image_size: int, *, seed: int, supersample: int = 1,
               schedule: WorldSchedule = WorldSchedule(),
               with_geometry: bool = False):
    self._generate = synthetic_generator(mesh, batch_size, num_views,
                                         image_size, supersample,
                                         with_geometry)
    self._base = jax.random.key(seed)
    self._schedule = schedule
    atlas = texture_atlas(schedule.photos)
    self._atlas = (None if atlas is None
                   else sharding.global_array(atlas, sharding.replicated(mesh)))
    self.seed = seed
    self.batch_size = batch_size

  def batch(self, step: int, micro: int = 0) -> Batch:
    key = jax.random.fold_in(jax.random.fold_in(self._base, step), micro)
    return self._generate(key, self._schedule.at(step), self._atlas)

  def state(self, next_step: int) -> dict[str, Any]:
    return {"source": "synthetic", "seed": self.seed, "next_step": next_step}

  def close(self) -> None:
    pass


class DatasetInputs:
  """Real video clips from the grain loader, prefetched onto the devices.

  Args:
    dataset_configs: dataset ConfigDicts (``loader.default_dataset_config``).
    mesh: the device mesh.
    batch_size: global clips per micro-batch (split over processes).
    seed: data seed.
    start_step: the first optimiser step (resuming).
    batches_per_step: micro-batches per optimiser step.
    worker_count, read_threads, prefetch_batches: grain settings.
    device_prefetch: batches kept in flight on the devices.
  """

  def __init__(self, dataset_configs: Any, mesh: Mesh, batch_size: int, *,
               seed: int, start_step: int, batches_per_step: int,
               worker_count: int = 0, read_threads: int = 2,
               prefetch_batches: int = 2, device_prefetch: int = 2):
    from xfactor_core.data import loader  # pylint: disable=g-import-not-at-top
    processes = jax.process_count()
    if batch_size % processes:
      raise ValueError(f"batch size {batch_size} is not divisible by the "
                       f"{processes} processes")
    self._sharding = sharding.batch_sharding(mesh)
    self._batch_size = batch_size
    self._batches_per_step = batches_per_step
    self.seed = seed
    self._iterator = iter(loader.make_loader(
        dataset_configs, batch_size // processes, seed=seed,
        start_step=start_step, batches_per_step=batches_per_step,
        worker_count=worker_count, read_threads=read_threads,
        prefetch_batches=prefetch_batches))
    self._queue: queue.Queue = queue.Queue(maxsize=max(device_prefetch, 1))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True,
                                    name="xfactor-device-prefetch")
    self._thread.start()

  def _to_device(self, batch: dict[str, np.ndarray]) -> tuple[int, Batch]:
    reference = sampling.reference_view(batch["frame_indices"])
    local = {"frames": batch["frames"], "reference": reference}
    global_batch = {
        k: jax.make_array_from_process_local_data(
            self._sharding, np.ascontiguousarray(v),
            (self._batch_size,) + v.shape[1:])
        for k, v in local.items()}
    return int(batch["step"]), global_batch

  def _fill(self) -> None:
    try:
      for batch in self._iterator:
        item = self._to_device(batch)
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.5)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
    except Exception as e:  # handed to the trainer's thread
      logging.exception("data loading failed")
      self._queue.put(e)

  def batch(self, step: int, micro: int = 0) -> Batch:
    item = self._queue.get()
    if isinstance(item, Exception):
      raise RuntimeError(f"data loading failed: {item}") from item
    loader_step, batch = item
    if loader_step != step:
      raise RuntimeError(f"the loader is out of step: it sent a batch for step "
                         f"{loader_step} while training step {step}")
    return batch

  def state(self, next_step: int) -> dict[str, Any]:
    return {"source": "datasets", "seed": self.seed, "next_step": next_step,
            "batches_per_step": self._batches_per_step}

  def close(self) -> None:
    self._stop.set()
