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

import functools
import logging
import queue
import threading
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xfactor_core.data import sampling

DATA_AXIS = "data"
Batch = dict[str, jax.Array]


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over all devices (of all processes), axis ``data``."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the ``data`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full value on every device."""
  return NamedSharding(mesh, PartitionSpec())


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value every process holds in full."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding,
                                      lambda index: value[index])


def to_host(x: jax.Array) -> np.ndarray:
  """The full value of a (possibly multi-process) global array as numpy."""
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top,line-too-long
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def reference_index(num_views: int) -> int:
  """The reference of a clip in temporal order (``sampling.reference_view``)."""
  return int(sampling.reference_view(np.arange(num_views)))


@functools.lru_cache(maxsize=32)
def synthetic_generator(mesh: Mesh, batch_size: int, num_views: int,
                        image_size: int, supersample: int = 1
                        ) -> Callable[[jax.Array], Batch]:
  """A jitted ``key -> batch`` rendering ``batch_size`` clips on the mesh.

  Cached per (mesh, sizes) so repeated trainers in one process compile once.
  """
  from xfactor_core.data import synthetic  # pylint: disable=g-import-not-at-top
  shards = mesh.shape[DATA_AXIS]
  if batch_size % shards:
    raise ValueError(f"batch size {batch_size} is not divisible by the "
                     f"{shards} devices; use a multiple of {shards}")
  per_shard = batch_size // shards
  # Rendering one example after the other is fastest on CPUs; accelerators
  # render the examples of a device together.
  chunk = 1 if jax.default_backend() == "cpu" else per_shard
  reference = reference_index(num_views)

  def render_shard(key):
    first = jax.lax.axis_index(DATA_AXIS) * per_shard
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
        first + jnp.arange(per_shard))
    render = lambda k: synthetic.sample_batch(
        k, 1, num_views, image_size, supersample=supersample)["frames"][0]
    frames = jax.lax.map(render, keys, batch_size=chunk)
    return {"frames": frames,
            "reference": jnp.full((per_shard,), reference, jnp.int32)}

  generate = jax.shard_map(render_shard, mesh=mesh, in_specs=PartitionSpec(),
                           out_specs=PartitionSpec(DATA_AXIS), check_vma=False)
  return jax.jit(generate)


class SyntheticInputs:
  """Clips of the synthetic world rendered on the devices.

  Batch (step s, micro-batch m) uses the key ``fold_in(fold_in(key(seed), s),
  m)``; it is a pure function of (seed, s, m, sizes).
  """

  def __init__(self, mesh: Mesh, batch_size: int, num_views: int,
               image_size: int, *, seed: int, supersample: int = 1):
    self._generate = synthetic_generator(mesh, batch_size, num_views,
                                         image_size, supersample)
    self._base = jax.random.key(seed)
    self.seed = seed
    self.batch_size = batch_size

  def batch(self, step: int, micro: int = 0) -> Batch:
    key = jax.random.fold_in(jax.random.fold_in(self._base, step), micro)
    return self._generate(key)

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
    self._sharding = batch_sharding(mesh)
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
