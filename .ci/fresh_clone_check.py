"""Checks the README's promise: a fresh clone passes its own tests.

Clones the current commit of this repository into a temporary folder with
nothing beside it (no ``../shared/``), then runs the README's test command
there with the packages of the running Python, and fails unless pytest
reports 0 failures and 0 errors. Needs no network (``git clone`` of the local
repository). Uncommitted changes are not in the clone: commit first.

    python .ci/fresh_clone_check.py            # the README's test command
    python .ci/fresh_clone_check.py -- -x      # extra pytest arguments
    python .ci/fresh_clone_check.py --keep     # keep the clone to look at it

It takes about as long as the suite (CI need not run it on every
submission); run it before resolving work that moves test data.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
# Set inside the clone: the check must not start itself again from there.
GUARD = "XFACTOR_FRESH_CLONE"
# Variables that would let the clone see data from outside it.
OUTSIDE = ("XFACTOR_EXAMPLE_VIDEOS", "PYTHONPATH")


def readme_test_command(readme: pathlib.Path) -> list[str]:
  """The command on the README's line that ends ``# run the tests``,
  with ``python`` replaced by the running interpreter."""
  for line in readme.read_text(encoding="utf-8").splitlines():
    match = re.match(r"\s*(.+?)\s+#\s*run the tests\s*$", line)
    if match:
      command = shlex.split(match.group(1))
      if command[0] in ("python", "python3"):
        command[0] = sys.executable
      return command
  raise SystemExit(f"{readme} has no line ending in '# run the tests'; the "
                   "Quick start block must name the test command.")


def clone_head(destination: pathlib.Path) -> str:
  """Clones this repository's HEAD commit into `destination`; returns it."""
  head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                        check=True, capture_output=True, text=True).stdout.strip()
  subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO),
                  str(destination)], check=True)
  subprocess.run(["git", "-C", str(destination), "checkout", "--quiet", head],
                 check=True)
  return head


def summary_counts(output: str) -> dict[str, int]:
  """Counts from pytest's closing line: ``{"passed": 3, "errors": 1, ...}``
  (singular words as their plural: ``1 error`` counts under ``errors``)."""
  lines = [line for line in output.splitlines()
           if re.search(r"\d+ (passed|failed|errors?)\b", line)]
  if not lines:
    return {}
  plural = {"error": "errors", "warning": "warnings"}
  return {plural.get(word, word): int(n)
          for n, word in re.findall(r"(\d+) ([a-z]+)", lines[-1])}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--keep", action="store_true",
                      help="keep the temporary clone and print where it is")
  parser.add_argument("pytest_args", nargs="*",
                      help="extra arguments for pytest, after --")
  args = parser.parse_args(argv)
  if os.environ.get(GUARD):
    print(f"fresh_clone_check: refusing to run inside a fresh clone ({GUARD} "
          "is set): the clone's test suite would start the check again.",
          file=sys.stderr)
    return 2
  dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                          "--untracked-files=no"],
                         capture_output=True, text=True).stdout.strip()
  if dirty:
    print("fresh_clone_check: note: uncommitted changes are not in the clone",
          file=sys.stderr)
  parent = pathlib.Path(tempfile.mkdtemp(prefix="xfactor-fresh-"))
  clone = parent / "xfactor-studio"
  head = clone_head(clone)
  assert not (parent / "shared").exists()
  command = readme_test_command(clone / "README.md") + args.pytest_args
  env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
  # The clone's own package, not an editable install of this checkout.
  env.update({GUARD: "1", "PYTHONPATH": str(clone)})
  where = subprocess.run([sys.executable, "-c",
                          "import xfactor_core; print(xfactor_core.__file__)"],
                         cwd=clone, env=env, capture_output=True, text=True)
  if not pathlib.Path(where.stdout.strip()).is_relative_to(clone):
    print(f"fresh_clone_check: xfactor_core imports from {where.stdout.strip()}"
          f" instead of the clone {clone}", file=sys.stderr)
    return 1
  print(f"fresh_clone_check: {head[:12]} cloned into {clone}; running: "
        f"{shlex.join(command)}", flush=True)
  # pytest's own output streams through as it runs; its summary is kept.
  with subprocess.Popen(command, cwd=clone, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True) as done:
    output = []
    for line in done.stdout:
      sys.stdout.write(line)
      sys.stdout.flush()
      output.append(line)
  counts = summary_counts("".join(output[-50:]))
  if args.keep:
    print(f"fresh_clone_check: the clone stays at {clone}")
  else:
    shutil.rmtree(parent, ignore_errors=True)
  bad = counts.get("failed", 0) + counts.get("errors", 0)
  ok = done.returncode == 0 and bad == 0 and counts.get("passed", 0) > 0
  print(f"fresh_clone_check: {'PASSED' if ok else 'FAILED'} "
        f"(pytest exit {done.returncode}, {counts})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
