"""What a training config asks for, checked: the step spec, the two networks
and their fresh parameters.

    spec = make_step_spec(config)                 # raises ConfigError
    pose_enc, render = build_models(spec)
    params = init_params(spec, jax.random.key(0))  # {"PoseEnc", "Render"}

:class:`StepSpec` holds everything the compiled training and evaluation steps
depend on; it is hashable, so compiled functions are cached per spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, TypeVar

import jax
import jax.numpy as jnp
import ml_collections

from xfactor_core import checkpoints
from xfactor_core import models
from xfactor_core.training import objective
from xfactor_core.training import optim

Params = Any
_Settings = TypeVar("_Settings")


class ConfigError(ValueError):
  """A training config that cannot run (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything the compiled step functions depend on (hashable)."""
  model: checkpoints.ModelConfig
  image_size: int
  num_views: int
  dtype: Optional[str]
  remat: bool
  attention_impl: str
  attention_dtype: Optional[str]
  objective: objective.ObjectiveSettings
  optimizer: optim.OptimizerSettings
  accumulation_steps: int

  @property
  def num_context_views(self) -> int:
    return self.num_views - 1


# ------------------------------------------------------------ the config --


def _dtype_name(name: Optional[str], field: str) -> Optional[str]:
  if name in (None, "", "none", "None"):
    return None
  if name not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"config.{field}={name!r}: use float32, bfloat16 or "
                      "float16")
  return name


def settings_from_config(cls: type[_Settings], section: Any,
                         what: str) -> _Settings:
  """A settings dataclass from a config section (ConfigDict or mapping).

  Raises:
    ConfigError: a field the dataclass does not have, or a value it rejects.
  """
  values = dict(section)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ConfigError(f"unknown {what} settings {unknown}; the settings are "
                      f"{sorted(names)}")
  try:
    return cls(**values)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def model_config(config: ml_collections.ConfigDict) -> checkpoints.ModelConfig:
  """The network sizes of a training config."""
  try:
    return checkpoints.ModelConfig.from_dict(config.model)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from e


def batch_layout(config: ml_collections.ConfigDict,
                 num_devices: int) -> tuple[int, int]:
  """``(micro_batch_size, accumulation_steps)``, checked against the devices."""
  batch = int(config.batch_size)
  micro = int(config.micro_batch_size) or batch
  if batch < 1 or micro < 1:
    raise ConfigError(f"batch_size={batch} and micro_batch_size={micro} must "
                      "be positive")
  if batch % micro:
    raise ConfigError(f"batch_size={batch} is not a multiple of "
                      f"micro_batch_size={micro}; pick sizes that divide")
  if micro % num_devices:
    raise ConfigError(
        f"micro-batch {micro} cannot be split over {num_devices} devices; use "
        f"a multiple of {num_devices} (--config.micro_batch_size or "
        "--config.batch_size)")
  return micro, batch // micro


def make_step_spec(config: ml_collections.ConfigDict,
                   accumulation_steps: int = 1) -> StepSpec:
  """Validates a config and extracts what the compiled functions need."""
  model = model_config(config)
  size, patch = int(config.image_size), model.patch_size
  if size % (2 * patch):
    raise ConfigError(
        f"image_size={size} must be an even multiple of the patch size "
        f"{patch} (the quadrant masks split the patch grid in halves)")
  head_dim, remainder = divmod(model.features, model.num_heads)
  if remainder or head_dim % 4:
    raise ConfigError(
        f"features={model.features} / num_heads={model.num_heads} must give a "
        "head size divisible by 4 (2-D rotary embedding)")
  views = int(config.num_context_views)
  if views < 1:
    raise ConfigError(f"num_context_views={views} must be at least 1")
  if config.attention_impl not in models.IMPLEMENTATIONS:
    raise ConfigError(f"attention_impl={config.attention_impl!r}: use one of "
                      f"{models.IMPLEMENTATIONS}")
  objective_settings = settings_from_config(objective.ObjectiveSettings,
                                            config.objective, "objective")
  optimizer_settings = settings_from_config(optim.OptimizerSettings,
                                            config.optimizer, "optimizer")
  return StepSpec(
      model=model, image_size=size, num_views=views + 1,
      dtype=_dtype_name(config.dtype, "dtype"), remat=bool(config.remat),
      attention_impl=str(config.attention_impl),
      attention_dtype=_dtype_name(config.attention_dtype, "attention_dtype"),
      objective=objective_settings, optimizer=optimizer_settings,
      accumulation_steps=int(accumulation_steps))


# ------------------------------------------------------------- the model --


def build_models(spec: StepSpec) -> tuple[models.PoseEnc, models.Render]:
  """The two modules with the spec's sizes and compute options."""
  dtype = None if spec.dtype is None else jnp.dtype(spec.dtype)
  attention_dtype = (None if spec.attention_dtype is None
                     else jnp.dtype(spec.attention_dtype))
  options = dict(remat=spec.remat, attention_impl=spec.attention_impl,
                 attention_dtype=attention_dtype, dtype=dtype)
  return (models.PoseEnc(**spec.model.pose_enc_kwargs(), **options),
          models.Render(**spec.model.render_kwargs(), **options))


def init_params(spec: StepSpec, key: jax.Array) -> Params:
  """Fresh parameters ``{"PoseEnc": ..., "Render": ...}`` (float32)."""
  pose_enc, render = build_models(spec)
  s = spec.image_size
  pose_key, render_key = jax.random.split(key)
  pair = jnp.zeros((1, 2, s, s, 3), jnp.float32)
  context = jnp.zeros((1, spec.num_views - 1, s, s, 3), jnp.float32)
  poses = jnp.zeros((1, spec.num_views, spec.model.pose_dim), jnp.float32)
  return {"PoseEnc": pose_enc.init(pose_key, pair)["params"],
          "Render": render.init(render_key, context, poses)["params"]}
