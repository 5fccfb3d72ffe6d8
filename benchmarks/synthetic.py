"""Frames per second of the synthetic world's jitted batch generator.

Usage:
  python benchmarks/synthetic.py [--json OUT] [--sizes 128 256] [--repeats 5]

For every size it compiles `sample_batch` once (warm-up), then times `repeats`
calls on fresh keys and reports the median (frames per call / median seconds),
on whatever backend JAX picks (CPU here, GPU where one is present). The CPU time
per frame is reported too: on a machine shared with other work it tells the
generator's own cost apart from waiting for a core.
"""

import argparse
import json
import statistics
import time

import jax

from xfactor_core.data import synthetic


def measure(size: int, batch_size: int, num_frames: int, repeats: int,
            supersample: int) -> dict:
  """Times sample_batch at one size; returns one result row."""
  key = jax.random.key(0)
  start = time.perf_counter()
  jax.block_until_ready(synthetic.sample_batch(
      key, batch_size, num_frames, size, supersample=supersample))
  compile_seconds = time.perf_counter() - start
  wall, cpu = [], []
  for repeat in range(repeats):
    run_key = jax.random.fold_in(key, repeat + 1)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(synthetic.sample_batch(
        run_key, batch_size, num_frames, size, supersample=supersample))
    wall.append(time.perf_counter() - wall_start)
    cpu.append(time.process_time() - cpu_start)
  frames = batch_size * num_frames
  median_wall = statistics.median(wall)
  return {
      "size": size,
      "supersample": supersample,
      "frames_per_call": frames,
      "frames_per_second": frames / median_wall,
      "median_seconds_per_call": median_wall,
      "cpu_seconds_per_frame": statistics.median(cpu) / frames,
      "compile_and_first_call_seconds": compile_seconds,
      "repeats": repeats,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", default=None, help="write the results here")
  parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
  parser.add_argument("--batch-size", type=int, default=4)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--supersample", type=int, default=1)
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error("--repeats must be at least 1")

  backend = jax.default_backend()
  rows = [measure(size, args.batch_size, args.frames, args.repeats,
                  args.supersample) for size in args.sizes]
  print(f"backend: {backend} ({jax.device_count()} device(s)); batch "
        f"{args.batch_size} x {args.frames} frames, median of {args.repeats} "
        f"runs after warm-up, supersample {args.supersample}")
  print(f"{'size':>6} {'frames/s':>10} {'s/call':>8} {'cpu ms/frame':>13} "
        f"{'compile s':>10}")
  for row in rows:
    print(f"{row['size']:>6} {row['frames_per_second']:>10.1f} "
          f"{row['median_seconds_per_call']:>8.3f} "
          f"{1e3 * row['cpu_seconds_per_frame']:>13.2f} "
          f"{row['compile_and_first_call_seconds']:>10.1f}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as file:
      json.dump({"backend": backend, "batch_size": args.batch_size,
                 "num_frames": args.frames, "rows": rows}, file, indent=1)


if __name__ == "__main__":
  main()
