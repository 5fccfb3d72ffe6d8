"""xfactor_core.training: the XFactor objective and the trainer.

  objective   views, self-decoding, augmentation, quadrant masks, half swap, loss
  perceptual  LPIPS-VGG (weights from a local file) or the SSIM stand-in
  optim       AdamW with the decay mask, clipping, warm-up cosine, accumulation
  inputs      device mesh; synthetic clips rendered on device; grain loader
  trainer     create_train_state, train_step, eval_step, train_and_evaluate
  writer      metrics.jsonl + TensorBoard

Command line: ``python -m xfactor_core.train --config <config.py> --workdir DIR``.
"""
