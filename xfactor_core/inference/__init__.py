"""Inference: frame preparation, media I/O and the transfer pipeline."""

from xfactor_core.inference.media import (MediaError, iter_video, probe_video,
                                          read_clip, read_frames, read_image,
                                          read_video, side_by_side,
                                          write_frames, write_output,
                                          write_video)
from xfactor_core.inference.model_frames import (FrameError, prepare_frame,
                                                 prepare_frames, select_frames,
                                                 to_float_rgb, to_uint8)
from xfactor_core.inference.pipeline import (DEFAULT_CHECKPOINT, DEFAULT_MODELS,
                                             TransferError, TransferPipeline,
                                             interpolate_path, reference_order)

__all__ = [
    "FrameError", "prepare_frame", "prepare_frames", "select_frames",
    "to_float_rgb", "to_uint8", "MediaError", "iter_video", "probe_video",
    "read_clip", "read_frames", "read_image", "read_video", "side_by_side",
    "write_frames", "write_output", "write_video", "DEFAULT_CHECKPOINT",
    "DEFAULT_MODELS", "TransferError", "TransferPipeline", "interpolate_path",
    "reference_order",
]
