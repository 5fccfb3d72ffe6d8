"""Which pose encoder learns the visible camera motion, and how fast, on a CPU.

    python benchmarks/pose_probe.py --workdir workdirs/pose_probe \\
        [--arms views fused conv correlation correlation@0.3] [--minutes 10] \\
        [--parallel 2] [--json OUT]

A supervised probe: each arm trains a PoseEnc (by default 128 features, 4
layers, patch 16 at 128 px, batch 16: the recipe's width at the default
model's token grid; every field of ``ProbeSettings`` is a flag,
``--features``, ``--layers``..., and the arm gives ``pair_input``) and a linear
head on its latent to regress the global image motion of synthetic frame pairs
(``xfactor_core.metrics.global_motion``: shift, rotation and scale of a robust
similarity fit to the true flow, and the parallax it leaves), for the same
wall time on one core each (``taskset``, ``--parallel`` arms at a time). The
table gives R2 per term on held-out pairs of another world seed, at the
standard camera baselines (pairs of frames 0-1, 0-2 and 0-3 of 4-frame
clips), and for arms trained at smaller baselines (``ENCODER@MOTION``: the
world's ``motion_factor``) also on held-out pairs of their own range.

Each arm runs in a child process that receives its settings as one JSON
argument (``ArmJob``), so none can fall back to a default. Each arm saves
its encoder (``<workdir>/<arm>/checkpoints-0``: the PoseEnc, with
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
from typing import Any, Callable, Optional, Sequence

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
  """One arm's encoder, data and schedule. Every field but the arm's own
  (``ARM_FIELDS``, from ``--arms``) is a command-line flag of the same name
  (``--batch-size``...) with the same default."""
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
  minutes: float = 10.0  # Training time on one core (steps follow from it).
  max_steps: int = 0  # If > 0: exactly this many steps instead (tests).
  evals: int = 5  # Held-out evaluations during the run.
  seed: int = 0
  train_clips: int = 2048  # Clips of the training pairs (world 0).
  test_clips: int = 256  # Clips of each held-out test set (world 1).

  def pose_enc(self) -> models.PoseEnc:
    return models.PoseEnc(features=self.features, num_heads=self.num_heads,
                          patch_size=self.patch_size, num_layers=self.layers,
                          pose_dim=self.pose_dim,
                          num_global_tokens=self.global_tokens,
                          pair_input=self.pair_input,
                          attention_impl="xla")


ARM_FIELDS = ("pair_input", "motion_factor")  # Set per arm by ``--arms``.


def settings_from_dict(values: dict[str, Any]) -> ProbeSettings:
  """The settings of a JSON object that names every field, and no other:
  a missing one is an error, never a silent default."""
  fields = {f.name: f for f in dataclasses.fields(ProbeSettings)}
  missing, unknown = set(fields) - set(values), set(values) - set(fields)
  if missing or unknown:
    raise ValueError(f"probe settings: missing {sorted(missing)}, unknown "
                     f"{sorted(unknown)}")
  return ProbeSettings(**{name: type(field.default)(values[name])
                          for name, field in fields.items()})


@dataclasses.dataclass(frozen=True)
class ArmJob:
  """All that one arm's child process is told: its folder's parent and its
  settings, passed as one JSON argument (``--run-arm``)."""
  workdir: str
  settings: ProbeSettings

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "ArmJob":
    values = json.loads(text)
    if set(values) != {"workdir", "settings"}:
      raise ValueError(f"an arm job has workdir and settings, got "
                       f"{sorted(values)}")
    return cls(workdir=str(values["workdir"]),
               settings=settings_from_dict(values["settings"]))


def parse_arm(arm: str) -> tuple[str, float]:
  """``"conv"`` or ``"conv@0.3"`` -> (pair_input, motion_factor)."""
  name, _, motion = arm.partition("@")
  if name not in models.PAIR_INPUTS:
    raise SystemExit(f"unknown encoder {name!r} in arm {arm!r}: use one of "
                     f"{models.PAIR_INPUTS}, optionally @MOTION_FACTOR")
  return name, float(motion) if motion else STANDARD_MOTION


def arm_name(pair_input: str, motion_factor: float) -> str:
  """``("conv", 1.0)`` -> ``"conv"``, ``("conv", 0.3)`` -> ``"conv@0.3"``."""
  return (pair_input if motion_factor == STANDARD_MOTION
          else f"{pair_input}@{motion_factor:g}")


# ------------------------------------------------------------------ data --


def dataset_file(workdir: pathlib.Path, split: str, motion_factor: float,
                 num_clips: int, size: int) -> pathlib.Path:
  """The cache file of ``motion_pairs.motion_dataset`` (train: world 0,
  test: world 1), rendered first when it is not there yet."""
  path = (workdir / "data" /
          f"{split}_m{motion_factor:g}_n{num_clips}_s{size}.npz")
  if not path.is_file():
    seed = {"train": 0, "test": 1}[split]
    data = motion_pairs.motion_dataset(seed, num_clips, size, GAPS,
                                       motion_factor)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
  return path


def dataset(workdir: pathlib.Path, split: str, motion_factor: float,
            num_clips: int, size: int) -> dict[str, np.ndarray]:
  """The cached data set (:func:`dataset_file`), read."""
  with np.load(dataset_file(workdir, split, motion_factor, num_clips,
                            size)) as f:
    return dict(f)


def arm_splits(settings: ProbeSettings) -> dict[str, tuple[str, float, int]]:
  """The data sets an arm reads, ``name -> (split, motion_factor, clips)``:
  its training pairs, the test set at the ``standard`` baselines and, for an
  arm trained at other baselines, the test set of its ``own_range``."""
  motion = settings.motion_factor
  splits = {"train": ("train", motion, settings.train_clips),
            "standard": ("test", STANDARD_MOTION, settings.test_clips)}
  if motion != STANDARD_MOTION:
    splits["own_range"] = ("test", motion, settings.test_clips)
  return splits


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


# -------------------------------------------------------------- training --


def term_statistics(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation (``5`` each) of ``N x 5`` terms: the head
  predicts the terms standardised by them."""
  return terms.mean(0), terms.std(0) + 1e-6


def sample_batch(rng: np.random.Generator, train: dict[str, np.ndarray],
                 batch_size: int, mean: np.ndarray, std: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Random training pairs, each mirrored with probability 1/2 (its terms
  flipped to match): ``(frames B x 2 x S x S x 3 uint8, standardised terms
  B x 5 float32)``."""
  idx = rng.integers(0, len(train["frames"]), batch_size)
  frames, terms = train["frames"][idx].copy(), train["terms"][idx].copy()
  flip = rng.random(batch_size) < 0.5
  frames[flip] = frames[flip, :, :, ::-1]
  terms[flip] = global_motion.flip_terms(terms[flip])
  return frames, ((terms - mean) / std).astype(np.float32)


def time_step(train_step: Callable, params: Any, opt_state: Any,
              next_batch: Callable[[], tuple[np.ndarray, np.ndarray]],
              repeats: int = 3) -> float:
  """Seconds of one compiled training step, after a first call that
  compiles it (learning rate 0; the results are dropped)."""
  lr0 = jnp.float32(0.0)
  jax.block_until_ready(train_step(params, opt_state, *next_batch(), lr0))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(train_step(params, opt_state, *next_batch(), lr0))
  return (time.perf_counter() - start) / repeats


def step_count(settings: ProbeSettings, seconds_per_step: float) -> int:
  """``max_steps`` if set, else the steps that fill ``minutes`` (at least
  10)."""
  return settings.max_steps or max(
      10, int(settings.minutes * 60 / seconds_per_step))


def learning_rate(settings: ProbeSettings, total: int) -> optax.Schedule:
  """Warm-up to ``peak_lr``, then a cosine decay to a tenth of it at step
  ``total``."""
  return optax.warmup_cosine_decay_schedule(
      0.0, settings.peak_lr, min(settings.warmup_steps, total // 2 + 1),
      max(total, 2), end_value=0.1 * settings.peak_lr)


def fit(settings: ProbeSettings, train_step: Callable, params: Any,
        opt_state: Any, next_batch: Callable[[], tuple[np.ndarray,
                                                       np.ndarray]],
        total: int, score: Callable[[Any], dict[str, float]],
        log: Callable[[str], None]
        ) -> tuple[Any, list[float], list[dict[str, float]], float]:
  """Runs ``total`` training steps and scores the params (``score``: R2 per
  term) at ``settings.evals`` evenly spaced steps.

  Returns:
    ``(params, loss of every step, the evaluations, training seconds)``; the
    seconds count the steps alone, not the evaluations.
  """
  schedule = learning_rate(settings, total)
  eval_at = set(np.linspace(0, total, settings.evals + 1).astype(int)[1:])
  name = arm_name(settings.pair_input, settings.motion_factor)
  losses, curve, train_seconds = [], [], 0.0
  for step in range(1, total + 1):
    frames, targets = next_batch()
    tick = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, frames, targets,
                                         jnp.float32(schedule(step - 1)))
    losses.append(float(loss))
    train_seconds += time.perf_counter() - tick
    if step in eval_at:
      r2 = score(params)
      curve.append({"step": step, "train_seconds": round(train_seconds, 1),
                    "loss": float(np.mean(losses[-50:])),
                    **{k: round(v, 4) for k, v in r2.items()}})
      log(f"{name} step {step}/{total}: loss {curve[-1]['loss']:.3f}, R2 "
          f"shift {r2['shift_x']:.2f}/{r2['shift_y']:.2f}")
  return params, losses, curve, train_seconds


def shift_r2_by_gap(prediction: np.ndarray, test: dict[str, np.ndarray]
                    ) -> dict[str, dict[str, float]]:
  """R2 of the two shift terms on the pairs of each frame gap:
  ``{"1": {"shift_x": ..., "shift_y": ...}, ...}``."""
  out = {}
  for gap in sorted(set(test["gap"].tolist())):
    keep = test["gap"] == gap
    r2 = global_motion.r2_scores(prediction[keep], test["terms"][keep])
    out[str(gap)] = {k: v for k, v in r2.items() if k.startswith("shift")}
  return out


def summarise(settings: ProbeSettings, pose_params: Any,
              predictions: dict[str, np.ndarray],
              tests: dict[str, dict[str, np.ndarray]], losses: list[float],
              curve: list[dict[str, float]], train_seconds: float
              ) -> dict[str, Any]:
  """An arm's result: its settings, size, steps and speed, the first and
  last losses, the R2 per term of each test set's ``predictions`` (``N x
  5``), the shift R2 per gap on the first test set, and the curve."""
  first = next(iter(tests))
  total = len(losses)
  return {
      "settings": dataclasses.asdict(settings),
      "parameters": int(sum(np.size(x) for x in jax.tree.leaves(pose_params))),
      "steps": total, "train_seconds": round(train_seconds, 1),
      "ms_per_step": round(1000 * train_seconds / total, 1),
      "first_loss": float(np.mean(losses[:20])),
      "last_loss": float(np.mean(losses[-50:])),
      "r2": {name: global_motion.r2_scores(predictions[name], test["terms"])
             for name, test in tests.items()},
      "r2_shift_by_gap": shift_r2_by_gap(predictions[first], tests[first]),
      "curve": curve,
  }


def train_probe(settings: ProbeSettings, train: dict[str, np.ndarray],
                tests: dict[str, dict[str, np.ndarray]],
                log: Callable[[str], None] = logging.info
                ) -> tuple[dict[str, Any], Any]:
  """Trains one arm; returns (``summarise``'s result, the PoseEnc params).

  A few compiled steps are timed first to fix the schedule's length; the
  R2 curve is measured on the first test set.
  """
  mean, std = term_statistics(train["terms"])
  rng = np.random.default_rng(settings.seed)
  next_batch = lambda: sample_batch(rng, train, settings.batch_size, mean, std)
  init, train_step, predict = make_functions(settings)
  params, opt_state = init(jax.random.key(settings.seed), train["frames"][:1])
  seconds_per_step = time_step(train_step, params, opt_state, next_batch)
  total = step_count(settings, seconds_per_step)
  log(f"{arm_name(settings.pair_input, settings.motion_factor)}: "
      f"{seconds_per_step * 1000:.0f} ms a step, {total} steps")

  def predict_terms(p, test):
    return _predict_all(predict, p, test["frames"]) * std + mean

  first_test = next(iter(tests.values()))
  score = lambda p: global_motion.r2_scores(predict_terms(p, first_test),
                                            first_test["terms"])
  params, losses, curve, train_seconds = fit(
      settings, train_step, params, opt_state, next_batch, total, score, log)
  predictions = {name: predict_terms(params, test)
                 for name, test in tests.items()}
  result = summarise(settings, params["PoseEnc_0"], predictions, tests,
                     losses, curve, train_seconds)
  return result, params["PoseEnc_0"]


# ------------------------------------------------------------------ arms --


def save_encoder(out: pathlib.Path, settings: ProbeSettings, pose_params: Any,
                 steps: int) -> None:
  """Writes ``out/checkpoints-0``: a whole checkpoint (``load_params``
  checks both networks) whose Render is an untrained one-layer network;
  only the PoseEnc is meant to be used."""
  config = checkpoints.ModelConfig(
      features=settings.features, num_heads=settings.num_heads,
      patch_size=settings.patch_size, pose_layers=settings.layers,
      render_layers=1, pose_dim=settings.pose_dim,
      num_global_tokens=settings.global_tokens,
      pair_input=settings.pair_input)
  size = settings.patch_size * 2
  render = models.Render(**config.render_kwargs()).init(
      jax.random.key(0), jnp.zeros((1, 1, size, size, 3)),
      jnp.zeros((1, 2, settings.pose_dim)))["params"]
  checkpoints.save_checkpoint(out / "checkpoints-0", {
      "params": {"PoseEnc": jax.device_get(pose_params),
                 "Render": jax.device_get(render)},
      "step": np.int32(steps)}, max_to_keep=1)


def run_arm(job: ArmJob) -> dict[str, Any]:
  """One arm in this process (the orchestrator starts it pinned to a core):
  trains it, saves its encoder and ``result.json`` in its folder."""
  workdir, settings = pathlib.Path(job.workdir), job.settings
  tests = {name: dataset(workdir, *split, settings.size)
           for name, split in arm_splits(settings).items()}
  train = tests.pop("train")
  result, pose_params = train_probe(settings, train, tests)
  out = workdir / arm_name(settings.pair_input, settings.motion_factor)
  save_encoder(out, settings, pose_params, result["steps"])
  (out / "result.json").write_text(json.dumps(result, indent=1))
  return result


def arm_command(job: ArmJob) -> list[str]:
  """The child process's command line: this script and the job as JSON."""
  return [sys.executable, __file__, "--run-arm", job.to_json()]


def arm_jobs(workdir: pathlib.Path, base: ProbeSettings, arms: Sequence[str]
             ) -> dict[str, ArmJob]:
  """Each arm's job by name: ``base`` with the arm's encoder and camera
  baselines."""
  jobs = {}
  for arm in arms:
    pair_input, motion = parse_arm(arm)
    settings = dataclasses.replace(base, pair_input=pair_input,
                                   motion_factor=motion)
    jobs[arm_name(pair_input, motion)] = ArmJob(str(workdir), settings)
  return jobs


def run_arms(workdir: pathlib.Path, base: ProbeSettings, arms: Sequence[str],
             parallel: int) -> dict[str, dict[str, Any]]:
  """Trains the arms without a ``result.json`` in child processes,
  ``parallel`` at a time, each on a core of its own; returns every arm's
  result."""
  jobs = arm_jobs(workdir, base, arms)
  # Render every data set first, in this process, so arms only read them.
  for job in jobs.values():
    for split in arm_splits(job.settings).values():
      dataset_file(workdir, *split, base.size)
  todo = [a for a in jobs if not (workdir / a / "result.json").is_file()]
  cores = sorted(os.sched_getaffinity(0))

  def launch(slot: int, arm: str) -> None:
    log = workdir / arm / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
      subprocess.run(["taskset", "-c", str(cores[slot % len(cores)])]
                     + arm_command(jobs[arm]),
                     stdout=f, stderr=subprocess.STDOUT, check=True,
                     env={**os.environ, "XLA_FLAGS": os.environ.get(
                         "XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"})

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    # Each running slot keeps its own core: arm i runs on core i % parallel.
    slots = [todo[i::parallel] for i in range(parallel)]
    futures = [pool.submit(lambda s, i=i: [launch(i, a) for a in s], slot)
               for i, slot in enumerate(slots)]
    for future in concurrent.futures.as_completed(futures):
      future.result()
  return {a: json.loads((workdir / a / "result.json").read_text())
          for a in jobs}


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
  parser.add_argument("--workdir")
  parser.add_argument("--arms", nargs="+",
                      default=["views", "fused", "conv", "correlation"])
  parser.add_argument("--parallel", type=int, default=2)
  parser.add_argument("--json", help="also write the results here")
  parser.add_argument("--run-arm", help=argparse.SUPPRESS)
  for field in dataclasses.fields(ProbeSettings):
    if field.name not in ARM_FIELDS:
      parser.add_argument(f"--{field.name.replace('_', '-')}",
                          type=type(field.default), default=field.default,
                          help=f"ProbeSettings.{field.name} "
                               "(default %(default)s)")
  args = parser.parse_args(argv)
  if not args.run_arm and not args.workdir:
    parser.error("--workdir is required")
  return args


def settings_from_args(args: argparse.Namespace) -> ProbeSettings:
  """The settings the flags give (the arm's own fields at their defaults)."""
  return ProbeSettings(**{f.name: getattr(args, f.name)
                          for f in dataclasses.fields(ProbeSettings)
                          if f.name not in ARM_FIELDS})


def main(argv: Optional[Sequence[str]] = None) -> None:
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  args = parse_args(argv)
  if args.run_arm:
    run_arm(ArmJob.from_json(args.run_arm))
    return
  results = run_arms(pathlib.Path(args.workdir), settings_from_args(args),
                     args.arms, args.parallel)
  print(table(results))
  print(curves(results))
  benchmarking.write_json(args.json, results)


if __name__ == "__main__":
  main()
