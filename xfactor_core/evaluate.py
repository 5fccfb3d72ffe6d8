"""The transfer benchmark: how well a checkpoint transfers camera motion.

    python -m xfactor_core.evaluate [--checkpoint PATH] [--num-pairs N] [--seed S]
        [--json OUT] [--markdown OUT] [--oracle colmap|ground_truth|none]
    python -m xfactor_core.evaluate --checkpoint PATH --target DIR_OR_VIDEO \\
        --context IMG [--json OUT]            # a real clip, TPS by the oracle only

On N held-out synthetic transfer pairs (scene A and scene B filmed with the same
relative camera path; world seed ``--seed``, not used in training) it reports,
for the model and for baselines measured in the same run, in one table:

* ``recon_psnr`` / ``recon_ssim``: the path of A's clip rendered onto A's own
  context view(s), against A's frames;
* ``transfer_psnr`` / ``transfer_ssim``: A's path rendered onto B's context,
  against B's frames (the same motion in scene B);
* TPS (``Rac_10``, ``Tac_30``, ``SE3_Auc_30``, ...): camera metrics between A's
  ground-truth cameras and the oracle's poses of the transferred clip, on the
  frames the oracle registered. A pair the oracle cannot reconstruct (fewer than
  3 frames) scores 0 on every accuracy and AUC; ``tps_ok_fraction`` says how
  many pairs were reconstructed.

* motion and sharpness (``xfactor_core.metrics.motion``): ``flow_corr``, the
  correlation of the global optical-flow signals of the transferred clip and
  B's ground-truth clip, ``flow_magnitude_ratio`` (how much it moves, 1 = as
  much as the ground truth) and ``sharpness_ratio`` (its detail against the
  ground truth's); ``target_flow_corr`` / ``target_flow_magnitude_ratio``,
  the same against A's clip (the motion source), and
  ``photo_sharpness_ratio``, its detail against B's context photo's own.

Baselines: ``copy_context`` (no motion: the context frame repeated),
``shuffled_latents`` (the same model driven by another pair's motion),
``random_model`` (the same architecture, randomly initialised) and
``classical_homography``, a yardstick that no training moves
(``xfactor_core.metrics.classical_warp``): ORB + RANSAC homographies between
consecutive frames of A's clip, chained to the reference frame and applied to
the context photo (``homography_failures``: steps per pair that matched too
few features and were taken as the identity).

A latent-pose probe fits a ridge regression from latent poses to ground-truth
relative rotations (projected onto SO(3)) and translations on training
sequences and reports median rotation and translation-direction errors on
held-out ones, for the model and the random model.

With ``--real-clip DIR`` (a folder like ``shared/reference/example_videos``,
holding ``target/`` frames of a real video and ``transfer/`` frames of the
published model's transfer of its motion into another scene) it also
transfers the target's motion onto ``transfer/000.jpg`` and compares the
result with the published transfer: PSNR, motion and sharpness scores, and
TPS against the target with the COLMAP oracle. It also scores the motion
against the target clip itself (``target_flow_corr``,
``target_flow_magnitude_ratio``) and the detail against the context photo's
(``photo_sharpness_ratio``), with ``classical_homography`` as a row. Flow
models render this at the published frames' size, sampled from the
full-resolution context.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from tqdm import tqdm

from xfactor_core import checkpoints, fetch, models, runtime
from xfactor_core.data import synthetic
from xfactor_core.inference import model_frames as frame_utils
from xfactor_core.inference import media
from xfactor_core.inference.pipeline import (DEFAULT_CHECKPOINT, TransferPipeline,
                                             reference_order)
import xfactor_core.metrics as metrics_lib
from xfactor_core.metrics import (classical_warp, global_motion, image, motion,
                                  oracles)

METHODS = ("model", "copy_context", "shuffled_latents", "random_model",
           "classical_homography")
TPS_KEYS = ("Rac_3", "Rac_5", "Rac_10", "Rac_30", "Tac_3", "Tac_5", "Tac_10",
            "Tac_30", "Rot_Auc_30", "Trans_Auc_30", "SE3_Auc_30")
TABLE_KEYS = ("recon_psnr", "recon_ssim", "transfer_psnr", "transfer_ssim",
              "flow_corr", "flow_magnitude_ratio", "sharpness_ratio",
              "target_flow_corr", "target_flow_magnitude_ratio",
              "photo_sharpness_ratio", "homography_failures",
              "Rac_10", "Tac_30", "SE3_Auc_30", "tps_ok_fraction")
REAL_CLIP_KEYS = ("psnr", "flow_corr", "flow_magnitude_ratio",
                  "sharpness_ratio", "target_flow_corr",
                  "target_flow_magnitude_ratio", "photo_sharpness_ratio",
                  "homography_failures", "registered_both", "Rac_10", "Tac_30",
                  "SE3_Auc_30")
PROBE_SEED_OFFSET = 7919  # probe sequences come from worlds seed + offset (+1)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  num_pairs: int = 16
  num_frames: int = 12
  seed: int = 1_000_003
  oracle: str = "colmap"
  tps_pairs: int = -1  # TPS on the first this many pairs (-1: all)
  probe_train: int = 96
  probe_test: int = 32
  batch_size: int = 8
  random_model_seed: int = 0
  # The camera path: "reference" (frame k against the reference frame),
  # "composed" (warp models: the warps of consecutive steps, chained), or
  # None: the model's default (TransferPipeline.default_path_mode).
  path_mode: Optional[str] = None


def context_indices(num_frames: int, num_views: int) -> list[int]:
  """Frames of a clip used as context views: evenly spread, frame 0 included."""
  return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1,
                                                    num_views + 1)[:-1]})


def random_pipeline(pipe: TransferPipeline, seed: int) -> TransferPipeline:
  """The same architecture and settings with random initial weights."""
  c, s = pipe.config, pipe.image_size
  pose_enc = models.PoseEnc(**c.pose_enc_kwargs())
  render = models.Render(**c.render_kwargs())
  x = np.zeros((1, 2, s, s, 3), np.float32)
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {
      "PoseEnc": jax.jit(pose_enc.init)(k1, x)["params"],
      "Render": jax.jit(render.init)(k2, x[:, :1],
                                     np.zeros((1, 2, c.pose_dim), np.float32)
                                     )["params"],
  }
  return dataclasses.replace(pipe, params=params, name="random", info={})


class ClipRenderer:
  """Re-renders the camera motion of one clip in another, as the benchmark does.

  For clips of ``num_frames`` frames, the context views are the frames at
  ``ctx_idx`` (as many as the model takes, at most ``num_frames - 1``), the
  reference of the latent path is the context frame ``ref``, and the frames
  at ``eval_idx`` (every other frame) are the ones scored.

  A composed path (warp models) starts at the reference frame and runs both
  ways: frame k's latent is its pose relative to frame k-1 after ``ref`` and
  relative to frame k+1 before it (0 at ``ref``), and the frames on either
  side chain the step warps outwards from the reference view. Where ``ref``
  is 0 (one context view) this is the product's composed path.

  >>> renderer = ClipRenderer(pipe, num_frames=8)
  >>> path = renderer.path(target_clip)        # F x D latents, ref at zero
  >>> frames = renderer.render(scene_clip, path)  # F x S x S x 3 in [-1, 1]
  """

  def __init__(self, pipe: TransferPipeline, num_frames: int,
               path_mode: Optional[str] = None):
    self.pipe = pipe
    views = max(1, min(pipe.max_context_views, num_frames - 1))
    self.ctx_idx = context_indices(num_frames, views)
    self.ref = self.ctx_idx[reference_order(len(self.ctx_idx))[0]]
    self.eval_idx = [i for i in range(num_frames) if i not in self.ctx_idx]
    self.path_mode = pipe.check_path_mode(path_mode
                                          or pipe.default_path_mode)

  def path(self, clip: np.ndarray) -> np.ndarray:
    """Latents of every frame relative to the reference frame (or, composed,
    to its neighbour on the reference's side): F x D."""
    frames = self.pipe.prepare(clip)
    if self.path_mode != "composed":
      return self.pipe.camera_path(frames, reference=self.ref,
                                   mode=self.path_mode)
    r = self.ref
    path = np.zeros((len(frames), self.pipe.config.pose_dim), np.float32)
    if r + 1 < len(frames):  # each frame after ref against the one before it
      path[r + 1:] = self.pipe.encode_pairs(frames[r:-1], frames[r + 1:])
    if r > 0:  # each frame before ref against the one after it
      path[:r] = self.pipe.encode_pairs(frames[1:r + 1], frames[:r])
    return path

  def render(self, scene_clip: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Renders ``path`` onto the context views of ``scene_clip``: F x S x S x 3."""
    context = self.pipe.prepare(scene_clip[self.ctx_idx])
    if self.path_mode != "composed":
      return self.pipe.render(context, path, path_mode=self.path_mode)
    r = self.ref
    after = self.pipe.render(context, path[r:], path_mode="composed")
    if r == 0:
      return after
    before = self.pipe.render(context, path[r::-1], path_mode="composed")
    return np.concatenate([before[::-1], after[1:]])


def _image_scores(pred: np.ndarray, clip: np.ndarray, pipe: TransferPipeline,
                  eval_idx: Sequence[int]) -> tuple[float, float]:
  target = pipe.prepare(clip[list(eval_idx)])
  pred = pred[list(eval_idx)]
  return (float(np.mean(image.psnr(pred, target))),
          float(np.mean(image.ssim(pred, target))))


def _tps_scores(oracle: Optional[oracles.PoseOracle], generated: np.ndarray,
                gt_camera_from_world: np.ndarray) -> dict[str, float]:
  """Camera metrics of the oracle's poses of ``generated`` against ground truth.

  A clip the oracle cannot reconstruct (fewer than 3 frames) scores 0.
  """
  if oracle is None:
    return {}
  report = metrics_lib.evaluate_tps(
      generated, generated, oracles.GroundTruthOracle(gt_camera_from_world),
      transfer_oracle=oracle)
  registered = float(report.transfer.num_registered)
  if report.common.sum() < oracles.MIN_REGISTERED_FRAMES:
    return {**{k: 0.0 for k in TPS_KEYS}, "tps_ok_fraction": 0.0,
            "tps_registered": registered}
  return {**{k: float(report.metrics[k]) for k in TPS_KEYS},
          "tps_ok_fraction": 1.0, "tps_registered": registered}


def target_motion_scores(generated: np.ndarray, target: np.ndarray,
                         photo: np.ndarray) -> dict[str, float]:
  """Scores against the motion source and the context photo, not a ground truth.

  Args:
    generated: ``N x H x W x 3`` uint8, the rendered clip.
    target: ``N x h x w x 3`` uint8, the clip whose motion was transferred
      (square, as the model saw it).
    photo: ``P x H' x W' x 3`` uint8, the context photo(s).

  Returns:
    ``target_flow_corr`` / ``target_flow_magnitude_ratio`` (DIS flow at
    ``motion.FLOW_SIZE``: global dx, dy and divergence per step, as
    ``motion.motion_scores`` measures them) and ``photo_sharpness_ratio``
    (mean Sobel magnitude of the clip over the photo's).
  """
  scores = motion.motion_scores(generated, target)
  return {"target_flow_corr": scores["flow_corr"],
          "target_flow_magnitude_ratio": scores["flow_magnitude_ratio"],
          "photo_sharpness_ratio": (motion.sharpness(generated)
                                    / max(motion.sharpness(photo), 1e-6))}


def classical_clip(target: np.ndarray, photo: np.ndarray, size: int,
                   reference: int = 0) -> tuple[np.ndarray, int]:
  """The classical yardstick: the target's chained homographies on a photo.

  Args:
    target: ``N x h x w x 3`` uint8 frames whose motion is read.
    photo: ``H x W x 3`` float in [-1, 1] (or uint8), standing in for the
      target's frame ``reference``.
    size: output side.
    reference: the target frame the photo stands for.

  Returns:
    (``N x size x size x 3`` of the photo's dtype, number of failed steps).
  """
  chain = classical_warp.homography_chain(target)
  homographies = classical_warp.rebase(chain.homographies, reference)
  return classical_warp.warp_photo(photo, homographies, size), chain.num_failed


def _mean_rows(per_pair: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
  rows = {}
  for method, entries in per_pair.items():
    keys = sorted({k for e in entries for k in e})
    rows[method] = {k: float(np.mean([e[k] for e in entries if k in e]))
                    for k in keys}
  return rows


def transfer_benchmark(pipe: TransferPipeline, settings: EvalSettings,
                       progress: Callable[[str, int, int], None] = lambda *a: None
                       ) -> dict[str, dict[str, float]]:
  """Image and TPS scores of the model and the baselines on synthetic pairs."""
  size = min(max(pipe.image_size, synthetic.MIN_SIZE), synthetic.MAX_SIZE)
  pairs = []
  for i in range(settings.num_pairs):
    progress("rendering pairs", i, settings.num_pairs)
    pairs.append(synthetic.make_transfer_pair(settings.seed, i,
                                              settings.num_frames, size))
  renderers = {"model": ClipRenderer(pipe, settings.num_frames,
                                     settings.path_mode),
               "random_model": ClipRenderer(
                   random_pipeline(pipe, settings.random_model_seed),
                   settings.num_frames, settings.path_mode)}
  oracle = None if settings.oracle == "none" else oracles.get_oracle(
      settings.oracle)
  per_pair: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
  model_paths = [renderers["model"].path(a["frames"]) for a, _ in pairs]
  for i, (a, b) in enumerate(pairs):
    progress("transferring", i, len(pairs))
    gt = a["camera_from_world"]
    for method in METHODS:
      r = renderers["random_model" if method == "random_model" else "model"]
      failures = None
      if method == "classical_homography":
        source = frame_utils.to_uint8(r.pipe.prepare(a["frames"]))
        side = r.pipe.image_size
        rec, failures = classical_clip(
            source, r.pipe.prepare(a["frames"][r.ref:r.ref + 1])[0], side, r.ref)
        trans, _ = classical_clip(
            source, r.pipe.prepare(b["frames"][r.ref:r.ref + 1])[0], side, r.ref)
      elif method == "copy_context":
        rec = np.broadcast_to(r.pipe.prepare(a["frames"][r.ref:r.ref + 1]),
                              (settings.num_frames,) + (r.pipe.image_size,) * 2 + (3,))
        trans = np.broadcast_to(r.pipe.prepare(b["frames"][r.ref:r.ref + 1]),
                                rec.shape)
      else:
        if method == "model":
          path = model_paths[i]
        elif method == "shuffled_latents":
          path = model_paths[(i + 1) % len(pairs)]
        else:
          path = r.path(a["frames"])
        rec = r.render(a["frames"], path)
        trans = r.render(b["frames"], path)
      entry = {}
      entry["recon_psnr"], entry["recon_ssim"] = _image_scores(
          rec, a["frames"], r.pipe, r.eval_idx)
      entry["transfer_psnr"], entry["transfer_ssim"] = _image_scores(
          trans, b["frames"], r.pipe, r.eval_idx)
      generated = frame_utils.to_uint8(trans)
      entry.update(motion.motion_scores(
          generated, frame_utils.to_uint8(r.pipe.prepare(b["frames"]))))
      entry.update(target_motion_scores(
          generated, frame_utils.to_uint8(r.pipe.prepare(a["frames"])),
          frame_utils.to_uint8(r.pipe.prepare(b["frames"][r.ctx_idx]))))
      if failures is not None:
        entry["homography_failures"] = float(failures)
      if settings.tps_pairs < 0 or i < settings.tps_pairs:
        entry.update(_tps_scores(oracle, generated, gt))
      per_pair[method].append(entry)
  return _mean_rows(per_pair)


def _relative_pose_targets(sequence: dict[str, Any]) -> np.ndarray:
  """Frame 1 relative to frame 0: 12 numbers (rotation matrix, translation)."""
  t0, t1 = sequence["camera_from_world"][0], sequence["camera_from_world"][1]
  rel = t1 @ np.linalg.inv(t0)
  return np.concatenate([rel[:3, :3].reshape(-1), rel[:3, 3]])


def _project_so3(m: np.ndarray) -> np.ndarray:
  u, _, vt = np.linalg.svd(m.reshape(3, 3))
  d = np.sign(np.linalg.det(u @ vt))
  return u @ np.diag([1.0, 1.0, d]) @ vt


def latent_probe(pipes: dict[str, TransferPipeline], settings: EvalSettings,
                 num_frames: int = 2) -> dict[str, dict[str, float]]:
  """Ridge probe from latent poses to relative camera poses, per pipeline."""
  size = min(max(next(iter(pipes.values())).image_size, synthetic.MIN_SIZE),
             synthetic.MAX_SIZE)
  def sequences(seed, count):
    return [synthetic.make_sequence(seed, i, num_frames, size)
            for i in range(count)]
  train = sequences(settings.seed + PROBE_SEED_OFFSET, settings.probe_train)
  test = sequences(settings.seed + PROBE_SEED_OFFSET + 1, settings.probe_test)
  y_train = np.stack([_relative_pose_targets(s) for s in train])
  y_test = np.stack([_relative_pose_targets(s) for s in test])
  out = {}
  for name, pipe in pipes.items():
    def latents(seqs):
      x = pipe.prepare(np.concatenate([s["frames"][:2] for s in seqs]))
      return pipe.encode_pairs(x[0::2], x[1::2])
    pred = global_motion.ridge_predict(latents(train), y_train, latents(test))
    rot_err, trans_err = [], []
    for p, g in zip(pred, y_test):
      r = _project_so3(p[:9])
      cos = np.clip((np.trace(g[:9].reshape(3, 3).T @ r) - 1) / 2, -1, 1)
      rot_err.append(np.degrees(np.arccos(cos)))
      if np.linalg.norm(g[9:]) > 1e-6:
        c = np.dot(p[9:], g[9:]) / (np.linalg.norm(p[9:]) * np.linalg.norm(g[9:]) + 1e-12)
        trans_err.append(np.degrees(np.arccos(np.clip(c, -1, 1))))
    out[name] = {"probe_rot_err_deg": float(np.median(rot_err)),
                 "probe_trans_err_deg": float(np.median(trans_err))
                 if trans_err else float("nan")}
  return out


def evaluate_checkpoint(checkpoint: Any, settings: EvalSettings,
                        progress: Callable[[str, int, int], None] = lambda *a: None,
                        image_size: Optional[int] = None) -> dict[str, Any]:
  """The full benchmark as ``{"rows": {method: metrics}, "settings": {...}}``."""
  pipe = TransferPipeline.from_checkpoint(checkpoint, image_size=image_size,
                                          batch_size=settings.batch_size)
  rows = transfer_benchmark(pipe, settings, progress)
  probe_pipes = {"model": pipe,
                 "random_model": random_pipeline(pipe, settings.random_model_seed)}
  if settings.probe_train and settings.probe_test:
    for name, scores in latent_probe(probe_pipes, settings).items():
      rows[name].update(scores)
  return {"rows": rows, "settings": {
      **dataclasses.asdict(settings), "checkpoint": str(checkpoint),
      "model_kind": pipe.kind, "image_size": pipe.image_size,
      "context_views": len(context_indices(settings.num_frames,
                                           max(1, pipe.max_context_views))),
      "num_parameters": pipe.num_parameters, "backend": jax.default_backend()}}


def to_markdown(result: dict[str, Any],
                keys: Sequence[str] = TABLE_KEYS + ("probe_rot_err_deg",
                                                    "probe_trans_err_deg")) -> str:
  """The result table as Markdown (methods as rows)."""
  rows = result["rows"]
  present = [k for k in keys if any(k in r for r in rows.values())]
  lines = ["| method | " + " | ".join(present) + " |",
           "|---" * (len(present) + 1) + "|"]
  for method, r in rows.items():
    cells = [f"{r[k]:.3f}" if k in r else "" for k in present]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  s = result.get("settings", {})
  lines.append("")
  if "num_pairs" in s:
    tps_pairs = s.get("tps_pairs", -1)
    lines.append(f"{s['num_pairs']} held-out synthetic pairs, "
                 f"{s.get('num_frames', '?')} frames, world seed {s.get('seed')}, "
                 f"oracle {s.get('oracle')}"
                 + (f" on the first {tps_pairs} pairs." if tps_pairs >= 0 else "."))
  else:
    frames = (f"{s['num_frames']} frames, " if s.get("num_frames") else "")
    lines.append(f"{s.get('target')}: {frames}oracle {s.get('oracle')}.")
  return "\n".join(lines)


def real_clip_tps(checkpoint: Any, target: str, context: Sequence[str],
                  oracle_name: str, num_frames: Optional[int], stride: int,
                  image_size: Optional[int] = None) -> dict[str, Any]:
  """Transfers a real target clip onto context images; TPS by the oracle only."""
  pipe = TransferPipeline.from_checkpoint(checkpoint, image_size=image_size)
  clip = media.read_clip(target, num_frames=num_frames, stride=stride)
  target_x = pipe.prepare(clip)
  ctx = pipe.prepare([media.read_image(p) for p in context])
  generated = frame_utils.to_uint8(pipe.render(ctx, pipe.camera_path(target_x)))
  report = metrics_lib.evaluate_tps(frame_utils.to_uint8(target_x), generated,
                                    oracle_name)
  row: dict[str, float] = {
      "registered_target": float(report.target.num_registered),
      "registered_transfer": float(report.transfer.num_registered),
      "registered_both": float(report.common.sum())}
  if report.common.sum() >= oracles.MIN_REGISTERED_FRAMES:
    row.update({k: float(report.metrics[k]) for k in TPS_KEYS})
  return {"rows": {"model": row}, "settings": {
      "checkpoint": str(checkpoint), "target": str(target),
      "context": list(context), "oracle": oracle_name,
      "num_frames": len(clip)}}


def _read_folder(folder: pathlib.Path) -> np.ndarray:
  files = sorted(p for p in folder.iterdir()
                 if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
  if not files:
    raise ValueError(f"no .jpg/.png frames in {folder}")
  return np.stack([media.read_image(f) for f in files])


def real_clip_benchmark(pipe: TransferPipeline, folder: Any,
                        oracle: str = "colmap",
                        path_mode: Optional[str] = None
                        ) -> dict[str, dict[str, float]]:
  """The real-clip section: ``folder/target`` transferred onto
  ``folder/transfer/000.jpg``, scored against ``folder/transfer``.

  Returns rows ``model``, ``copy_context`` (the context repeated) and
  ``classical_homography`` (the target's chained ORB homographies applied to
  the context, ``classical_clip``) with ``psnr`` (frames 1.., against the
  published transfer), the motion and sharpness scores against the published
  transfer, ``target_flow_corr`` / ``target_flow_magnitude_ratio`` against
  the target clip itself (centre-cropped square as the model sees it),
  ``photo_sharpness_ratio`` against the context photo, and TPS of the
  generated clip against the target (the oracle's poses of both).
  """
  folder = pathlib.Path(folder)
  target = _read_folder(folder / "target")
  published = _read_folder(folder / "transfer")
  if len(target) != len(published):
    raise ValueError(f"{folder}: target has {len(target)} frames but "
                     f"transfer {len(published)}")
  size = published.shape[1]
  context = published[:1]
  path_mode = path_mode or pipe.default_path_mode
  path = pipe.camera_path(pipe.prepare(target), mode=path_mode)
  if pipe.renders_any_size:
    frames = pipe.render(pipe.prepare(context), path, path_mode=path_mode,
                         sample_from=pipe.prepare(context, size=size))
  else:
    frames = frame_utils.prepare_frames(frame_utils.to_uint8(pipe.render(
        pipe.prepare(context), path, path_mode=path_mode)), size)
  reference = frame_utils.prepare_frames(published, size)
  target_square = frame_utils.to_uint8(frame_utils.prepare_frames(target, size))
  photo = frame_utils.to_uint8(reference[:1])
  classical, failures = classical_clip(target_square, reference[0], size)
  rows = {}
  still = np.broadcast_to(reference[:1], reference.shape)
  for method, clip in (("model", frames), ("copy_context", still),
                       ("classical_homography", classical)):
    generated = frame_utils.to_uint8(clip)
    row = {"psnr": float(np.mean(image.psnr(clip[1:], reference[1:])))}
    row.update(motion.motion_scores(generated, published))
    row.update(target_motion_scores(generated, target_square, photo))
    if method == "classical_homography":
      row["homography_failures"] = float(failures)
    if oracle != "none":
      report = metrics_lib.evaluate_tps(target, generated, oracle)
      row["registered_both"] = float(report.common.sum())
      if report.common.sum() >= oracles.MIN_REGISTERED_FRAMES:
        row.update({k: float(report.metrics[k]) for k in TPS_KEYS})
    rows[method] = row
  return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m xfactor_core.evaluate",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                      help="sm or mv (a published model fetched with python "
                           "-m xfactor_core.fetch), or a checkpoint path "
                           "(default: the shipped stereo-monocular demo)")
  parser.add_argument("--num-pairs", type=int, default=EvalSettings.num_pairs)
  parser.add_argument("--num-frames", type=int, default=EvalSettings.num_frames)
  parser.add_argument("--seed", type=int, default=EvalSettings.seed)
  parser.add_argument("--oracle", default=EvalSettings.oracle,
                      help="pose oracle for TPS: colmap (default), another "
                           "registered oracle, or none (image scores only)")
  parser.add_argument("--tps-pairs", type=int, default=EvalSettings.tps_pairs,
                      help="run the oracle on the first N pairs only (-1: all)")
  parser.add_argument("--probe-train", type=int, default=EvalSettings.probe_train)
  parser.add_argument("--probe-test", type=int, default=EvalSettings.probe_test)
  parser.add_argument("--image-size", type=int, default=None)
  parser.add_argument("--json", default=None)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--target", default=None,
                      help="a real target clip (video or folder): TPS only")
  parser.add_argument("--context", nargs="+", default=None)
  parser.add_argument("--stride", type=int, default=1)
  parser.add_argument("--real-clip", default=None,
                      help="a folder with target/ and transfer/ frames (e.g. "
                           "shared/reference/example_videos): adds the "
                           "real-clip section")
  parser.add_argument("--camera-path-mode", default=EvalSettings.path_mode,
                      choices=("reference", "composed"),
                      help="reference: each frame against the reference "
                           "frame; composed (warp models): the warps of "
                           "consecutive steps, chained (default: the "
                           "model's own)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  runtime.enable_compilation_cache()
  runtime.warn_if_gpu_idle()
  try:
    if args.target:
      if not args.context:
        parser.error("--target needs --context images to transfer onto")
      result = real_clip_tps(args.checkpoint, args.target, args.context,
                             args.oracle if args.oracle != "none" else "colmap",
                             args.num_frames, args.stride, args.image_size)
    else:
      settings = EvalSettings(num_pairs=args.num_pairs,
                              num_frames=args.num_frames, seed=args.seed,
                              oracle=args.oracle, tps_pairs=args.tps_pairs,
                              probe_train=args.probe_train,
                              probe_test=args.probe_test,
                              path_mode=args.camera_path_mode)
      bars: dict[str, tqdm] = {}
      def progress(stage, done, total):
        if stage not in bars:
          for finished in bars.values():  # one bar at a time: stages run in turn
            finished.close()
          bars[stage] = tqdm(total=total, desc=stage)
        bars[stage].update(done + 1 - bars[stage].n)
      try:
        result = evaluate_checkpoint(args.checkpoint, settings, progress,
                                     args.image_size)
      finally:
        for bar in bars.values():
          bar.close()
      if args.real_clip:
        pipe = TransferPipeline.from_checkpoint(args.checkpoint,
                                                image_size=args.image_size)
        result["real_clip"] = real_clip_benchmark(
            pipe, args.real_clip,
            args.oracle if args.oracle != "none" else "none",
            args.camera_path_mode)
        result["settings"]["real_clip"] = str(args.real_clip)
  except (checkpoints.CheckpointError, fetch.FetchError, ValueError) as e:
    logging.error("%s", e)
    return 2
  table = to_markdown(result, TABLE_KEYS + ("probe_rot_err_deg",
                                            "probe_trans_err_deg")
                      if not args.target else
                      ("registered_both",) + TPS_KEYS)
  if "real_clip" in result:
    table += "\n\n" + to_markdown(
        {"rows": result["real_clip"], "settings": {
            "target": f"{result['settings']['real_clip']}/target onto "
                      "transfer/000.jpg, against the published transfer "
                      "(target_*: against target/ itself, photo_*: against "
                      "transfer/000.jpg)",
            "num_frames": None, "oracle": args.oracle}}, REAL_CLIP_KEYS)
  print(table)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  if args.markdown:
    pathlib.Path(args.markdown).write_text(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
