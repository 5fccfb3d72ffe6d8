"""The training loader: batches of clips from one or several video datasets.

How the loader knows the training step
--------------------------------------
The frame sampler's window grows with the training step, but a grain loader
runs ahead of the trainer, in threads and in worker processes that share no
memory with it. So the loader does not ask the trainer for its step. Instead
the pipeline is random-access over *batches*: batch number k (counted from
step 0 of the run) is built from a fixed slice of the shuffled video order,
with a numpy Generator seeded by (seed, process index, k), for step
k // batches_per_step. The trainer consumes one batch per micro-step, so
batch k is exactly the batch of that step, whatever the number of workers or
threads (grain hands whole batches to workers). Each batch carries its `step`
so the trainer can assert that it is in sync.

Resuming: either restore the grain iterator state (`iterator.get_state()` /
`set_state()`, e.g. with grain's orbax checkpoint handler), or simply rebuild
the loader with `start_step=<restored step>`: batches are a pure function of
(configs, seed, process index, batch number), so the resumed stream equals
the uninterrupted one.

Mixing and sharding
-------------------
Each dataset's usable videos are split into `shard_count` contiguous shards
(grain ShardOptions, default `ShardByJaxProcess(drop_remainder=True)`), so each
process reads only its own videos. Each shard is shuffled (a new permutation
every epoch) and repeated forever, and datasets are interleaved with grain's
`MapDataset.mix` in proportion to their `weight`.

Batches are dicts of numpy arrays:
  frames         B x V x S x S x 3 uint8 (clip order, see sampling.py)
  frame_indices  B x V int32, frame positions relative to view 0
  video_id       B str (not for the device)
  dataset_index  B int32, position of the dataset in the config list
  step           int64 scalar, the training step the batch is for

Use:
  configs = published_dataset_configs("stereo", {"re10k": "/data/re10k"})
  batches = iter(make_loader(configs, batch_size=64, start_step=step,
                             worker_count=8))
  batch = next(batches)  # batch["step"] == step

grain starts worker processes with "spawn", so a script that uses
worker_count > 0 needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
import grain.python as pygrain
import ml_collections
import numpy as np

from xfactor_core.data import dataset_layouts
from xfactor_core.data import sampling
from xfactor_core.data.sources import UnreadableFrameError
from xfactor_core.data.sources import VideoFrameSource

# Clip draws from one video before moving on to another video, and in all
# before giving up on a batch element.
_TRIES_PER_VIDEO = 4
_MAX_TRIES = 64



def default_dataset_config() -> ml_collections.ConfigDict:
  """The config of one dataset, with every field the loader reads.

  Fields:
    name: layout: re10k, dl3dv, mvimgnet, co3d (co3dv2) or generic.
    root: dataset root folder.
    split: "train", "test", "all" (re10k: the split folder's name).
    split_file: None, or a JSON file whose keys are the video ids to use.
    weight: mixing weight relative to the other datasets (> 0).
    image_size: side length of the square frames (same for all datasets).
    num_views: V, frames per sample: context views + target (same for all).
    window_start, window_end, window_warmup_steps: the maximum window length
      grows linearly from window_start to window_end over the warm-up steps.
    min_window: minimum window length (0: num_views).
    long_window_weight: 0 draws window lengths uniformly; a in (0, 1] favours
      long windows (0.8 is the published setting).
    gap_sigma: None, or the width of the band around the middle of the window
      that holds the multi-view reference frame (published: 0.25).
    reverse_prob: probability of reversing a clip.
    min_video_frames: videos with fewer frames are skipped (0: the sampler's
      minimum, max(num_views, min_window)).
    min_videos: usable videos each process needs at least.
    cache_dir: None (default location, see dataset_layouts.py) or the index cache
      folder.
  """
  return ml_collections.ConfigDict({
      "name": "generic",
      "root": "",
      "split": "train",
      "split_file": None,
      "weight": 1.0,
      "image_size": 256,
      "num_views": 2,
      "window_start": 5,
      "window_end": 10,
      "window_warmup_steps": 50_000,
      "min_window": 0,
      "long_window_weight": 0.0,
      "gap_sigma": None,
      "reverse_prob": 0.5,
      "min_video_frames": 0,
      "min_videos": 1,
      "cache_dir": None,
  })


# Published per-dataset settings: (window_start, window_end, weight).
_PUBLISHED_STEREO = {
    "co3d": (9, 20, 1.0),
    "dl3dv": (5, 10, 1.0),
    "re10k": (40, 100, 1.0),
    "mvimgnet": (5, 10, 1.0),
}
_PUBLISHED_MULTIVIEW = {
    "co3d": (9, 40, 2.0),
    "dl3dv": (6, 20, 5.0),
    "re10k": (40, 200, 3.0),
    "mvimgnet": (6, 20, 2.0),
}


def published_dataset_configs(
    model: str,
    roots: Mapping[str, str],
    image_size: int = 256,
) -> tuple[ml_collections.ConfigDict, ...]:
  """Dataset configs with the published sampler settings.

  Args:
    model: "stereo" (2 views) or "multiview" (5 context views + target).
    roots: dataset root per layout name, e.g. {"re10k": "/data/re10k"}; only
      these datasets are returned.
    image_size: frame size.

  Returns:
    one ConfigDict per dataset in `roots`, split "train".
  """
  if model == "stereo":
    table, num_views, long_weight, gap_sigma = _PUBLISHED_STEREO, 2, 0.0, None
  elif model == "multiview":
    table, num_views, long_weight, gap_sigma = (_PUBLISHED_MULTIVIEW, 6, 0.8,
                                                0.25)
  else:
    raise ValueError(f"model must be 'stereo' or 'multiview', not {model!r}")
  configs = []
  for name, root in roots.items():
    layout = dataset_layouts.canonical_layout(name)
    if layout not in table:
      raise ValueError(f"no published settings for {name!r}: use one of "
                       f"{', '.join(table)}")
    start, end, weight = table[layout]
    config = default_dataset_config()
    config.update({
        "name": layout,
        "root": root,
        "weight": weight,
        "image_size": image_size,
        "num_views": num_views,
        "window_start": start,
        "window_end": end,
        "window_warmup_steps": 50_000,
        "long_window_weight": long_weight,
        "gap_sigma": gap_sigma,
        "min_video_frames": max(10, num_views + 1),
    })
    configs.append(config)
  return tuple(configs)


def _config_list(configs: Any) -> list[ml_collections.ConfigDict]:
  if isinstance(configs, ml_collections.ConfigDict) and "datasets" in configs:
    configs = configs.datasets
  if isinstance(configs, (ml_collections.ConfigDict, Mapping)):
    configs = [configs]
  configs = list(configs)
  if not configs:
    raise ValueError("no dataset configs given: pass at least one "
                     "(see default_dataset_config())")
  merged = []
  for config in configs:
    full = default_dataset_config()
    unknown = set(dict(config)) - set(full)
    if unknown:
      raise ValueError(f"unknown dataset config fields {sorted(unknown)}; the "
                       f"fields are {sorted(full)}")
    full.update(dict(config))
    merged.append(full)
  for field in ("image_size", "num_views"):
    values = {int(c[field]) for c in merged}
    if len(values) > 1:
      raise ValueError(f"all datasets must share {field}, got {sorted(values)}")
  return merged


def _shard_range(num_videos: int,
                 shard_options: pygrain.ShardOptions) -> tuple[int, int]:
  count, index = shard_options.shard_count, shard_options.shard_index
  if shard_options.drop_remainder:
    size = num_videos // count
    return index * size, index * size + size
  return num_videos * index // count, num_videos * (index + 1) // count


def _dataset_label(config: ml_collections.ConfigDict) -> str:
  label = f"{config.name} at {config.root} (split {config.split!r}"
  if config.split_file:
    label += f", split file {config.split_file}"
  return label + ")"


def _seed_words(*values: int) -> int:
  """A 32-bit seed derived from integers."""
  return int(np.random.SeedSequence([int(v) for v in values]).generate_state(
      1)[0])


class ClipBatchTransform(pygrain.MapWithIndexTransform):
  """Turns batch number k and B video keys into a batch of clips.

  Keys are global video numbers: dataset d's video v is offsets[d] + v.
  """

  def __init__(self, sources: Sequence[VideoFrameSource],
               params: Sequence[sampling.WindowParams],
               shard_ranges: Sequence[tuple[int, int]], *, seed: int,
               shard_index: int, first_batch: int, batches_per_step: int):
    self._sources = tuple(sources)
    self._params = tuple(params)
    self._shard_ranges = tuple(shard_ranges)
    self._offsets = np.cumsum([0] + [len(s) for s in sources])
    self._seed = int(seed)
    self._shard_index = int(shard_index)
    self._first_batch = int(first_batch)
    self._batches_per_step = int(batches_per_step)

  @property
  def sources(self) -> tuple[VideoFrameSource, ...]:
    return self._sources

  def map_with_index(self, index: int, element: np.ndarray) -> dict:
    batch_number = self._first_batch + int(index)
    step = batch_number // self._batches_per_step
    rng = np.random.default_rng([self._seed, self._shard_index, batch_number])
    frames, frame_indices, video_ids, dataset_indices = [], [], [], []
    for key in np.asarray(element).reshape(-1):
      dataset = int(np.searchsorted(self._offsets, key, side="right") - 1)
      clip, indices, video_id = self._draw_clip(
          rng, dataset, int(key - self._offsets[dataset]), step)
      frames.append(clip)
      frame_indices.append(indices)
      video_ids.append(video_id)
      dataset_indices.append(dataset)
    return {
        "frames": np.stack(frames),
        "frame_indices": np.stack(frame_indices).astype(np.int32),
        "video_id": np.asarray(video_ids, dtype=np.str_),
        "dataset_index": np.asarray(dataset_indices, dtype=np.int32),
        "step": np.asarray(step, dtype=np.int64),
    }

  def _draw_clip(self, rng: np.random.Generator, dataset: int, video: int,
                 step: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Samples and reads one clip, moving on from unreadable frames."""
    source, params = self._sources[dataset], self._params[dataset]
    first, last = self._shard_ranges[dataset]
    for attempt in range(_MAX_TRIES):
      if attempt and attempt % _TRIES_PER_VIDEO == 0:
        video = int(rng.integers(first, last))
      num_frames = source.num_frames(video)
      if num_frames < params.num_views:
        video = int(rng.integers(first, last))
        continue
      plan = sampling.sample_clip(rng, num_frames, step, params)
      if source.has_unreadable(video, plan.positions):
        continue
      try:
        clip = source.read_clip(video, plan.positions)
      except UnreadableFrameError:
        continue
      return clip, plan.frame_indices, source.video_id(video)
    raise RuntimeError(
        f"{source.name}: {_MAX_TRIES} clips in a row had unreadable frames "
        f"({source.num_unreadable_frames} unreadable frames so far); the "
        f"dataset at {source.root} looks broken: check its files")


class ShuffledVideoKeys(pygrain.MapDataset):
  """Keys first..last-1 in a new random order every epoch, repeated forever.

  Element i is key first + perm_e[i mod n] with e = i // n and perm_e a numpy
  permutation seeded by (seed, e). (grain's own `shuffle` is slow for the
  small shards of small datasets: milliseconds per element.)
  """

  _CACHED_EPOCHS = 4

  def __init__(self, first: int, last: int, seed: int):
    super().__init__()
    if last <= first:
      raise ValueError(f"empty key range [{first}, {last})")
    self._first = int(first)
    self._count = int(last) - int(first)
    self._seed = int(seed)
    self._orders: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"]
    state["_orders"] = {}
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return sys.maxsize

  def __str__(self) -> str:
    return (f"ShuffledVideoKeys(first={self._first}, count={self._count}, "
            f"seed={self._seed})")

  def _order(self, epoch: int) -> np.ndarray:
    with self._lock:
      order = self._orders.get(epoch)
      if order is None:
        order = np.random.default_rng([self._seed, epoch]).permutation(
            self._count)
        if len(self._orders) >= self._CACHED_EPOCHS:
          del self._orders[min(self._orders)]
        self._orders[epoch] = order
      return order

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position = divmod(int(index), self._count)
    return self._first + int(self._order(epoch)[position])


def build_sources(
    configs: Any,
    shard_options: pygrain.ShardOptions,
) -> tuple[list[ml_collections.ConfigDict], list[VideoFrameSource],
           list[sampling.WindowParams], list[tuple[int, int]]]:
  """Indexes the datasets and checks that every shard has enough videos.

  Args:
    configs: dataset config(s), see make_clip_dataset.
    shard_options: which shard this process reads.

  Returns:
    (full configs, sources, sampler params, per-dataset shard ranges of
    source indices).
  """
  configs = _config_list(configs)
  sources, params, ranges = [], [], []
  for config in configs:
    window = sampling.WindowParams.from_config(config)
    if not float(config.weight) > 0:
      raise ValueError(f"dataset {_dataset_label(config)} has weight "
                       f"{config.weight}; weights must be > 0 (leave the "
                       "dataset out instead)")
    index = dataset_layouts.index_videos(config.name, config.root, config.split,
                                 config.split_file or None,
                                 config.cache_dir or None)
    min_frames = max(window.min_length, int(config.min_video_frames))
    source = VideoFrameSource(index, image_size=int(config.image_size),
                              min_frames=min_frames,
                              name=f"{index.layout}/{index.split}")
    first, last = _shard_range(len(source), shard_options)
    min_videos = max(int(config.min_videos), 1)
    if last - first < min_videos:
      needed = min_videos * shard_options.shard_count
      raise ValueError(
          f"dataset {_dataset_label(config)} has too few usable videos: found "
          f"{len(source)} with at least {min_frames} frames "
          f"({len(index.videos)} indexed, {source.num_too_short} shorter), "
          f"but needs {needed} "
          f"({min_videos} per process x {shard_options.shard_count} processes)"
          ". Check root, split and split_file, or lower min_videos / "
          "min_video_frames.")
    logging.info("%s: %d usable videos, this process reads %d (shard %d/%d)",
                 _dataset_label(config), len(source), last - first,
                 shard_options.shard_index, shard_options.shard_count)
    sources.append(source)
    params.append(window)
    ranges.append((first, last))
  return configs, sources, params, ranges


def make_clip_dataset(
    configs: Any,
    batch_size: int,
    *,
    seed: int = 0,
    start_step: int = 0,
    batches_per_step: int = 1,
    shard_options: pygrain.ShardOptions | None = None,
) -> pygrain.MapDataset:
  """A random-access grain dataset of batches: element k is batch k.

  Args:
    configs: one dataset ConfigDict, a sequence of them, or a ConfigDict
      with a `datasets` field holding them (missing fields take
      default_dataset_config() values).
    batch_size: clips per batch for this process.
    seed: data seed.
    start_step: training step of element 0 (resuming).
    batches_per_step: batches per training step (gradient accumulation).
    shard_options: this process's shard (default ShardByJaxProcess).

  Returns:
    an (effectively infinite) MapDataset; element k is the batch for step
    start_step + k // batches_per_step.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be at least 1")
  if batches_per_step < 1:
    raise ValueError(f"batches_per_step={batches_per_step} must be >= 1")
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0")
  if shard_options is None:
    shard_options = pygrain.ShardByJaxProcess(drop_remainder=True)
  configs, sources, params, ranges = build_sources(configs, shard_options)
  offsets = np.cumsum([0] + [len(s) for s in sources])
  keys = [
      ShuffledVideoKeys(int(offsets[d]) + first, int(offsets[d]) + last,
                        seed=_seed_words(seed, d))
      for d, (first, last) in enumerate(ranges)
  ]
  if len(keys) == 1:
    mixed = keys[0]
  else:
    mixed = pygrain.MapDataset.mix(keys, [float(c.weight) for c in configs])
  first_batch = int(start_step) * int(batches_per_step)
  batches = mixed.batch(int(batch_size), drop_remainder=True)[first_batch:]
  return batches.map_with_index(
      ClipBatchTransform(sources, params, ranges, seed=seed,
                         shard_index=shard_options.shard_index,
                         first_batch=first_batch,
                         batches_per_step=batches_per_step))


def make_loader(
    configs: Any,
    batch_size: int,
    *,
    seed: int = 0,
    start_step: int = 0,
    batches_per_step: int = 1,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 2,
    prefetch_batches: int = 2,
    shard_options: pygrain.ShardOptions | None = None,
) -> pygrain.IterDataset:
  """The training loader the trainer iterates (see the module docstring).

  Args:
    configs: dataset config(s), as for make_clip_dataset.
    batch_size: clips per batch for this process.
    seed: data seed.
    start_step: training step of the first batch (resuming).
    batches_per_step: batches per training step (gradient accumulation).
    worker_count: grain worker processes (0: load in this process).
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: threads per process that build batches concurrently.
    prefetch_batches: batches buffered by those threads.
    shard_options: this process's shard (default ShardByJaxProcess).

  Returns:
    a grain IterDataset; `iter()` gives a checkpointable iterator of batch
    dicts (frames B x V x S x S x 3 uint8, frame_indices B x V int32,
    video_id B str, dataset_index B int32, step scalar int64).
  """
  if worker_count < 0 or read_threads < 0 or prefetch_batches < 0:
    raise ValueError("worker_count, read_threads and prefetch_batches must "
                     "be >= 0")
  dataset = make_clip_dataset(configs, batch_size, seed=seed,
                              start_step=start_step,
                              batches_per_step=batches_per_step,
                              shard_options=shard_options)
  iterable = dataset.to_iter_dataset(
      pygrain.ReadOptions(num_threads=read_threads,
                          prefetch_buffer_size=prefetch_batches))
  if worker_count > 0:
    # grain's worker processes read absl flags (their defaults are fine); a
    # trainer that is not an absl app has not parsed them.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iterable = iterable.mp_prefetch(
        pygrain.MultiprocessingOptions(
            num_workers=worker_count,
            per_worker_buffer_size=worker_buffer_size))
  return iterable
