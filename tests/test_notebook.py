"""The Colab notebook runs here, offline, and is committed clean.

``notebooks/xfactor_studio.ipynb`` is run the way a notebook server runs it,
without one: its code cells, parsed out of the JSON, execute top to bottom in
one namespace, in the notebooks folder, with ``XFACTOR_NOTEBOOK_TEST=1``.
That test mode skips the install, the upload and the share link, and serves a
tiny model in the published layout from this machine; the fetch, the transfer
(command-line tools, as in Colab) and the app's start run for real.
"""

import json
import os
import pathlib
import re
import shutil
import time

import imageio.v3 as iio
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = NOTEBOOKS / "xfactor_studio.ipynb"


def _cells(path: pathlib.Path, kind: str) -> list[str]:
  notebook = json.loads(path.read_text())
  return ["".join(cell["source"]) for cell in notebook["cells"]
          if cell["cell_type"] == kind]


def _repository() -> str:
  """pyproject.toml's [project.urls] Repository (tomllib is Python 3.11+)."""
  text = (REPO / "pyproject.toml").read_text()
  try:
    import tomllib  # pylint: disable=g-import-not-at-top
  except ImportError:  # Python 3.10
    table = text.split("[project.urls]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^Repository\s*=\s*"([^"]+)"', table, re.M).group(1)
  return tomllib.loads(text)["project"]["urls"]["Repository"]


def _frames(video: pathlib.Path) -> int:
  return len(iio.imread(video))  # every frame, decoded


def _run_code_cells(namespace: dict, cells: list[str]) -> None:
  for index, source in enumerate(cells):
    magics = [line for line in source.splitlines()
              if line.lstrip().startswith(("!", "%"))]
    assert not magics, f"cell {index} needs IPython: {magics}"
    exec(compile(source, f"<notebook cell {index}>", "exec"), namespace)  # noqa: S102


# The cells start tools with subprocess (fork, then exec at once) after the
# test-mode cell imported JAX; JAX's warning about forking does not apply.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_the_notebook_runs_offline_and_shows_a_transfer(monkeypatch,
                                                        tmp_path):
  cells = _cells(NOTEBOOK, "code")
  monkeypatch.chdir(NOTEBOOKS)  # where Jupyter starts a notebook's kernel
  monkeypatch.setenv("XFACTOR_NOTEBOOK_TEST", "1")
  monkeypatch.setenv("XFACTOR_COMPILATION_CACHE", str(tmp_path / "jax_cache"))
  environ = dict(os.environ)
  namespace = {"__name__": "__main__"}
  started = time.monotonic()
  try:
    _run_code_cells(namespace, cells)
    first_run = time.monotonic() - started
    # Any cell can be run again: the fetch finds the model installed and asks
    # the (new) server nothing; the transfer overwrites its video.
    fetch_cell = next(i for i, c in enumerate(cells)
                      if "xfactor_core.fetch" in c)
    _run_code_cells(namespace, cells[fetch_cell - 1:fetch_cell + 1])
    assert namespace["release_server"].requests == []
    _run_code_cells(namespace, cells[fetch_cell + 1:])
  finally:
    os.environ.clear()
    os.environ.update(environ)
    if namespace.get("release_server") is not None:
      namespace["release_server"].__exit__(None, None, None)
    if namespace.get("APP") is not None and namespace["APP"].poll() is None:
      namespace["APP"].kill()
  work = namespace["WORK"]
  try:
    assert work != NOTEBOOKS and not work.is_relative_to(REPO)
    assert namespace["REPO"] == REPO
    num_frames = namespace["NUM_FRAMES"]
    assert num_frames == 8
    assert _frames(namespace["VIDEO"]) == num_frames
    assert _frames(namespace["SIDE_BY_SIDE"]) == num_frames
    height, width = iio.imread(namespace["SIDE_BY_SIDE"], index=0).shape[:2]
    assert width >= 2 * height  # clip | transfer
    assert (work / "home" / "models" / "sm" / "model.json").is_file()
    assert "Running on local URL" in namespace["found"][0]
    assert namespace["APP"].poll() is not None  # stopped by its cell
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(f"first run of the notebook: {first_run:.1f} s")


def test_committed_notebooks_hold_no_outputs():
  notebooks = sorted(NOTEBOOKS.glob("**/*.ipynb"))
  assert NOTEBOOK in notebooks
  for path in notebooks:
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4, path
    for index, cell in enumerate(notebook["cells"]):
      if cell["cell_type"] == "code":
        assert cell.get("outputs") == [], f"{path} cell {index} has outputs"
        assert cell.get("execution_count") is None, (
            f"{path} cell {index} has an execution count")
      assert "attachments" not in cell, f"{path} cell {index}"


def test_each_code_cell_has_one_line_of_text_and_the_address_is_pyprojects():
  notebook = json.loads(NOTEBOOK.read_text())
  cells = notebook["cells"]
  for index, cell in enumerate(cells):
    if cell["cell_type"] == "code":
      text = cells[index - 1]
      assert text["cell_type"] == "markdown", f"cell {index} has no text"
      assert len("".join(text["source"]).strip().splitlines()) == 1, index
  repository = _repository()
  assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
  code = "\n".join(_cells(NOTEBOOK, "code"))
  assert f'REPOSITORY = "{repository}"' in code
  owner_repo = repository.removeprefix("https://github.com/")
  badge = (f"https://colab.research.google.com/github/{owner_repo}/blob/main/"
           "notebooks/xfactor_studio.ipynb")
  assert badge in (REPO / "README.md").read_text()


def test_without_a_checkout_the_notebook_takes_an_uploaded_zip(monkeypatch,
                                                               tmp_path):
  """The README's "open by upload" path, outside Colab: with no checkout
  around and a placeholder address, the repository cell asks for the zip,
  and unpacks it once it lies beside the notebook."""
  code = _cells(NOTEBOOK, "code")
  settings, repository = code[0], code[1]
  assert "/OWNER/" in _repository()  # else the cell clones: not offline
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("XFACTOR_NOTEBOOK_TEST", raising=False)
  namespace = {"__name__": "__main__"}
  _run_code_cells(namespace, [settings])
  with pytest.raises(RuntimeError, match="put xfactor-studio.zip"):
    _run_code_cells(namespace, [repository])
  source = tmp_path / "made" / "xfactor-studio"
  source.mkdir(parents=True)
  shutil.copy(REPO / "pyproject.toml", source)
  shutil.make_archive(str(tmp_path / "xfactor-studio"), "zip",
                      tmp_path / "made")
  _run_code_cells(namespace, [repository])
  assert namespace["REPO"] == tmp_path / "xfactor-studio"
  _run_code_cells(namespace, [repository])  # run again: finds it unpacked
  assert namespace["REPO"] == tmp_path / "xfactor-studio"
