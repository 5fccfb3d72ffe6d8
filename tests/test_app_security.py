"""Security: what a hostile caller sends is refused before anything is read.

The live tests run ``python app.py`` with its uploads in a known folder and
call its events as the page does, by index, so the private and undocumented
endpoints are covered as well as the public API. The endpoints come from
``gradio_client``'s view of the app: an endpoint added later is called here
too, and fails the suite unless the check refuses it.
"""

import os
import pathlib
import threading
import uuid

import fastapi
import gradio as gr
import numpy as np
import pytest
import uvicorn
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from xfactor_core.app import (gate, layout, presets, registry, testing, ui,
                              uploads)
from xfactor_core.inference import media

LIBRARY = presets.load_presets()
CAT = LIBRARY.context("photo: cat").files[0]
FILE_TYPES = {"file", "image", "video", "audio", "gallery", "model3d",
              "uploadbutton", "imageeditor", "multimodaltextbox"}


def _secret_image(folder: pathlib.Path) -> pathlib.Path:
  """A readable image outside the upload folder (what must not leak)."""
  folder.mkdir(parents=True, exist_ok=True)
  secret = folder / "secret.png"
  Image.fromarray(np.random.default_rng().integers(  # unique to this call
      0, 255, (32, 32, 3), np.uint8)).save(secret)
  return secret


def _copies(folder: pathlib.Path, original: pathlib.Path) -> list:
  """Files under ``folder`` with the bytes of ``original`` (not links)."""
  content = original.read_bytes()
  return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
          and p.stat().st_size == len(content) and p.read_bytes() == content]


# ----------------------------------------------------- the check, in-process --


@pytest.fixture()
def policy(tmp_path):
  (tmp_path / "uploads" / "abc").mkdir(parents=True)
  return uploads.UploadPolicy(tmp_path / "uploads", (LIBRARY.root,))


def test_policy_accepts_uploads_and_presets_only(policy, tmp_path, caplog):
  upload = policy.upload_root / "abc" / "room.png"
  upload.write_bytes(b"x")
  assert policy.check(str(upload)) == upload.resolve()
  assert policy.check(str(CAT)) == CAT.resolve()
  secret = _secret_image(tmp_path / "home")
  link = policy.upload_root / "abc" / "link.png"
  link.symlink_to(secret)
  dotdot = f"{policy.upload_root}/abc/../../home/secret.png"
  relative = os.path.relpath(secret)  # resolved against the working folder
  for hostile in (str(secret), str(link), dotdot, relative, "/etc/hostname",
                  "http://127.0.0.1:9/x.png", "file:///etc/hostname", "",
                  None, 12, f"{upload}\x00.png"):
    with pytest.raises(uploads.InputError, match=uploads.REFUSAL):
      policy.check(hostile)
  assert "refused file" in caplog.text and "secret.png" in caplog.text
  with pytest.raises(uploads.InputError, match="not found on the server"):
    policy.check(str(policy.upload_root / "abc" / "gone.png"))
  inside = f"{policy.upload_root}/abc/../abc/room.png"  # `..` that stays in
  assert policy.check(inside) == upload.resolve()


def test_event_check_refuses_hostile_values(policy, tmp_path):
  with gr.Blocks():
    files = gr.File(file_count="multiple", label="context")
    number = gr.Number(label="num_frames")
    preset = gr.Dropdown(["zoom in"], label="preset", allow_custom_value=True)
    state = gr.State()
  upload = policy.upload_root / "abc" / "room.png"
  upload.write_bytes(b"x")
  good = [[testing.file_value(upload)], 4, "zoom in", "anything"]
  components = [files, number, preset, state]
  gate.check_event(components, good, policy)  # passes
  limits = uploads.Limits(max_files=3, max_text_chars=300)
  cases = [
      ([[testing.file_value(CAT), testing.file_value("/etc/hostname")]],
       uploads.REFUSAL),
      (["/etc/hostname"], "context expects an uploaded file, got a text"),
      ([[{"url": "http://127.0.0.1:9/a.png"}]], uploads.REFUSAL),
      ([None, float("nan")], "num_frames must be a finite number"),
      ([None, float("inf")], "num_frames must be a finite number"),
      ([None, "12"], "num_frames must be a finite number"),
      ([[testing.file_value(upload)] * 4], "more than 3 files in one request"),
      ([None, 2, "x" * 301], "a text of 301 characters was given for preset"),
      # A file hidden in another widget's value is checked as well.
      ([None, 2, {"path": str(_secret_image(tmp_path / "h"))}],
       uploads.REFUSAL),
  ]
  for values, message in cases:
    with pytest.raises(uploads.InputError, match=message):
      gate.check_event(components, values, policy, limits)
  # The state's value is the server's (Gradio ignores what a caller sends).
  gate.check_event(components, [None, None, None, "/etc/hostname"], policy,
                   limits)


# ------------------------------------------------------------- a live app --


@pytest.fixture(scope="module")
def server(reference_dir, tmp_path_factory):
  folder = testing.write_test_checkpoints(
      tmp_path_factory.mktemp("ckpts"),
      reference_dir / "official_format_checkpoint")
  temp = tmp_path_factory.mktemp("apptmp")
  upload_root = temp / "gradio_uploads"
  log = tmp_path_factory.mktemp("log") / "app.log"
  with testing.serve_app(
      folder, env={"TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(upload_root)},
      extra_args=["--no-default-models"], log_file=log) as url:
    yield url, upload_root, log


@pytest.fixture(scope="module")
def endpoints(server):
  """Every event of the app, from gradio_client's view of it."""
  client = Client(server[0], verbose=False)
  components = {c["id"]: c for c in client.config["components"]}
  found = []
  for dependency in client.config["dependencies"]:
    inputs = [components[i] for i in dependency["inputs"]]
    found.append({"fn_index": dependency["id"],
                  "name": dependency.get("api_name") or str(dependency["id"]),
                  "queued": dependency.get("queue") is not False,
                  "inputs": inputs})
  named = client.view_api(all_endpoints=True, return_format="dict",
                          print_info=False)["named_endpoints"]
  assert {f"/{e['name']}" for e in found} >= set(named)
  return found


def _file_inputs(endpoint):
  return [i for i, c in enumerate(endpoint["inputs"]) if c["type"] in
          FILE_TYPES]


def _defaults(endpoint):
  """The page's initial values; frame counts at their smallest."""
  values = []
  for component in endpoint["inputs"]:
    props = component.get("props", {})
    value = props.get("value")
    if props.get("label") in ("Frames", "num_frames"):
      value = 2
    values.append(value)
  return values


def _as_value(component, value):
  multiple = component.get("props", {}).get("file_count") == "multiple"
  return [value] if multiple else value


def _hostile_paths(upload_root: pathlib.Path, secret: pathlib.Path):
  link_folder = upload_root / f"evil_{uuid.uuid4().hex[:6]}"
  link_folder.mkdir(parents=True)
  (link_folder / "link.png").symlink_to(secret)
  return {
      "outside": str(secret),
      "symlink": str(link_folder / "link.png"),
      "dotdot": f"{upload_root}/{os.path.relpath(secret, upload_root)}",
  }


def test_file_endpoints_are_all_found(endpoints):
  with_files = {e["name"] for e in endpoints if _file_inputs(e)}
  # The public API, the page's transfer (undocumented), the example transfer,
  # the batch export and the context preview (private) all take files.
  assert {"transfer", "transfer_ui", "example_transfer", "batch",
          "context_gallery"} <= with_files


@pytest.mark.parametrize("kind", ["outside", "symlink", "dotdot"])
def test_every_endpoint_refuses_server_paths(server, endpoints, kind,
                                             tmp_path):
  url, upload_root, log = server
  secret = _secret_image(tmp_path / "private")
  hostile = _hostile_paths(upload_root, secret)[kind]
  assert pathlib.Path(hostile).resolve() == secret.resolve()
  tried = 0
  for endpoint in endpoints:
    for index in _file_inputs(endpoint):
      component = endpoint["inputs"][index]
      data = _defaults(endpoint)
      data[index] = _as_value(component, testing.file_value(hostile))
      outcome = testing.call_event(url, endpoint["fn_index"], data,
                                   queued=endpoint["queued"])
      where = f"{endpoint['name']} input {component['props'].get('label')}"
      assert not outcome["success"], where
      assert uploads.REFUSAL in outcome["error"], (where, outcome)
      tried += 1
  assert tried >= 20
  # Refusals are logged, and nothing of the file reached the upload folder
  # (Gradio copies a file value there before a handler runs).
  assert "refused" in log.read_text()
  assert _copies(upload_root, secret) == []


def test_every_endpoint_refuses_strings_for_files(server, endpoints):
  url = server[0]
  for endpoint in endpoints:
    for index in _file_inputs(endpoint):
      data = _defaults(endpoint)
      data[index] = "/etc/hostname"
      outcome = testing.call_event(url, endpoint["fn_index"], data,
                                   queued=endpoint["queued"])
      assert not outcome["success"]
      assert "expects an uploaded file, got a text" in outcome["error"]


def _real_upload(url, component, tmp_path):
  """An upload of the kind the widget takes: image, video or camera path."""
  props = component.get("props", {})
  types = props.get("file_types") or []
  if ".npy" in types:
    path = tmp_path / "camera_path.npy"
    np.save(path, np.zeros((4, 32), np.float32))
  elif any(t in (".mp4", ".mov", ".webm") for t in types) or props.get(
      "label") == "target":
    path = media.write_video(tmp_path / "walk.mp4", media.read_video(
        LIBRARY.motion("zoom in").clip)[:6])
  else:
    path = tmp_path / "room.png"
    Image.open(CAT).save(path)
  return testing.file_value(testing.upload(url, path))


def test_real_uploads_pass_on_every_file_endpoint(server, endpoints, tmp_path):
  url = server[0]
  for endpoint in endpoints:
    indices = _file_inputs(endpoint)
    if not indices:
      continue
    data = _defaults(endpoint)
    for index in indices:
      component = endpoint["inputs"][index]
      data[index] = _as_value(component, _real_upload(url, component,
                                                      tmp_path))
    outcome = testing.call_event(url, endpoint["fn_index"], data,
                                 queued=endpoint["queued"])
    assert outcome["success"], (endpoint["name"], outcome)


def test_page_transfer_reads_an_uploaded_video(server, endpoints, tmp_path):
  url = server[0]
  endpoint = next(e for e in endpoints if e["name"] == "transfer_ui")
  labels = [c.get("props", {}).get("label") or "" for c in endpoint["inputs"]]
  data = _defaults(endpoint)
  context = next(i for i, label in enumerate(labels)
                 if label.startswith("Context image"))
  video = labels.index(layout.VIDEO_LABEL)
  data[context] = [_real_upload(url, endpoint["inputs"][context], tmp_path)]
  data[video] = _real_upload(url, endpoint["inputs"][video], tmp_path)
  data[labels.index("Motion from")] = "Video"
  data[labels.index("Frames")] = 5
  outcome = testing.call_event(url, endpoint["fn_index"], data)
  assert outcome["success"], outcome
  status = outcome["data"][ui.TRANSFER_OUTPUTS.index("status")]
  assert status.startswith("Done: 5 frames at 64 px"), status
  assert "video (walk.mp4)" in status


# --------------------------------------------------- refusals at the client --


@pytest.fixture(scope="module")
def client(server):
  return Client(server[0], verbose=False)


def test_refusal_text_reaches_gradio_client(client):
  url_path = {"path": "http://127.0.0.1:9/secret.mp4",
              "meta": {"_type": "gradio.FileData"}}
  with pytest.raises(AppError, match=uploads.REFUSAL):
    client.predict(context=[handle_file(str(CAT))], target=url_path,
                   preset=None, num_frames=4, api_name="/transfer")


def test_hostile_numbers_and_names_are_clear_refusals(server, client,
                                                      endpoints):
  transfer = lambda **kw: client.predict(
      **{"context": [handle_file(str(CAT))], "target": None,
         "preset": "zoom in", "num_frames": 4, **kw}, api_name="/transfer")
  cases = [
      (dict(num_frames=-3), "number of frames -3 is below 2"),
      (dict(num_frames=10 ** 9), "above the limit of 120"),
      (dict(num_frames="many"), "num_frames must be a finite number"),
      (dict(preset="../../../../etc/passwd"), "unknown motion preset"),
      (dict(preset=str(LIBRARY.motion("zoom in").clip)),
       "unknown motion preset"),
      (dict(preset="x" * 5000), "a text of 5000 characters"),
  ]
  for kwargs, message in cases:
    with pytest.raises(AppError, match=message):
      transfer(**kwargs)
  # The page's transfer: its widgets' ranges hold for callers too.
  url = server[0]
  endpoint = next(e for e in endpoints if e["name"] == "transfer_ui")
  labels = [c.get("props", {}).get("label") or "" for c in endpoint["inputs"]]
  context = next(i for i, label in enumerate(labels)
                 if label.startswith("Context image"))
  page_cases = [
      ("Frames", 10 ** 6, "greater than maximum value 120"),
      ("Frames", -4, "less than minimum value 2"),
      ("fps", 1000, "greater than maximum value 30"),
      ("Motion strength", -1, "less than minimum value 0"),
      ("Start frame", -5, "less than minimum value 0"),
      ("Start frame", 10 ** 12, "decodes at most 3000 frames"),
      ("Frame stride", float("inf"), "Frame stride must be a finite number"),
      ("Preset camera motion", "/etc/passwd", "not in the list of choices"),
  ]
  for label, value, message in page_cases:
    data = _defaults(endpoint)
    data[context] = [testing.file_value(testing.upload(url, CAT))]
    data[labels.index(label)] = value
    outcome = testing.call_event(url, endpoint["fn_index"], data)
    assert not outcome["success"] and message in outcome["error"], (
        label, value, outcome)


def test_numbers_that_json_clients_cannot_send_are_refused(server,
                                                           endpoints):
  url = server[0]
  endpoint = next(e for e in endpoints if e["name"] == "transfer")
  for value in (float("nan"), float("inf"), -float("inf")):
    data = _defaults(endpoint)
    data[:3] = [[testing.file_value(testing.upload(url, CAT))], None,
                "zoom in"]
    data[3] = value
    outcome = testing.call_event(url, endpoint["fn_index"], data)
    assert not outcome["success"]
    assert "num_frames must be a finite number" in outcome["error"]


def test_many_files_at_once_are_refused(server, endpoints):
  url = server[0]
  path = testing.file_value(testing.upload(url, CAT))
  endpoint = next(e for e in endpoints if e["name"] == "transfer")
  data = _defaults(endpoint)
  data[0] = [path] * (uploads.DEFAULT_LIMITS.max_files + 1)
  outcome = testing.call_event(url, endpoint["fn_index"], data)
  assert not outcome["success"]
  assert "more than 500 files in one request" in outcome["error"]


def test_a_mounted_app_refuses_server_paths_too(reference_dir, tmp_path):
  """Mounted in FastAPI (not ``launch()``), Gradio skips its own path check
  and copies any file named into its cache; the gate still refuses."""
  folder = testing.write_test_checkpoints(
      tmp_path / "ckpts", reference_dir / "official_format_checkpoint")
  studio = ui.Studio(registry.ModelRegistry(registry.discover_models(
      folder, defaults={})), LIBRARY, work_root=tmp_path / "work")
  demo = layout.build_app(studio)
  port = testing.free_port()
  server = uvicorn.Server(uvicorn.Config(
      gr.mount_gradio_app(fastapi.FastAPI(), demo, path="/"),
      host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{port}/"
  try:
    testing.wait_for_http(url, 60)
    secret = _secret_image(tmp_path / "private")
    api = next(fn for fn in demo.fns.values() if fn.api_name == "transfer")
    outcome = testing.call_event(url, api._id, [
        [testing.file_value(secret)], None, "zoom in", 2])
    assert not outcome["success"] and uploads.REFUSAL in outcome["error"]
    assert _copies(pathlib.Path(demo.GRADIO_CACHE), secret) == []
    uploaded = testing.file_value(testing.upload(url, CAT))
    outcome = testing.call_event(url, api._id, [[uploaded], None, "zoom in",
                                                2])
    assert outcome["success"], outcome
  finally:
    server.should_exit = True
    thread.join(timeout=30)
    studio.cleanup()
