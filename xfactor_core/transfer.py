"""Command line camera-motion transfer.

    python -m xfactor_core.transfer --context room.png --target walk.mp4 --out out.mp4
    python -m xfactor_core.transfer --checkpoint ckpts/ --context a.png b.png c.png \\
        --target first.png second.png --out frames_dir/ --num-frames 30

The camera motion of the target (a video, a folder of frames, or two or more
images) is extracted as a latent camera path and re-rendered in the context
scene. ``--out`` ending in .mp4 or .gif writes a video, anything else a folder
of PNG frames. Without ``--checkpoint`` the shipped stereo-monocular default
model is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from xfactor_core import checkpoints, fetch, runtime
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import model_frames as frame_utils
from xfactor_core.inference import media
from xfactor_core.inference.pipeline import (DEFAULT_CHECKPOINT, TransferError,
                                             TransferPipeline)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m xfactor_core.transfer",
      description="Transfer the camera motion of a target clip onto context "
                  "frames of another scene.")
  parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                      help="sm or mv (a published model fetched with python "
                           "-m xfactor_core.fetch), a clu checkpoint dir, "
                           "ckpt-N, its parent, or a msgpack file (default: "
                           "the shipped stereo-monocular demo model)")
  parser.add_argument("--context", nargs="+", required=True,
                      help="context image(s): one for stereo-monocular models, "
                           "up to the model's view count for multi-view ones")
  target = parser.add_mutually_exclusive_group(required=True)
  target.add_argument("--target", nargs="+",
                      help="target video, folder of frames, or 2+ images")
  target.add_argument("--camera-path",
                      help="a latent camera path saved by --save-path (.npz, "
                           "which records its mode, or a plain .npy of "
                           "reference latents)")
  parser.add_argument("--out", required=True,
                      help="output .mp4, .gif, or a folder for PNG frames")
  parser.add_argument("--num-frames", type=int, default=None)
  parser.add_argument("--stride", type=int, default=1)
  parser.add_argument("--start", type=int, default=0)
  parser.add_argument("--size", type=int, default=None,
                      help="output size in pixels. Flow and warp models "
                           "(sm_default) sample the context photo at this size "
                           "(default: the photo's own, at most 512); models "
                           "with the published RGB head run at this size "
                           "(default: the model's own)")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="frames per compiled chunk (bounds memory)")
  parser.add_argument("--fps", type=float, default=12.0)
  parser.add_argument("--motion-strength", type=float, default=1.0,
                      help="0 = no motion, 1 = transferred motion, up to 1.5")
  parser.add_argument("--side-by-side", default=None,
                      help="also write target | generated to this .mp4/.gif")
  parser.add_argument("--save-path", default=None,
                      help="also save the latent camera path: an .npz that "
                           "records its mode and the renderer (any name not "
                           "ending in .npy), or, for a reference path, a "
                           "plain .npy of latents")
  parser.add_argument("--camera-path-mode", default=None,
                      choices=camera_paths.CAMERA_PATH_MODES,
                      help="reference: each frame's latent against the "
                           "target's first frame; composed (warp models): "
                           "the latents of consecutive frames, whose warps "
                           "are composed. Default: the model's own "
                           "(TransferPipeline.default_path_mode, reference "
                           "today). A saved path replays in its own mode")
  parser.add_argument("--attention", default="auto",
                      help="attention implementation: auto, xla, split, cudnn")
  return parser


def run(args: argparse.Namespace) -> pathlib.Path:
  """Runs one transfer; returns the output path."""
  pipe = TransferPipeline.from_checkpoint(
      args.checkpoint, batch_size=args.batch_size,
      attention_impl=args.attention)
  if args.size is not None and not pipe.renders_any_size:
    # The published RGB head renders at the size the model runs at.
    pipe = dataclasses.replace(pipe, image_size=args.size)
  images = [media.read_image(p) for p in args.context]
  if note := frame_utils.crop_note(images):
    logging.warning("%s", note)
  context = pipe.prepare(images, "context")
  size = pipe.check_output_size(args.size or pipe.default_output_size(images))
  sample_from = (pipe.prepare(images, "context", size=size)
                 if size != pipe.image_size else None)
  logging.info("model %s: %s, %d parameters, %dx%d%s", pipe.name, pipe.kind,
               pipe.num_parameters, pipe.image_size, pipe.image_size,
               f", output {size}x{size} sampled from the context"
               if sample_from is not None else "")

  target_uint8 = None
  mode = args.camera_path_mode or pipe.default_path_mode
  if args.camera_path:
    try:
      record = camera_paths.load(args.camera_path)
    except (OSError, ValueError, KeyError) as e:
      raise TransferError(f"cannot read camera path {args.camera_path} ({e}); "
                          "use a file saved by --save-path") from e
    if args.camera_path_mode and args.camera_path_mode != record.mode:
      raise TransferError(
          f"{args.camera_path} is a {record.mode!r} camera path; it replays "
          f"in that mode only (drop --camera-path-mode {args.camera_path_mode})")
    mode = record.mode
    path = record.latents
    if mode == "composed" and (args.start or args.stride != 1):
      raise TransferError("a composed camera path holds steps between "
                          "consecutive frames: --start and --stride cannot "
                          "pick frames of it (use --num-frames)")
    path = path[args.start::max(args.stride, 1)][: args.num_frames]
  else:
    source = args.target[0] if len(args.target) == 1 else args.target
    target_uint8 = media.read_clip(source, num_frames=args.num_frames,
                                   stride=args.stride, start=args.start)
    if len(target_uint8) < 2:
      raise TransferError(
          f"the target has {len(target_uint8)} frame; camera motion needs at "
          "least two (give a video, a folder of frames, or two images)")
    target = pipe.prepare(target_uint8, "target")
    with tqdm(total=len(target), desc="camera path", unit="frame") as bar:
      path = pipe.camera_path(target, mode=pipe.check_path_mode(mode))
      bar.update(len(target))
  if args.save_path:
    save_camera_path(args.save_path, pipe.path_record(path, mode))

  with tqdm(total=len(path), desc="rendering", unit="frame") as bar:
    generated = pipe.render(context, path, motion_strength=args.motion_strength,
                            sample_from=sample_from, path_mode=mode,
                            progress=lambda done, total: bar.update(done - bar.n))
  generated = frame_utils.to_uint8(generated)
  out = pathlib.Path(args.out)
  media.write_output(out, generated, fps=args.fps)
  if args.side_by_side and target_uint8 is not None:
    shown = frame_utils.to_uint8(frame_utils.prepare_frames(
        target_uint8, generated.shape[1], "target"))
    media.write_video(args.side_by_side,
                      media.side_by_side(shown, generated), fps=args.fps)
  return out


def save_camera_path(file: str, record: camera_paths.CameraPath
                     ) -> pathlib.Path:
  """``--save-path``: a plain .npy of latents for a reference path named
  .npy (what older versions wrote, and what they read), else the .npz record
  (a composed path is always written as .npz, beside a .npy name)."""
  file = pathlib.Path(file)
  if file.suffix == ".npy" and record.mode == "reference":
    np.save(file, record.latents)
    return file
  if file.suffix == ".npy":
    file = file.with_suffix(".npz")
    logging.warning("a composed camera path is saved as %s (an .npz records "
                    "its mode)", file)
  return camera_paths.save(file, record)


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  args = build_parser().parse_args(argv)
  runtime.enable_compilation_cache()
  runtime.warn_if_gpu_idle()
  try:
    out = run(args)
  except (TransferError, media.MediaError, frame_utils.FrameError,
          checkpoints.CheckpointError, fetch.FetchError) as e:
    logging.error("%s", e)
    return 2
  logging.info("wrote %s", out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
