"""Browser test: Chromium (Playwright) loads the app, runs an example, scrubs.

Needs the ``playwright`` package and Debian's Chromium at /usr/bin/chromium
(``apt-get install -y chromium``); skipped with the reason when either is
missing. Set XFACTOR_SCREENSHOT_DIR to keep the screenshots.
"""

import os
import pathlib
import shutil

import pytest

from xfactor_core.app import testing

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
STATUS_DONE = ("() => { const s = document.querySelector('#status');"
               " return s && s.innerText.includes('%s'); }")

try:
  from playwright.sync_api import sync_playwright
except ImportError:
  sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not "
                       "installed: pip install playwright"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is missing at "
                       "/usr/bin/chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def app_url(reference_dir, tmp_path_factory):
  folder = testing.write_test_checkpoints(
      tmp_path_factory.mktemp("ckpts"),
      reference_dir / "official_format_checkpoint")
  with testing.serve_app(folder, extra_args=["--no-default-models"]) as url:
    yield url


@pytest.fixture(scope="module")
def browser():
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                         args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def page(app_url, browser):
  page = browser.new_page(viewport={"width": 1400, "height": 1900})
  external = []
  page.on("request", lambda r: external.append(r.url)
          if not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
          else None)
  page.goto(app_url, wait_until="load")
  page.wait_for_selector("#run", timeout=60_000)
  page.external_requests = external
  yield page
  page.close()


def _screenshot(page, tmp_path, name):
  path = tmp_path / name
  page.screenshot(path=str(path), full_page=True)
  keep = os.environ.get("XFACTOR_SCREENSHOT_DIR")
  if keep:
    pathlib.Path(keep).mkdir(parents=True, exist_ok=True)
    shutil.copy(path, pathlib.Path(keep) / name)
  return path


def test_example_click_runs_a_transfer(page, tmp_path):
  assert "XFactor Studio" in page.inner_text("body")
  assert page.external_requests == []  # nothing fetched from the web
  page.get_by_text("cat · pan right").first.click()
  page.wait_for_function(STATUS_DONE % "Done", timeout=90_000)
  assert "30 frames at 64 px" in page.inner_text("#status")
  source = page.locator("#result-video video").get_attribute("src")
  assert source and ".mp4" in source
  assert page.locator("#preview img").count() == 30
  shot = _screenshot(page, tmp_path, "app_after_example.png")
  assert shot.stat().st_size > 20_000


def test_export_button_offers_a_zip(page):
  page.get_by_text("Export", exact=True).first.click()
  page.click("#export-button")
  link = page.locator("#export-file a").first
  link.wait_for(timeout=30_000)
  text = page.inner_text("#export-file").replace("\n", "")
  assert "xfactor_pan_right.zip" in text and "KB" in text


def test_scrub_and_cached_example(page, tmp_path):
  generated = page.locator("#scrub-generated img")
  before = generated.get_attribute("src")
  number = page.locator("#scrub input[type=number]")
  number.fill("7.5")
  number.press("Enter")
  page.wait_for_function(
      "(before) => { const i = document.querySelector('#scrub-generated img');"
      " return i && i.src !== before; }", arg=before, timeout=30_000)
  page.get_by_text("cat · pan right").first.click()
  page.wait_for_function(STATUS_DONE % "cached", timeout=30_000)
  page.wait_for_timeout(1000)
  _screenshot(page, tmp_path, "app_scrubbed.png")


def test_cancel_stops_a_running_transfer(page, tmp_path):
  page.get_by_text("Options").first.click()
  resolution = page.get_by_label("Output resolution (px)")
  resolution.click()
  page.get_by_role("option", name="192").click()
  page.get_by_text("synthetic room 1 · orbit left").first.click()
  # Wait for the first streamed chunk, then cancel.
  page.wait_for_function(
      "() => document.querySelectorAll('#preview img').length > 0 && "
      "document.querySelector('#status').innerText.includes('rendered')",
      timeout=90_000)
  page.click("#cancel")
  page.wait_for_function(STATUS_DONE % "Cancel", timeout=30_000)
  # The job stops after the chunk it is rendering and ends its event
  # normally, so no output shows an error badge.
  page.wait_for_function(STATUS_DONE % "Cancelled after", timeout=60_000)
  assert 0 < page.locator("#preview img").count() < 30
  for output in ("#result-video", "#preview", "#scrub-generated"):
    assert "Error" not in page.inner_text(output)
  _screenshot(page, tmp_path, "app_cancelled.png")
  # The job slot is free again: the next job runs to its end.
  resolution.click()
  page.get_by_role("option", name="native").click()
  # (Cached when an earlier test rendered it, "Done" when run alone.)
  page.get_by_text("cat · pan right").first.click()
  page.wait_for_function(
      "() => { const s = document.querySelector('#status').innerText;"
      " return s.includes('cached') || s.startsWith('Done'); }",
      timeout=60_000)


def test_the_model_picker_downloads_a_published_model(reference_dir, browser,
                                                      tmp_path):
  """A published model is listed as not downloaded; choosing it shows
  Download, whose progress shows in the page; then the model is selected."""
  import json  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top

  from xfactor_core import checkpoints, fetch, fetch_testing  # pylint: disable=g-import-not-at-top
  archive = fetch_testing.make_release_archive(
      tmp_path / "release.zip", checkpoint_dir=reference_dir /
      "official_format_checkpoint" / "checkpoints-0",
      compression=zipfile.ZIP_STORED)
  tiny = checkpoints.ModelConfig(64, 4, 8, 2, 2, 32, 32).to_dict()
  with fetch_testing.ArchiveServer() as server:
    table = {"sm": {"url": server.serve("sm.zip", archive, delay=0.04),
                    "config": tiny, "image_size": 64}}
    (tmp_path / "sources.json").write_text(json.dumps(table))
    env = {"XFACTOR_SOURCES": str(tmp_path / "sources.json"),
           "XFACTOR_HOME": str(tmp_path / "home")}
    with testing.serve_app(env=env) as url:
      page = browser.new_page(viewport={"width": 1400, "height": 900})
      page.goto(url, wait_until="load")
      page.wait_for_selector("#run", timeout=60_000)
      assert "Offline demo stereo-monocular" in page.input_value("#model input")
      page.click("#model input")
      option = page.get_by_role(
          "option", name="XFactor stereo-monocular (published) · not "
          "downloaded (1.9 MB)")
      option.wait_for(timeout=10_000)
      _screenshot(page, tmp_path, "picker_listing.png")
      option.click()
      page.locator("#download").wait_for(state="visible", timeout=10_000)
      assert "Press Download" in page.inner_text("#model-info")
      page.click("#download")
      page.wait_for_function(
          "() => document.querySelector('#model-info').innerText"
          ".includes('Downloading sm')", timeout=30_000)
      _screenshot(page, tmp_path, "picker_downloading.png")
      page.wait_for_function(
          "() => document.querySelector('#model input').value === "
          "'XFactor stereo-monocular (published)'", timeout=60_000)
      page.locator("#download").wait_for(state="hidden", timeout=10_000)
      assert "loads on first use" in page.inner_text("#model-info")
      _screenshot(page, tmp_path, "picker_downloaded.png")
      page.close()
  assert fetch.installed_path("sm", tmp_path / "home") is not None


# ------------------------------------------------- what a Space's visitors see


def _pick_resolution(page, value):
  """Opens the Options accordion if needed and picks an output resolution."""
  resolution = page.get_by_label("Output resolution (px)")
  if not resolution.is_visible():
    page.get_by_text("Options").first.click()
  resolution.click()
  page.get_by_role("option", name=value, exact=True).click()


def _start_a_long_job(page):
  """A 512 px transfer, waited on until it renders (its model is loaded, so
  the next job's wait can be estimated)."""
  _pick_resolution(page, "512")
  page.get_by_text("synthetic room 2 · move up").first.click()
  page.wait_for_function(
      "() => document.querySelector('#status').innerText.includes('render')",
      timeout=90_000)


def _new_page(browser, url):
  page = browser.new_page(viewport={"width": 1400, "height": 1000})
  page.goto(url, wait_until="load")
  page.wait_for_selector("#run", timeout=60_000)
  return page


def test_visitors_in_the_queue_see_their_place_and_wait(page, browser,
                                                        app_url, tmp_path):
  """A second visitor's job waits behind the first: its status names the
  jobs ahead and the estimated wait; it runs once the first is done."""
  second = _new_page(browser, app_url)
  _start_a_long_job(page)
  second.get_by_text("coffee cup · spiral").first.click()
  second.wait_for_function(STATUS_DONE % "Queued: 1 job ahead of yours",
                           timeout=30_000)
  status = second.inner_text("#status")
  assert "estimated wait until your result about" in status, status
  second.wait_for_timeout(1500)  # Gradio's own queue display settles
  _screenshot(second, tmp_path, "queue_waiting.png")
  page.click("#cancel")
  page.wait_for_function(STATUS_DONE % "Cancelled", timeout=90_000)
  second.wait_for_function(
      "() => { const s = document.querySelector('#status').innerText;"
      " return s.includes('cached') || s.startsWith('Done'); }",
      timeout=120_000)
  second.close()
  _pick_resolution(page, "native")


def test_a_space_shows_its_failed_start_fetch_and_refuses_long_waits(
    reference_dir, browser, tmp_path):
  """A Space whose start-up fetch fails says so in the model line; with a
  wait bound below the first job's, a second job is refused at once with
  the wait named, and nothing of it is queued."""
  import json  # pylint: disable=g-import-not-at-top

  from xfactor_core import checkpoints, fetch_testing  # pylint: disable=g-import-not-at-top
  folder = testing.write_test_checkpoints(
      tmp_path / "ckpts", reference_dir / "official_format_checkpoint")
  tiny = checkpoints.ModelConfig(64, 4, 8, 2, 2, 32, 32).to_dict()
  with fetch_testing.ArchiveServer() as server:
    table = {"sm": {"url": server.serve("sm.zip", status=404),
                    "config": tiny, "image_size": 64}}
    (tmp_path / "sources.json").write_text(json.dumps(table))
    env = {"XFACTOR_SOURCES": str(tmp_path / "sources.json"),
           "XFACTOR_HOME": str(tmp_path / "home"),
           "XFACTOR_FETCH_AT_START": "sm", "XFACTOR_MAX_WAIT_S": "0.01"}
    log = tmp_path / "app.log"
    with testing.serve_app(folder, extra_args=["--no-default-models"],
                           env=env, log_file=log) as url:
      first = _new_page(browser, url)
      first.wait_for_function(
          "() => document.querySelector('#model-info').innerText"
          ".includes('could not be fetched at start')", timeout=60_000)
      line = first.inner_text("#model-info")
      assert ("XFactor stereo-monocular (published) could not be fetched "
              "at start") in line, line
      assert "HTTP 404" in line, line
      _screenshot(first, tmp_path, "start_fetch_failed.png")
      second = _new_page(browser, url)
      _start_a_long_job(first)
      second.get_by_text("coffee cup · spiral").first.click()
      second.wait_for_function(STATUS_DONE % "Not queued.", timeout=30_000)
      status = second.inner_text("#status")
      assert "1 job ahead of yours, an estimated wait of about" in status
      assert "Nothing was queued" in status
      second.wait_for_timeout(2000)
      _screenshot(second, tmp_path, "queue_refused.png")
      # No job of its own: the status stays, nothing renders.
      assert second.inner_text("#status") == status
      assert second.locator("#preview img").count() == 0
      # An API call is refused the same way, before it is queued.
      from gradio_client import Client, handle_file  # pylint: disable=g-import-not-at-top
      from gradio_client.exceptions import ValidationError  # pylint: disable=g-import-not-at-top
      from xfactor_core.app import presets  # pylint: disable=g-import-not-at-top
      cat = presets.load_presets().context("photo: cat").files[0]
      with pytest.raises(ValidationError, match="1 job ahead of yours"):
        Client(url, verbose=False).predict(
            context=[handle_file(str(cat))], target=None, preset="zoom in",
            num_frames=30, api_name="/transfer")
      first.click("#cancel")
      first.wait_for_function(STATUS_DONE % "Cancelled", timeout=90_000)
      first.close()
      second.close()
  text = log.read_text()
  assert "the start-up fetch of sm (XFACTOR_FETCH_AT_START) failed" in text
  assert "--export sm sm.zip" in text and "XFACTOR_SM_URL" in text
  assert "refused a transfer: 1 job(s) ahead" in text
  assert "refused an API transfer: 1 job(s) ahead" in text


def test_camera_path_choice_follows_the_model(reference_dir,
                                              tiny_warp_checkpoint, browser,
                                              tmp_path):
  """The "Camera path" radio shows for the warp model only, and its choice
  reaches the transfer (composed: the status says so)."""
  folder = testing.write_test_checkpoints(
      tmp_path / "ckpts", reference_dir / "official_format_checkpoint")
  shutil.copytree(tiny_warp_checkpoint, folder / "tiny_warp")
  with testing.serve_app(folder, extra_args=["--no-default-models"]) as url:
    page = browser.new_page(viewport={"width": 1400, "height": 1900})
    page.goto(url, wait_until="load")
    page.wait_for_selector("#run", timeout=60_000)
    radio = page.locator("#path-mode")

    def pick(name):
      page.click("#model input")
      page.get_by_role("option", name=name).click()

    pick("tiny stereo-monocular (test weights)")
    radio.wait_for(state="hidden", timeout=10_000)
    pick("tiny warp")
    radio.wait_for(state="visible", timeout=10_000)
    assert "composed: the steps between consecutive frames" in (
        radio.inner_text())
    page.get_by_label("composed: the steps between consecutive frames",
                      exact=False).check()
    page.get_by_text("cat · pan right").first.click()
    page.wait_for_function(STATUS_DONE % "Done", timeout=90_000)
    assert "Camera path: composed" in page.inner_text("#status")
    _screenshot(page, tmp_path, "app_composed_path.png")
    pick("tiny stereo-monocular (test weights)")
    radio.wait_for(state="hidden", timeout=10_000)
    page.close()
