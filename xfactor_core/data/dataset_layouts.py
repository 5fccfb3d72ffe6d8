"""Directory layouts of the training video datasets, and their cached index.

Layouts (`name` in the dataset config):

  re10k     <root>/<split>/images/<video>/<n>.png; `split` names the folder
            ("all": every <root>/<s>/images folder).
  dl3dv     <root>/training_256/<part>/<video>/images_8/frame_<n>.png. The
            folder names in <root>/test_256/benchmark_960p/ are the test ids:
            "train" is every other video, "test" those ids (found under
            training_256, else under benchmark_960p/<id>/images_8 or
            benchmark_960p/<id>), "all" both.
  mvimgnet  <root>/<category>/<scene>/images/NNN.jpg
  co3d      <root>/<category>/<sequence>/images/frameNNNNNN.jpg ("co3dv2" too)
            For both: within each category the sorted scene folders are split
            into the first int(0.9 n) ("train") and the rest ("test").
  generic   sequence folders holding frames directly, or in frames/ or
            images/ (the synthetic world writes <sequence>/frames/00000.png,
            and transfer pairs <n>/a/frames/...), and video files
            (`media.VIDEO_SUFFIXES`), found in <root> and in folders
            of it up to 3 levels deep; the id is the path below <root>
            (without the video extension). "train"/"test" split the
            naturally sorted ids 90/10 like above; "all" keeps every one.

Frames sort in natural order (frame_2 before frame_10). Names starting with a
dot are ignored. A split file (JSON whose keys, or list items, are video ids)
replaces the layout's own train/test rule (for re10k the split still names the
folder); an id matches a key equal to it or to its last path component.

The index (every video and its frame names) is built once and cached as
gzipped JSON under `cache_dir` (default <root>/.xfactor_index, or
$XDG_CACHE_HOME/xfactor_studio/video_index when the root is read-only). The
cache is reused while a cheap fingerprint matches: the list of video folders
and files with their modification times (and sizes for video files), so adding
or removing a video or a frame rebuilds it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence

from tqdm import tqdm

from xfactor_core.inference import media

_INDEX_FORMAT = 1
_TRAIN_FRACTION = 0.9
_FRAME_NAME_SEPARATOR = "\n"
# Folders of sequence folders are searched this deep (pairs/<n>/a/frames).
_GENERIC_MAX_DEPTH = 3

LAYOUTS = ("re10k", "dl3dv", "mvimgnet", "co3d", "generic")
_LAYOUT_ALIASES = {
    "co3dv2": "co3d",
    "realestate10k": "re10k",
    "folders": "generic",
    "videos": "generic",
}


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A video found by a layout, before its frames are listed.

  Attributes:
    video_id: the id (split files refer to it).
    rel_path: folder of frames or video file, relative to the dataset root.
    is_video_file: whether rel_path is a video file.
  """
  video_id: str
  rel_path: str
  is_video_file: bool


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """One indexed video.

  Attributes:
    video_id: the id.
    rel_path: folder of frames or video file, relative to the dataset root.
    is_video_file: whether rel_path is a video file.
    num_frames: number of frames.
    frame_names: the frame file names in order, joined by newlines ("" for
      video files); one string per video keeps big indices compact.
  """
  video_id: str
  rel_path: str
  is_video_file: bool
  num_frames: int
  frame_names: str = ""

  def frame_name(self, position: int) -> str:
    return self.frame_names.split(_FRAME_NAME_SEPARATOR)[position]


@dataclasses.dataclass(frozen=True)
class VideoIndex:
  """The videos of one dataset split.

  Attributes:
    layout: canonical layout name.
    root: absolute dataset root.
    split: the split.
    videos: indexed videos with at least one frame, in id order.
    from_cache: whether the index was read from the cache.
    cache_path: the cache file ("" when caching is off or failed).
  """
  layout: str
  root: str
  split: str
  videos: tuple[VideoEntry, ...]
  from_cache: bool
  cache_path: str


def canonical_layout(name: str) -> str:
  """Maps a layout name or alias to one of LAYOUTS."""
  key = str(name).strip().lower()
  key = _LAYOUT_ALIASES.get(key, key)
  if key not in LAYOUTS:
    raise ValueError(f"unknown dataset layout {name!r}: use one of "
                     f"{', '.join(LAYOUTS)} (aliases: "
                     f"{', '.join(sorted(_LAYOUT_ALIASES))})")
  return key


def _visible_entries(path: str) -> list[os.DirEntry]:
  with os.scandir(path) as entries:
    return sorted((e for e in entries if not e.name.startswith(".")),
                  key=lambda e: media.natural_sort_key(e.name))


def _subdirs(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  return [e.name for e in _visible_entries(path) if e.is_dir()]


def _train_test(items: Sequence, split: str) -> list:
  """First int(0.9 n) items for "train", the rest for "test"."""
  num_train = int(_TRAIN_FRACTION * len(items))
  if split == "train":
    return list(items[:num_train])
  if split == "test":
    return list(items[num_train:])
  return list(items)


def _check_split(layout: str, split: str, allowed: Iterable[str]) -> None:
  allowed = tuple(allowed)
  if split not in allowed:
    raise ValueError(f"{layout} has no split {split!r}: use one of "
                     f"{', '.join(allowed)}, or a split_file")


def _re10k_candidates(root: str, split: str) -> list[Candidate]:
  if split == "all":
    splits = [s for s in _subdirs(root)
              if os.path.isdir(os.path.join(root, s, "images"))]
  else:
    splits = [split]
  candidates = []
  for split_name in splits:
    base = os.path.join(root, split_name, "images")
    if not os.path.isdir(base):
      raise FileNotFoundError(
          f"RE10K layout expects frames at <root>/<split>/images/<video>/"
          f"<n>.png, but {base} is not a folder; check `root` and `split` "
          f"(split={split!r})")
    candidates.extend(
        Candidate(video, f"{split_name}/images/{video}", False)
        for video in _subdirs(base))
  return candidates


def _dl3dv_candidates(root: str, split: str,
                      by_split_file: bool) -> list[Candidate]:
  if not by_split_file:
    _check_split("dl3dv", split, ("train", "test", "all"))
  train_root = os.path.join(root, "training_256")
  if not os.path.isdir(train_root):
    raise FileNotFoundError(
        f"DL3DV layout expects <root>/training_256/<part>/<video>/images_8/"
        f"frame_<n>.png, but {train_root} is not a folder; check `root`")
  bench_root = os.path.join(root, "test_256", "benchmark_960p")
  test_ids = set(_subdirs(bench_root)) if os.path.isdir(bench_root) else None
  found = {}
  for part in _subdirs(train_root):
    for video in _subdirs(os.path.join(train_root, part)):
      rel = f"training_256/{part}/{video}/images_8"
      if os.path.isdir(os.path.join(root, rel)):
        if video in found:
          logging.warning("DL3DV video %s appears twice; keeping %s", video,
                          found[video].rel_path)
          continue
        found[video] = Candidate(video, rel, False)
  keep_all = by_split_file or split == "all"
  if test_ids is None and split == "test" and not by_split_file:
    raise FileNotFoundError(
        f"DL3DV split 'test' needs the benchmark list {bench_root} (its "
        "folder names are the test ids); it is missing")
  if test_ids is None:
    if not keep_all:
      logging.warning("DL3DV: no benchmark list at %s, so 'train' keeps "
                      "every video", bench_root)
    test_ids = set()
  if keep_all:
    candidates = list(found.values())
  elif split == "train":
    candidates = [c for v, c in found.items() if v not in test_ids]
  else:
    candidates = [c for v, c in found.items() if v in test_ids]
  if keep_all or split == "test":
    # Benchmark videos that are not among the training folders.
    for video in sorted(test_ids - set(found), key=media.natural_sort_key):
      nested = f"test_256/benchmark_960p/{video}/images_8"
      flat = f"test_256/benchmark_960p/{video}"
      rel = nested if os.path.isdir(os.path.join(root, nested)) else flat
      candidates.append(Candidate(video, rel, False))
  return candidates


def _category_candidates(root: str, split: str, layout: str,
                         by_split_file: bool) -> list[Candidate]:
  if not by_split_file:
    _check_split(layout, split, ("train", "test", "all"))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{layout} root {root} is not a folder")
  candidates = []
  for category in _subdirs(root):
    category_dir = os.path.join(root, category)
    scenes = sorted(
        s for s in _subdirs(category_dir)
        if os.path.isdir(os.path.join(category_dir, s, "images")))
    if not by_split_file:
      scenes = _train_test(scenes, split)
    candidates.extend(
        Candidate(f"{category}/{scene}", f"{category}/{scene}/images", False)
        for scene in scenes)
  return candidates


def _generic_folder(root: str, rel: str, depth: int,
                    candidates: list[Candidate]) -> None:
  """Adds the sequences found in root/rel (rel "" is the root itself)."""
  for entry in _visible_entries(os.path.join(root, rel)):
    rel_path = f"{rel}/{entry.name}" if rel else entry.name
    if entry.is_file():
      if media.is_video_file(entry.name):
        candidates.append(
            Candidate(os.path.splitext(rel_path)[0], rel_path, True))
      continue
    if not entry.is_dir():
      continue
    for sub in ("frames", "images"):
      if os.path.isdir(os.path.join(entry.path, sub)):
        candidates.append(Candidate(rel_path, f"{rel_path}/{sub}", False))
        break
    else:
      if any(e.is_file() and media.is_image_file(e.name)
             for e in _visible_entries(entry.path)):
        candidates.append(Candidate(rel_path, rel_path, False))
      elif depth > 1:
        _generic_folder(root, rel_path, depth - 1, candidates)


def _generic_candidates(root: str, split: str,
                        by_split_file: bool) -> list[Candidate]:
  if not by_split_file:
    _check_split("generic", split, ("train", "test", "all"))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"generic dataset root {root} is not a folder")
  candidates = []
  _generic_folder(root, "", _GENERIC_MAX_DEPTH, candidates)
  candidates.sort(key=lambda c: media.natural_sort_key(c.video_id))
  if not by_split_file:
    candidates = _train_test(candidates, split)
  return candidates


def find_candidates(layout: str, root: str, split: str,
                    by_split_file: bool = False) -> list[Candidate]:
  """Lists the videos of a layout split without listing their frames."""
  layout = canonical_layout(layout)
  if layout == "re10k":
    return _re10k_candidates(root, split)
  if layout == "dl3dv":
    return _dl3dv_candidates(root, split, by_split_file)
  if layout in ("mvimgnet", "co3d"):
    return _category_candidates(root, split, layout, by_split_file)
  return _generic_candidates(root, split, by_split_file)


def read_split_file(path: str) -> frozenset[str]:
  """Video ids of a split file: the keys of a JSON object (or list items)."""
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"split file {path} does not exist") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"split file {path} is not valid JSON: {e}") from e
  if isinstance(content, dict):
    return frozenset(str(k) for k in content)
  if isinstance(content, list):
    return frozenset(str(k) for k in content)
  raise ValueError(f"split file {path} must hold a JSON object whose keys "
                   f"are video ids (or a list of ids), not a "
                   f"{type(content).__name__}")


def apply_split_ids(candidates: Sequence[Candidate], ids: frozenset[str],
                    source: str = "split file") -> list[Candidate]:
  """Keeps the candidates whose id, or its last component, is in `ids`."""
  kept = []
  matched = set()
  for candidate in candidates:
    short = candidate.video_id.rsplit("/", 1)[-1]
    if candidate.video_id in ids:
      matched.add(candidate.video_id)
      kept.append(candidate)
    elif short in ids:
      matched.add(short)
      kept.append(candidate)
  missing = len(ids) - len(matched)
  if missing:
    logging.warning("%d of the %d ids in %s match no video on disk", missing,
                    len(ids), source)
  return kept


def _fingerprint(root: str, candidates: Sequence[Candidate],
                 header: Sequence) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps(list(header)).encode())
  for candidate in candidates:
    try:
      stat = os.stat(os.path.join(root, candidate.rel_path))
      signature = (stat.st_mtime_ns,
                   stat.st_size if candidate.is_video_file else 0)
    except OSError:
      signature = (-1, -1)
    digest.update(json.dumps([candidate.video_id, candidate.rel_path,
                              candidate.is_video_file, *signature]).encode())
  return digest.hexdigest()


def user_cache_dir() -> str:
  """$XDG_CACHE_HOME/xfactor_studio/video_index (default ~/.cache/...)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "xfactor_studio", "video_index")


def default_cache_dir(root: str) -> str:
  """<root>/.xfactor_index when writable, else the per-user cache folder."""
  if os.access(root, os.W_OK):
    return os.path.join(root, ".xfactor_index")
  return user_cache_dir()


def _cache_file_name(layout: str, root: str, split: str,
                     split_file: str | None) -> str:
  split_path = os.path.realpath(split_file) if split_file else ""
  key = f"{os.path.realpath(root)}|{split_path}"
  tag = hashlib.sha1(key.encode()).hexdigest()[:16]
  safe_split = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
  return f"{layout}-{safe_split}-{tag}.json.gz"


def _list_frames(root: str, candidate: Candidate) -> VideoEntry:
  path = os.path.join(root, candidate.rel_path)
  if candidate.is_video_file:
    try:
      num_frames = media.count_video_frames(path)
    except media.MediaError as e:
      logging.warning("cannot read video %s: %s", path, e)
      num_frames = 0
    return VideoEntry(candidate.video_id, candidate.rel_path, True, num_frames)
  try:
    names = [e.name for e in _visible_entries(path)
             if e.is_file() and media.is_image_file(e.name)]
  except OSError as e:
    logging.warning("cannot list frames of %s: %s", path, e)
    names = []
  if any(_FRAME_NAME_SEPARATOR in n for n in names):
    names = [n for n in names if _FRAME_NAME_SEPARATOR not in n]
  return VideoEntry(candidate.video_id, candidate.rel_path, False, len(names),
                    _FRAME_NAME_SEPARATOR.join(names))


def _load_cache(path: str, fingerprint: str) -> list[VideoEntry] | None:
  try:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      content = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError, EOFError) as e:
    logging.warning("ignoring unreadable video index cache %s: %s", path, e)
    return None
  if (content.get("format") != _INDEX_FORMAT or
      content.get("fingerprint") != fingerprint):
    return None
  return [VideoEntry(v[0], v[1], bool(v[2]), int(v[3]), v[4])
          for v in content["videos"]]


def _save_cache(path: str, fingerprint: str, layout: str, root: str,
                split: str, videos: Sequence[VideoEntry]) -> bool:
  content = {
      "format": _INDEX_FORMAT,
      "fingerprint": fingerprint,
      "layout": layout,
      "root": root,
      "split": split,
      "videos": [[v.video_id, v.rel_path, v.is_video_file, v.num_frames,
                  v.frame_names] for v in videos],
  }
  directory = os.path.dirname(path)
  try:
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
      with os.fdopen(handle, "wb") as raw, gzip.open(raw, "wt",
                                                     encoding="utf-8") as f:
        json.dump(content, f)
      os.replace(temp_path, path)
    except BaseException:
      if os.path.exists(temp_path):
        os.remove(temp_path)
      raise
  except OSError as e:
    logging.warning("cannot write the video index cache %s: %s", path, e)
    return False
  return True


def index_videos(layout: str,
                 root: str,
                 split: str = "train",
                 split_file: str | None = None,
                 cache_dir: str | None = None,
                 use_cache: bool = True) -> VideoIndex:
  """Finds the videos of a dataset split and lists their frames (cached).

  Args:
    layout: one of LAYOUTS (or an alias).
    root: dataset root folder.
    split: split name (see the module docstring).
    split_file: optional JSON split file; it replaces the layout's train/test
      rule.
    cache_dir: where the index is cached (default: see default_cache_dir).
    use_cache: False always rebuilds and writes nothing.

  Returns:
    the VideoIndex; videos without frames are left out.
  """
  layout = canonical_layout(layout)
  if not root:
    raise ValueError(f"dataset root is empty: set `root` of the {layout} "
                     "dataset config to the folder that holds it")
  root = os.path.abspath(os.path.expanduser(str(root)))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{layout} dataset root {root} does not exist or "
                            "is not a folder")
  split = str(split)
  started = time.monotonic()
  candidates = find_candidates(layout, root, split,
                               by_split_file=bool(split_file))
  split_digest = ""
  if split_file:
    ids = read_split_file(split_file)
    candidates = apply_split_ids(candidates, ids, source=split_file)
    split_digest = hashlib.sha256(
        "\n".join(sorted(ids)).encode()).hexdigest()
  fingerprint = _fingerprint(
      root, candidates, (_INDEX_FORMAT, layout, split, split_digest))

  # An explicit cache_dir is the only place; by default the root, then the
  # user cache folder when the root turns out not to be writable.
  file_name = _cache_file_name(layout, root, split, split_file)
  if cache_dir:
    cache_dirs = [cache_dir]
  else:
    cache_dirs = list(dict.fromkeys([default_cache_dir(root),
                                     user_cache_dir()]))
  if use_cache:
    for directory in cache_dirs:
      path = os.path.join(directory, file_name)
      cached = _load_cache(path, fingerprint)
      if cached is not None:
        logging.info("read the index of %d %s/%s videos from %s",
                     len(cached), layout, split, path)
        return VideoIndex(layout, root, split, tuple(cached), True, path)

  progress = tqdm(candidates, desc=f"indexing {layout}/{split}", unit="video",
                  disable=None if len(candidates) > 200 else True)
  videos = [v for v in (_list_frames(root, c) for c in progress)
            if v.num_frames > 0]
  cache_path = ""
  if use_cache:
    for directory in cache_dirs:
      path = os.path.join(directory, file_name)
      if _save_cache(path, fingerprint, layout, root, split, videos):
        cache_path = path
        break
  logging.info("indexed %d %s/%s videos (%d frames) in %.1f s", len(videos),
               layout, split, sum(v.num_frames for v in videos),
               time.monotonic() - started)
  return VideoIndex(layout, root, split, tuple(videos), False, cache_path)
