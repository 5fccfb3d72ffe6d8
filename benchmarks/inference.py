"""Inference speed: milliseconds per transferred frame and achieved FLOP/s.

    python benchmarks/inference.py [--json OUT] [--compare OLD.json]
        [--configs published small] [--batches 1 8] [--dtype float32|bfloat16]

A transferred frame costs one PoseEnc call on (first frame, frame) and one
Render call on (context, latent); both are timed together as the pipeline runs
them, on random weights (speed does not depend on the values). The machine's
matmul peak (a large ``jnp.dot``) is measured in the same run, so achieved
FLOP/s can be read as a fraction of it.
"""

from __future__ import annotations

import argparse
import logging

import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core import benchmarking, checkpoints, models

CONFIGS = {
    "published": (checkpoints.PUBLISHED_CONFIG, 256),
    "small": (checkpoints.ModelConfig(features=256, num_heads=4, patch_size=16,
                                      pose_layers=4, render_layers=4,
                                      pose_dim=64), 128),
    # The sizes of the shipped default model (assets/models/sm_default).
    "default": (checkpoints.ModelConfig(features=192, num_heads=4,
                                        patch_size=16, pose_layers=4,
                                        render_layers=4, pose_dim=64,
                                        num_global_tokens=8), 128),
}


def transfer_step(config: checkpoints.ModelConfig, attention_impl: str,
                  dtype):
  """Jitted (params, context, first, frames) -> generated frames."""
  kwargs = dict(attention_impl=attention_impl, dtype=dtype)
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs(), **kwargs)
  render = models.Render(**config.render_kwargs(), **kwargs)

  @jax.jit
  def step(params, context, first, frames):
    b = frames.shape[0]
    pairs = jnp.stack([jnp.broadcast_to(first, frames.shape), frames], axis=1)
    latents = pose_enc.apply({"params": params["PoseEnc"]}, pairs)
    ctx = jnp.broadcast_to(context[None], (b,) + context.shape)
    return render.apply({"params": params["Render"]}, ctx, latents)

  def init(key, size):
    x = jnp.zeros((1, 2, size, size, 3))
    return {
        "PoseEnc": pose_enc.init(key, x)["params"],
        "Render": render.init(key, x[:, :1], jnp.zeros((1, 2, config.pose_dim))
                              )["params"],
    }

  return step, jax.jit(init, static_argnums=1)


def run(config_names, batches, repeats, dtype_name, attention_impl):
  dtype = None if dtype_name == "float32" else jnp.dtype(dtype_name)
  peak = benchmarking.matmul_peak_flops()
  rows = []
  for name in config_names:
    config, size = CONFIGS[name]
    step, init = transfer_step(config, attention_impl, dtype)
    params = init(jax.random.key(0), size)
    if dtype is not None:
      params = jax.tree.map(lambda x: x.astype(dtype), params)
    rng = np.random.default_rng(0)
    for batch in batches:
      context = jnp.asarray(rng.uniform(-1, 1, (1, size, size, 3)), jnp.float32)
      first = jnp.asarray(rng.uniform(-1, 1, (size, size, 3)), jnp.float32)
      frames = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
      flops = benchmarking.compiled_flops(step, params, context, first, frames)
      seconds = benchmarking.median_seconds(
          lambda: step(params, context, first, frames), repeats)
      rows.append({"config": name, "batch": batch, "image_size": size,
                   "ms_per_frame": 1e3 * seconds / batch,
                   "frames_per_s": batch / seconds,
                   "achieved_flops_per_s": flops / seconds,
                   "fraction_of_peak": flops / seconds / peak})
      logging.info("%s batch %d: %.1f ms/frame", name, batch, rows[-1]["ms_per_frame"])
    del params
  return peak, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default=None)
  parser.add_argument("--compare", default=None,
                      help="a previous --json output to compare against")
  parser.add_argument("--configs", nargs="+", default=["published", "small"],
                      choices=list(CONFIGS))
  parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="float32",
                      choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="auto")
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  peak, rows = run(args.configs, args.batches, args.repeats, args.dtype,
                   args.attention)
  backend = jax.default_backend()
  print(f"backend: {backend} ({jax.devices()[0].device_kind}), dtype "
        f"{args.dtype}, attention {args.attention}")
  print(f"matmul peak (2048^2 jnp.dot, same run): {peak / 1e9:.1f} GFLOP/s\n")
  benchmarking.print_table(
      [{**r, "GFLOP/s": r["achieved_flops_per_s"] / 1e9} for r in rows],
      ["config", "batch", "image_size", "ms_per_frame", "frames_per_s",
       "GFLOP/s", "fraction_of_peak"])
  payload = {"backend": backend, "device_kind": jax.devices()[0].device_kind,
             "dtype": args.dtype, "attention": args.attention,
             "matmul_peak_flops_per_s": peak, "rows": rows}
  benchmarking.write_json(args.json, payload)
  if args.compare:
    benchmarking.compare_rows(args.compare, rows, ["config", "batch"],
                              "ms_per_frame", higher_is_better=False)


if __name__ == "__main__":
  main()
