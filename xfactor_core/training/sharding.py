"""The device mesh of a training run and arrays on it.

One mesh axis, ``data``, over all devices of all processes: batches are split
over it, parameters and optimiser state are replicated, and XLA inserts the
gradient all-reduce. The same code runs on one CPU, one host with several
devices or several hosts (``xfactor_core.runtime.initialize_distributed``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


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
