"""XFactor Studio core: latent camera poses from plain videos, in JAX + Flax.

Subpackages:
  models       PoseEnc and Render, the two published networks.
  checkpoints  reading and writing the published clu checkpoint format.
  inference    frame preparation, camera paths and transfer rendering.
  data         the synthetic world and the grain video loader.
  training     the XFactor objective and the trainer.
  metrics      camera metrics, TPS and pose oracles.
  configs      ml_collections configs (model sizes and training runs).
"""

__version__ = "0.1.0"
