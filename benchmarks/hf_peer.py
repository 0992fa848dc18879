"""The benchmark's peer: transformers' Depth Anything with our weights, and its own pipeline.

`hf_model_with(model)` builds `DepthAnythingForDepthEstimation` with the configuration of
Depth-Anything-V2-{Small,Base,Large}-hf and copies our (official-layout) weights into it key by
key: qkv split into q/k/v, LayerScale gammas to lambda1, the fusion blocks in reverse order
(transformers' fusion layer 0 is the official refinenet4). `hf_pipeline(hf)` is
`pipeline("depth-estimation")` with the image processor those repositories ship
(DPTImageProcessor: keep aspect ratio, multiple of 14, bicubic, ImageNet normalisation).
"""
from __future__ import annotations

import torch


def _hf_key(k: str) -> str | None:
    """Official key -> transformers key (None: not in the transformers model)."""
    rules = [
        ("pretrained.cls_token", "backbone.embeddings.cls_token"),
        ("pretrained.mask_token", "backbone.embeddings.mask_token"),
        ("pretrained.pos_embed", "backbone.embeddings.position_embeddings"),
        ("pretrained.patch_embed.proj.", "backbone.embeddings.patch_embeddings.projection."),
        ("pretrained.norm.", "backbone.layernorm."),
        ("pretrained.blocks.", "backbone.encoder.layer."),
        ("depth_head.projects.", "neck.reassemble_stage.layers.{}.projection."),
        ("depth_head.resize_layers.", "neck.reassemble_stage.layers.{}.resize."),
        ("depth_head.scratch.output_conv1.", "head.conv1."),
        ("depth_head.scratch.output_conv2.0.", "head.conv2."),
        ("depth_head.scratch.output_conv2.2.", "head.conv3."),
    ]
    for old, new in rules:
        if k.startswith(old):
            rest = k[len(old):]
            if "{}" in new:
                index, _, rest = rest.partition(".")
                new = new.format(index)
            rest = (rest.replace("attn.proj.", "attention.o_proj.").replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1"))
            return new + rest
    if k.startswith("depth_head.scratch.layer"):                 # layerN_rn.weight -> neck.convs.N-1.weight
        n = int(k[len("depth_head.scratch.layer")])
        return f"neck.convs.{n - 1}.weight"
    if k.startswith("depth_head.scratch.refinenet"):             # refinenetN -> fusion layer 4 - N
        n = int(k[len("depth_head.scratch.refinenet")])
        rest = k.split(".", 3)[3]
        rest = (rest.replace("out_conv.", "projection.").replace("resConfUnit1.", "residual_layer1.")
                .replace("resConfUnit2.", "residual_layer2.").replace(".conv1.", ".convolution1.")
                .replace(".conv2.", ".convolution2."))
        return f"neck.fusion_stage.layers.{4 - n}.{rest}"
    return None


def hf_model_with(model: torch.nn.Module):
    """transformers' DepthAnythingForDepthEstimation holding `model`'s weights (relative or metric)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    cfg, spec = model.config, model.config.spec
    backbone = Dinov2Config(hidden_size=spec.embed_dim, num_hidden_layers=spec.depth,
                            num_attention_heads=spec.num_heads or spec.embed_dim // 64, image_size=518, patch_size=14,
                            out_indices=[i + 1 for i in cfg.layers], reshape_hidden_states=False)
    hf_cfg = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=spec.embed_dim, reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=list(spec.out_channels), fusion_hidden_size=spec.features,
        depth_estimation_type="metric" if cfg.metric else "relative", max_depth=int(cfg.max_depth) if cfg.metric else 1)   # HF scales both kinds
    hf = DepthAnythingForDepthEstimation(hf_cfg).eval()
    target = hf.state_dict()
    converted = {}
    for k, v in model.state_dict().items():
        if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias"):
            prefix = _hf_key(k.rsplit("attn.qkv.", 1)[0])
            kind = k.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0), strict=True):
                converted[f"{prefix}attention.{name}.{kind}"] = part
            continue
        new = _hf_key(k)
        if new is not None and new in target:
            converted[new] = v
    converted.setdefault("backbone.embeddings.mask_token", target["backbone.embeddings.mask_token"])
    missing = sorted(set(target) - set(converted))
    if missing:
        raise KeyError(f"transformers keys without a source: {missing[:5]}")
    hf.load_state_dict(converted)
    return hf


def hf_pipeline(hf):
    """pipeline("depth-estimation") with the processor Depth-Anything-V2-*-hf ships."""
    from transformers import DPTImageProcessor, pipeline
    processor = DPTImageProcessor(
        do_resize=True, size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False)
    return pipeline("depth-estimation", model=hf, image_processor=processor, device="cpu")
