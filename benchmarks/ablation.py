"""The recipe ablation at equal compute: train every arm for the same CPU time
on one core each, then benchmark each with ``xfactor_core.evaluate``.

    python benchmarks/ablation.py --workdir workdirs/ablation \\
        [--arms today levers flow photos supervised] [--core-minutes 30] \\
        [--parallel 2] [--num-pairs 32] [--tps-pairs 8] [--json OUT]

Arms are the configs of ``xfactor_core/configs/recipe.py``; ``ARM@LR`` (e.g.
``supervised@3e-4``, see ``--peak-lrs``) is an arm at another peak learning
rate, for a learning-rate sweep. Equal compute is
equal CPU time: each arm's CPU seconds per optimiser step are measured first
(``--calibrate-steps`` compiled steps in a fresh process pinned to one core,
``time.process_time``, so other load on the machine does not distort it), and
the arm then trains ``core-minutes * 60 / seconds-per-step`` steps, its
schedules scaled to that length. Runs are pinned to one core each
(``taskset``), ``--parallel`` at a time, and resume where they stopped when
the command is run again (an arm with its ``eval.json`` is done and only
read). The table prints the evaluation of each arm.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import pathlib
import subprocess
import sys
import time

from tqdm import tqdm

from xfactor_core import benchmarking
from xfactor_core.configs import recipe

CONFIG = pathlib.Path(recipe.__file__)
COLUMNS = ("arm", "cpu_s_per_step", "steps", "transfer_psnr",
           "shuffled_psnr", "copy_psnr", "margin_shuffled", "margin_copy",
           "flow_corr", "flow_magnitude_ratio", "sharpness_ratio",
           "tps_ok_fraction", "Rac_10", "Tac_30", "real_flow_corr",
           "real_magnitude_ratio", "real_sharpness_ratio")


def calibrate(arm: str, steps: int) -> float:
  """CPU seconds per training step of ``arm`` (this process, compiled)."""
  import jax  # pylint: disable=g-import-not-at-top
  from xfactor_core.training import perceptual, sharding, step_spec, trainer  # pylint: disable=g-import-not-at-top
  config = recipe.get_config(arm)
  config.total_steps = 10 * steps
  mesh = sharding.make_mesh()
  micro, accumulation = step_spec.batch_layout(config, mesh.size)
  spec = step_spec.make_step_spec(config, accumulation)
  functions = trainer.step_functions(spec, mesh, perceptual.ssim_distance)
  source = trainer.make_train_inputs(config, spec, mesh, micro, 0)
  state = functions.init(jax.random.key(0))
  state, metrics = functions.train_step(state, source.batch(0), {})
  jax.block_until_ready(metrics)
  start = time.process_time()
  for step in range(1, steps + 1):
    for m in range(accumulation):
      state, metrics = functions.train_step(state, source.batch(step, m), {})
    jax.block_until_ready(metrics)
  return (time.process_time() - start) / steps


def _pinned(core: int, command: list[str]) -> list[str]:
  return ["taskset", "-c", str(core), *command]


def _run(command: list[str], log: pathlib.Path) -> None:
  with open(log, "a") as out:
    subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)


def _arm_job(arm: str, core: int, args: argparse.Namespace,
             root: pathlib.Path) -> dict:
  """Calibrates (once), trains and evaluates one arm on one core."""
  directory = root / arm
  directory.mkdir(parents=True, exist_ok=True)
  config_arm, _, peak_lr = arm.partition("@")
  lr_flags = [f"--config.optimizer.peak_lr={peak_lr}"] if peak_lr else []
  plan_file = directory / "plan.json"
  if plan_file.is_file():
    plan = json.loads(plan_file.read_text())
  else:
    out = subprocess.run(
        _pinned(core, [sys.executable, __file__, "--calibrate", config_arm,
                       "--calibrate-steps", str(args.calibrate_steps)]),
        capture_output=True, text=True, check=True)
    seconds = float(out.stdout.strip().splitlines()[-1])
    plan = {"arm": arm, "cpu_s_per_step": seconds,
            "steps": max(int(args.core_minutes * 60 / seconds), 1),
            "core_minutes": args.core_minutes}
    plan_file.write_text(json.dumps(plan, indent=1))
  steps = plan["steps"]
  run_dir = directory / "run"
  eval_file = directory / "eval.json"
  if eval_file.is_file() and not args.train_only:  # trained and evaluated
    return {**plan, "eval": json.loads(eval_file.read_text())}
  _run(_pinned(core, [
      sys.executable, "-m", "xfactor_core.train",
      f"--config={CONFIG}:{config_arm}", f"--workdir={run_dir}",
      f"--config.total_steps={steps}", *lr_flags,
      f"--config.checkpoint_every={max(steps // 4, 1)}",
      f"--config.eval_every={max(steps // 4, 1)}",
      "--config.progress_bar=False"]), directory / "train.log")
  if args.train_only:
    return plan
  _run(_pinned(core, [
      sys.executable, "-m", "xfactor_core.evaluate",
      f"--checkpoint={run_dir}", f"--num-pairs={args.num_pairs}",
      f"--tps-pairs={args.tps_pairs}", f"--json={eval_file}",
      "--probe-train=0", *(["--real-clip", args.real_clip]
                           if args.real_clip else [])]),
       directory / "eval.log")
  return {**plan, "eval": json.loads(eval_file.read_text())}


def table_row(result: dict) -> dict:
  """One row of the ablation table from an arm's plan and evaluation."""
  methods = result["eval"]["rows"]
  model = methods["model"]
  row = {"arm": result["arm"], "cpu_s_per_step": result["cpu_s_per_step"],
         "steps": result["steps"]}
  row.update(
      transfer_psnr=model["transfer_psnr"],
      shuffled_psnr=methods["shuffled_latents"]["transfer_psnr"],
      copy_psnr=methods["copy_context"]["transfer_psnr"],
      flow_corr=model.get("flow_corr", float("nan")),
      flow_magnitude_ratio=model.get("flow_magnitude_ratio", float("nan")),
      sharpness_ratio=model.get("sharpness_ratio", float("nan")),
      tps_ok_fraction=model.get("tps_ok_fraction", float("nan")),
      Rac_10=model.get("Rac_10", float("nan")),
      Tac_30=model.get("Tac_30", float("nan")))
  real = result["eval"].get("real_clip", {}).get("model", {})
  row.update(real_flow_corr=real.get("flow_corr", float("nan")),
             real_magnitude_ratio=real.get("flow_magnitude_ratio",
                                           float("nan")),
             real_sharpness_ratio=real.get("sharpness_ratio", float("nan")))
  row["margin_shuffled"] = row["transfer_psnr"] - row["shuffled_psnr"]
  row["margin_copy"] = row["transfer_psnr"] - row["copy_psnr"]
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="workdirs/ablation")
  parser.add_argument("--arms", nargs="+", default=list(recipe.ARMS),
                      choices=recipe.ARMS)
  parser.add_argument("--peak-lrs", nargs="*", type=float, default=[],
                      help="also train the last arm at these peak learning "
                           "rates (a learning-rate sweep)")
  parser.add_argument("--core-minutes", type=float, default=30.0,
                      help="CPU minutes of training per arm")
  parser.add_argument("--parallel", type=int, default=2,
                      help="arms trained at once, one core each")
  parser.add_argument("--cores", nargs="*", type=int, default=None,
                      help="the cores to pin runs to (default: the first "
                           "--parallel cores)")
  parser.add_argument("--calibrate-steps", type=int, default=4)
  parser.add_argument("--num-pairs", type=int, default=32)
  parser.add_argument("--tps-pairs", type=int, default=8)
  parser.add_argument("--real-clip", default="",
                      help="the example_videos folder for the real-clip "
                           "section of the evaluation (see evaluate.py)")
  parser.add_argument("--json", default=None)
  parser.add_argument("--train-only", action="store_true",
                      help="train the arms, evaluate later")
  parser.add_argument("--calibrate", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  if args.calibrate:
    print(calibrate(args.calibrate, args.calibrate_steps))
    return

  args.arms = list(args.arms) + [f"{args.arms[-1]}@{lr:g}"
                                  for lr in args.peak_lrs]
  root = pathlib.Path(args.workdir)
  cores = args.cores or list(range(min(args.parallel, os.cpu_count() or 1)))
  results = {}
  with concurrent.futures.ThreadPoolExecutor(len(cores)) as pool, tqdm(
      total=len(args.arms), unit="arm") as progress:
    free = list(cores)
    pending = list(args.arms)
    running = {}
    while pending or running:
      while pending and free:
        arm, core = pending.pop(0), free.pop(0)
        running[pool.submit(_arm_job, arm, core, args, root)] = (arm, core)
      done, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        arm, core = running.pop(future)
        results[arm] = future.result()
        free.append(core)
        progress.update(1)
  if args.train_only:
    return
  rows = [table_row(results[arm]) for arm in args.arms]
  print(f"\nRecipe ablation: {args.core_minutes:g} CPU minutes of training per "
        f"arm on one core; {args.num_pairs} held-out synthetic pairs "
        f"(TPS on {args.tps_pairs}).\n")
  benchmarking.print_table(rows, COLUMNS)
  benchmarking.write_json(args.json, {"core_minutes": args.core_minutes,
                                      "rows": rows})


if __name__ == "__main__":
  main()
