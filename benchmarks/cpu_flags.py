"""XLA CPU flags and thread settings: which ones make inference faster here.

    python benchmarks/cpu_flags.py [--configs default published] [--batches 1 8]
        [--rounds 3] [--settings baseline onednn ...] [--json OUT]
        [--compare OLD.json]

Each setting runs ``benchmarks/inference.py`` in a fresh process (XLA reads its
flags once, at start-up) with its ``XLA_FLAGS`` and environment. Settings are
interleaved round by round, so drift of a noisy machine spreads evenly over
them; the table gives the median ms per frame over rounds and the speed-up
against the ``baseline`` setting (no flags) of the same run. A setting this
XLA build does not know fails on its own row instead of stopping the sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import NamedTuple, Optional

from xfactor_core import benchmarking

INFERENCE_SCRIPT = pathlib.Path(__file__).with_name("inference.py")


class Setting(NamedTuple):
  """How one process runs: its XLA_FLAGS and the cores it may use."""
  xla_flags: str = ""
  cpus: Optional[str] = None  # a taskset core list such as "0"; None: all

  def describe(self) -> str:
    if self.cpus is not None:
      return f"taskset -c {self.cpus}"
    return self.xla_flags or "-"


# "baseline" (no flags, every core) must come first.
SETTINGS: dict[str, Setting] = {
    "baseline": Setting(),
    "single_thread_eigen": Setting("--xla_cpu_multi_thread_eigen=false"),
    "fast_math": Setting("--xla_cpu_enable_fast_math=true"),
    "onednn": Setting("--xla_cpu_use_onednn=true"),
    "xnnpack": Setting("--xla_cpu_use_xnnpack=true"),
    "xnn_graph_fusion": Setting(
        "--xla_cpu_experimental_xnn_graph_fusion_mode="
        "XNN_GRAPH_FUSION_MODE_GREEDY"),
    "vector_width_512": Setting("--xla_cpu_prefer_vector_width=512"),
    "opt_fast_runtime": Setting(
        "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME"),
    "one_core": Setting(cpus="0"),
}


def _command(setting: Setting, configs: list[str], batches: list[int],
             repeats: int, json_path: str) -> tuple[list[str], dict[str, str]]:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  if setting.xla_flags:
    env["XLA_FLAGS"] = setting.xla_flags
  command = [sys.executable, str(INFERENCE_SCRIPT), "--configs", *configs,
             "--batches", *map(str, batches), "--repeats", str(repeats),
             "--json", json_path]
  if setting.cpus is not None:
    # Pin the process to the listed cores: what a smaller machine would give.
    command = ["taskset", "-c", setting.cpus, *command]
  return command, env


def run_setting(name: str, configs: list[str], batches: list[int],
                repeats: int) -> tuple[list[dict] | None, str]:
  """One process of inference.py under setting ``name``: (rows, error)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "rows.json")
    command, env = _command(SETTINGS[name], configs, batches, repeats, out)
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0 or not os.path.exists(out):
      lines = (result.stderr or result.stdout).strip().splitlines()
      return None, lines[-1] if lines else f"exit code {result.returncode}"
    return json.loads(pathlib.Path(out).read_text())["rows"], ""


def sweep(names: list[str], configs: list[str], batches: list[int],
          rounds: int, repeats: int) -> list[dict]:
  """Runs every setting ``rounds`` times, interleaved; one row per
  (setting, config, batch) with the median over rounds."""
  times: dict[tuple[str, str, int], list[float]] = {}
  fractions: dict[tuple[str, str, int], list[float]] = {}
  errors: dict[str, str] = {}
  for round_index in range(rounds):
    for name in names:
      if name in errors:
        continue
      rows, error = run_setting(name, configs, batches, repeats)
      if rows is None:
        errors[name] = error
        logging.warning("%s failed: %s", name, error)
        continue
      for row in rows:
        key = (name, row["config"], row["batch"])
        times.setdefault(key, []).append(row["ms_per_frame"])
        fractions.setdefault(key, []).append(row["fraction_of_peak"])
      logging.info("round %d, %s: %s", round_index + 1, name,
                   ", ".join(f"{r['config']} b{r['batch']} "
                             f"{r['ms_per_frame']:.1f} ms" for r in rows))
  table = []
  for name in names:
    if name in errors:
      table.append({"setting": name, "flags": SETTINGS[name].describe(),
                    "config": "-", "batch": "-", "error": errors[name]})
      continue
    for config in configs:
      for batch in batches:
        key = (name, config, batch)
        base = times.get(("baseline", config, batch))
        ms = statistics.median(times[key])
        table.append({
            "setting": name, "flags": SETTINGS[name].describe(),
            "config": config, "batch": batch, "ms_per_frame": ms,
            "fraction_of_peak": statistics.median(fractions[key]),
            "speed_up_vs_baseline": (statistics.median(base) / ms
                                     if base else float("nan")),
            "rounds": len(times[key])})
  return table


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                      choices=list(SETTINGS))
  parser.add_argument("--configs", nargs="+", default=["default"])
  parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed calls per process (median taken)")
  parser.add_argument("--json", default=None)
  parser.add_argument("--compare", default=None,
                      help="a previous --json output to compare against")
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  names = ["baseline"] + [n for n in args.settings if n != "baseline"]
  table = sweep(names, args.configs, args.batches, args.rounds, args.repeats)
  print(f"\nmedian over {args.rounds} interleaved rounds; speed-up against "
        "'baseline' (no XLA flags) of this run\n")
  benchmarking.print_table(
      table, ["setting", "flags", "config", "batch", "ms_per_frame",
              "fraction_of_peak", "speed_up_vs_baseline", "error"])
  benchmarking.write_json(args.json, {"rows": table})
  if args.compare:
    benchmarking.compare_rows(
        args.compare, [r for r in table if "ms_per_frame" in r],
        ["setting", "config", "batch"], "ms_per_frame", higher_is_better=False)


if __name__ == "__main__":
  main()
