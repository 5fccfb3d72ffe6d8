"""XFactor Studio: transfer the camera motion of a video onto another scene.

    python app.py [--checkpoints DIR] [--share] [--server-name HOST] [--port N]

Honours GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and GRADIO_TEMP_DIR (uploads;
default: a folder of this server, removed at shutdown). Models: the published
XFactor checkpoints (always listed; downloaded on request into XFACTOR_HOME,
see xfactor_core.fetch), the shipped offline demo models (assets/models/),
and --checkpoints DIR or XFACTOR_CHECKPOINTS. Nothing is downloaded at start
unless XFACTOR_FETCH_AT_START names models (sm, mv or all: a Space's
start-up fetch, in the background); XFACTOR_PAGE_DOWNLOADS=0 turns the page's
Download button off. A transfer whose estimated wait exceeds --max-wait-s
(XFACTOR_MAX_WAIT_S, default 600 s) is refused at once with the wait named.
The UI and its logic live in xfactor_core.app;
README.md, "Security", says what the app exposes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from typing import Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoints", default=None,
                      help="folder of published or own checkpoints to offer "
                           "(default: $XFACTOR_CHECKPOINTS)")
  parser.add_argument("--share", action="store_true",
                      help="create a public gradio.live link (off by default)")
  parser.add_argument("--server-name", default=None,
                      help="host to bind (default: $GRADIO_SERVER_NAME or "
                           "127.0.0.1)")
  parser.add_argument("--port", type=int, default=None,
                      help="port (default: $GRADIO_SERVER_PORT or 7860)")
  parser.add_argument("--max-jobs", type=int, default=1,
                      help="transfers running at once (others queue)")
  parser.add_argument("--max-models", type=int, default=2,
                      help="models kept loaded in memory")
  parser.add_argument("--no-default-models", action="store_true",
                      help="list only the models of --checkpoints, not the "
                           "shipped defaults")
  parser.add_argument("--max-file-mb", type=float, default=200.0,
                      help="largest upload accepted, in MB")
  parser.add_argument("--max-wait-s", type=float, default=None,
                      help="refuse a transfer whose estimated wait (the jobs "
                           "ahead of it, each as long as it, plus itself) "
                           "exceeds this many seconds; 0: no bound (default: "
                           "$XFACTOR_MAX_WAIT_S or 600)")
  return parser.parse_args(argv)


def _stop_like_ctrl_c(signum, frame) -> None:
  """SIGTERM (``docker stop``, a Space restarting) stops the app as Ctrl-C
  does, so the clean-up below runs; Python's default would skip it. Also the
  way to stop an app started in the background, where SIGINT is ignored."""
  del signum, frame
  raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  work_root = tempfile.mkdtemp(prefix="xfactor_studio_")
  # Uploads go to a folder of this server only (not the <tmp>/gradio that all
  # Gradio apps of the host share), removed with the rest at shutdown; file
  # values must lie in it (see xfactor_core.app.gate).
  os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(work_root, "uploads"))
  from xfactor_core import fetch, runtime
  from xfactor_core.app import (downloads, estimates, layout, presets,
                                registry, ui, uploads)

  runtime.enable_compilation_cache()
  runtime.warn_if_gpu_idle()
  try:
    published = fetch.sources()
    at_start = downloads.names_from_env(
        os.environ.get(downloads.FETCH_AT_START_ENV), published)
    specs = registry.discover_models(
        registry.checkpoints_dir_from_env(args.checkpoints),
        defaults={} if args.no_default_models else registry.DEFAULT_MODELS,
        published=list(published.values()))
    max_wait = estimates.max_wait_seconds(args.max_wait_s)
  except (registry.RegistryError, fetch.FetchError,
          downloads.DownloadError, ValueError) as e:
    logging.error("%s", e)
    os.rmdir(work_root)
    return 2
  if not specs:
    logging.warning("no model found: the shipped models are not trained yet; "
                    "start with --checkpoints DIR (or set %s)",
                    registry.CHECKPOINTS_ENV)
  models = registry.ModelRegistry(specs, max_loaded=args.max_models)
  fetcher = downloads.Downloads(
      models, published, page_allowed=downloads.page_downloads_allowed())
  fetcher.start_all(at_start)  # background: the page serves meanwhile
  studio = ui.Studio(models, presets.load_presets(), work_root=work_root,
                     limits=uploads.Limits(max_file_mb=args.max_file_mb),
                     downloads=fetcher, max_wait_s=max_wait)
  demo = layout.build_app(studio, max_jobs=args.max_jobs)
  try:
    demo.launch(server_name=args.server_name, server_port=args.port,
                share=args.share,
                max_file_size=int(studio.limits.max_file_mb * 2 ** 20),
                allowed_paths=[str(studio.presets.root)], theme=layout.theme(),
                footer_links=["api", "settings"])
  finally:
    studio.cleanup()
  return 0


if __name__ == "__main__":
  sys.exit(main())
