#!/usr/bin/env bash
# The prepared GPU session (see benchmarks/gpu_run.py): throughput at the
# published size, then training the default recipe at its GPU size, all in at
# most 9 minutes; what comes back is written to $OUT.
#   device run:  bash benchmarks/gpu_run.sh            (timeout_s 600)
#   CPU check:   OUT=/tmp/gpu_out bash benchmarks/gpu_run.sh --tiny --minutes 4
# PYTHON names the interpreter (the tests pass their own, so that a virtual
# environment that is not activated still runs with its packages).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
"${PYTHON:-python3}" benchmarks/gpu_run.py --out "${OUT:?set OUT to the folder that comes back}" "$@"
