"""Tests of the CI scripts: .ci/run runs the README's test command, and
.ci/fresh_clone_check.py checks that a fresh clone passes it."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fresh_clone_check():
  spec = importlib.util.spec_from_file_location(
      "fresh_clone_check", REPO / ".ci" / "fresh_clone_check.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_ci_runs_the_readme_test_command():
  command = _fresh_clone_check().readme_test_command(REPO / "README.md")
  assert command[1:] == ["-m", "pytest", "-q"]
  ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
  assert "python -m pytest -q" in [line.strip() for line in ci_lines]


def test_pytest_summary_counts():
  counts = _fresh_clone_check().summary_counts(
      "..F\n1 failed, 210 passed, 6 skipped, 90 errors in 12.30s\n")
  assert counts == {"failed": 1, "passed": 210, "skipped": 6, "errors": 90}
  assert _fresh_clone_check().summary_counts("no tests ran in 0.01s") == {}


def test_fresh_clone_check_refuses_to_run_inside_the_clone():
  done = subprocess.run([sys.executable, str(REPO / ".ci" / "fresh_clone_check.py")],
                        env={**os.environ, "XFACTOR_FRESH_CLONE": "1"},
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 2
  assert "refusing to run inside a fresh clone" in done.stderr


@pytest.mark.slow
def test_a_fresh_clone_passes_its_own_tests():
  # As long as the suite itself (about 15 minutes on 2 cores).
  if os.environ.get("XFACTOR_FRESH_CLONE"):
    pytest.skip("already inside the fresh clone that this check made")
  done = subprocess.run([sys.executable, str(REPO / ".ci" / "fresh_clone_check.py")],
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
  assert "fresh_clone_check: PASSED" in done.stdout
