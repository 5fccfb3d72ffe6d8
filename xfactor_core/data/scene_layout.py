"""The project's generic on-disk layout of a posed video sequence.

A sequence directory holds:

  <sequence>/frames/00000.png, 00001.png, ...   RGB frames, all the same size
  <sequence>/cameras.json                      the cameras of every frame

`cameras.json` (UTF-8 JSON object):

  {
    "format": "xfactor-generic-v1",
    "convention": "<free text, informative>",
    "image_size": [height, width],            # pixels, ints
    "trajectory": "dolly",                    # optional, free text
    "frames": [                               # one entry per frame, in order
      {
        "image": "frames/00000.png",          # path relative to <sequence>
        "camera_from_world": [[r00, r01, r02, t0],
                              [r10, r11, r12, t1],
                              [r20, r21, r22, t2],
                              [0.0, 0.0, 0.0, 1.0]],
        "intrinsics": [[fx, 0.0, cx],
                       [0.0, fy, cy],
                       [0.0, 0.0, 1.0]]
      },
      ...
    ]
  }

Conventions: `camera_from_world` maps homogeneous world points to the OpenCV
camera frame (x right, y down, z forward, looking along +z); `intrinsics` maps
camera points to pixel coordinates (u = column, v = row) with pixel centres at
integer coordinates (the top-left pixel's centre is (0, 0)). The world frame is
whatever the producer chose (the synthetic world uses metres with y up).
"""

import json
import os
import pathlib
from typing import Any

import numpy as np
from PIL import Image

LAYOUT_FORMAT = "xfactor-generic-v1"
CAMERAS_FILE = "cameras.json"
FRAMES_DIR = "frames"
CONVENTION = ("camera_from_world: OpenCV camera (x right, y down, z forward); "
              "intrinsics: pixels, centres at integer coordinates")


def _check_sequence(sequence: dict[str, Any]) -> tuple[np.ndarray, np.ndarray,
                                                      np.ndarray]:
  for name in ("frames", "camera_from_world", "intrinsics"):
    if name not in sequence:
      raise ValueError(f"sequence dict lacks {name!r}: it needs 'frames' (F,H,W,3) "
                       "uint8, 'camera_from_world' (F,4,4) and 'intrinsics' (F,3,3)")
  frames = np.asarray(sequence["frames"])
  camera_from_world = np.asarray(sequence["camera_from_world"], np.float64)
  intrinsics = np.asarray(sequence["intrinsics"], np.float64)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"'frames' must be uint8 of shape (F, H, W, 3), got "
                     f"{frames.dtype} {frames.shape}; convert with "
                     "np.clip(x * 255, 0, 255).astype(np.uint8)")
  num_frames = frames.shape[0]
  if num_frames == 0:
    raise ValueError("'frames' holds no frame: a sequence needs at least one")
  if camera_from_world.shape != (num_frames, 4, 4):
    raise ValueError(f"'camera_from_world' must have shape ({num_frames}, 4, 4) "
                     f"to match the frames, got {camera_from_world.shape}")
  if intrinsics.shape != (num_frames, 3, 3):
    raise ValueError(f"'intrinsics' must have shape ({num_frames}, 3, 3) to "
                     f"match the frames, got {intrinsics.shape}")
  return frames, camera_from_world, intrinsics


def write_sequence(sequence: dict[str, Any], directory: str | os.PathLike) -> None:
  """Writes a sequence in the generic layout (see the module docstring).

  Args:
    sequence: dict with 'frames' (F, H, W, 3) uint8, 'camera_from_world'
      (F, 4, 4), 'intrinsics' (F, 3, 3) and optionally 'trajectory' (str).
    directory: the sequence directory; created if missing. Existing frame files
      of the same names are overwritten.
  """
  frames, camera_from_world, intrinsics = _check_sequence(sequence)
  directory = pathlib.Path(directory)
  (directory / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
  entries = []
  for index, frame in enumerate(frames):
    relative = f"{FRAMES_DIR}/{index:05d}.png"
    Image.fromarray(frame).save(directory / relative)
    entries.append({
        "image": relative,
        "camera_from_world": camera_from_world[index].tolist(),
        "intrinsics": intrinsics[index].tolist(),
    })
  document = {
      "format": LAYOUT_FORMAT,
      "convention": CONVENTION,
      "image_size": [int(frames.shape[1]), int(frames.shape[2])],
      "frames": entries,
  }
  if sequence.get("trajectory") is not None:
    document["trajectory"] = str(sequence["trajectory"])
  with open(directory / CAMERAS_FILE, "w", encoding="utf-8") as file:
    file.write(_format_document(document))


def _format_document(document: dict[str, Any]) -> str:
  """JSON text with one line per frame entry (readable, diff-friendly)."""
  header = {key: value for key, value in document.items() if key != "frames"}
  lines = [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in
           header.items()]
  entries = ",\n  ".join(json.dumps(entry) for entry in document["frames"])
  return "{\n" + "\n".join(lines) + '\n "frames": [\n  ' + entries + "\n ]\n}\n"


def read_sequence(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads a sequence written in the generic layout.

  Args:
    directory: a sequence directory holding cameras.json and the frames.

  Returns:
    dict with 'frames' (F, H, W, 3) uint8, 'camera_from_world' (F, 4, 4)
    float32, 'intrinsics' (F, 3, 3) float32 and 'trajectory' (str, "" when the
    file names none).
  """
  directory = pathlib.Path(directory)
  cameras_path = directory / CAMERAS_FILE
  if not cameras_path.is_file():
    raise FileNotFoundError(
        f"{cameras_path} not found: a generic-layout sequence directory needs "
        f"{CAMERAS_FILE} next to its {FRAMES_DIR}/ folder")
  with open(cameras_path, encoding="utf-8") as file:
    document = json.load(file)
  entries = document.get("frames")
  if not isinstance(entries, list) or not entries:
    raise ValueError(f"{cameras_path}: 'frames' must be a non-empty list of "
                     "{image, camera_from_world, intrinsics} entries")
  frames, camera_from_world, intrinsics = [], [], []
  for number, entry in enumerate(entries):
    try:
      image_path = directory / entry["image"]
      pose = np.asarray(entry["camera_from_world"], np.float32)
      matrix = np.asarray(entry["intrinsics"], np.float32)
    except (KeyError, TypeError) as error:
      raise ValueError(f"{cameras_path}: frame {number} needs 'image', "
                       "'camera_from_world' (4x4) and 'intrinsics' (3x3)") from error
    if pose.shape != (4, 4) or matrix.shape != (3, 3):
      raise ValueError(f"{cameras_path}: frame {number} has camera_from_world "
                       f"{pose.shape} and intrinsics {matrix.shape}; expected "
                       "(4, 4) and (3, 3)")
    if not image_path.is_file():
      raise FileNotFoundError(f"{image_path} listed in {cameras_path} is missing")
    with Image.open(image_path) as image:
      frames.append(np.asarray(image.convert("RGB")))
    camera_from_world.append(pose)
    intrinsics.append(matrix)
  shapes = {frame.shape for frame in frames}
  if len(shapes) != 1:
    raise ValueError(f"{directory}: frames differ in size {sorted(shapes)}; all "
                     "frames of a sequence must have the same size")
  return {
      "frames": np.stack(frames),
      "camera_from_world": np.stack(camera_from_world),
      "intrinsics": np.stack(intrinsics),
      "trajectory": str(document.get("trajectory", "")),
  }
