"""Training speed: samples per second and model FLOP utilisation.

    python benchmarks/train.py [--json OUT] [--compare OLD.json]
        [--configs small smooth_warp published] [--batch-per-device N] [--steps N]
        [--dtype auto|float32|bfloat16] [--remat auto|on|off]

Times the trainer's compiled step (``trainer.step_functions``: loss, gradients,
the MultiSteps AdamW update; data parallel over all devices) on batches of the
synthetic world rendered beforehand, and, separately, the on-device synthetic
data generator. FLOPs per step come from XLA's cost analysis of the compiled
step; utilisation is achieved FLOP/s over the matmul peak (the better of a
2048^2 and a 4096^2 ``jnp.dot``) measured in the same run. Configs: ``tiny``
(synthetic_tiny), ``small`` (synthetic_sm, 128 x 128: the shipped default
models' configuration), ``smooth_warp`` (``configs/smooth_warp.py:sm``:
the warp renderer and the correlation encoder, photometric loss included)
and ``published`` (the published networks at 256 x 256,
with synthetic clips). dtype ``auto`` is bfloat16 on accelerators
and float32 on CPUs; remat ``auto`` keeps the config's setting on accelerators
and turns it off on CPUs. On a CPU the published size runs at batch 1 with one
timed step by default, to stay within a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core import benchmarking
from xfactor_core.configs import (published_sm, smooth_warp, synthetic_sm,
                                  synthetic_tiny)
from xfactor_core.training import (inputs, perceptual, sharding, step_spec,
                                   trainer)

CONFIGS = {
    "tiny": synthetic_tiny.get_config,
    "small": synthetic_sm.get_config,
    "published": published_sm.get_config,
    "smooth_warp": lambda: smooth_warp.get_config("sm"),
}
DEFAULT_BATCH_PER_DEVICE = {
    "cpu": {"tiny": 8, "small": 8, "published": 1, "smooth_warp": 8},
    "accelerator": {"tiny": 64, "small": 32, "published": 8,
                    "smooth_warp": 32},
}


def _settings(name: str, args: argparse.Namespace, on_cpu: bool):
  config = CONFIGS[name]()
  dtype = args.dtype
  if dtype == "auto":
    dtype = "float32" if on_cpu else "bfloat16"
  config.dtype = dtype
  if args.remat != "auto":
    config.remat = args.remat == "on"
  elif on_cpu:
    config.remat = False
  if args.attention:
    config.attention_impl = args.attention
  defaults = DEFAULT_BATCH_PER_DEVICE["cpu" if on_cpu else "accelerator"]
  per_device = args.batch_per_device or defaults[name]
  config.batch_size = per_device * jax.device_count()
  config.micro_batch_size = 0
  return config


def benchmark(name: str, args: argparse.Namespace, peak: float) -> dict:
  """Times one config; returns a table row."""
  on_cpu = jax.default_backend() == "cpu"
  config = _settings(name, args, on_cpu)
  mesh = sharding.make_mesh()
  spec = step_spec.make_step_spec(config)
  distance = perceptual.ssim_distance
  functions = trainer.step_functions(spec, mesh, distance)
  batch_size = int(config.batch_size)
  steps = args.steps or (1 if on_cpu and name == "published" else 3)

  source = inputs.SyntheticInputs(
      mesh, batch_size, spec.num_views, spec.image_size, seed=0,
      with_geometry=spec.objective.flow_supervision > 0)
  start = time.perf_counter()
  batches = [jax.block_until_ready(source.batch(i)) for i in range(steps + 1)]
  first_data = time.perf_counter() - start  # includes compiling the generator
  data_seconds = benchmarking.median_seconds(
      lambda: source.batch(steps + 1), repeats=2, warmup=0)

  state = functions.init(jax.random.key(0))
  start = time.perf_counter()
  compiled = functions.train_step.lower(state, batches[0], {}).compile()
  compile_seconds = time.perf_counter() - start
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = float((analysis or {}).get("flops", 0.0))

  state, metrics = compiled(state, batches[0], {})  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for batch in batches[1:]:
    start = time.perf_counter()
    state, metrics = compiled(state, batch, {})
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      state.params))
  del state
  logging.info("%s: %.3f s/step, compile %.1f s, data %.3f s/batch (first "
               "%.1f s)", name, seconds, compile_seconds, data_seconds,
               first_data)
  return {
      "config": name, "params_M": num_params / 1e6,
      "image_size": spec.image_size, "views": spec.num_views,
      "batch": batch_size, "dtype": config.dtype, "remat": bool(config.remat),
      "step_s": seconds, "samples_per_s": batch_size / seconds,
      "data_samples_per_s": batch_size / data_seconds,
      "gflop_per_step": flops / 1e9,
      "achieved_gflop_per_s": flops / seconds / 1e9,
      "mfu": flops / seconds / peak if peak else 0.0,
      "compile_s": compile_seconds,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default=None, help="write the rows here")
  parser.add_argument("--compare", default=None,
                      help="a previous --json output to compare against")
  parser.add_argument("--configs", nargs="+", default=["small", "published"],
                      choices=list(CONFIGS))
  parser.add_argument("--batch-per-device", type=int, default=0,
                      help="0: a default per config and backend")
  parser.add_argument("--steps", type=int, default=0,
                      help="timed steps (0: 3, or 1 for published on a CPU)")
  parser.add_argument("--dtype", default="auto",
                      choices=["auto", "float32", "bfloat16"])
  parser.add_argument("--remat", default="auto", choices=["auto", "on", "off"])
  parser.add_argument("--attention", default="",
                      help="attention_impl override (auto, xla, split, cudnn)")
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  on_cpu = jax.default_backend() == "cpu"
  # The larger of two sizes: a 2048^2 product alone does not saturate every
  # machine, and a utilisation above 1 would mean the peak was too low.
  peak_dtype = jnp.float32 if on_cpu else jnp.bfloat16
  peak = max(benchmarking.matmul_peak_flops(size, dtype=peak_dtype)
             for size in (2048, 4096))
  rows = [benchmark(name, args, peak) for name in args.configs]
  device = jax.devices()[0]
  print(f"backend: {jax.default_backend()} ({device.device_kind}) x "
        f"{jax.device_count()}; matmul peak (best of 2048^2 and 4096^2 "
        f"jnp.dot, {'float32' if on_cpu else 'bfloat16'}, same run): "
        f"{peak / 1e9:.1f} GFLOP/s\n")
  benchmarking.print_table(rows, [
      "config", "params_M", "image_size", "views", "batch", "dtype", "remat",
      "step_s", "samples_per_s", "data_samples_per_s", "gflop_per_step",
      "achieved_gflop_per_s", "mfu", "compile_s"])
  benchmarking.write_json(args.json, {
      "backend": jax.default_backend(), "device_kind": device.device_kind,
      "device_count": jax.device_count(), "matmul_peak_flops_per_s": peak,
      "rows": rows})
  if args.compare:
    benchmarking.compare_rows(args.compare, rows, ["config", "batch"],
                              "samples_per_s", higher_is_better=True)


if __name__ == "__main__":
  main()
