"""Tests of xfactor_core.fetch against a local HTTP server (never the internet).

The archive served is the published layout built from the official-format
fixture: a whole train state (params, opt_state, lpips_params, ...) of the tiny
parity model, zipped as ``stereo_monocular/checkpoints-0/...``.
"""

import datetime
import email.utils
import errno
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
import zipfile

import jax
import numpy as np
import pytest
from flax import serialization

from xfactor_core import checkpoints, fetch, fetch_testing, transfer
from xfactor_core.app import presets

TINY = checkpoints.ModelConfig(64, 4, 8, 2, 2, 32, 32)
LIBRARY = presets.load_presets()
CAT = LIBRARY.context("photo: cat").files[0]
ORBIT = LIBRARY.motion("orbit left").clip


@pytest.fixture(scope="module")
def archive(reference_dir, tmp_path_factory):
  return fetch_testing.make_release_archive(
      tmp_path_factory.mktemp("release") / "stereo_monocular.zip",
      checkpoint_dir=reference_dir / "official_format_checkpoint" /
      "checkpoints-0", compression=zipfile.ZIP_DEFLATED)


@pytest.fixture
def home(tmp_path, monkeypatch):
  """A fresh cache, and a sources table that expects the tiny model."""
  table = {"sm": {"config": TINY.to_dict(), "image_size": 64},
           "mv": {"config": TINY.to_dict(), "image_size": 64,
                  "num_context_views": 3}}
  sources = tmp_path / "sources.json"
  sources.write_text(json.dumps(table))
  monkeypatch.setenv("XFACTOR_SOURCES", str(sources))
  root = tmp_path / "home"
  monkeypatch.setenv("XFACTOR_HOME", str(root))
  return root


@pytest.fixture
def server():
  with fetch_testing.ArchiveServer() as srv:
    yield srv


def _golden(reference_dir):
  return serialization.msgpack_restore(
      (reference_dir / "parity" / "parity_f32_seed0.msgpack").read_bytes())


def _assert_nothing_installed(root, name="sm", partial_ok=False):
  assert fetch.installed_path(name, root) is None
  models = root / "models"
  leftovers = sorted(p.name for p in models.iterdir()) if models.exists() else []
  assert leftovers == [], leftovers
  if not partial_ok:
    assert not (root / "downloads" / f"{name}.zip.part").exists()


def test_fetch_installs_the_params_and_transfers(home, server, archive,
                                                 reference_dir, tmp_path,
                                                 capsys):
  url = server.serve("sm.zip", archive)
  assert fetch.main(["sm", "--url", url]) == 0
  path = fetch.installed_path("sm", home)
  assert path == home / "models" / "sm"
  # Only the params are kept (no optimiser state): smaller than the archive.
  info = json.loads((path / "model.json").read_text())
  assert info["kind"] == "stereo-monocular" and info["image_size"] == 64
  assert info["config"] == TINY.to_dict()
  assert info["published"]["url"] == url
  assert info["published"]["member"].endswith("checkpoints-0/ckpt-1.flax")
  state, _ = checkpoints.load_state(path)
  assert set(state) == {"step", "params"}
  installed = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
  with zipfile.ZipFile(archive) as z:
    train_state = z.getinfo(info["published"]["member"]).file_size
  assert installed < 0.5 * train_state
  for a, b in zip(jax.tree.leaves(checkpoints.load_params(path)),
                  jax.tree.leaves(_golden(reference_dir))):
    np.testing.assert_array_equal(a, b)
  # Installed once: a second fetch asks the server nothing.
  requests = len(server.requests)
  assert fetch.fetch("sm") == path and len(server.requests) == requests
  # The CLI uses it by name.
  out = tmp_path / "out.gif"
  assert transfer.main(["--checkpoint", "sm", "--context", str(CAT),
                        "--target", str(ORBIT), "--num-frames", "4",
                        "--out", str(out)]) == 0
  assert out.stat().st_size > 0
  capsys.readouterr()
  assert fetch.main(["--list"]) == 0
  listing = capsys.readouterr().out
  assert f"| sm | XFactor stereo-monocular (published) | installed |" in listing
  assert str(path) in listing
  assert "| mv |" in listing and "not downloaded" in listing
  assert fetch.main(["--remove", "sm"]) == 0
  assert fetch.installed_path("sm", home) is None


def test_an_interrupted_download_resumes_where_it_stopped(home, server,
                                                          archive):
  size = archive.stat().st_size
  cut = size // 2
  url = server.serve("sm.zip", archive, cut_after=cut)
  with pytest.raises(fetch.FetchError, match="was cut after .* it resumes"):
    fetch.fetch("sm", url=url, retries=0)
  _assert_nothing_installed(home, partial_ok=True)
  assert (home / "downloads" / "sm.zip.part").stat().st_size == cut
  entry = fetch.cache_entry("sm", home)
  assert entry.partial_bytes == cut and entry.expected_bytes == size
  fetch.fetch("sm", url=url, retries=0)
  first, second = server.requests
  assert first.range is None and first.sent == cut
  assert second.range == f"bytes={cut}-" and second.status == 206
  assert second.sent == size - cut  # only the rest
  assert fetch.installed_path("sm", home) is not None
  assert not (home / "downloads" / "sm.zip.part").exists()


def test_a_cut_connection_is_resumed_within_one_fetch(home, server, archive):
  size = archive.stat().st_size
  url = server.serve("sm.zip", archive, cut_after=size // 3, cuts=2)
  stages = []
  fetch.fetch("sm", url=url, retries=3, retry_wait=0.01,
              progress=lambda p: stages.append(p))
  assert [r.status for r in server.requests] == [200, 206, 206]
  assert server.sent_bytes("sm.zip") == size
  downloading = [p for p in stages if p.stage == "downloading"]
  assert downloading[-1].done == size and downloading[-1].total == size
  assert f"of {fetch.format_bytes(size)}" in downloading[-1].describe()
  assert [r.sent for r in server.requests] == [size // 3, size // 3,
                                               size - 2 * (size // 3)]
  assert stages[-1].stage == "done"


def test_a_server_without_ranges_restarts_the_download(home, server, archive):
  size = archive.stat().st_size
  url = server.serve("sm.zip", archive, cut_after=size // 2, ranges=False)
  fetch.fetch("sm", url=url, retries=1, retry_wait=0.01)
  assert [r.status for r in server.requests] == [200, 200]
  assert server.requests[1].sent == size
  assert fetch.installed_path("sm", home) is not None


def _truncated(archive, tmp_path):
  bad = tmp_path / "truncated.zip"
  bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
  return bad


def _corrupt_member(archive, tmp_path):
  data = bytearray(archive.read_bytes())
  with zipfile.ZipFile(archive) as z:
    info = next(i for i in z.infolist() if i.filename.endswith(".flax"))
  middle = info.header_offset + 100 + info.compress_size // 2
  data[middle:middle + 64] = bytes(64)
  bad = tmp_path / "corrupt.zip"
  bad.write_bytes(bytes(data))
  return bad


def _other_tree(archive, tmp_path):
  """The right layout, but a params tree of another model (pose_dim 16)."""
  other = checkpoints.ModelConfig(64, 4, 8, 2, 2, 16, 32)
  from xfactor_core.app import testing  # pylint: disable=g-import-not-at-top
  folder = testing.write_random_checkpoint(tmp_path / "other", other,
                                           image_size=16)
  return fetch_testing.make_release_archive(
      tmp_path / "other.zip", checkpoint_dir=folder / "checkpoints-0")


def _no_checkpoint(archive, tmp_path):
  bad = tmp_path / "empty.zip"
  with zipfile.ZipFile(bad, "w") as z:
    z.writestr("stereo_monocular/README.txt", "nothing here")
  return bad


@pytest.mark.parametrize("make_bad, message", [
    (_truncated, "not a valid zip .* truncated or corrupt"),
    (_corrupt_member, "(Bad CRC-32|corrupt or truncated|cannot be read)"),
    (_other_tree, "not the model's tree: .*PoseHead.* has shape .*16"),
    (_no_checkpoint, "holds no clu checkpoint"),
])
def test_bad_archives_are_refused_and_nothing_is_installed(
    home, server, archive, tmp_path, make_bad, message):
  url = server.serve("sm.zip", make_bad(archive, tmp_path))
  with pytest.raises(fetch.FetchError, match=message):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)


def test_web_pages_and_other_files_are_refused(home, server, archive,
                                               tmp_path):
  url = server.serve("page", archive, html=True)
  with pytest.raises(fetch.FetchError,
                     match="answered with a web page .*dl=1"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)
  text = tmp_path / "notes.txt"
  text.write_bytes(b"just some text, not an archive" * 100)
  url = server.serve("notes", text)
  with pytest.raises(fetch.FetchError, match="did not send a zip archive"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)


def test_the_published_models_must_have_the_published_tree(
    server, archive, monkeypatch, tmp_path):
  """Without the tiny table, sm expects the published 305M-parameter tree."""
  monkeypatch.setenv("XFACTOR_HOME", str(tmp_path / "home"))
  monkeypatch.delenv("XFACTOR_SOURCES", raising=False)
  url = server.serve("sm.zip", archive)
  with pytest.raises(fetch.FetchError,
                     match=r"not the published XFactor tree: .*PoseEnc/"
                           r"Dense_0/bias has shape \(64,\) but the model .* "
                           r"needs \(1024,\)"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(tmp_path / "home")


def test_http_errors_name_the_status_and_the_fix(home, server):
  for status, hint in ((404, "the release may have moved"),
                       (403, "an expired or private link")):
    url = server.serve(f"e{status}", status=status)
    with pytest.raises(fetch.FetchError, match=f"HTTP {status} .*{hint}.* "
                                               "XFACTOR_SM_URL"):
      fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)


def test_no_network_gives_the_addresses_and_the_offline_way(home, caplog):
  from xfactor_core.app import testing  # pylint: disable=g-import-not-at-top
  url = f"http://127.0.0.1:{testing.free_port()}/sm.zip"
  with caplog.at_level(logging.ERROR):
    assert fetch.main(["sm", "--url", url]) == 2
  message = caplog.text
  assert "Connection refused" in message and "no network access" in message
  for model in fetch.PUBLISHED.values():  # the real addresses, to fetch elsewhere
    assert model.url in message
  assert "--checkpoints DIR" in message and "--url /path/to/archive.zip" in message
  _assert_nothing_installed(home)


def test_two_fetches_at_once_download_once(home, server, archive, tmp_path):
  """A second process asking for the model while it downloads waits for that
  download, then finds it installed."""
  url = server.serve("sm.zip", archive, delay=0.03)  # about 4 s in all
  other = subprocess.Popen(
      [sys.executable, "-m", "xfactor_core.fetch", "sm", "--url", url],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 60
  while not server.requests and time.monotonic() < deadline:
    if other.poll() is not None:
      break
    time.sleep(0.05)
  part = home / "downloads" / "sm.zip.part"
  while not part.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  stages = []
  path = fetch.fetch("sm", url=url, progress=lambda p: stages.append(p.stage))
  output = other.communicate(timeout=120)[0].decode()
  assert other.returncode == 0, output
  assert "waiting" in stages and "downloading" not in stages
  assert path == fetch.installed_path("sm", home)
  assert len(server.requests) == 1, server.requests


def test_disk_space_is_checked_before_downloading(home, server, archive,
                                                  monkeypatch):
  url = server.serve("sm.zip", archive)
  monkeypatch.setattr(fetch.shutil, "disk_usage",
                      lambda path: type("U", (), {"free": 10_000_000})())
  with pytest.raises(fetch.FetchError, match="not enough free disk space .* "
                                             "set XFACTOR_HOME"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)


def test_a_full_disk_while_installing_leaves_nothing(home, server, archive,
                                                     monkeypatch):
  url = server.serve("sm.zip", archive)

  def full(directory, params, **kwargs):
    pathlib.Path(directory).mkdir(parents=True)
    (pathlib.Path(directory) / "ckpt-1.flax").write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(fetch.checkpoints, "save_params", full)
  with pytest.raises(fetch.FetchError, match="filled up .*No space left"):
    fetch.fetch("sm", url=url)
  assert fetch.installed_path("sm", home) is None
  assert list((home / "models").iterdir()) == []


def test_a_local_zip_or_unzipped_folder_installs_without_network(
    home, archive, reference_dir):
  path = fetch.fetch("sm", url=str(archive))
  assert json.loads((path / "model.json").read_text())["published"][
      "archive_sha256"] is not None
  assert fetch.remove("sm")
  folder = reference_dir / "official_format_checkpoint"
  path = fetch.fetch("sm", url=str(folder))
  assert checkpoints.infer_config(checkpoints.load_params(path)) == TINY
  with pytest.raises(fetch.FetchError, match="does not exist"):
    fetch.fetch("mv", url=str(folder / "nope.zip"))


def test_a_name_that_is_not_installed_says_how_to_fetch_it(home, tmp_path,
                                                           caplog):
  with pytest.raises(checkpoints.CheckpointError,
                     match="python -m xfactor_core.fetch mv"):
    fetch.checkpoint_path("mv")
  with caplog.at_level(logging.ERROR):
    assert transfer.main(["--checkpoint", "mv", "--context", str(CAT),
                          "--target", str(ORBIT),
                          "--out", str(tmp_path / "o.gif")]) == 2
  assert "is not downloaded yet; fetch it once with: python -m " \
         "xfactor_core.fetch mv" in caplog.text
  # A path that exists wins over the name.
  (tmp_path / "mv").mkdir()
  assert fetch.checkpoint_path(tmp_path / "mv") == tmp_path / "mv"


def test_the_table_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("XFACTOR_SM_URL", "https://mirror.example/sm.zip")
  table = fetch.sources()
  assert table["sm"].url == "https://mirror.example/sm.zip"
  assert table["mv"].url == fetch.PUBLISHED["mv"].url
  assert table["sm"].config == checkpoints.PUBLISHED_CONFIG
  assert table["sm"].installed_bytes == 4 * 305_178_624
  bad = tmp_path / "bad.json"
  bad.write_text('{"sm": {"colour": "red"}}')
  monkeypatch.setenv("XFACTOR_SOURCES", str(bad))
  with pytest.raises(fetch.FetchError, match="XFACTOR_SOURCES=.*cannot be used"):
    fetch.sources()
  monkeypatch.setenv("XFACTOR_HOME", str(tmp_path / "h"))
  assert fetch.cache_root() == tmp_path / "h"
  monkeypatch.delenv("XFACTOR_HOME")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
  assert fetch.cache_root() == tmp_path / "c" / "xfactor"


def test_progress_lines_read_well():
  p = fetch.Progress("sm", "downloading", 1_200_000_000, 3_400_000_000,
                     45_000_000)
  assert p.describe() == ("downloading sm: 1.2 GB of 3.4 GB, 45.0 MB/s, "
                          "49 s left")
  assert fetch.Progress("sm", "waiting", 0, None).describe().startswith(
      "waiting for another download of sm")
  assert fetch.format_bytes(1_220_714_496) == "1.2 GB"


# ------------------------------------------------ every server answer --


def _sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture
def waits(monkeypatch):
  """The fetch's waits between tries, recorded instead of slept."""
  recorded = []
  monkeypatch.setattr(fetch, "_sleep", recorded.append)
  return recorded


def _partial_download(server, archive, name="sm.zip"):
  """Serves the archive, lets a fetch stop halfway; returns (url, cut)."""
  cut = archive.stat().st_size // 2
  url = server.serve(name, archive, cut_after=cut)
  with pytest.raises(fetch.FetchError, match="it resumes from there"):
    fetch.fetch("sm", url=url, retries=0)
  return url, cut


@pytest.mark.parametrize("statuses", [[503, 429, 408], [500, 502, 504]])
def test_busy_answers_are_retried_honouring_retry_after_then_resumed(
    home, server, archive, waits, statuses):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", fail=list(statuses), retry_after="3")
  path = fetch.fetch("sm", url=url, retries=3, retry_wait=0.01)
  assert [r.status for r in server.requests] == [200] + statuses + [206]
  assert all(r.range == f"bytes={cut}-" for r in server.requests[1:])
  assert server.requests[-1].sent == archive.stat().st_size - cut
  assert waits == [3.0, 3.0, 3.0]  # the server's Retry-After, not the backoff
  info = json.loads((path / "model.json").read_text())
  assert info["published"]["archive_sha256"] == _sha256(archive)


def test_the_backoff_doubles_and_retry_after_is_capped(home, server, archive,
                                                       waits):
  url = server.serve("sm.zip", archive, fail=[503, 503, 503])
  fetch.fetch("sm", url=url, retries=3, retry_wait=0.25)
  assert waits == [0.25, 0.5, 1.0]
  when = email.utils.format_datetime(
      datetime.datetime.now(datetime.timezone.utc)
      + datetime.timedelta(hours=2), usegmt=True)
  url = server.serve("mv.zip", archive, fail=[429], retry_after=when)
  fetch.fetch("mv", url=url, retries=1, retry_wait=0.01, max_wait=7.0)
  assert waits[-1] == 7.0  # an HTTP date two hours away, capped


def test_retry_after_reads_seconds_and_http_dates():
  now = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)
  assert fetch.parse_retry_after("120", now) == 120.0
  assert fetch.parse_retry_after("Sun, 06 Dec 2026 12:01:30 GMT", now) == 90.0
  assert fetch.parse_retry_after("Sun, 06 Dec 2026 11:00:00 GMT", now) == 0.0
  assert fetch.parse_retry_after("soon", now) is None
  assert fetch.parse_retry_after(None, now) is None
  policy = fetch.RetryPolicy(retries=3, wait=2.0, max_wait=60.0)
  assert [policy.delay(a) for a in (1, 2, 3)] == [2.0, 4.0, 8.0]
  assert policy.delay(1, retry_after=30.0) == 30.0
  assert policy.delay(1, retry_after=3600.0) == 60.0


def test_a_traffic_limit_page_names_the_ways_out_and_waiting_works(
    home, server, archive, waits, caplog):
  url = server.serve("sm.zip", archive, fail=[429] * 3, fail_html=True,
                     retry_after="3600")
  with caplog.at_level(logging.ERROR):
    assert fetch.main(["sm", "--url", url, "--retries", "2",
                       "--retry-wait", "0.01"]) == 2
  message = caplog.text
  assert "HTTP 429 Too Many Requests (as a web page, not the archive) 3 " \
         "times (it asked to wait 3600 s)" in message
  assert "traffic" in message and "Wait, then run" in message
  assert "python -m xfactor_core.fetch --export sm sm.zip" in message
  assert ("XFACTOR_SM_URL=https://huggingface.co/<user>/<repo>/resolve/main/"
          "sm.zip") in message
  assert "--url /path/to/archive.zip" in message
  assert waits == [120.0, 120.0]  # Retry-After, capped at the default
  _assert_nothing_installed(home)
  # The advice works: once the host serves again, the same command installs.
  assert fetch.main(["sm", "--url", url]) == 0
  assert fetch.installed_path("sm", home) is not None


def test_a_server_in_trouble_says_so_and_keeps_the_partial_download(
    home, server, archive, waits):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", fail=[503] * 2)
  with pytest.raises(fetch.FetchError,
                     match=r"HTTP 503 .* 2 times: the server has trouble .* "
                           r"it resumes from the .* kept\. Or use a mirror"):
    fetch.fetch("sm", url=url, retries=1, retry_wait=0.01)
  assert (home / "downloads" / "sm.zip.part").stat().st_size == cut
  fetch.fetch("sm", url=url)
  assert server.requests[-1].range == f"bytes={cut}-"


@pytest.mark.parametrize("behaviour", [
    {"content_range": "bytes 0-99/100"},  # a lie about what is sent
    {"content_range": "bytes */*"},  # unreadable
    {"range_shift": -1000},  # resumes after the asked byte: a gap
])
def test_an_inconsistent_resume_restarts_from_zero(home, server, archive,
                                                   waits, behaviour):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", **behaviour)
  path = fetch.fetch("sm", url=url, retries=2, retry_wait=0.01)
  statuses = [(r.status, r.range) for r in server.requests]
  assert statuses == [(200, None), (206, f"bytes={cut}-"), (200, None)]
  assert server.requests[-1].sent == archive.stat().st_size
  info = json.loads((path / "model.json").read_text())
  assert info["published"]["archive_sha256"] == _sha256(archive)


def test_a_resume_that_starts_early_continues_at_the_right_byte(
    home, server, archive):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", range_shift=1000)  # true Content-Range, 1000 early
  path = fetch.fetch("sm", url=url, retries=0)
  assert [r.status for r in server.requests] == [200, 206]
  assert server.requests[-1].sent == archive.stat().st_size - cut + 1000
  info = json.loads((path / "model.json").read_text())
  assert info["published"]["archive_sha256"] == _sha256(archive)


def test_a_server_that_ignores_range_restarts_with_a_fresh_digest(
    home, server, archive):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", ranges=False)
  path = fetch.fetch("sm", url=url, retries=0)
  assert [(r.status, r.sent) for r in server.requests] == [
      (200, cut), (200, archive.stat().st_size)]
  info = json.loads((path / "model.json").read_text())
  assert info["published"]["archive_sha256"] == _sha256(archive)


def test_a_web_page_without_its_type_is_named_a_web_page(home, server,
                                                        archive):
  url = server.serve("page", archive, html=True,
                     html_type="application/octet-stream")
  with pytest.raises(fetch.FetchError,
                     match=r"web page \(application/octet-stream\).*sign-in "
                           r"or 'too much traffic' page.*--export sm"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)


def test_a_web_page_on_resume_keeps_the_partial_download(home, server,
                                                         archive):
  url, cut = _partial_download(server, archive)
  server.update("sm.zip", html=True)  # the host's traffic-limit page
  with pytest.raises(fetch.FetchError, match="web page .* wait"):
    fetch.fetch("sm", url=url)
  assert (home / "downloads" / "sm.zip.part").stat().st_size == cut
  server.update("sm.zip", html=False)  # waiting worked: it resumes
  fetch.fetch("sm", url=url)
  assert server.requests[-1].range == f"bytes={cut}-"
  assert server.requests[-1].sent == archive.stat().st_size - cut


# ----------------------------------------------------------- one pass --


def test_the_digest_is_taken_as_bytes_arrive(home, server, archive,
                                             monkeypatch):
  hashed = []
  original = fetch._hash_prefix
  monkeypatch.setattr(fetch, "_hash_prefix",
                      lambda file, size: hashed.append(size) or
                      original(file, size))
  url, cut = _partial_download(server, archive)
  assert hashed == []  # a fresh download reads nothing back
  path = fetch.fetch("sm", url=url)
  assert hashed == [cut]  # a resume hashes the kept prefix once, no more
  assert json.loads((path / "model.json").read_text())["published"][
      "archive_sha256"] == _sha256(archive)


def test_a_digest_belongs_to_the_address_it_came_with(home, server, archive,
                                                      tmp_path, monkeypatch):
  url = server.serve("sm.zip", archive)
  table = json.loads(pathlib.Path(os.environ["XFACTOR_SOURCES"]).read_text())
  table["sm"].update(url=url, sha256="0" * 64)
  sources = tmp_path / "digest.json"
  sources.write_text(json.dumps(table))
  monkeypatch.setenv("XFACTOR_SOURCES", str(sources))
  with pytest.raises(fetch.FetchError, match=f"SHA-256 is {_sha256(archive)}"
                                             f", not the expected 0000"):
    fetch.fetch("sm")
  _assert_nothing_installed(home)
  # The same file from another address: the table's digest does not apply.
  other = server.serve("mirror.zip", archive)
  with pytest.raises(fetch.FetchError, match="not the expected 1111"):
    fetch.fetch("sm", url=other, sha256="1" * 64)  # one given with it does
  path = fetch.fetch("sm", url=other)
  assert fetch.installed_path("sm", home) == path
  monkeypatch.setenv("XFACTOR_SM_URL", other)
  assert fetch.sources()["sm"].sha256 is None
  monkeypatch.setenv("XFACTOR_SM_SHA256", "AB" * 32)
  assert fetch.sources()["sm"].sha256 == "ab" * 32


# --------------------------------------------------------- half states --


def test_a_model_counts_only_when_its_weights_resolve(home, server, archive,
                                                      tmp_path, caplog,
                                                      capsys):
  url = server.serve("sm.zip", archive)
  path = fetch.fetch("sm", url=url)
  weights = checkpoints.resolve_checkpoint(path)
  weights.write_bytes(weights.read_bytes()[:1000])  # cut short
  assert fetch.installed_path("sm", home) is None
  assert fetch.cache_entry("sm", home).broken
  with caplog.at_level(logging.ERROR):
    assert transfer.main(["--checkpoint", "sm", "--context", str(CAT),
                          "--target", str(ORBIT),
                          "--out", str(tmp_path / "o.gif")]) == 2
  assert "is not installed completely" in caplog.text
  assert "python -m xfactor_core.fetch sm" in caplog.text
  assert fetch.main(["--list"]) == 0
  assert "broken install" in capsys.readouterr().out
  # The advice works: the same fetch replaces it.
  requests = len(server.requests)
  assert fetch.fetch("sm", url=url) == path
  assert len(server.requests) == requests + 1
  assert fetch.installed_path("sm", home) == path
  assert sorted(p.name for p in (home / "models").iterdir()) == ["sm"]


def test_force_reinstalls_and_another_url_says_how_to_replace(
    home, server, archive, caplog):
  url = server.serve("sm.zip", archive)
  path = fetch.fetch("sm", url=url)
  first = json.loads((path / "model.json").read_text())["published"]
  other = server.serve("other.zip", archive)
  with caplog.at_level(logging.ERROR):
    assert fetch.main(["sm", "--url", other]) == 2
  assert "sm is installed already" in caplog.text
  assert f"python -m xfactor_core.fetch sm --url {other} --force" in \
      caplog.text
  assert [r.path for r in server.requests] == ["/sm.zip"]
  assert fetch.fetch("sm", url=url) == path  # its own address: nothing to do
  assert fetch.main(["sm", "--url", other, "--force"]) == 0
  info = json.loads((path / "model.json").read_text())["published"]
  assert info["url"] == other and first["url"] == url
  assert sorted(p.name for p in (home / "models").iterdir()) == ["sm"]
  assert fetch.main(["sm", "--force", "--url", other]) == 0
  assert len(server.requests) == 3


def _run_fetch_cli(args, kill=None, timeout=120):
  env = dict(os.environ)
  if kill:
    env[fetch.TEST_KILL_ENV] = kill
  return subprocess.run([sys.executable, "-m", "xfactor_core.fetch", *args],
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


def _transfer_says(tmp_path, caplog, text):
  caplog.clear()
  with caplog.at_level(logging.ERROR):
    assert transfer.main(["--checkpoint", "sm", "--context", str(CAT),
                          "--target", str(ORBIT),
                          "--out", str(tmp_path / "o.gif")]) == 2
  assert text in caplog.text, caplog.text


@pytest.mark.parametrize("point", ["download", "convert", "install",
                                   "remove"])
def test_a_fetch_killed_midway_is_repaired_by_the_next(
    home, server, archive, tmp_path, caplog, point):
  from xfactor_core.app import registry  # pylint: disable=g-import-not-at-top
  size = archive.stat().st_size
  url = server.serve("sm.zip", archive, delay=0.002)
  if point in ("install", "remove"):  # a model to replace or remove
    fetch.fetch("sm", url=url)
  args = {"install": ["sm", "--url", url, "--force"],
          "remove": ["--remove", "sm"]}.get(point, ["sm", "--url", url])
  done = _run_fetch_cli(args, kill=point)
  assert done.returncode == fetch.KILLED_EXIT, done.stderr
  models = home / "models"
  left = sorted(p.name for p in models.iterdir()) if models.exists() else []
  part = home / "downloads" / "sm.zip.part"
  # What the kill left, and what every reader makes of it.
  assert fetch.installed_path("sm", home) is None
  published = fetch.sources()["sm"]
  assert registry.published_spec(published, home).path is None
  if point == "download":
    assert left == [] and 0 < part.stat().st_size < size
    _transfer_says(tmp_path, caplog, "is not downloaded yet")
  elif point == "convert":
    assert len(left) == 1 and left[0].startswith(".sm.partial-")
    assert part.stat().st_size == size
  elif point == "install":
    assert len(left) == 2 and left[0].startswith(".sm.old-")
    assert left[1].startswith(".sm.partial-")
  else:
    assert len(left) == 1 and left[0].startswith(".sm.removing-")
  if point != "download":
    _transfer_says(tmp_path, caplog, "fetch it once with: python -m "
                                     "xfactor_core.fetch sm")
  # The next fetch does the right thing.
  requests = len(server.requests)
  path = fetch.fetch("sm", url=url)
  new = server.requests[requests:]
  if point == "download":
    assert [r.range for r in new] == [f"bytes={part_size}-"
                                      for part_size in [size - new[0].sent]]
  elif point in ("convert", "install"):
    assert new == []  # the download (convert) or the old model (install)
  else:
    assert [r.range for r in new] == [None]
  assert fetch.installed_path("sm", home) == path
  assert sorted(p.name for p in models.iterdir()) == ["sm"]
  assert registry.published_spec(published, home).path == path
  if point == "install":  # the old model is back; the cut reinstall's
    assert part.stat().st_size == size  # download is kept for a rerun,
    assert fetch.fetch("sm", url=url, force=True) == path  # which uses it
    assert len(server.requests) == requests
  assert not part.exists()


# ------------------------------------------------------ every platform --


def test_the_app_imports_and_fetches_without_fcntl(home, server, archive,
                                                   tmp_path):
  shim = tmp_path / "no_fcntl"
  shim.mkdir()
  (shim / "sitecustomize.py").write_text(
      "import sys\nsys.modules['fcntl'] = None  # as on Windows\n")
  url = server.serve("sm.zip", archive)
  script = (
      "import sys\n"
      "try:\n  import fcntl\nexcept ImportError:\n  pass\n"
      "else:\n  sys.exit('the shim did not take')\n"
      "import app\n"
      "from xfactor_core.app import registry, ui\n"
      "from xfactor_core import fetch\n"
      f"sys.exit(fetch.main(['sm', '--url', {url!r}]))\n")
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([str(shim), str(root)]))
  done = subprocess.run([sys.executable, "-c", script], env=env, cwd=root,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  assert fetch.installed_path("sm", home) is not None


@pytest.mark.parametrize("address, local", [
    (r"C:\Users\me\Downloads\stereo_monocular.zip", True),
    ("D:/models/sm.zip", True),
    (r"\\server\share\sm.zip", True),
    ("file:///tmp/sm.zip", True),
    ("/tmp/sm.zip", True),
    ("~/Downloads/sm.zip", True),
    ("https://huggingface.co/u/r/resolve/main/sm.zip", False),
    ("http://127.0.0.1:8000/sm.zip", False),
])
def test_local_addresses_are_recognised_on_every_system(address, local):
  assert fetch._is_local(address) is local


def test_renames_are_retried_while_windows_holds_a_file(monkeypatch, waits,
                                                        tmp_path):
  tries = []

  def flaky():
    tries.append(1)
    if len(tries) < 3:
      raise PermissionError(13, "The process cannot access the file")
    return "moved"

  assert fetch._retrying(flaky) == "moved" and len(tries) == 3
  assert len(waits) == 2 and waits[1] == 2 * waits[0]

  def stuck():
    raise PermissionError(13, "still open")

  with pytest.raises(PermissionError):
    fetch._retrying(stuck)
  # A folder replaces another: renamed aside, renamed in, the old deleted.
  old, new = tmp_path / "model", tmp_path / "staging"
  old.mkdir()
  (old / "a").write_text("old")
  new.mkdir()
  (new / "a").write_text("new")
  fetch._put_in_place(new, old)
  assert (old / "a").read_text() == "new"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------- CLIs --


def test_the_clis_print_fetch_errors_as_one_message(home, tmp_path,
                                                    monkeypatch, caplog):
  from xfactor_core import evaluate  # pylint: disable=g-import-not-at-top
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  monkeypatch.setenv("XFACTOR_SOURCES", str(bad))
  with caplog.at_level(logging.ERROR):
    assert transfer.main(["--checkpoint", "sm", "--context", str(CAT),
                          "--target", str(ORBIT),
                          "--out", str(tmp_path / "o.gif")]) == 2
  assert f"XFACTOR_SOURCES={bad} cannot be used" in caplog.text
  assert "Traceback" not in caplog.text
  caplog.clear()
  with caplog.at_level(logging.ERROR):
    assert evaluate.main(["--checkpoint", "sm", "--num-pairs", "1",
                          "--oracle", "none"]) == 2
  assert f"XFACTOR_SOURCES={bad} cannot be used" in caplog.text
  for cli in ("transfer", "evaluate"):  # and as a program: exit status 2
    done = subprocess.run(
        [sys.executable, "-m", f"xfactor_core.{cli}", "--checkpoint", "sm",
         *(["--context", str(CAT), "--target", str(ORBIT), "--out",
            str(tmp_path / "o.gif")] if cli == "transfer" else [])],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "cannot be used" in done.stderr and "Traceback" not in done.stderr


# -------------------------------------------------------------- mirror --


def test_an_exported_model_is_a_mirror_that_fetch_installs(
    home, server, archive, tmp_path, monkeypatch, reference_dir, caplog):
  fetch.fetch("sm", url=server.serve("sm.zip", archive))
  out = tmp_path / "mirror" / "sm.zip"
  out.parent.mkdir()
  with caplog.at_level(logging.INFO):
    assert fetch.main(["--export", "sm", str(out)]) == 0
  digest = _sha256(out)
  assert f"SHA-256 {digest}" in caplog.text
  assert "resolve/main/sm.zip" in caplog.text
  with zipfile.ZipFile(archive) as z:  # the release's whole train state
    state_bytes = max(i.file_size for i in z.infolist())
  with zipfile.ZipFile(out) as z:  # the mirror's params alone
    assert z.namelist() == ["sm/checkpoints-0/checkpoint",
                            "sm/checkpoints-0/ckpt-1.flax", "sm/model.json"]
  assert out.stat().st_size < 0.5 * state_bytes
  # Served from another host, into another machine's cache.
  other = tmp_path / "other_home"
  monkeypatch.setenv("XFACTOR_HOME", str(other))
  url = server.serve("mirror/sm.zip", out)
  assert fetch.main(["sm", "--url", url, "--sha256", "2" * 64]) == 2
  assert fetch.installed_path("sm", other) is None
  assert fetch.main(["sm", "--url", url, "--sha256", digest]) == 0
  path = fetch.installed_path("sm", other)
  info = json.loads((path / "model.json").read_text())
  assert info["published"]["archive_sha256"] == digest
  assert info["config"] == TINY.to_dict()
  for a, b in zip(jax.tree.leaves(checkpoints.load_params(path)),
                  jax.tree.leaves(_golden(reference_dir))):
    np.testing.assert_array_equal(a, b)
  video = tmp_path / "out.gif"
  assert transfer.main(["--checkpoint", "sm", "--context", str(CAT),
                        "--target", str(ORBIT), "--num-frames", "4",
                        "--out", str(video)]) == 0
  assert video.stat().st_size > 0
  monkeypatch.setenv("XFACTOR_HOME", str(tmp_path / "empty"))
  with pytest.raises(fetch.FetchError, match="nothing to export; fetch it "
                                             "first"):
    fetch.export("sm", tmp_path / "x.zip")


def test_a_bad_download_is_deleted_and_the_advice_to_fetch_again_works(
    home, server, archive, tmp_path):
  url = server.serve("sm.zip", _corrupt_member(archive, tmp_path))
  with pytest.raises(fetch.FetchError, match="The download was deleted: run "
                                             "the fetch again"):
    fetch.fetch("sm", url=url)
  _assert_nothing_installed(home)
  server.update("sm.zip", file=archive)  # the host serves the right bytes
  path = fetch.fetch("sm", url=url)
  assert server.requests[-1].range is None  # afresh, as the message said
  assert fetch.installed_path("sm", home) == path


def test_files_are_fsynced_before_the_install_rename(home, server, archive,
                                                     monkeypatch):
  events = []
  real_fsync, real_rename = os.fsync, fetch._rename

  def fsync(fd):
    events.append("fsync")
    return real_fsync(fd)

  def rename(source, target):
    events.append(("rename", pathlib.Path(target).name))
    return real_rename(source, target)

  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(fetch, "_rename", rename)
  fetch.fetch("sm", url=server.serve("sm.zip", archive))
  install = events.index(("rename", "sm"))
  # The download, the weights, their index, model.json and their folders.
  assert events[:install].count("fsync") >= 6, events
  assert events[install + 1:install + 2] == ["fsync"]  # the models folder
