"""Inference: frame preparation, media I/O and the transfer pipeline.

The names below are loaded on first use (PEP 562), so that importing a
light submodule (``from xfactor_core.inference import media``, as the data
loader and the metrics do) does not load the pipeline and what it pulls in
(models, checkpoints, the fetch of the published models).
"""

import importlib

_SOURCES = {
    "media": ("MediaError", "iter_video", "probe_video", "read_clip",
              "read_frames", "read_image", "read_video", "side_by_side",
              "write_frames", "write_output", "write_video"),
    "model_frames": ("FrameError", "prepare_frame", "prepare_frames",
                     "select_frames", "to_float_rgb", "to_uint8"),
    "pipeline": ("DEFAULT_CHECKPOINT", "DEFAULT_MODELS", "TransferError",
                 "TransferPipeline", "interpolate_path", "reference_order"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items()
              for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
  if name not in _MODULE_OF:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")
  return getattr(module, name)


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
