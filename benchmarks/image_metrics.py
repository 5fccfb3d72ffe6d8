"""Our SSIM/PSNR (xfactor_core.metrics.image) against dm-pix: agreement and speed.

Usage:
  python benchmarks/image_metrics.py [--shapes 8x64 16x128 8x256] [--repeats 20]
      [--json OUT] [--compare OLD.json]

For each batch x size it times, in one run and interleaved (each going first
every other time), the two
computations the trainer makes of these metrics, as jitted functions:

  loss+grad  value and gradient of the image loss with the SSIM stand-in,
             mean |p - t| + 0.5 * mean(1 - SSIM(p, t)), w.r.t. the prediction
             (what SSIM costs inside a training step);
  psnr       PSNR per image (the step's metric and the evaluation's).

dm-pix takes images in [0, 1] (max_val 1); ours takes the model's [-1, 1].
pix's SSIM is given x * 0.5 + 0.5 (its luminance term is not shift-invariant),
its PSNR the images as they are plus 10 log10(4) dB for the range of 2 (PSNR
is shift-invariant): the cheapest correct calls (a (x + 1) / 2 inside XLA's
CPU reduction costs more than the PSNR itself). Agreement is the largest relative
difference of the per-image values (and, for loss+grad, of the gradient,
relative to its largest entry). Times are medians of `repeats` calls after a
warm-up; `pix / ours` above 1 means dm-pix is slower.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from xfactor_core import benchmarking
from xfactor_core.metrics import image


def _to_unit(x: jax.Array) -> jax.Array:
  return x * 0.5 + 0.5


def ours_ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  return image.ssim(a, b)


def pix_ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.ssim(_to_unit(a), _to_unit(b), max_val=1.0)


def ours_psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  return image.psnr(a, b)


def pix_psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.psnr(a, b) + 10.0 * np.log10(4.0)


def loss_and_grad(ssim_fn: Callable[[jax.Array, jax.Array], jax.Array]):
  """jit of (prediction, target) -> (loss, d loss / d prediction)."""
  def loss(prediction, target):
    l1 = jnp.mean(jnp.abs(prediction - target))
    return l1 + 0.5 * jnp.mean(1.0 - ssim_fn(prediction, target))
  return jax.jit(jax.value_and_grad(loss))


IMPLEMENTATIONS = {
    "ours": {"ssim": ours_ssim, "psnr": ours_psnr},
    "dm-pix": {"ssim": pix_ssim, "psnr": pix_psnr},
}


def _images(batch: int, size: int) -> tuple[jax.Array, jax.Array]:
  """A target and a noisy prediction in [-1, 1], ``batch x size x size x 3``."""
  key_t, key_n = jax.random.split(jax.random.key(0))
  target = jax.random.uniform(key_t, (batch, size, size, 3), minval=-1.0)
  noise = 0.2 * jax.random.normal(key_n, target.shape)
  return jnp.clip(target + noise, -1.0, 1.0), target


def _relative(a: np.ndarray, b: np.ndarray, scale: float | None = None) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  denominator = scale if scale is not None else np.abs(b)
  return float(np.max(np.abs(a - b) / denominator))


def measure(batch: int, size: int, repeats: int) -> list[dict[str, Any]]:
  """Rows for one shape: per computation, ours and dm-pix (times, agreement)."""
  prediction, target = _images(batch, size)
  functions = {
      (impl, "loss+grad"): loss_and_grad(fns["ssim"])
      for impl, fns in IMPLEMENTATIONS.items()}
  functions.update({(impl, "psnr"): jax.jit(fns["psnr"])
                    for impl, fns in IMPLEMENTATIONS.items()})
  functions.update({(impl, "ssim"): jax.jit(fns["ssim"])
                    for impl, fns in IMPLEMENTATIONS.items()})
  outputs = {k: jax.block_until_ready(f(prediction, target))  # compile + warm
             for k, f in functions.items()}

  computations = ("loss+grad", "psnr")
  times: dict[tuple[str, str], list[float]] = {
      (impl, c): [] for impl in IMPLEMENTATIONS for c in computations}
  for repeat in range(repeats):
    # Interleaved, so drifting load hits both alike, and each goes first
    # every other time (the first call after another computation runs with
    # colder caches).
    order = list(IMPLEMENTATIONS)[::1 if repeat % 2 else -1]
    for computation in computations:
      for impl in order:
        start = time.perf_counter()
        jax.block_until_ready(functions[impl, computation](prediction, target))
        times[impl, computation].append(time.perf_counter() - start)

  ssim_ours, ssim_pix = outputs["ours", "ssim"], outputs["dm-pix", "ssim"]
  (_, grad_ours), (_, grad_pix) = (outputs["ours", "loss+grad"],
                                   outputs["dm-pix", "loss+grad"])
  agreement = {
      "loss+grad": max(_relative(ssim_ours, ssim_pix),
                       _relative(grad_ours, grad_pix,
                                 float(np.abs(grad_pix).max()))),
      "psnr": _relative(outputs["ours", "psnr"], outputs["dm-pix", "psnr"]),
  }
  rows = []
  for computation in computations:
    ours_ms = 1e3 * statistics.median(times["ours", computation])
    for impl in IMPLEMENTATIONS:
      ms = 1e3 * statistics.median(times[impl, computation])
      rows.append({"shape": f"{batch}x{size}", "computation": computation,
                   "implementation": impl, "ms": ms,
                   "vs_ours": ms / ours_ms,
                   "max_rel_diff": agreement[computation]})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=["8x64", "16x128", "8x256"],
                      help="BATCHxSIZE of the prediction and target images")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--json", default=None, help="write the rows here")
  parser.add_argument("--compare", default=None,
                      help="a previous --json output to compare against")
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error("--repeats must be at least 1")
  rows = []
  for shape in args.shapes:
    batch, size = (int(v) for v in shape.split("x"))
    rows += measure(batch, size, args.repeats)
  benchmarking.print_table(
      rows, ["shape", "computation", "implementation", "ms", "vs_ours",
             "max_rel_diff"],
      title=f"backend: {jax.default_backend()}; dm-pix {dm_pix.__version__}; "
      f"median of {args.repeats} interleaved calls after a warm-up; vs_ours "
      "is time / our time")
  benchmarking.write_json(args.json, {"backend": jax.default_backend(),
                                      "repeats": args.repeats, "rows": rows})
  if args.compare:
    benchmarking.compare_rows(args.compare, rows,
                              ["shape", "computation", "implementation"], "ms",
                              higher_is_better=False)


if __name__ == "__main__":
  main()
