"""Depth Anything V1 / V2 / V2-metric: one network, three variants chosen by `ModelConfig`.

The model does no I/O and no device choice: a normalised (B, 3, H, W) batch with H and W
multiples of 14 in, a (B, H, W) prediction out (disparity, or metres for metric models).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import PATCH_SIZE, ModelConfig
from .dpt_head import DPTHead
from .encoder import DinoV2Encoder


class DepthAnything(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        spec = config.spec
        self.encoder = DinoV2Encoder(spec)
        self.depth_head = DPTHead(spec.embed_dim, spec.features, spec.out_channels, metric=config.metric)

    @property
    def pretrained(self) -> nn.Module:
        """The timm ViT (the official code's name for the encoder)."""
        return self.encoder.pretrained

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """(B, 3, H, W) normalised -> (B, H, W); with return_features also the tapped tokens.

        The only forward of the network: training, ONNX/OpenVINO export and every inference
        backend run this. return_features=True gives ((B, H, W), [4 x (B, h*w, C)]): the
        normalised patch tokens of the tapped blocks (the last one feeds feature alignment).
        """
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        feats = self.encoder(x, self.config.layers)                  # 4 x (B, h*w, C)
        out = self.depth_head(feats, grid_h, grid_w)                 # (B, 1, H, W)
        if self.config.metric:
            out = out * self.config.max_depth
        out = out.squeeze(1)                                         # (B, H, W)
        return (out, feats) if return_features else out

    # Official checkpoints name the encoder `pretrained.*`; keep that as our state-dict layout.
    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        return type(sd)((k.removeprefix("encoder."), v) for k, v in sd.items())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        sd = {("encoder." + k if k.startswith("pretrained.") else k): v for k, v in state_dict.items()}
        return super().load_state_dict(sd, strict=strict, assign=assign)


def build_model(encoder: str = "vits", version: str = "v2", metric: bool = False,
                max_depth: float = 20.0) -> DepthAnything:
    """A Depth Anything network with random weights. Load weights with `pipeline.weights.loading`."""
    return DepthAnything(ModelConfig(encoder=encoder, version=version, metric=metric, max_depth=max_depth)).eval()
