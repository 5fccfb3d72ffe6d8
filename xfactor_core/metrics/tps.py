"""Command line for True Pose Similarity: python -m xfactor_core.metrics.tps.

  python -m xfactor_core.metrics.tps --target DIR_OR_VIDEO \
      --transfer DIR_OR_VIDEO [--oracle colmap] [--json OUT.json] \
      [--plot OUT.png] [--max-frames N] [--oracle-kwargs '{"num_trials": 1}']

Only the entry point lives here; the functions are in
`xfactor_core.metrics.true_pose_similarity` and the package exports them
(`from xfactor_core.metrics import tps, evaluate_tps`). Importing this module
in code would shadow the `tps` function on the package: run it, don't import
it.
"""

import sys

from xfactor_core.metrics.true_pose_similarity import main

if __name__ == "__main__":
  sys.exit(main())
