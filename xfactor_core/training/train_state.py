"""The train state and its checkpoint dictionary.

    payload = state_dict(state, config=..., perceptual_name=..., data_state=...,
                         accumulation_steps=...)   # numpy, for save_checkpoint
    state, stored = restore_state(template, checkpoint_dir, mesh)

A checkpoint holds ``step``, ``params`` {PoseEnc, Render}, ``opt_state``
(optax.MultiSteps, the published layout), ``key`` (the run's base PRNG key
data), ``data`` (source, seed, next step), ``perceptual`` and ``config`` (both
as UTF-8 bytes in a uint8 array, see :func:`decode_text`) and ``multi_steps``.
msgpack holds arrays, not strings, hence the text fields.

A new model can start from the networks of another run
(:func:`load_init_params`, :func:`with_params`): the multi-view model starts
from the stereo-monocular one's pose encoder (``init_pose_encoder_from``) or
its whole model (``init_params_from``; the networks do not depend on the
number of context views).
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import jax
import ml_collections
import numpy as np
from flax import serialization
from flax import struct
from flax import traverse_util
from jax.sharding import Mesh

from xfactor_core import checkpoints
from xfactor_core.training import sharding
from xfactor_core.training import step_spec

PathLike = Union[str, os.PathLike]
Params = Any


@struct.dataclass
class TrainState:
  """What one training step reads and writes.

  Attributes:
    step: optimiser steps done (int32 scalar).
    params: ``{"PoseEnc": ..., "Render": ...}``.
    opt_state: ``optax.MultiSteps`` state.
    key: the run's base PRNG key as raw ``uint32[2]`` key data.
  """
  step: jax.Array
  params: Params
  opt_state: Any
  key: jax.Array


# ------------------------------------------------------------ text fields --


def encode_text(text: str) -> np.ndarray:
  """Text as a uint8 array (msgpack checkpoints hold arrays, not strings)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).copy()


def decode_text(value: Any) -> str:
  """Inverse of :func:`encode_text` (also accepts str and bytes)."""
  if isinstance(value, str):
    return value
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return np.asarray(value, np.uint8).tobytes().decode("utf-8")


# ------------------------------------------------------- save and restore --


def _host_tree(tree: Any) -> Any:
  return jax.tree.map(sharding.to_host, tree)


def state_dict(state: TrainState, *, config: ml_collections.ConfigDict,
               perceptual_name: str, data_state: dict[str, Any],
               accumulation_steps: int) -> dict[str, Any]:
  """The checkpoint dictionary (numpy) of a train state."""
  return {
      "step": np.int64(sharding.to_host(state.step)),
      "params": _host_tree(state.params),
      "opt_state": serialization.to_state_dict(_host_tree(state.opt_state)),
      "key": sharding.to_host(state.key),
      "data": {k: (encode_text(v) if isinstance(v, str) else np.int64(v))
               for k, v in data_state.items()},
      "perceptual": encode_text(perceptual_name),
      "config": encode_text(config.to_json_best_effort(sort_keys=True)),
      "multi_steps": np.int64(accumulation_steps),
  }


def _check_same_shapes(template: Any, restored: Any, what: str,
                       source: Any) -> None:
  """Raises CheckpointError naming the first leaf that is missing or has
  another shape in ``restored`` than in ``template``."""
  flat_t = traverse_util.flatten_dict(serialization.to_state_dict(template),
                                      sep="/")
  flat_r = traverse_util.flatten_dict(serialization.to_state_dict(restored),
                                      sep="/")
  for path, leaf in flat_t.items():
    if path not in flat_r:
      raise checkpoints.CheckpointError(
          f"{source}: {what}/{path} is missing; the work directory holds a "
          "checkpoint of a different model or optimiser. Use a new --workdir "
          "or the config the checkpoint was trained with")
    if np.shape(leaf) != np.shape(flat_r[path]):
      raise checkpoints.CheckpointError(
          f"{source}: {what}/{path} has shape {np.shape(flat_r[path])} but "
          f"this config needs {np.shape(leaf)}; use a new --workdir or the "
          "config the checkpoint was trained with")


def restore_state(template: TrainState, directory: PathLike,
                  mesh: Mesh) -> tuple[TrainState, dict[str, Any]]:
  """Loads the newest checkpoint of ``directory`` into ``template``'s shape.

  Returns:
    ``(state replicated over mesh, the stored dictionary)``.
  """
  stored, file = checkpoints.load_state(directory)
  for field in ("step", "params", "opt_state", "key"):
    if field not in stored:
      raise checkpoints.CheckpointError(
          f"{file} has no {field!r}: it holds weights only, not a train "
          "state; resume needs a checkpoint written by the trainer (to start "
          "from weights, use init_pose_encoder_from or a new --workdir)")
  host_template = _host_tree(template)
  params = serialization.from_state_dict(host_template.params,
                                         stored["params"])
  _check_same_shapes(host_template.params, params, "params", file)
  opt_state = serialization.from_state_dict(host_template.opt_state,
                                            stored["opt_state"])
  _check_same_shapes(host_template.opt_state, opt_state, "opt_state", file)
  restored = TrainState(step=np.asarray(stored["step"], np.int32),
                        params=params, opt_state=opt_state,
                        key=np.asarray(stored["key"], np.uint32))
  restored = jax.tree.map(
      lambda t, x: np.asarray(x, dtype=np.asarray(t).dtype),
      host_template, restored)
  replicated = sharding.replicated(mesh)
  return jax.tree.map(lambda x: sharding.global_array(x, replicated),
                      restored), stored


# --------------------------------------------------- weights of another run --


def load_init_params(path: PathLike, spec: step_spec.StepSpec,
                     networks: Sequence[str], option: str) -> Params:
  """The weights of ``networks`` ("PoseEnc", "Render") in another checkpoint,
  checked against ``spec``'s model.

  Args:
    path: the checkpoint (a folder or file that ``checkpoints.load_params``
      reads).
    spec: this run's model.
    networks: which networks to take.
    option: the config field that named ``path``, for error messages.

  Returns:
    ``{network: parameter tree}`` (float32 numpy) in this model's structure.

  Raises:
    step_spec.ConfigError: naming the first parameter whose shape differs.
  """
  stored = checkpoints.load_params(path)
  wanted = jax.eval_shape(
      lambda: step_spec.init_params(spec, jax.random.key(0)))
  loaded = {}
  for network in networks:
    flat_new = traverse_util.flatten_dict(stored.get(network, {}), sep="/")
    for name, leaf in traverse_util.flatten_dict(wanted[network],
                                                 sep="/").items():
      if name not in flat_new or np.shape(flat_new[name]) != tuple(leaf.shape):
        got = np.shape(flat_new[name]) if name in flat_new else "missing"
        raise step_spec.ConfigError(
            f"{option}={path}: {network}/{name} is {got} there but this model "
            f"needs {tuple(leaf.shape)}; the sizes and renderer head "
            "(config.model) must match the checkpoint's")
    loaded[network] = jax.tree.map(
        lambda t, x: np.asarray(x, t.dtype), wanted[network],
        serialization.from_state_dict(wanted[network], stored[network]))
  return loaded


def with_params(state: TrainState, new_params: Params,
                mesh: Mesh) -> TrainState:
  """``state`` with the networks in ``new_params`` replaced (replicated over
  ``mesh``)."""
  replicated = sharding.replicated(mesh)
  new_params = jax.tree.map(lambda x: sharding.global_array(x, replicated),
                            new_params)
  return state.replace(params={**state.params, **new_params})
