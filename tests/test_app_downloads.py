"""The published models in the app: listed before they are downloaded,
fetched through the page's event (in process and through a running app),
fetched at start, or not at all when the server says so. The archive comes
from a local HTTP server; nothing reaches the internet."""

import json
import uuid
import zipfile

import gradio as gr
import pytest

from xfactor_core import checkpoints, fetch, fetch_testing
from xfactor_core.app import downloads, jobs, presets, registry, testing, ui

TINY = checkpoints.ModelConfig(64, 4, 8, 2, 2, 32, 32)
LIBRARY = presets.load_presets()
CAT = str(LIBRARY.context("photo: cat").files[0])
ROOMS = [str(f) for f in LIBRARY.context(
    "synthetic room, 3 views (multi-view)").files]


@pytest.fixture(scope="module")
def archive(reference_dir, tmp_path_factory):
  return fetch_testing.make_release_archive(
      tmp_path_factory.mktemp("release") / "release.zip",
      checkpoint_dir=reference_dir / "official_format_checkpoint" /
      "checkpoints-0", compression=zipfile.ZIP_DEFLATED)


@pytest.fixture
def server():
  with fetch_testing.ArchiveServer() as srv:
    yield srv


def _table(server, archive, tmp_path, **behaviour):
  """A sources file pointing sm and mv at the local server (tiny model)."""
  table = {name: {"url": server.serve(f"{name}.zip", archive, **behaviour),
                  "config": TINY.to_dict(), "image_size": 64,
                  "num_context_views": views}
           for name, views in (("sm", 1), ("mv", 3))}
  file = tmp_path / "sources.json"
  file.write_text(json.dumps(table))
  return file


@pytest.fixture
def studio(server, archive, tmp_path, monkeypatch, request):
  monkeypatch.setenv("XFACTOR_SOURCES", str(_table(server, archive, tmp_path,
                                                   delay=0.02)))
  root = tmp_path / "home"
  monkeypatch.setenv("XFACTOR_HOME", str(root))
  table = fetch.sources()
  specs = registry.discover_models(published=list(table.values()))
  models = registry.ModelRegistry(specs, batch_size=4)
  allowed = getattr(request, "param", True)
  return ui.Studio(models, LIBRARY, work_root=tmp_path / "work",
                   downloads=downloads.Downloads(models, table, root=root,
                                                 page_allowed=allowed))


def test_published_models_are_listed_before_they_are_downloaded(studio):
  models = studio.registry
  labels = dict((v, k) for k, v in models.choices())
  assert labels["published:sm"] == ("XFactor stereo-monocular (published) · "
                                    "not downloaded (1.9 MB)")
  assert "not downloaded" in labels["published:mv"]
  shipped = [label for label, _ in models.choices()
             if "Offline demo" in label]
  # Each shipped demo says what to expect of it.
  assert shipped == [registry.DEFAULT_LABELS["stereo-monocular"],
                     registry.DEFAULT_LABELS["multi-view"]]
  assert "one plane" in shipped[0] and "planes" in shipped[1]
  # The page starts on a model that is here: the shipped demo.
  assert models.spec(models.default_id).source == "shipped"
  assert models.default_for("stereo-monocular") == models.default_id
  with pytest.raises(registry.RegistryError, match="press Download .*python "
                     "-m xfactor_core.fetch sm"):
    models.get("published:sm")
  shown = studio.picker.describe_model({"model": "published:sm"})
  assert shown["download"]["visible"] is True
  assert "not downloaded (1.9 MB)" in shown["model_info"]
  assert "Press **Download**" in shown["model_info"]
  assert studio.picker.describe_model({"model": models.default_id})["download"][
      "visible"] is False


def test_the_download_event_fetches_selects_and_transfers(studio, tmp_path):
  models = studio.registry
  updates = list(studio.picker.download_model({"model": "published:sm"},
                                       progress=lambda *a, **k: None))
  assert any("downloading sm" in u.get("model_info", "").lower()
             for u in updates[:-1]), updates[:3]
  final = updates[-1]
  assert final["model"]["value"] == "published:sm"
  labels = dict((v, k) for k, v in final["model"]["choices"])
  assert labels["published:sm"] == "XFactor stereo-monocular (published)"
  assert "not downloaded" in labels["published:mv"]
  assert final["download"]["visible"] is False
  assert "loads on first use" in final["model_info"]
  # Installed, it is the stereo-monocular default (page loads start on it).
  assert models.default_id == "published:sm"
  # A page built before the download moves to it on load; a visitor's own
  # choice stays.
  studio.picker.page_default = "shipped-default-at-build"
  assert studio.picker.refresh_models({"model": "shipped-default-at-build"})[
      "model"]["value"] == "published:sm"
  assert "value" not in studio.picker.refresh_models({"model": "published:mv"})[
      "model"]
  request = jobs.TransferRequest(
      "published:sm", (CAT,), jobs.MotionRequest("preset", "orbit left"),
      jobs.TransferSettings(num_frames=4))
  result = jobs.transfer(models, LIBRARY, request, tmp_path / "job")
  assert result.generated.shape == (4, 64, 64, 3)
  assert result.model_info["source"] == "published"
  # Several context views switch to the multi-view default: the shipped demo
  # until the published one is downloaded, then that one.
  switched = studio.context_gallery({"context": ROOMS,
                                     "model": "published:sm"})
  assert models.spec(switched["model"]["value"]).source == "shipped"
  studio.downloads.start("mv")
  assert studio.downloads.wait("mv", timeout=120).path is not None
  switched = studio.context_gallery({"context": ROOMS,
                                     "model": "published:sm"})
  assert switched["model"]["value"] == "published:mv"
  assert studio.context_gallery({"context": [CAT], "model": "published:sm"}
                                ).keys() == {"context_preview"}


@pytest.mark.parametrize("studio", [False], indirect=True)
def test_a_server_can_turn_page_downloads_off(studio):
  shown = studio.picker.describe_model({"model": "published:sm"})
  assert shown["download"]["visible"] is False
  assert "turned off on this server" in shown["model_info"]
  assert "python -m xfactor_core.fetch sm" in shown["model_info"]
  with pytest.raises(gr.Error, match="turned off on this server"):
    list(studio.picker.download_model({"model": "published:sm"},
                               progress=lambda *a, **k: None))
  assert fetch.installed_path("sm") is None
  # The operator's own start-up fetch still works.
  studio.downloads.start_all(["sm"])
  assert studio.downloads.wait("sm", timeout=120).path is not None


def test_visitors_name_published_models_never_addresses(studio):
  for value in ("http://127.0.0.1:1/evil.zip", "../../etc", "published:zz"):
    with pytest.raises(gr.Error):
      list(studio.picker.download_model({"model": value},
                                 progress=lambda *a, **k: None))
  with pytest.raises(downloads.DownloadError, match="not a published model"):
    studio.downloads.start("http://127.0.0.1:1/evil.zip", from_page=True)


def test_a_failed_download_reports_its_message(studio, server, archive):
  server.serve("sm.zip", archive, status=404)
  with pytest.raises(gr.Error, match="HTTP 404"):
    list(studio.picker.download_model({"model": "published:sm"},
                               progress=lambda *a, **k: None))
  assert "HTTP 404" in studio.picker.describe_model({"model": "published:sm"})[
      "model_info"]


def test_fetch_at_start_names():
  table = fetch.sources()
  assert downloads.names_from_env("all", table) == ["sm", "mv"]
  assert downloads.names_from_env(" sm , ", table) == ["sm"]
  assert downloads.names_from_env("", table) == []
  with pytest.raises(downloads.DownloadError, match="XFACTOR_FETCH_AT_START"):
    downloads.names_from_env("sm,xl", table)
  assert downloads.page_downloads_allowed({}) is True
  assert downloads.page_downloads_allowed(
      {"XFACTOR_PAGE_DOWNLOADS": "off"}) is False


def test_a_running_app_lists_and_fetches_a_published_model(
    server, archive, tmp_path):
  """python app.py with a start-up fetch of mv: the page lists sm as not
  downloaded, its Download event installs it, and mv arrives by itself."""
  sources = _table(server, archive, tmp_path)
  env = {"XFACTOR_SOURCES": str(sources),
         "XFACTOR_HOME": str(tmp_path / "home"),
         "XFACTOR_FETCH_AT_START": "mv", "TMPDIR": str(tmp_path)}
  with testing.serve_app(env=env, log_file=tmp_path / "app.log") as url:
    from gradio_client import Client  # pylint: disable=g-import-not-at-top
    client = Client(url, verbose=False)
    components = {c["id"]: c for c in client.config["components"]}
    picker = next(c for c in components.values()
                  if c.get("props", {}).get("elem_id") == "model")
    labels = dict((v, k) for k, v in picker["props"]["choices"])
    assert "not downloaded" in labels["published:sm"]
    events = {d.get("api_name"): d for d in client.config["dependencies"]}
    download = events["download_model"]
    outcome = testing.call_event(url, download["id"], ["published:sm"],
                                 session=uuid.uuid4().hex)
    assert outcome["success"], outcome
    choices = outcome["data"][0]["choices"]
    assert ["XFactor stereo-monocular (published)", "published:sm"] in choices
    refresh = events["refresh_models"]
    for _ in range(100):  # the start-up fetch of mv ends by itself
      loaded = testing.call_event(url, refresh["id"], ["published:sm"],
                                  queued=refresh.get("queue") is not False)
      assert loaded["success"], loaded
      if ["XFactor multi-view (published)", "published:mv"] in loaded[
          "data"][0]["choices"]:
        break
      import time  # pylint: disable=g-import-not-at-top
      time.sleep(0.2)
    else:
      raise AssertionError(f"mv never arrived: {loaded}")
    assert "value" not in loaded["data"][0]  # the visitor's pick stays
  assert fetch.installed_path("sm", tmp_path / "home") is not None
  assert fetch.installed_path("mv", tmp_path / "home") is not None


def test_a_broken_install_says_force_and_download_reinstalls_it(
    studio, caplog):
  """An installed model whose weights are gone is not offered as usable;
  the log and the page give advice that works: Download reinstalls it, and
  the command named is the fetch's --force."""
  models = studio.registry
  studio.downloads.start("sm")
  installed = studio.downloads.wait("sm", timeout=120).path
  assert installed is not None and models.spec("published:sm").available
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(installed / "checkpoints-0")  # a half-deleted install
  with caplog.at_level("WARNING"):
    spec = models.refresh_published(studio.downloads.models["sm"],
                                    studio.downloads.root)
  assert not spec.available and spec.problem
  assert spec.label.endswith("installed copy unusable (1.9 MB)")
  assert "python -m xfactor_core.fetch sm --force" in caplog.text
  assert "fetch it again" not in caplog.text
  shown = studio.picker.describe_model({"model": "published:sm"})
  assert shown["download"]["visible"] is True
  assert "cannot be used" in shown["model_info"]
  assert "Press **Download** to reinstall it" in shown["model_info"]
  updates = list(studio.picker.download_model(
      {"model": "published:sm"}, progress=lambda *a, **k: None))
  assert updates[-1]["model"]["value"] == "published:sm"
  assert "loads on first use" in updates[-1]["model_info"]
  assert (installed / "checkpoints-0").is_dir()
  assert models.get("published:sm").image_size == 64  # the weights load


@pytest.mark.parametrize("studio", [False], indirect=True)
def test_a_broken_install_without_page_downloads_names_the_command(studio):
  studio.downloads.start_all(["sm"])
  installed = studio.downloads.wait("sm", timeout=120).path
  (installed / "checkpoints-0" / "checkpoint").unlink()
  for file in (installed / "checkpoints-0").glob("*.flax"):
    file.unlink()
  studio.registry.refresh_published(studio.downloads.models["sm"],
                                    studio.downloads.root)
  line = studio.picker.line("published:sm")
  assert "`python -m xfactor_core.fetch sm --force`" in line


def test_a_failed_start_up_fetch_shows_in_the_page_and_advises_the_owner(
    studio, server, archive, caplog):
  server.serve("sm.zip", archive, status=404)
  with caplog.at_level("ERROR"):
    studio.downloads.start_all(["sm"])
    assert studio.downloads.wait("sm", timeout=60).error
  # The page is on the demo model, and its line says what happened.
  default = studio.registry.default_id
  assert studio.registry.spec(default).source == "shipped"
  line = studio.picker.describe_model({"model": default})["model_info"]
  assert ("XFactor stereo-monocular (published) could not be fetched at "
          "start") in line
  assert "HTTP 404" in line
  assert line.count("could not be fetched at start") == 1
  # Chosen itself, it shows the same note once (not twice), with Download.
  chosen = studio.picker.describe_model({"model": "published:sm"})
  assert chosen["model_info"].count("could not be fetched at start") == 1
  assert chosen["download"]["visible"] is True
  # The log tells the owner the three ways out.
  for advice in ("XFACTOR_SM_URL", "--export sm sm.zip",
                 "huggingface.co/USER/REPO/resolve/main/sm.zip",
                 "XFACTOR_FETCH_AT_START"):
    assert advice in caplog.text, advice
  # A download from the page is not a start-up fetch: no such note.
  server.serve("mv.zip", archive, status=404)
  studio.downloads.start("mv", from_page=True)
  assert "HTTP 404" in studio.downloads.wait("mv", timeout=60).error
  assert "multi-view (published) could not be fetched at start" not in (
      studio.picker.line(default))
