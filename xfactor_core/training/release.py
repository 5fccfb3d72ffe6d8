"""Ship a trained run as a model folder: weights, model.json, card and strip.

    python -m xfactor_core.training.release --workdir runs/sm \\
        --out assets/models/sm_default --eval-json eval.json \\
        --command "python -m xfactor_core.train ..."

Writes into ``--out``: the weights only, in the published clu checkpoint layout
(``checkpoint`` + ``ckpt-1.flax`` with ``params`` = {PoseEnc, Render}), the run's
``model.json`` (plus steps, wall time and hardware), ``transfers.png`` (held-out
synthetic transfers: target clip, the transfer into another scene, and that
scene's ground truth under the same motion) and ``README.md``, the model card.
With ``--real-clip DIR`` (target/ frames of a real video) also
``photo_transfers.png``: that clip's camera motion transferred onto the held-out
photos (the app's examples, never seen in training), at the output size the
app uses. ``--ablation-json`` adds the recipe ablation table
(``benchmarks/ablation.py --json``) to the card. ``--refresh`` (without
``--workdir``) rewrites the strips and card of an existing model folder from
its own weights and ``model.json``, e.g. after new benchmarks.
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
from xfactor_core.data import photos, synthetic
from xfactor_core.inference import media
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


def photo_strip(pipe: TransferPipeline, clip_dir: pathlib.Path,
                num_columns: int = 6, tile: int = 192) -> np.ndarray:
  """Rows per held-out photo: the photo, then frames of the real clip's
  camera motion transferred onto it (on the model's default camera path),
  every ``len / (num_columns - 1)``-th frame, each ``tile`` pixels square
  (rendered at the app's default output size and shrunk for the card)."""
  target = np.stack([media.read_image(f) for f in sorted(
      (clip_dir / "target").iterdir()) if media.is_image_file(f)])
  mode = pipe.default_path_mode
  path = pipe.camera_path(pipe.prepare(target), mode=mode)
  shown = np.linspace(0, len(path) - 1, num_columns - 1).round().astype(int)
  rows = []
  for name in photos.HELD_OUT_PHOTOS:
    photo = photos.load_photo(name)
    context = pipe.prepare([photo])
    size = pipe.default_output_size([photo])
    sample_from = (pipe.prepare([photo], size=size)
                   if size != pipe.image_size else None)
    # A composed path's frame k needs every step before it: render them all.
    rendered = (pipe.render(context, path, sample_from=sample_from,
                            path_mode=mode)[shown] if mode == "composed"
                else pipe.render(context, path[shown],
                                 sample_from=sample_from))
    frames = frame_utils.to_uint8(rendered)
    cells = [frame_utils.prepare_frames([photo], tile)[0]] + [
        frame_utils.prepare_frames([f], tile)[0] for f in frames]
    cells = frame_utils.to_uint8(np.stack(cells))
    gap = np.full((tile, 4, 3), 255, np.uint8)
    row = [cells[0], np.full((tile, 12, 3), 255, np.uint8)]
    for cell in cells[1:]:
      row += [cell, gap]
    rows += [np.concatenate(row[:-1], axis=1),
             np.full((4, sum(c.shape[1] for c in row[:-1]), 3), 255,
                     np.uint8)]
  return np.concatenate(rows[:-1], axis=0)


def ablation_markdown(document: dict[str, Any]) -> str:
  """The recipe ablation table (``benchmarks/ablation.py --json``)."""
  columns = [("arm", "arm"), ("steps", "steps"),
             ("transfer_psnr", "transfer PSNR"),
             ("margin_shuffled", "vs shuffled"), ("margin_copy", "vs copy"),
             ("flow_corr", "flow corr"),
             ("flow_magnitude_ratio", "flow magnitude"),
             ("sharpness_ratio", "sharpness"),
             ("real_flow_corr", "real clip flow corr"),
             ("real_sharpness_ratio", "real clip sharpness")]
  present = [(k, title) for k, title in columns
             if any(k in row for row in document["rows"])]
  fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(t for _, t in present) + " |",
           "|---" * len(present) + "|"]
  for row in document["rows"]:
    lines.append("| " + " | ".join(fmt(row.get(k, "")) for k, _ in present)
                 + " |")
  lines += ["", f"Each arm trained for {document.get('core_minutes')} CPU "
            "minutes on one core (`benchmarks/ablation.py`); the levers of "
            "each arm are in `xfactor_core/configs/recipe.py`."]
  return "\n".join(lines)


def _model_card(info: dict[str, Any], eval_markdown: Optional[str],
                command: str, notes: Optional[str] = None,
                ablation: Optional[str] = None,
                has_photo_strip: bool = False) -> str:
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
  if ablation:
    lines += ["## Recipe ablation", "", ablation, ""]
  if notes:
    lines += ["## Notes", "", notes.strip(), ""]
  if has_photo_strip:
    lines += ["## A real clip's motion on held-out photos", "",
              "![photo transfers](photo_transfers.png)", "",
              "Each row: a photo the model never saw in training (the app's "
              "examples), then the camera motion of a real 30-frame "
              "walk-through video (the reference clip of the published "
              "model's transfer, not shipped here) transferred onto it, at "
              "frames spread over the clip, rendered at the app's default "
              "output size.", ""]
  lines += ["## Transfers", "",
            "![transfers](transfers.png)", "",
            "Each group of three rows: the target clip (scene A), its camera motion "
            "transferred onto scene B's first frame, and scene B filmed with the "
            "same motion (ground truth).", ""]
  return "\n".join(lines)


def release(workdir: pathlib.Path, out: pathlib.Path, command: str,
            eval_json: Optional[pathlib.Path] = None, strip_seed: int = 4242,
            notes: Optional[str] = None,
            real_clip: Optional[pathlib.Path] = None,
            ablation_json: Optional[pathlib.Path] = None) -> pathlib.Path:
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
  checkpoints.write_model_info(out, **info)
  write_card(out, command, eval_json, strip_seed, notes, real_clip,
             ablation_json)
  return out


def write_card(out: pathlib.Path, command: str,
               eval_json: Optional[pathlib.Path] = None,
               strip_seed: int = 4242, notes: Optional[str] = None,
               real_clip: Optional[pathlib.Path] = None,
               ablation_json: Optional[pathlib.Path] = None) -> None:
  """(Re)writes the strips and the card of the model folder ``out`` from its
  weights and ``model.json``: used by :func:`release`, and on its own
  (``--refresh``) to bring a shipped model's card up to date with new
  benchmarks when the run it came from is no longer at hand."""
  info = dict(checkpoints.read_model_info(out))
  pipe = TransferPipeline.from_checkpoint(out)
  Image.fromarray(transfer_strip(pipe, strip_seed)).save(out / "transfers.png")
  if real_clip is not None:
    Image.fromarray(photo_strip(pipe, real_clip)).save(
        out / "photo_transfers.png")
  eval_md = None
  if eval_json is not None:
    result = json.loads(eval_json.read_text())
    eval_md = evaluate.to_markdown(result)
    if "real_clip" in result:
      eval_md += "\n\n" + evaluate.to_markdown(
          {"rows": result["real_clip"], "settings": {
              "target": "Real clip: the published transfer's target video "
                        "transferred onto its first frame, against the "
                        "published transfer",
              "oracle": result["settings"].get("oracle")}},
          evaluate.REAL_CLIP_KEYS)
  ablation = (ablation_markdown(json.loads(ablation_json.read_text()))
              if ablation_json is not None else None)
  (out / "README.md").write_text(_model_card(
      info, eval_md, command, notes, ablation,
      has_photo_strip=real_clip is not None))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m xfactor_core.training.release",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", type=pathlib.Path, default=None,
                      help="the training run to ship (omit with --refresh)")
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--command", required=True,
                      help="the exact training command, for the model card")
  parser.add_argument("--refresh", action="store_true",
                      help="rewrite the strips and card of the model folder "
                           "--out from its own weights and model.json (no "
                           "--workdir): new benchmarks for a shipped model")
  parser.add_argument("--eval-json", type=pathlib.Path, default=None)
  parser.add_argument("--notes", type=pathlib.Path, default=None,
                      help="a Markdown file for the card's Notes section "
                           "(what the numbers mean, what is still missing)")
  parser.add_argument("--real-clip", type=pathlib.Path, default=None,
                      help="a folder with target/ frames of a real video: "
                           "adds photo_transfers.png")
  parser.add_argument("--ablation-json", type=pathlib.Path, default=None,
                      help="benchmarks/ablation.py --json output for the card")
  args = parser.parse_args(argv)
  notes = args.notes.read_text() if args.notes else None
  if args.refresh:
    if args.workdir is not None:
      parser.error("--refresh rewrites the card of --out from its own weights; "
                   "drop --workdir")
    write_card(args.out, args.command, args.eval_json, notes=notes,
               real_clip=args.real_clip, ablation_json=args.ablation_json)
    return 0
  if args.workdir is None:
    parser.error("--workdir (the training run to ship) is required unless "
                 "--refresh is given")
  release(args.workdir, args.out, args.command, args.eval_json, notes=notes,
          real_clip=args.real_clip, ablation_json=args.ablation_json)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
