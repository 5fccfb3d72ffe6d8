"""End to end: ``python app.py`` on a free port, driven by gradio_client."""

import pathlib
import time
import uuid

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from xfactor_core import checkpoints
from xfactor_core.app import presets, testing, ui
from xfactor_core.inference import camera_path as camera_paths
from xfactor_core.inference import media

LIBRARY = presets.load_presets()
CAT = str(LIBRARY.context("photo: cat").files[0])
ROOM = str(LIBRARY.context("synthetic room 1").files[0])


FLOW_CONFIG = checkpoints.ModelConfig(32, 2, 8, 1, 1, 8, 4,
                                      render_output="flow")


@pytest.fixture(scope="module")
def server(reference_dir, tmp_path_factory):
  folder = testing.write_test_checkpoints(
      tmp_path_factory.mktemp("ckpts"),
      reference_dir / "official_format_checkpoint")
  # Listed after tiny_mv (the default) and tiny_sm.
  testing.write_random_checkpoint(folder / "tiny_sm_flow", FLOW_CONFIG,
                                  image_size=32, name="tiny flow")
  temp = tmp_path_factory.mktemp("apptmp")
  log = tmp_path_factory.mktemp("log") / "app.log"
  with testing.serve_app(folder, env={"TMPDIR": str(temp)},
                         extra_args=["--max-file-mb", "1", "--no-default-models"],
                         log_file=log) as url:
    yield url, temp, log
  # SIGTERM shut the app down cleanly: its own work folder is gone.
  assert not list(temp.glob("xfactor_studio_*")), log.read_text()[-2000:]


@pytest.fixture(scope="module")
def client(server):
  return Client(server[0], verbose=False)


def test_transfer_endpoint_signature(client):
  api = client.view_api(return_format="dict", print_info=False)
  endpoint = api["named_endpoints"]["/transfer"]
  assert [p["parameter_name"] for p in endpoint["parameters"]] == [
      "context", "target", "preset", "num_frames", "output_size",
      "path_mode"]
  # Added last, with defaults: callers of the first four keep working.
  for parameter in endpoint["parameters"][-2:]:
    assert parameter["parameter_has_default"]
    assert parameter["parameter_default"] is None
  assert [r["label"] for r in endpoint["returns"]] == ["video", "camera_path"]


def test_transfer_with_a_preset_returns_the_mp4_first(client):
  video, path = client.predict(context=[handle_file(CAT)], target=None,
                               preset="orbit left", num_frames=6,
                               api_name="/transfer")
  assert video.endswith(".mp4")
  assert media.read_video(video).shape == (6, 64, 64, 3)
  assert np.load(path).shape == (6, 32)


def test_transfer_with_an_uploaded_video(client, tmp_path):
  clip = media.write_video(tmp_path / "walk.mp4",
                           media.read_video(LIBRARY.motion("zoom in").clip))
  video, path = client.predict(context=[handle_file(ROOM)],
                               target=handle_file(str(clip)), preset=None,
                               num_frames=5, api_name="/transfer")
  assert media.read_video(video).shape == (5, 64, 64, 3)
  # A saved camera path replays through the same endpoint.
  replay, _ = client.predict(context=[handle_file(ROOM)],
                             target=handle_file(path), preset=None,
                             num_frames=5, api_name="/transfer")
  difference = np.abs(media.read_video(replay).astype(int) -
                      media.read_video(video).astype(int))
  assert difference.mean() < 2.0


def test_bad_input_is_reported_and_the_server_stays_up(client, tmp_path):
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"\x00garbage" * 100)
  cases = [
      (dict(context=[], target=None, preset="zoom in"),
       "no context image given"),
      (dict(context=[handle_file(CAT)], target=handle_file(str(broken)),
            preset=None), "cannot be opened"),
      (dict(context=[handle_file(CAT)] * 4, target=None, preset="zoom in"),
       "4 context images given but this multi-view model takes at most 3"),
      (dict(context=[handle_file(CAT)], target=None, preset="barrel roll"),
       "unknown motion preset"),
      (dict(context=[handle_file(str(broken))], target=None,
            preset="zoom in"), "wrong type"),
  ]
  for kwargs, message in cases:
    with pytest.raises(AppError, match=message):
      client.predict(num_frames=4, api_name="/transfer", **kwargs)
  video, _ = client.predict(context=[handle_file(CAT)], target=None,
                            preset="pan left", num_frames=3,
                            api_name="/transfer")
  assert pathlib.Path(video).is_file()


def test_uploads_above_the_size_limit_are_refused(client, tmp_path):
  huge = tmp_path / "huge.mp4"
  huge.write_bytes(b"\x00" * (2 * 2 ** 20))
  # The limit (--max-file-mb) reaches clients, which refuse before uploading;
  # the server refuses larger uploads too.
  with pytest.raises(ValueError, match="exceeds the maximum file size of "
                     "1048576 bytes"):
    client.predict(context=[handle_file(CAT)], target=handle_file(str(huge)),
                   preset=None, num_frames=4, api_name="/transfer")


def test_sessions_get_their_own_results(server):
  first, second = Client(server[0], verbose=False), Client(server[0],
                                                           verbose=False)
  jobs = [first.submit(context=[handle_file(CAT)], target=None,
                       preset="zoom in", num_frames=4, api_name="/transfer"),
          second.submit(context=[handle_file(ROOM)], target=None,
                        preset="tilt up", num_frames=6, api_name="/transfer")]
  start = time.monotonic()
  (video_a, _), (video_b, _) = [job.result(timeout=60) for job in jobs]
  assert time.monotonic() - start < 60
  assert video_a != video_b
  assert len(media.read_video(video_a)) == 4
  assert len(media.read_video(video_b)) == 6


def test_shipped_default_model_serves_the_endpoint(tmp_path):
  """Without --checkpoints the app serves the shipped stereo-monocular model."""
  from xfactor_core.inference.pipeline import DEFAULT_CHECKPOINT, TransferPipeline
  pipe = TransferPipeline.from_checkpoint(DEFAULT_CHECKPOINT)
  with testing.serve_app(env={"TMPDIR": str(tmp_path)}) as url:
    video, path = Client(url, verbose=False).predict(
        context=[handle_file(CAT)], target=None, preset="zoom in", num_frames=4,
        api_name="/transfer")
  # A warp model renders at the photo's own size (up to its cap), others at
  # the model's; the camera path is saved in the model's default mode.
  size = pipe.default_output_size([media.read_image(CAT)])
  assert media.read_video(video).shape == (4, size, size, 3)
  saved = camera_paths.load(path)
  assert saved.latents.shape == (4, pipe.config.pose_dim)
  assert saved.mode == pipe.default_path_mode


def test_uploads_stay_in_the_apps_own_folder(server, client, tmp_path):
  """Without GRADIO_TEMP_DIR the app keeps uploads in its work folder (not
  the <tmp>/gradio all Gradio apps share); SIGTERM removes them with it."""
  image = tmp_path / "unique_name_for_this_test.png"
  image.write_bytes(pathlib.Path(CAT).read_bytes())
  client.predict(context=[handle_file(str(image))], target=None,
                 preset="zoom in", num_frames=2, api_name="/transfer")
  _, temp, _ = server
  assert list(temp.glob(f"xfactor_studio_*/uploads/*/{image.name}"))
  assert not list((temp / "gradio").glob(f"*/{image.name}"))


def test_output_size_of_the_transfer_endpoint(client):
  """The optional last parameter; the default model has the RGB head, which
  runs at the output size."""
  video, path = client.predict(context=[handle_file(CAT)], target=None,
                               preset="pan left", num_frames=3,
                               output_size=128, api_name="/transfer")
  assert media.read_video(video).shape == (3, 128, 128, 3)
  with pytest.raises(AppError, match="above the app's limit of 512 px"):
    client.predict(context=[handle_file(CAT)], target=None,
                   preset="pan left", num_frames=3, output_size=1024,
                   api_name="/transfer")


def test_page_offers_a_flow_models_output_sizes(server, client):
  """Picking a flow model offers its output sizes (the choices are the
  session's), and a transfer renders at the size picked."""
  url = server[0]
  components = {c["id"]: c for c in client.config["components"]}
  events = {d.get("api_name"): d for d in client.config["dependencies"]}
  model_choices = next(c for c in components.values() if c.get("props", {})
                       .get("elem_id") == "model")["props"]["choices"]
  flow = next(value for label, value in model_choices if label == "tiny flow")
  session = uuid.uuid4().hex
  describe = events["describe_model"]
  described = testing.call_event(url, describe["id"], [flow],
                                 queued=describe.get("queue") is not False,
                                 session=session)
  assert described["success"], described
  update = described["data"][1]
  assert [value for _, value in update["choices"]][-1] == "1024"
  transfer = events["transfer_ui"]
  inputs = [components[i] for i in transfer["inputs"]]
  labels = [c.get("props", {}).get("label") or "" for c in inputs]
  data = [c.get("props", {}).get("value") for c in inputs]
  data[labels.index("Model")] = flow
  data[next(i for i, label in enumerate(labels)
            if label.startswith("Context image"))] = [
                testing.file_value(testing.upload(url, CAT))]
  data[labels.index("Frames")] = 3
  data[labels.index("Output resolution (px)")] = "256"
  outcome = testing.call_event(url, transfer["id"], data, session=session)
  assert outcome["success"], outcome
  status = outcome["data"][ui.TRANSFER_OUTPUTS.index("status")]
  assert status.startswith("Done: 3 frames at 256 px (sampled from the "
                           "context photo; the model runs at 32 px)"), status
