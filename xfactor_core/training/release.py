"""Ship a trained run as a model folder: weights, model.json, card and strip.

    python -m xfactor_core.training.release --workdir runs/sm \\
        --out assets/models/sm_default --eval-json eval.json \\
        --command "python -m xfactor_core.train ..."

Writes into ``--out``: the weights only, in the published clu checkpoint layout
(``checkpoint`` + ``ckpt-1.flax`` with ``params`` = {PoseEnc, Render}), the run's
``model.json`` (plus steps, wall time and hardware), ``transfers.png`` (held-out
synthetic transfers: target clip, the transfer into another scene, and that
scene's ground truth under the same motion) and ``README.md``, the model card.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
from typing import Any, Optional, Sequence

import jax
import numpy as np
from PIL import Image

from xfactor_core import checkpoints, evaluate
from xfactor_core.data import synthetic
from xfactor_core.inference import model_frames as frame_utils
from xfactor_core.inference.pipeline import TransferPipeline
from xfactor_core.training.writer import read_metrics


def training_seconds(records: list[dict[str, Any]]) -> Optional[float]:
  """Wall time spent training, from the logged training records.

  Sums the time between consecutive records; where a record also logs its
  ``steps_per_second``, an interval counts at most ``steps / rate`` seconds, so
  the time a run stood still between an interruption and its resumption is not
  counted (the steps in between are, at the rate measured after resuming).
  """
  timed = [r for r in records if "time" in r and "step" in r]
  if len(timed) < 2:
    return None
  total = 0.0
  for previous, current in zip(timed, timed[1:]):
    seconds = current["time"] - previous["time"]
    steps = current["step"] - previous["step"]
    rate = current.get("steps_per_second")
    if rate and steps > 0:
      seconds = min(seconds, steps / rate)
    total += max(seconds, 0.0)
  return total


def run_summary(workdir: pathlib.Path) -> dict[str, Any]:
  """Steps, wall time and final training metrics of a run."""
  records = [r for r in read_metrics(workdir) if "train/loss" in r]
  if not records:
    return {}
  seconds = training_seconds(records)
  last = records[-1]
  return {"trained_steps": int(last["step"]),
          "wall_time_hours": round(seconds / 3600, 2)
          if seconds is not None else None,
          "final_train_loss": round(float(last["train/loss"]), 4),
          "final_train_psnr": round(float(last.get("train/psnr", float("nan"))), 2)}


def transfer_strip(pipe: TransferPipeline, seed: int, num_pairs: int = 3,
                   num_frames: int = 8) -> np.ndarray:
  """Rows per pair: target clip (scene A), transfer onto B, B's ground truth."""
  renderer = evaluate.ClipRenderer(pipe, num_frames)
  rows = []
  size = pipe.image_size
  for i in range(num_pairs):
    a, b = synthetic.make_transfer_pair(seed, i, num_frames, size)
    generated = frame_utils.to_uint8(renderer.render(b["frames"],
                                                     renderer.path(a["frames"])))
    for clip in (a["frames"], generated, b["frames"]):
      rows.append(np.concatenate(list(clip), axis=1))
    rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
  return np.concatenate(rows[:-1], axis=0)


def _model_card(info: dict[str, Any], eval_markdown: Optional[str],
                command: str, notes: Optional[str] = None) -> str:
  config = info.get("config", {})
  lines = [
      f"# {info.get('name', 'model')}: {info.get('kind', '')} XFactor model",
      "",
      "Trained by XFactor Studio's own trainer on its synthetic world (procedural "
      "rooms rendered by the JAX ray caster), without any real data.",
      "",
      "| field | value |", "|---|---|",
  ]
  rows = {
      "kind": info.get("kind"),
      "context views": info.get("num_context_views"),
      "image size": info.get("image_size"),
      "network": ", ".join(f"{k} {v}" for k, v in config.items()),
      "parameters": info.get("num_parameters"),
      "perceptual loss": info.get("perceptual"),
      "training steps": info.get("trained_steps"),
      "batch size": info.get("batch_size"),
      "wall time (hours)": info.get("wall_time_hours"),
      "hardware": info.get("hardware"),
      "final training loss / PSNR": f"{info.get('final_train_loss')} / "
                                    f"{info.get('final_train_psnr')} dB",
  }
  lines += [f"| {k} | {v} |" for k, v in rows.items() if v is not None]
  lines += ["", "## Reproduce", "", "```bash", command, "```", ""]
  if eval_markdown:
    lines += ["## Transfer benchmark", "",
              "`python -m xfactor_core.evaluate` on held-out synthetic pairs "
              "(world seed not used in training):", "", eval_markdown, ""]
  if notes:
    lines += ["## Notes", "", notes.strip(), ""]
  lines += ["## Transfers", "",
            "![transfers](transfers.png)", "",
            "Each group of three rows: the target clip (scene A), its camera motion "
            "transferred onto scene B's first frame, and scene B filmed with the "
            "same motion (ground truth).", ""]
  return "\n".join(lines)


def release(workdir: pathlib.Path, out: pathlib.Path, command: str,
            eval_json: Optional[pathlib.Path] = None, strip_seed: int = 4242,
            notes: Optional[str] = None) -> pathlib.Path:
  """Writes the model folder ``out`` from the run in ``workdir``."""
  state, file = checkpoints.load_state(workdir)
  params = checkpoints.params_from_state(state, file)
  info = dict(checkpoints.read_model_info(workdir))
  info.update(run_summary(workdir))
  info["num_parameters"] = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  info["hardware"] = (f"{platform.processor() or platform.machine()}, "
                      f"{jax.default_backend()} ({jax.device_count()} device(s))")
  info["step"] = int(np.asarray(state.get("step", 0)))
  if out.exists():
    shutil.rmtree(out)
  out.mkdir(parents=True)
  checkpoints.save_params(out, params, step=info["step"])
  (out / checkpoints.MODEL_INFO).write_text(json.dumps(info, indent=1))
  pipe = TransferPipeline.from_checkpoint(out)
  Image.fromarray(transfer_strip(pipe, strip_seed)).save(out / "transfers.png")
  eval_md = None
  if eval_json is not None:
    eval_md = evaluate.to_markdown(json.loads(eval_json.read_text()))
  (out / "README.md").write_text(_model_card(info, eval_md, command, notes))
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m xfactor_core.training.release",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, type=pathlib.Path)
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--command", required=True,
                      help="the exact training command, for the model card")
  parser.add_argument("--eval-json", type=pathlib.Path, default=None)
  parser.add_argument("--notes", type=pathlib.Path, default=None,
                      help="a Markdown file for the card's Notes section "
                           "(what the numbers mean, what is still missing)")
  args = parser.parse_args(argv)
  notes = args.notes.read_text() if args.notes else None
  release(args.workdir, args.out, args.command, args.eval_json, notes=notes)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
