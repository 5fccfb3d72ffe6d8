"""Helpers for the app's tests and benchmark: small checkpoints, a live server.

>>> folder = write_test_checkpoints(tmp / "ckpts", source_checkpoint)
>>> write_random_checkpoint(folder / "flow", config, image_size=32)
>>> with serve_app(folder) as url:
...   client = gradio_client.Client(url)
...   path = upload(url, "room.png")        # as the page uploads
...   call_event(url, 3, [[file_value(path)]])  # any event, private too
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Iterator, Mapping, Optional, Sequence, Union

from xfactor_core import checkpoints
from xfactor_core.checkpoints import write_model_info

if TYPE_CHECKING:
  from xfactor_core.checkpoints import ModelConfig

PathLike = Union[str, os.PathLike]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
HIDDEN_ERROR = "(an error Gradio does not show: not a gr.Error)"


def _link_or_copy(source: pathlib.Path, target: pathlib.Path) -> None:
  try:
    target.symlink_to(source.resolve(), target_is_directory=source.is_dir())
  except OSError:
    if source.is_dir():
      shutil.copytree(source, target)
    else:
      shutil.copy2(source, target)


def write_test_checkpoints(folder: PathLike, source_checkpoint: PathLike, *,
                           image_size: int = 64, multi_view_views: int = 3
                           ) -> pathlib.Path:
  """A checkpoints folder with a stereo-monocular and a multi-view model.

  Both use the weights of ``source_checkpoint`` (linked, not copied, where
  the system allows) with a ``model.json`` each, so they load at
  ``image_size`` and take 1 and ``multi_view_views`` context views.

  Returns:
    ``folder``, ready for ``--checkpoints``.
  """
  folder = pathlib.Path(folder)
  flax_file = checkpoints.resolve_checkpoint(source_checkpoint)
  for name, kind, views in (("tiny_sm", "stereo-monocular", 1),
                            ("tiny_mv", "multi-view", multi_view_views)):
    model_dir = folder / name / "checkpoints-0"
    model_dir.mkdir(parents=True, exist_ok=True)
    for part in flax_file.parent.iterdir():
      if not (model_dir / part.name).exists():
        _link_or_copy(part, model_dir / part.name)
    write_model_info(folder / name, name=f"tiny {kind} (test weights)",
                     kind=kind, image_size=image_size,
                     num_context_views=views)
  return folder


def write_random_checkpoint(folder: PathLike, config: "ModelConfig", *,
                            image_size: int, name: Optional[str] = None,
                            num_context_views: int = 1, seed: int = 0
                            ) -> pathlib.Path:
  """Random weights of ``config`` as a checkpoint with its ``model.json``.

  For tests and timings (speed does not depend on the values): the app
  discovers the folder like a trained model, with its config (so a flow
  model is known as one before it loads).

  Returns:
    ``folder`` (weights in ``folder/checkpoints-0``).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from xfactor_core import models  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  pose_enc = models.PoseEnc(**config.pose_enc_kwargs())
  render = models.Render(**config.render_kwargs())
  pose_key, render_key = jax.random.split(jax.random.key(seed))
  pair = np.zeros((1, 2, image_size, image_size, 3), np.float32)
  params = {
      "PoseEnc": jax.jit(pose_enc.init)(pose_key, pair)["params"],
      "Render": jax.jit(render.init)(render_key, pair[:, :1], np.zeros(
          (1, 2, config.pose_dim), np.float32))["params"],
  }
  checkpoints.save_params(folder / "checkpoints-0", params)
  write_model_info(folder, name=name or f"random {config.render_output} "
                   "model", image_size=image_size,
                   num_context_views=num_context_views,
                   config=config.to_dict())
  return folder


def free_port() -> int:
  """A TCP port nobody listens on right now (localhost)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float, process: subprocess.Popen = None
                  ) -> None:
  """Polls ``url`` until it answers (raises TimeoutError / RuntimeError)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process is not None and process.poll() is not None:
      raise RuntimeError(f"the app exited with code {process.returncode}")
    try:
      with urllib.request.urlopen(url, timeout=2):
        return
    except (urllib.error.URLError, ConnectionError, OSError):
      time.sleep(0.3)
  raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def serve_app(checkpoints_dir: Optional[PathLike] = None, *,
              extra_args: Sequence[str] = (),
              env: Optional[Mapping[str, str]] = None,
              startup_timeout: float = 120.0,
              shutdown_timeout: float = 120.0,
              log_file: Optional[PathLike] = None) -> Iterator[str]:
  """Runs ``python app.py`` on a free localhost port; yields its URL.

  The port is passed through ``GRADIO_SERVER_PORT`` (as on hosting services);
  the app is stopped with SIGTERM (a clean shutdown: app.py handles it like
  Ctrl-C) when the block ends. Not SIGINT: a process started in the background
  by a non-interactive shell inherits SIGINT ignored, and would never stop.
  """
  port = free_port()
  full_env = dict(os.environ)
  full_env.update({"GRADIO_SERVER_NAME": "127.0.0.1",
                   "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_ANALYTICS_ENABLED": "False"})
  full_env.update(env or {})
  command = [sys.executable, str(REPO_ROOT / "app.py"), *extra_args]
  if checkpoints_dir is not None:
    command += ["--checkpoints", str(checkpoints_dir)]
  log = open(log_file, "w") if log_file else subprocess.DEVNULL
  process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env,
                             stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  try:
    wait_for_http(url, startup_timeout, process)
    yield url
  finally:
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
      stopping = time.monotonic()
      outcome = "stopped cleanly"
      try:
        # Gradio closes its server before the app's own clean-up runs (about
        # 6 s when idle). Only a hung app waits this long; killing it skips
        # that clean-up, which the tests check.
        process.wait(timeout=shutdown_timeout)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        outcome = "killed: no clean shutdown"
      if log_file:
        log.write(f"\n[serve_app] SIGTERM: {outcome} after "
                  f"{time.monotonic() - stopping:.1f} s\n")
    if log_file:
      log.close()


def file_value(path: PathLike) -> dict:
  """A file value as the page sends it (Gradio's FileData)."""
  return {"path": str(path), "orig_name": pathlib.Path(path).name,
          "meta": {"_type": "gradio.FileData"}}


def upload(url: str, path: PathLike, timeout: float = 60.0) -> str:
  """Uploads a file to a running app as its page does; returns the server
  path of the upload."""
  import httpx  # a dependency of gradio_client
  path = pathlib.Path(path)
  with open(path, "rb") as handle:
    response = httpx.post(url + "gradio_api/upload",
                          files=[("files", (path.name, handle))],
                          timeout=timeout)
  response.raise_for_status()
  return response.json()[0]


def call_event(url: str, fn_index: int, data: Sequence, *, queued: bool = True,
               timeout: float = 300.0, session: Optional[str] = None) -> dict:
  """Calls one event of a running app by index, as its page does.

  Private and undocumented events are called like public ones (the page
  calls them all this way, and so can anyone), which ``gradio_client``
  does not do. Calls with the same ``session`` share a page session (the
  widget updates of one event hold for the next); None: a new session.

  Returns:
    ``{"success": True, "data": [...]}`` or ``{"success": False, "error":
    message}``.
  """
  import json
  import uuid

  import httpx  # a dependency of gradio_client
  session = session or uuid.uuid4().hex
  # Encoded here: a caller may send NaN and Infinity, which httpx refuses to.
  body = json.dumps({"data": list(data), "fn_index": fn_index,
                     "session_hash": session, "event_data": None,
                     "trigger_id": None})
  headers = {"Content-Type": "application/json"}
  with httpx.Client(timeout=timeout) as http:
    if not queued:
      response = http.post(url + "gradio_api/run/predict", content=body,
                           headers=headers)
      payload = response.json()
      if response.is_success:
        return {"success": True, "data": payload.get("data")}
      return {"success": False, "error": payload.get("error") or HIDDEN_ERROR}
    response = http.post(url + "gradio_api/queue/join", content=body,
                         headers=headers)
    response.raise_for_status()
    event_id = response.json()["event_id"]
    with http.stream("GET", url + "gradio_api/queue/data",
                     params={"session_hash": session}) as stream:
      for line in stream.iter_lines():
        if not line.startswith("data:"):
          continue
        message = json.loads(line[len("data:"):])
        if (message.get("event_id") != event_id
            or message.get("msg") != "process_completed"):
          continue
        output = message.get("output") or {}
        if message.get("success"):
          return {"success": True, "data": output.get("data")}
        return {"success": False, "error": output.get("error") or HIDDEN_ERROR}
  raise RuntimeError(f"event {fn_index} ended without a result")
