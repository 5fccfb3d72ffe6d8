"""Train an XFactor model (stereo-monocular or multi-view).

    python -m xfactor_core.train --config xfactor_core/configs/synthetic_sm.py \
        --workdir runs/synthetic_sm [--config.total_steps=N] \
        [--config.checkpoint_every=N] [--config.seed=S] [--config.<field>=...]

Running the same command again on the same work directory resumes. The run
writes ``<workdir>/checkpoints-0`` (published clu format), ``model.json``,
``metrics.jsonl``, TensorBoard event files and ``eval/*.png``; see
``xfactor_core/training/trainer.py``. Several hosts: start the command on each
with ``--config.distributed.coordinator_address=HOST:PORT
--config.distributed.num_processes=N --config.distributed.process_id=I`` (or
``=auto`` on SLURM and similar). Exit status 1 when the loss became NaN/inf.
"""

from __future__ import annotations

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from xfactor_core import checkpoints
from xfactor_core import runtime
from xfactor_core.training import perceptual
from xfactor_core.training import step_spec
from xfactor_core.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. "
    "xfactor_core/configs/synthetic_sm.py (':gpu' selects a variant).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and eval images; "
    "an existing run there is resumed.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger().setLevel(logging.INFO)
  config = _CONFIG.value
  runtime.initialize_distributed(config)
  runtime.enable_compilation_cache()
  runtime.warn_if_gpu_idle()
  try:
    trainer.train_and_evaluate(config, _WORKDIR.value)
  except (trainer.NonFiniteLossError, step_spec.ConfigError,
          checkpoints.CheckpointError, perceptual.PerceptualError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
