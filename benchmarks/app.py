"""App latency: seconds from a transfer request to the finished video.

    python benchmarks/app.py [--checkpoint DIR] [--frames 30] [--repeats 3]
        [--mode in-process server flow warp published]
        [--random-config published|small|flow|warp]
        [--image-size S] [--flow-output-size 512] [--json OUT]
        [--compare OLD.json]

Times a transfer of a preset motion onto an example context, as the app runs
it: "first" is the first request after start (model loading and compilation
included), "warm" the median of the following ones. The cases:

* ``in-process``: the app's job function (``xfactor_core.app.jobs``), without
  the persistent compilation cache, so "first" pays the full compilation;
* ``server``: ``python app.py`` on a local port, driven by ``gradio_client``
  through the ``/transfer`` endpoint (queue, upload and download included;
  the app's persistent compilation cache is left as configured);
* ``flow``: in-process, a model with the appearance-flow renderer of the
  default size (random weights, ``RANDOM_CONFIGS["flow"]``: 128 px model)
  rendering ``--flow-output-size`` px output sampled from the context photo
  (issue 13's target: a 30-frame transfer at 512 px under 3 s warm on two
  cores);
* ``warp``: the same for the smooth-warp renderer of the smooth-warp demo's
  recipe (``RANDOM_CONFIGS["warp"]``, ``configs/smooth_warp.py:sm``), timed
  in the same run as ``flow`` so the two heads compare side by side;
* ``published``: the published model's size end to end, as a user gets it.
  A release archive of random weights in the published layout (params plus
  optimiser moments, as the real archives hold) is served from a local HTTP
  server and installed with ``python -m xfactor_core.fetch`` (its time and
  peak memory are measured); then the app's job function transfers 30
  frames at 256 px with it, streaming: seconds to the first frame and to the
  last, first call (loading and compilation) and warm, against the
  pre-streaming order measured in the same run (the whole camera path, then
  frames in chunks of 8); where the time goes (PoseEnc and Render per frame,
  their FLOP/s against the matmul peak); and the app's estimate beside the
  time measured.

The model of the first two is the shipped stereo-monocular default, or
``--checkpoint``, or, with ``--random-config``, random weights of that size
written to a temporary checkpoint (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import jax

from xfactor_core import benchmarking, checkpoints, fetch, fetch_testing
from xfactor_core.app import (estimates, jobs, presets, registry, sessions,
                              testing)
from xfactor_core.inference import media
from xfactor_core.inference.pipeline import DEFAULT_MODELS

CONTEXT = "photo: cat"
MOTION = "orbit left"
RANDOM_CONFIGS = {
    "published": (checkpoints.PUBLISHED_CONFIG, 256),
    "small": (checkpoints.ModelConfig(features=256, num_heads=4, patch_size=16,
                                      pose_layers=4, render_layers=4,
                                      pose_dim=64), 128),
    # The default models' recipe (issue 13): 16 x 16 tokens, few global
    # tokens, the appearance-flow renderer.
    "flow": (checkpoints.ModelConfig(features=128, num_heads=4, patch_size=8,
                                     pose_layers=4, render_layers=4,
                                     pose_dim=64, num_global_tokens=2,
                                     render_output="flow"), 128),
    # The smooth-warp demo's recipe (issue 26, configs/smooth_warp.py:sm):
    # 8 x 8 tokens, the correlation pair input, the warp renderer.
    "warp": (checkpoints.ModelConfig(features=128, num_heads=4, patch_size=16,
                                     pose_layers=4, render_layers=4,
                                     pose_dim=64, num_global_tokens=8,
                                     render_output="warp",
                                     pair_input="correlation"), 128),
    # For tests of the published mode's plumbing (--published-size tiny).
    "tiny": (checkpoints.ModelConfig(features=32, num_heads=2, patch_size=8,
                                     pose_layers=1, render_layers=1,
                                     pose_dim=8, num_global_tokens=2), 64),
}


def write_random_checkpoint(folder: pathlib.Path, name: str) -> pathlib.Path:
  """Random weights of a named config, saved as a checkpoint + model.json."""
  config, size = RANDOM_CONFIGS[name]
  return testing.write_random_checkpoint(folder, config, image_size=size,
                                         name=f"random {name}")


def _library() -> presets.PresetLibrary:
  library = presets.load_presets()
  library.motion(MOTION)
  library.context(CONTEXT)
  return library


def time_in_process(checkpoint: pathlib.Path, frames: int, repeats: int,
                    resolution: Optional[int],
                    mode: str = "in-process") -> dict:
  """Times ``jobs.transfer`` in this process: the first call and the warm
  median. ``resolution``: the app's resolution setting (the working size of
  RGB models, the output size of flow models; None: the model's default)."""
  library = _library()
  specs = registry.discover_models(checkpoint, defaults={})
  models_ = registry.ModelRegistry(specs)
  request = jobs.TransferRequest(
      specs[0].model_id,
      tuple(str(f) for f in library.context(CONTEXT).files),
      jobs.MotionRequest("preset", MOTION),
      jobs.TransferSettings(num_frames=frames, resolution=resolution))
  times = []
  with tempfile.TemporaryDirectory() as tmp:
    for index in range(repeats + 1):
      start = time.perf_counter()
      result = jobs.transfer(models_, library, request,
                             sessions.new_workdir(pathlib.Path(tmp)))
      times.append(time.perf_counter() - start)
      logging.info("in-process run %d: %.2f s", index, times[-1])
  spec = models_.spec(specs[0].model_id)
  return {"mode": mode, "model": spec.label,
          "parameters": spec.num_parameters, "image_size": result.image_size,
          "output_size": result.output_size,
          "frames": result.num_frames, "first_s": times[0],
          "warm_s": statistics.median(times[1:]),
          "warm_ms_per_frame": 1e3 * statistics.median(times[1:]) / frames}


def time_server(checkpoint: pathlib.Path, frames: int, repeats: int) -> dict:
  from gradio_client import Client, handle_file
  library = _library()
  context = [handle_file(str(f)) for f in library.context(CONTEXT).files]
  folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
  times = []
  with testing.serve_app(folder, startup_timeout=300) as url:
    client = Client(url, verbose=False)
    for index in range(repeats + 1):
      start = time.perf_counter()
      video, _ = client.predict(context=context, target=None, preset=MOTION,
                                num_frames=frames, api_name="/transfer")
      times.append(time.perf_counter() - start)
      logging.info("server run %d: %.2f s (%s)", index, times[-1], video)
  return {"mode": "server (gradio_client)", "model": folder.name,
          "frames": frames, "first_s": times[0],
          "warm_s": statistics.median(times[1:]),
          "warm_ms_per_frame": 1e3 * statistics.median(times[1:]) / frames}


def _published_archive(folder: pathlib.Path, size: str) -> pathlib.Path:
  """A release zip of random weights of the named size (published: 305M),
  with optimiser moments (the same arrays twice: the archive's size without
  the memory)."""
  config, image_size = RANDOM_CONFIGS[size]
  model = testing.write_random_checkpoint(folder / "weights", config,
                                          image_size=image_size)
  params = checkpoints.load_params(model)
  state = {"step": 0, "params": params,
           "opt_state": {"0": {"mu": params, "nu": params}}}
  archive = fetch_testing.make_release_archive(folder / "release.zip",
                                               state=state)
  shutil.rmtree(model)
  return archive


def _children_peak_rss() -> Optional[float]:
  """Peak resident bytes of the finished child processes (POSIX ``resource``,
  imported here: Windows has none, and gets ``None``)."""
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return peak * (1 if sys.platform == "darwin" else 1024)  # macOS: bytes


def time_fetch(archive: pathlib.Path, home: pathlib.Path) -> dict:
  """``python -m xfactor_core.fetch sm`` from a local server: seconds and
  the fetch process's peak memory."""
  with fetch_testing.ArchiveServer() as server:
    url = server.serve("stereo_monocular.zip", archive)
    env = {**os.environ, fetch.HOME_ENV: str(home)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xfactor_core.fetch", "sm", "--url",
                    url], env=env, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
  peak = _children_peak_rss()
  installed = fetch.cache_entry("sm", home).installed_bytes
  return {"archive_GB": archive.stat().st_size / 1e9,
          "installed_GB": installed / 1e9, "fetch_s": seconds,
          "fetch_peak_rss_GB": peak / 1e9 if peak is not None else None}


def _stream(models_, library, request, workdir, estimator=None
            ) -> tuple[float, float]:
  """(seconds to the first frame, seconds to the finished video)."""
  start, first = time.perf_counter(), None
  for update in jobs.run_transfer(models_, library, request, workdir,
                                  estimator=estimator):
    if first is None and update.frames:
      first = time.perf_counter() - start
    if update.result is not None:
      return first, time.perf_counter() - start
  raise RuntimeError("the transfer ended without a result")


def _pre_streaming(pipe, library, frames: int) -> tuple[float, float]:
  """The order before streaming: the whole camera path, then chunks of 8."""
  pipe = dataclasses.replace(pipe, batch_size=8)
  context = pipe.prepare([media.read_image(f) for f in
                         library.context(CONTEXT).files], "context")
  target = pipe.prepare(media.read_video(library.motion(MOTION).clip)[:frames],
                        "target")
  start, first = time.perf_counter(), None
  path = pipe.camera_path(target)
  for _, chunk in pipe.render_chunks(context, path):
    if first is None:
      first = time.perf_counter() - start
  return first, time.perf_counter() - start


def time_published(frames: int, repeats: int, size: str = "published"
                   ) -> tuple[list, dict]:
  """The published size end to end (see the module docstring); another
  ``size`` of RANDOM_CONFIGS stands in for it through XFACTOR_SOURCES."""
  library = _library()
  rows, facts = [], {}
  with tempfile.TemporaryDirectory() as tmp, _sources_for(size, tmp):
    tmp = pathlib.Path(tmp)
    start = time.perf_counter()
    archive = _published_archive(tmp, size)
    facts["archive_build_s"] = time.perf_counter() - start
    facts.update(time_fetch(archive, tmp / "home"))
    archive.unlink()
    model = fetch.sources()["sm"]
    specs = registry.discover_models(published=[model], defaults={},
                                     cache_root=tmp / "home")
    models_ = registry.ModelRegistry(specs)
    estimator = estimates.Estimator()
    request = jobs.TransferRequest(
        specs[0].model_id,
        tuple(str(f) for f in library.context(CONTEXT).files),
        jobs.MotionRequest("preset", MOTION),
        jobs.TransferSettings(num_frames=frames))
    start = time.perf_counter()
    pipe = models_.get(specs[0].model_id)
    facts["load_s"] = time.perf_counter() - start
    facts["chunk_frames"] = pipe.batch_size
    facts["estimate_before_s"] = estimator.estimate_seconds(
        specs[0].model_id, pipe, frames, 1).seconds
    streamed = []
    for index in range(repeats + 1):
      streamed.append(_stream(models_, library, request,
                              sessions.new_workdir(tmp), estimator))
      logging.info("published, streamed run %d: first frame %.1f s, all "
                   "%.1f s", index, *streamed[-1])
    facts["estimate_after_s"] = estimator.estimate_seconds(
        specs[0].model_id, pipe, frames, 1).seconds
    before = [_pre_streaming(pipe, library, frames) for _ in range(2)]
    for name, runs, first_call in (
        ("streamed (chunks of %d)" % pipe.batch_size, streamed[1:],
         streamed[0]),
        ("pre-streaming order (path, then chunks of 8)", before[1:],
         before[0])):
      rows.append({
          "order": name, "first_call_first_frame_s": first_call[0],
          "first_call_total_s": first_call[1],
          "warm_first_frame_s": statistics.median(r[0] for r in runs),
          "warm_total_s": statistics.median(r[1] for r in runs),
          "warm_ms_per_frame": 1e3 * statistics.median(
              r[1] for r in runs) / frames})
    facts.update(_where_time_goes(pipe))
  return rows, facts


@contextlib.contextmanager
def _sources_for(size: str, folder: str):
  """XFACTOR_SOURCES naming ``size``'s config for the "sm" model while the
  block runs (nothing for the published size)."""
  if size == "published":
    yield
    return
  config, image_size = RANDOM_CONFIGS[size]
  path = pathlib.Path(folder) / "sources.json"
  path.write_text(json.dumps({"sm": {"config": config.to_dict(),
                                     "image_size": image_size}}))
  old = os.environ.get(fetch.SOURCES_ENV)
  os.environ[fetch.SOURCES_ENV] = str(path)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop(fetch.SOURCES_ENV, None)
    else:
      os.environ[fetch.SOURCES_ENV] = old


def _where_time_goes(pipe) -> dict:
  """One frame's PoseEnc and Render: ms, XLA FLOPs, FLOP/s against the
  matmul peak, and the pipeline's FLOP estimate against XLA's count."""
  encode, render = pipe._fns()  # pylint: disable=protected-access
  s, d = pipe.image_size, pipe.config.pose_dim
  frame = jax.numpy.zeros((1, s, s, 3))
  poses = jax.numpy.zeros((1, d))
  args = {"PoseEnc": (encode, (pipe.params["PoseEnc"], frame, frame)),
          "Render": (render, (pipe.params["Render"], frame, poses, poses))}
  peak = benchmarking.matmul_peak_flops()
  out = {"matmul_peak_GFLOPs": peak / 1e9}
  total = 0.0
  for name, (fn, fn_args) in args.items():
    flops = benchmarking.compiled_flops(fn, *fn_args)
    seconds = benchmarking.median_seconds(lambda: fn(*fn_args), repeats=5)
    total += flops
    out[f"{name}_ms"] = 1e3 * seconds
    out[f"{name}_GFLOP"] = flops / 1e9
    out[f"{name}_fraction_of_peak"] = flops / seconds / peak
  out["estimate_vs_xla_flops"] = pipe.flops_per_frame(1) / total
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=None,
                      help="checkpoint folder (default: the shipped model)")
  parser.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS),
                      default=None, help="time random weights of this size")
  parser.add_argument("--frames", type=int, default=30)
  parser.add_argument("--repeats", type=int, default=3,
                      help="warm requests after the first")
  parser.add_argument("--image-size", type=int, default=None,
                      help="the app's resolution setting (in-process mode "
                           "only): the working size of RGB models, the "
                           "output size of flow models")
  parser.add_argument("--flow-output-size", type=int, default=512,
                      help="output size of the flow and warp cases")
  parser.add_argument("--mode", nargs="+",
                      default=["in-process", "server", "flow", "warp"],
                      choices=["in-process", "server", "flow", "warp",
                               "published"])
  parser.add_argument("--published-size", default="published",
                      choices=sorted(RANDOM_CONFIGS),
                      help="published mode: the size of the served model "
                      "(tiny: a quick check of the plumbing)")
  parser.add_argument("--json", default=None, help="write the rows here")
  parser.add_argument("--compare", default=None,
                      help="a --json file of an earlier run")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  if args.repeats < 1 or args.frames < 2:
    parser.error("--repeats must be >= 1 and --frames >= 2")
  with tempfile.TemporaryDirectory() as tmp:
    if args.random_config:
      checkpoint = write_random_checkpoint(pathlib.Path(tmp) / "model",
                                           args.random_config)
    elif args.checkpoint:
      checkpoint = pathlib.Path(args.checkpoint)
    elif DEFAULT_MODELS["stereo-monocular"].exists():
      checkpoint = DEFAULT_MODELS["stereo-monocular"]
    else:
      parser.error("the shipped default model is not trained yet: pass "
                   "--checkpoint DIR or --random-config published")
    rows = []
    for output in ("flow", "warp"):  # side by side: the renderer heads
      if output in args.mode:
        model = write_random_checkpoint(pathlib.Path(tmp) / output, output)
        rows.append(time_in_process(
            model, args.frames, args.repeats, args.flow_output_size,
            mode=f"in-process, {output} {args.flow_output_size} px"))
    if "in-process" in args.mode:
      rows.append(time_in_process(checkpoint, args.frames, args.repeats,
                                  args.image_size))
    if "server" in args.mode:
      rows.append(time_server(checkpoint, args.frames, args.repeats))
    published_rows, facts = ([], {})
    if "published" in args.mode:
      published_rows, facts = time_published(args.frames, args.repeats,
                                             args.published_size)
  columns = ["mode", "model", "parameters", "image_size", "output_size",
             "frames", "first_s", "warm_s", "warm_ms_per_frame"]
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  benchmarking.print_table(rows, columns, title=(
      f"Request -> finished video, {args.frames}-frame transfer "
      f"({jax.default_backend()}, {jax.device_count()} device(s), "
      f"{os.cpu_count()} CPUs, load average {load:.1f} at the end)"))
  if published_rows:
    benchmarking.print_table(published_rows, list(published_rows[0]), title=(
        f"\n{args.published_size} size "
        f"({checkpoints.parameter_count(RANDOM_CONFIGS[args.published_size][0]) / 1e6:.0f}M "
        f"parameters, {RANDOM_CONFIGS[args.published_size][1]} px), "
        f"{args.frames} frames, "
        "seconds from request to the first streamed frame and to the video"))
    benchmarking.print_table([{"fact": k, "value": v} for k, v in facts.items()],
                             ["fact", "value"], title="")
  benchmarking.write_json(args.json, {"rows": rows, "load_average": load,
                                      "published": published_rows,
                                      "published_facts": facts})
  if args.compare:
    benchmarking.compare_rows(args.compare, rows, ["mode", "frames"],
                              "warm_s", higher_is_better=False)
  return 0


if __name__ == "__main__":
  sys.exit(main())
