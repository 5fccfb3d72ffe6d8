"""Tests of xfactor_core.fetch against a local HTTP server (never the internet).

The archive served is the published layout built from the official-format
fixture: a whole train state (params, opt_state, lpips_params, ...) of the tiny
parity model, zipped as ``stereo_monocular/checkpoints-0/...``.
"""

import errno
import json
import logging
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
