"""Shared helpers of the benchmarks/ scripts: timing, matmul peak, tables, JSON."""

from __future__ import annotations

import json
import pathlib
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
  """Median wall time of ``fn()`` (its result blocked on) over ``repeats`` runs."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_flops(size: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """Achieved FLOP/s of a large square ``jnp.dot``: the machine's practical peak."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  dot = jax.jit(jnp.dot)
  seconds = median_seconds(lambda: dot(a, b), repeats)
  return 2.0 * size ** 3 / seconds


def compiled_flops(jitted: Callable, *args) -> float:
  """FLOPs of one call of a jitted function, from XLA's cost analysis."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                title: Optional[str] = None) -> None:
  """A plain text table (the benchmarks' output format)."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)
  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
            for i, c in enumerate(columns)]
  if title:
    print(title)
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  print("  ".join("-" * w for w in widths))
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def write_json(path: Optional[str], payload: dict[str, Any]) -> None:
  if path:
    pathlib.Path(path).write_text(json.dumps(payload, indent=1))


def compare_rows(old_path: str, rows: Sequence[dict[str, Any]],
                 key: Sequence[str], metric: str, higher_is_better: bool) -> None:
  """Prints ``new / old`` for rows matched on ``key`` columns of a saved run."""
  old = json.loads(pathlib.Path(old_path).read_text())
  index = {tuple(r.get(k) for k in key): r for r in old.get("rows", [])}
  table = []
  for r in rows:
    before = index.get(tuple(r.get(k) for k in key))
    if before is None or not before.get(metric):
      continue
    ratio = r[metric] / before[metric]
    speedup = ratio if higher_is_better else 1.0 / ratio
    table.append({**{k: r.get(k) for k in key}, f"old {metric}": before[metric],
                  f"new {metric}": r[metric], "speed-up": speedup,
                  "verdict": "slower" if speedup < 0.95 else "ok"})
  print_table(table, [*key, f"old {metric}", f"new {metric}", "speed-up",
                      "verdict"], title=f"\nAgainst {old_path}:")
