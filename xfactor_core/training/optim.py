"""The published optimiser: AdamW with a decay mask, clipping, warm-up cosine.

    optax.MultiSteps(                      # gradient accumulation
        chain(clip_by_global_norm(1.0),
              adamw(schedule, b1=0.9, b2=0.95, weight_decay=5e-3, mask=...)),
        every_k_schedule=accumulation_steps)

Weight decay applies to the weight matrices (``kernel`` leaves) only: not to
norms (LayerNorm scale/bias, RMSNorm alpha), LayerScale alphas, biases or
embeddings (PoseEnc's ``global_embed``). The learning rate warms up linearly
from ``init_lr`` (1e-12) to ``peak_lr`` over ``warmup_steps`` and then follows a
cosine to ``end_lr`` at ``decay_steps`` (counted from step 0), constant after.
Steps are optimiser steps (one per accumulated batch). The state layout
(``mini_step``, ``gradient_step``, ``inner_opt_state``, ``acc_grads``,
``skip_state``) is the one of the published checkpoints.

Optionally (``spike_factor`` > 0, not published) an update whose gradient norm
exceeds ``spike_factor`` times the running mean of the recent norms is skipped
(no parameter or moment change; :func:`skip_gradient_spikes`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

Params = Any


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """Optimiser hyper-parameters; the defaults are the published values and
  the ``optimizer`` section of every training config
  (``xfactor_core/configs/common.py``). Steps are optimiser steps."""
  peak_lr: float = 4e-4  # Reached at the end of the warm-up.
  init_lr: float = 1e-12  # At step 0; rises linearly to peak_lr.
  end_lr: float = 1e-4  # At decay_steps, after the cosine; constant after.
  warmup_steps: int = 4_000
  decay_steps: int = 100_000  # Counted from step 0, not from the warm-up.
  b1: float = 0.9  # Adam's first-moment decay.
  b2: float = 0.95  # Adam's second-moment decay.
  eps: float = 1e-8
  weight_decay: float = 5e-3  # On weight matrices only (decays()).
  grad_clip: float = 1.0  # Global gradient norm clipped to this.
  # Skip an update whose gradient norm exceeds spike_factor times the running
  # mean of the accepted norms (0: off, as published; else > 1) ...
  spike_factor: float = 0.0
  spike_warmup: int = 50  # ... once this many updates were accepted.

  def __post_init__(self):
    problems = []
    if not self.peak_lr > 0:
      problems.append(f"peak_lr={self.peak_lr} must be > 0")
    if self.init_lr < 0 or self.end_lr < 0:
      problems.append("init_lr and end_lr must be >= 0")
    if self.warmup_steps < 0:
      problems.append(f"warmup_steps={self.warmup_steps} must be >= 0")
    if self.decay_steps <= self.warmup_steps:
      problems.append(f"decay_steps={self.decay_steps} must exceed "
                      f"warmup_steps={self.warmup_steps} (decay_steps counts "
                      "from step 0)")
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      problems.append(f"b1={self.b1}, b2={self.b2} must lie in [0, 1)")
    if self.weight_decay < 0 or not self.grad_clip > 0:
      problems.append("weight_decay must be >= 0 and grad_clip > 0")
    if self.spike_factor != 0 and self.spike_factor <= 1:
      problems.append(f"spike_factor={self.spike_factor} must be 0 (off) or "
                      "> 1 (a multiple of the running mean gradient norm)")
    if self.spike_warmup < 0:
      problems.append(f"spike_warmup={self.spike_warmup} must be >= 0")
    if problems:
      raise ValueError("invalid optimizer settings: " + "; ".join(problems))


def learning_rate_schedule(settings: OptimizerSettings) -> optax.Schedule:
  """Warm-up cosine: init_lr -> peak_lr (warmup_steps) -> end_lr (decay_steps).

  ``lr(s) = init + (peak - init) s / warmup`` for ``s < warmup``, then
  ``end + (peak - end) (1 + cos(pi t)) / 2`` with ``t = (s - warmup) /
  (decay_steps - warmup)`` clipped to [0, 1]. (Written out rather than
  optax's, which rounds the 1e-12 start to 0 in float32.)
  """
  init, peak, end = settings.init_lr, settings.peak_lr, settings.end_lr
  warmup = settings.warmup_steps
  span = settings.decay_steps - warmup

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    rising = init + (peak - init) * step / max(warmup, 1)
    t = jnp.clip((step - warmup) / span, 0.0, 1.0)
    falling = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    return jnp.where(step < warmup, rising, falling)

  return schedule


def decays(path: tuple[str, ...]) -> bool:
  """Whether the parameter at ``path`` gets weight decay (weight matrices)."""
  return path[-1] == "kernel"


def weight_decay_mask(params: Params) -> Params:
  """A pytree of bools like ``params``: True where weight decay applies."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: decays(k) for k in flat})


class SpikeSkipState(NamedTuple):
  """State of :func:`skip_gradient_spikes`."""
  inner_state: Any
  mean_norm: jax.Array  # exponential moving average of accepted norms
  count: jax.Array      # accepted updates so far
  skipped: jax.Array    # skipped updates so far


def skip_gradient_spikes(inner: optax.GradientTransformation, factor: float,
                         warmup: int = 50, decay: float = 0.98
                         ) -> optax.GradientTransformation:
  """Skips updates whose gradient norm spikes.

  An update is skipped (zero update, ``inner``'s state unchanged) when its
  gradient's global norm is not finite, or exceeds ``factor`` times the
  bias-corrected moving average (``decay``) of the accepted norms, once
  ``warmup`` updates have been accepted. Skipped norms do not enter the
  average.
  """

  def init(params):
    return SpikeSkipState(inner.init(params), jnp.zeros((), jnp.float32),
                          jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    norm = global_norm(grads)
    mean = state.mean_norm / jnp.maximum(
        1.0 - decay ** state.count.astype(jnp.float32), 1e-12)
    spike = ~jnp.isfinite(norm) | ((state.count >= warmup)
                                   & (norm > factor * mean))
    updates, inner_state = inner.update(grads, state.inner_state, params)
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(spike, o, n), new, old)
    updates = jax.tree.map(lambda u: jnp.where(spike, jnp.zeros_like(u), u),
                           updates)
    return updates, SpikeSkipState(
        inner_state=keep(inner_state, state.inner_state),
        mean_norm=jnp.where(spike, state.mean_norm,
                            decay * state.mean_norm + (1 - decay) * norm),
        count=state.count + (~spike).astype(jnp.int32),
        skipped=state.skipped + spike.astype(jnp.int32))

  return optax.GradientTransformation(init, update)


def skipped_updates(opt_state: Any) -> jax.Array:
  """Updates skipped as gradient spikes so far (0 without spike skipping)."""
  inner = getattr(opt_state, "inner_opt_state", opt_state)
  if isinstance(inner, SpikeSkipState):
    return inner.skipped
  return jnp.zeros((), jnp.int32)


def make_optimizer(settings: OptimizerSettings,
                   accumulation_steps: int = 1) -> optax.GradientTransformation:
  """The published optimiser, accumulating ``accumulation_steps`` micro-batches.

  The gradients of the micro-batches are averaged; the parameters change
  once every ``accumulation_steps`` updates (zero updates in between).
  """
  if accumulation_steps < 1:
    raise ValueError(f"accumulation_steps={accumulation_steps} must be >= 1")
  inner = optax.chain(
      optax.clip_by_global_norm(settings.grad_clip),
      optax.adamw(learning_rate_schedule(settings), b1=settings.b1,
                  b2=settings.b2, eps=settings.eps,
                  weight_decay=settings.weight_decay, mask=weight_decay_mask))
  if settings.spike_factor > 0:
    inner = skip_gradient_spikes(inner, settings.spike_factor,
                                 settings.spike_warmup)
  return optax.MultiSteps(inner, every_k_schedule=accumulation_steps
                          ).gradient_transformation()


def global_norm(tree: Params) -> jax.Array:
  """The global L2 norm of a pytree (the quantity that is clipped)."""
  return optax.tree.norm(tree)
