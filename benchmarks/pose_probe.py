"""Which pose encoder learns the visible camera motion, and how fast, on a CPU.

    python benchmarks/pose_probe.py --workdir workdirs/pose_probe \\
        [--arms views fused conv correlation correlation@0.3] [--minutes 10] \\
        [--parallel 2] [--json OUT]

A supervised probe: each arm trains a PoseEnc (by default 128 features, 4
layers, patch 16 at 128 px, batch 16: the recipe's width at the default
model's token grid; ``--features``/``--layers``..., with the arm's
``pair_input``) and a linear
head on its latent to regress the global image motion of synthetic frame pairs
(``xfactor_core.metrics.global_motion``: shift, rotation and scale of a robust
similarity fit to the true flow, and the parallax it leaves), for the same
wall time on one core each (``taskset``, ``--parallel`` arms at a time). The
table gives R2 per term on held-out pairs of another world seed, at the
standard camera baselines (pairs of frames 0-1, 0-2 and 0-3 of 4-frame
clips), and for arms trained at smaller baselines (``ENCODER@MOTION``: the
world's ``motion_factor``) also on held-out pairs of their own range.

Each arm saves its encoder (``<workdir>/<arm>/checkpoints-0``: the PoseEnc, with
an untrained one-layer Render), so a self-supervised run can start from it
(``--config.init_pose_encoder_from``). Arms with a ``result.json`` are done
and only read when the command runs again. The data (rendered once, about a
minute) is cached in ``<workdir>/data``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xfactor_core import benchmarking, checkpoints, models
from xfactor_core.data import motion_pairs
from xfactor_core.metrics import global_motion
from xfactor_core.training import objective

STANDARD_MOTION = 1.0
GAPS = (1, 2, 3)
TABLE_TERMS = global_motion.TERMS


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
  """One arm's encoder, data and schedule."""
  pair_input: str = "views"
  motion_factor: float = STANDARD_MOTION  # Training pairs' camera baselines.
  size: int = 128
  features: int = 128
  num_heads: int = 4
  patch_size: int = 16
  layers: int = 4
  pose_dim: int = 64
  global_tokens: int = 8
  batch_size: int = 16
  peak_lr: float = 5e-4
  warmup_steps: int = 100
  seconds: float = 600.0  # Training time (the step count follows from it).
  max_steps: int = 0  # If > 0: exactly this many steps (tests).
  evals: int = 5  # Held-out evaluations during the run.
  seed: int = 0

  def pose_enc(self) -> models.PoseEnc:
    return models.PoseEnc(features=self.features, num_heads=self.num_heads,
                          patch_size=self.patch_size, num_layers=self.layers,
                          pose_dim=self.pose_dim,
                          num_global_tokens=self.global_tokens,
                          pair_input=self.pair_input,
                          attention_impl="xla")


def parse_arm(arm: str) -> tuple[str, float]:
  """``"conv"`` or ``"conv@0.3"`` -> (pair_input, motion_factor)."""
  name, _, motion = arm.partition("@")
  if name not in models.PAIR_INPUTS:
    raise SystemExit(f"unknown encoder {name!r} in arm {arm!r}: use one of "
                     f"{models.PAIR_INPUTS}, optionally @MOTION_FACTOR")
  return name, float(motion) if motion else STANDARD_MOTION


# ------------------------------------------------------------------ data --


def dataset(workdir: pathlib.Path, split: str, motion_factor: float,
            num_clips: int, size: int) -> dict[str, np.ndarray]:
  """Cached ``motion_pairs.motion_dataset`` (train: world 0, test: world 1)."""
  path = (workdir / "data" /
          f"{split}_m{motion_factor:g}_n{num_clips}_s{size}.npz")
  if path.is_file():
    with np.load(path) as f:
      return dict(f)
  seed = {"train": 0, "test": 1}[split]
  data = motion_pairs.motion_dataset(seed, num_clips, size, GAPS,
                                     motion_factor)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **data)
  os.replace(tmp, path)
  return data


# ----------------------------------------------------------------- model --


class Probe(nn.Module):
  """PoseEnc on the pair and a linear map of the second frame's latent to the
  (standardised) motion terms: ``B x 2 x S x S x 3`` -> ``B x 5``."""
  settings: ProbeSettings

  @nn.compact
  def __call__(self, pairs: jax.Array) -> jax.Array:
    latent = self.settings.pose_enc()(pairs)[:, 1]
    return nn.Dense(len(global_motion.TERMS), name="head")(latent)


def make_functions(settings: ProbeSettings):
  """(init, train_step, predict); the learning rate is an argument of
  train_step, so the schedule's length can be set after timing a few steps."""
  probe = Probe(settings)
  # Adam with decoupled weight decay at learning rate 1, scaled per step.
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(1.0, weight_decay=1e-4))

  def init(key, example):
    params = probe.init(key, objective.to_float_images(example))["params"]
    return params, optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, frames, targets, learning_rate):
    def loss_fn(p):
      pred = probe.apply({"params": p}, objective.to_float_images(frames))
      return jnp.mean((pred - targets) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: learning_rate * u, updates)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def predict(params, frames):
    return probe.apply({"params": params}, objective.to_float_images(frames))

  return init, train_step, predict


def _predict_all(predict, params, frames, batch=64):
  return np.concatenate([np.asarray(predict(params, frames[i:i + batch]))
                         for i in range(0, len(frames), batch)])


def train_probe(settings: ProbeSettings, train: dict[str, np.ndarray],
                tests: dict[str, dict[str, np.ndarray]],
                log=logging.info) -> tuple[dict[str, Any], Any]:
  """Trains one arm; returns (result, the PoseEnc params).

  The result holds the steps, seconds per step, the R2 per term on each test
  set at the end and the shift R2 on the first test set at each evaluation.
  """
  mean = train["terms"].mean(0)
  std = train["terms"].std(0) + 1e-6
  rng = np.random.default_rng(settings.seed)

  def batch():
    idx = rng.integers(0, len(train["frames"]), settings.batch_size)
    frames, terms = train["frames"][idx].copy(), train["terms"][idx].copy()
    flip = rng.random(settings.batch_size) < 0.5
    frames[flip] = frames[flip, :, :, ::-1]
    terms[flip] = global_motion.flip_terms(terms[flip])
    return frames, ((terms - mean) / std).astype(np.float32)

  # Time a few compiled steps (their results are dropped) to fix the
  # schedule's length.
  init, train_step, predict = make_functions(settings)
  params, opt_state = init(jax.random.key(settings.seed), train["frames"][:1])
  lr0 = jnp.float32(0.0)
  jax.block_until_ready(train_step(params, opt_state, *batch(), lr0))
  start = time.perf_counter()
  for _ in range(3):
    jax.block_until_ready(train_step(params, opt_state, *batch(), lr0))
  seconds_per_step = (time.perf_counter() - start) / 3
  total = settings.max_steps or max(10, int(settings.seconds /
                                            seconds_per_step))
  log(f"{settings.pair_input}@{settings.motion_factor:g}: "
      f"{seconds_per_step * 1000:.0f} ms a step, {total} steps")
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, settings.peak_lr, min(settings.warmup_steps, total // 2 + 1),
      max(total, 2), end_value=0.1 * settings.peak_lr)
  first_test = next(iter(tests.values()))

  def predictions(test):
    return _predict_all(predict, params, test["frames"]) * std + mean

  def scores(test):
    return global_motion.r2_scores(predictions(test), test["terms"])

  curve, losses = [], []
  eval_at = set(np.linspace(0, total, settings.evals + 1).astype(int)[1:])
  train_seconds = 0.0
  for step in range(1, total + 1):
    frames, targets = batch()
    tick = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, frames, targets,
                                         jnp.float32(schedule(step - 1)))
    loss = float(loss)
    train_seconds += time.perf_counter() - tick
    losses.append(loss)
    if step in eval_at:
      r2 = scores(first_test)
      curve.append({"step": step, "train_seconds": round(train_seconds, 1),
                    "loss": float(np.mean(losses[-50:])),
                    **{k: round(v, 4) for k, v in r2.items()}})
      log(f"{settings.pair_input}@{settings.motion_factor:g} step {step}/"
          f"{total}: loss {curve[-1]['loss']:.3f}, R2 shift "
          f"{r2['shift_x']:.2f}/{r2['shift_y']:.2f}")
  final = {name: predictions(test) for name, test in tests.items()}
  first_name = next(iter(tests))
  gaps = first_test["gap"]

  def shift_r2(keep):
    r2 = global_motion.r2_scores(final[first_name][keep],
                                 first_test["terms"][keep])
    return {k: v for k, v in r2.items() if k.startswith("shift")}

  result = {
      "settings": dataclasses.asdict(settings),
      "parameters": int(sum(np.size(x) for x in
                            jax.tree.leaves(params["PoseEnc_0"]))),
      "steps": total, "train_seconds": round(train_seconds, 1),
      "ms_per_step": round(1000 * train_seconds / total, 1),
      "first_loss": float(np.mean(losses[:20])),
      "last_loss": float(np.mean(losses[-50:])),
      "r2": {name: global_motion.r2_scores(final[name], test["terms"])
             for name, test in tests.items()},
      "r2_shift_by_gap": {str(gap): shift_r2(gaps == gap)
                          for gap in sorted(set(gaps.tolist()))},
      "curve": curve,
  }
  return result, params["PoseEnc_0"]


# ------------------------------------------------------------------ arms --


def arm_name(pair_input: str, motion_factor: float) -> str:
  return (pair_input if motion_factor == STANDARD_MOTION
          else f"{pair_input}@{motion_factor:g}")


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
  """One arm in this process (the orchestrator starts it pinned to a core)."""
  pair_input, motion = parse_arm(args.run_arm)
  workdir = pathlib.Path(args.workdir)
  settings = ProbeSettings(
      pair_input=pair_input, motion_factor=motion, size=args.size,
      features=args.features, num_heads=args.num_heads,
      patch_size=args.patch_size, layers=args.layers, pose_dim=args.pose_dim,
      global_tokens=args.global_tokens, batch_size=args.batch_size,
      peak_lr=args.peak_lr, seconds=args.minutes * 60,
      max_steps=args.max_steps)
  train = dataset(workdir, "train", motion, args.train_clips, args.size)
  tests = {"standard": dataset(workdir, "test", STANDARD_MOTION,
                               args.test_clips, args.size)}
  if motion != STANDARD_MOTION:
    tests["own_range"] = dataset(workdir, "test", motion, args.test_clips,
                                 args.size)
  result, pose_params = train_probe(settings, train, tests)
  out = workdir / arm_name(pair_input, motion)
  config = checkpoints.ModelConfig(
      features=settings.features, num_heads=settings.num_heads,
      patch_size=settings.patch_size, pose_layers=settings.layers,
      render_layers=1, pose_dim=settings.pose_dim,
      num_global_tokens=settings.global_tokens, pair_input=pair_input)
  # A whole checkpoint (load_params checks both networks); its Render is an
  # untrained one-layer network: only the PoseEnc is meant to be used.
  size = settings.patch_size * 2
  render = models.Render(**config.render_kwargs()).init(
      jax.random.key(0), jnp.zeros((1, 1, size, size, 3)),
      jnp.zeros((1, 2, settings.pose_dim)))["params"]
  checkpoints.save_checkpoint(out / "checkpoints-0", {
      "params": {"PoseEnc": jax.device_get(pose_params),
                 "Render": jax.device_get(render)},
      "step": np.int32(result["steps"])}, max_to_keep=1)
  (out / "result.json").write_text(json.dumps(result, indent=1))
  return result


def _arm_command(args: argparse.Namespace, arm: str) -> list[str]:
  command = [sys.executable, __file__, "--run-arm", arm]
  for flag in ("workdir", "minutes", "max_steps", "size", "features",
               "num_heads", "patch_size", "layers", "pose_dim",
               "global_tokens", "batch_size", "peak_lr", "train_clips",
               "test_clips"):
    command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
  return command


def run_arms(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  workdir = pathlib.Path(args.workdir)
  arms = [arm_name(*parse_arm(a)) for a in args.arms]
  # Render every data set first, in this process, so arms only read them.
  dataset(workdir, "test", STANDARD_MOTION, args.test_clips, args.size)
  for motion in sorted({parse_arm(a)[1] for a in arms}):
    dataset(workdir, "train", motion, args.train_clips, args.size)
    dataset(workdir, "test", motion, args.test_clips, args.size)
  todo = [a for a in arms if not (workdir / a / "result.json").is_file()]
  cores = os.sched_getaffinity(0)

  def launch(index_arm):
    index, arm = index_arm
    core = sorted(cores)[index % len(cores)]
    log = workdir / arm / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
      subprocess.run(["taskset", "-c", str(core)] + _arm_command(args, arm),
                     stdout=f, stderr=subprocess.STDOUT, check=True,
                     env={**os.environ, "XLA_FLAGS": os.environ.get(
                         "XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"})
    return arm

  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    # Each running slot keeps its own core: arm i runs on core i % parallel.
    slots = [todo[i::args.parallel] for i in range(args.parallel)]
    futures = [pool.submit(lambda s, i=i: [launch((i, a)) for a in s], slot)
               for i, slot in enumerate(slots)]
    for future in concurrent.futures.as_completed(futures):
      future.result()
  return {a: json.loads((workdir / a / "result.json").read_text())
          for a in arms}


def table(results: dict[str, dict[str, Any]]) -> str:
  header = (["arm", "params", "steps", "min", "ms/step"]
            + [f"R2 {t}" for t in TABLE_TERMS]
            + ["R2 shift x/y, frames 0-1", "R2 shift, own range"])
  rows = ["| " + " | ".join(header) + " |",
          "|" + "---|" * len(header)]
  for arm, r in results.items():
    std = r["r2"]["standard"]
    own = r["r2"].get("own_range")
    own_text = ("-" if own is None else
                f"{own['shift_x']:.2f} / {own['shift_y']:.2f}")
    near = r.get("r2_shift_by_gap", {}).get("1")
    near_text = ("-" if near is None else
                 f"{near['shift_x']:.2f} / {near['shift_y']:.2f}")
    rows.append("| " + " | ".join(
        [arm, f"{r['parameters'] / 1e6:.2f}M", str(r["steps"]),
         f"{r['train_seconds'] / 60:.1f}", f"{r['ms_per_step']:.0f}"]
        + [f"{std[t]:.2f}" for t in TABLE_TERMS] + [near_text, own_text])
        + " |")
  return "\n".join(rows)


def curves(results: dict[str, dict[str, Any]]) -> str:
  lines = []
  for arm, r in results.items():
    points = ", ".join(
        f"{c['train_seconds'] / 60:.1f} min {c['shift_x']:.2f}/{c['shift_y']:.2f}"
        for c in r["curve"])
    lines.append(f"- {arm}: R2 shift x/y at {points}")
  return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--arms", nargs="+",
                      default=["views", "fused", "conv", "correlation"])
  parser.add_argument("--minutes", type=float, default=10.0,
                      help="training time of each arm on one core")
  parser.add_argument("--max-steps", type=int, default=0,
                      help="exactly this many steps instead (tests)")
  parser.add_argument("--parallel", type=int, default=2)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--features", type=int, default=128)
  parser.add_argument("--num-heads", type=int, default=4)
  parser.add_argument("--patch-size", type=int, default=16)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--pose-dim", type=int, default=64)
  parser.add_argument("--global-tokens", type=int, default=8)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--peak-lr", type=float, default=5e-4)
  parser.add_argument("--train-clips", type=int, default=2048)
  parser.add_argument("--test-clips", type=int, default=256)
  parser.add_argument("--json", help="also write the results here")
  parser.add_argument("--run-arm", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  args = parse_args(argv)
  if args.run_arm:
    run_arm(args)
    return
  results = run_arms(args)
  print(table(results))
  print(curves(results))
  benchmarking.write_json(args.json, results)


if __name__ == "__main__":
  main()
