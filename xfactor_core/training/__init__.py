"""xfactor_core.training: the XFactor objective and the trainer.

  objective    views, self-decoding, augmentation, quadrant masks, half swap, loss
  perceptual   LPIPS-VGG (weights from a local file) or the SSIM stand-in
  optim        AdamW with the decay mask, clipping, warm-up cosine, accumulation
  step_spec    a training config checked (StepSpec, ConfigError); the networks
  sharding     the device mesh, shardings, global arrays
  inputs       training batches: synthetic clips rendered on device, grain loader
  train_state  TrainState and its checkpoint dictionary (save, restore)
  evaluation   eval_step and the periodic evaluator (metrics, eval pictures)
  trainer      create_train_state, train_step, train_and_evaluate
  writer       metrics.jsonl + TensorBoard
  release      a finished run -> a shipped model folder

Command line: ``python -m xfactor_core.train --config <config.py> --workdir DIR``.
"""
