"""The XFactor networks.

>>> from xfactor_core import models
>>> pose_enc = models.PoseEnc(features=1024, num_heads=16, patch_size=16,
...                           num_layers=8, pose_dim=256)
>>> render = models.Render(features=1024, num_heads=16, patch_size=16,
...                        num_layers=8)
>>> poses = pose_enc.apply({"params": params["PoseEnc"]}, pair)      # B x 2 x 256
>>> frame = render.apply({"params": params["Render"]}, context, poses)  # B x H x W x 3
"""

from xfactor_core.models.attention import IMPLEMENTATIONS, segment_attention
from xfactor_core.models.layers import patchify, unpatchify
from xfactor_core.models.flow import FlowField
from xfactor_core.models.networks import (RENDER_OUTPUTS, SAMPLING_OUTPUTS,
                                          PoseEnc, Render)
from xfactor_core.models.pair_stems import PAIR_INPUTS

__all__ = ["PoseEnc", "Render", "RENDER_OUTPUTS", "SAMPLING_OUTPUTS", "PAIR_INPUTS", "FlowField",
           "segment_attention", "IMPLEMENTATIONS",
           "patchify", "unpatchify"]
