"""The app's shipped presets: camera-motion clips and example context scenes.

Files (written by ``python -m xfactor_core.app.make_presets``)::

    presets/motions/<slug>.mp4   short target clip (synthetic world, 128 px)
    presets/motions/<slug>.json  {"name", "description", "clip", "num_frames",
                                  "size", "fps", "motion", "licence", ...}
    presets/contexts/<slug>/view_0.jpg ...
    presets/contexts/<slug>.json {"name", "files", "num_views", "licence", ...}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Any, Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PRESETS_DIR = REPO_ROOT / "presets"


def slugify(name: str) -> str:
  """``"zoom in + pan right"`` -> ``"zoom_in_pan_right"``."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclasses.dataclass(frozen=True)
class MotionPreset:
  """A named camera motion with its target clip."""
  name: str
  clip: pathlib.Path
  description: str = ""
  num_frames: int = 0
  fps: float = 12.0
  info: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class ContextExample:
  """An example context: one view, or several for multi-view models."""
  name: str
  files: tuple[pathlib.Path, ...]
  licence: str = ""
  info: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  @property
  def num_views(self) -> int:
    return len(self.files)


@dataclasses.dataclass(frozen=True)
class PresetLibrary:
  """Every motion preset and context example found in a presets folder."""
  root: pathlib.Path
  motions: tuple[MotionPreset, ...] = ()
  contexts: tuple[ContextExample, ...] = ()

  @property
  def motion_names(self) -> list[str]:
    return [m.name for m in self.motions]

  def motion(self, name: str) -> MotionPreset:
    """The preset called ``name`` (case-insensitive)."""
    for preset in self.motions:
      if preset.name.lower() == str(name).strip().lower():
        return preset
    known = ", ".join(self.motion_names) or "none installed"
    raise ValueError(f"unknown motion preset {name!r}; choose one of: {known}")

  def context(self, name: str) -> ContextExample:
    for example in self.contexts:
      if example.name.lower() == str(name).strip().lower():
        return example
    known = ", ".join(c.name for c in self.contexts) or "none installed"
    raise ValueError(f"unknown context example {name!r}; choose one of: "
                     f"{known}")

  def is_shipped(self, path: Any) -> bool:
    """Whether ``path`` is one of the shipped preset files."""
    try:
      resolved = pathlib.Path(path).resolve()
    except (TypeError, OSError):
      return False
    return self.root.resolve() in resolved.parents


def _read_json(path: pathlib.Path) -> Optional[dict[str, Any]]:
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    logging.warning("skipping preset %s: unreadable JSON (%s)", path, e)
    return None
  if not isinstance(data, dict) or "name" not in data:
    logging.warning("skipping preset %s: no 'name' field", path)
    return None
  return data


def load_presets(root: pathlib.Path = PRESETS_DIR) -> PresetLibrary:
  """Reads every preset JSON under ``root`` (missing files are skipped).

  A missing folder gives an empty library, so the app starts without presets.
  """
  root = pathlib.Path(root)
  motions, contexts = [], []
  for path in sorted((root / "motions").glob("*.json")):
    data = _read_json(path)
    if data is None:
      continue
    clip = root / data.get("clip", f"motions/{path.stem}.mp4")
    if not clip.is_file():
      logging.warning("skipping motion preset %s: clip %s missing", path, clip)
      continue
    motions.append(MotionPreset(
        name=data["name"], clip=clip, description=data.get("description", ""),
        num_frames=int(data.get("num_frames", 0)),
        fps=float(data.get("fps", 12.0)), info=data))
  for path in sorted((root / "contexts").glob("*.json")):
    data = _read_json(path)
    if data is None:
      continue
    files = tuple(root / f for f in data.get("files", []))
    if not files or not all(f.is_file() for f in files):
      logging.warning("skipping context example %s: image files missing", path)
      continue
    contexts.append(ContextExample(name=data["name"], files=files,
                                   licence=data.get("licence", ""), info=data))
  order = lambda item: (item.info.get("order", 1 << 20), item.name)
  if not motions and not contexts:
    logging.warning("no presets found in %s; run python -m "
                    "xfactor_core.app.make_presets", root)
  return PresetLibrary(root=root, motions=tuple(sorted(motions, key=order)),
                       contexts=tuple(sorted(contexts, key=order)))
