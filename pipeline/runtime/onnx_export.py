"""`DepthAnything.forward` as an ONNX graph: the one export every runtime backend starts from.

The graph takes `pixel_values` (N, 3, H, W) float32, ImageNet-normalised, H and W multiples of
14, all three dynamic, and returns `depth` (N, H, W): disparity, or metres for metric models.
The position embedding is resampled inside the graph by two small matrix products
(`pipeline.model.encoder.bicubic_matrix`), so every size keeps parity in every runtime.

Two exporters, same graph semantics, both tested for parity:
- "torchscript" (default): `torch.onnx.export(dynamo=False)`, about 1 s for vits; deprecated
  upstream but kept in torch 2.14, which requirements.txt pins.
- "dynamo": `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), about 15 s for vits.
"""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import torch

from ..config import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, ModelConfig
from ..errors import ConfigError

INPUT_NAME, OUTPUT_NAME = "pixel_values", "depth"
OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
EXTERNAL_DATA_BYTES = 1_800_000_000     # above this the weights go to <file>.data (protobuf's 2 GB limit)
EXAMPLE_SHAPE = (2, 3, 5 * PATCH_SIZE, 7 * PATCH_SIZE)    # small, batch 2 and non-square: nothing specialises


def cpu_float_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The network itself when already a float32 CPU module in eval mode, else an eval copy that is."""
    p = next(model.parameters())
    if p.device.type == "cpu" and p.dtype == torch.float32 and not model.training:
        return model
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def export_onnx(model: torch.nn.Module, path: str | Path, *, exporter: str = "torchscript",
                metadata: dict[str, str] | None = None) -> Path:
    """Write `model` (a DepthAnything) to `path` as ONNX with dynamic N, H, W; returns the path.

    Weights over ~1.8 GB (vitg) are stored beside the file as `<name>.data`.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    path = Path(path)
    net = cpu_float_copy(model)
    example = torch.randn(*EXAMPLE_SHAPE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # tracer / deprecation notices, not problems
        if exporter == "torchscript":
            torch.onnx.export(
                net, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch", 1: "height", 2: "width"}},
                opset_version=OPSET, dynamo=False, do_constant_folding=True)
        else:
            dim = torch.export.Dim
            shapes = {"x": {0: dim("batch", min=1, max=4096), 2: PATCH_SIZE * dim("grid_h", min=2, max=1024),
                            3: PATCH_SIZE * dim("grid_w", min=2, max=1024)}}
            with contextlib.redirect_stdout(io.StringIO()):  # progress lines
                torch.onnx.export(net, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_shapes=shapes, opset_version=OPSET,
                                  dynamo=True, external_data=_param_bytes(net) > EXTERNAL_DATA_BYTES)
    finish_onnx(path, metadata or {})
    return path


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def finish_onnx(path: Path, metadata: dict[str, str]) -> None:
    """Add `metadata` as metadata_props and keep large weights in one `<name>.data` file."""
    import onnx
    proto = onnx.load(str(path), load_external_data=True)
    set_metadata(proto, metadata)
    big = sum(len(t.raw_data) for t in proto.graph.initializer) > EXTERNAL_DATA_BYTES
    for stale in path.parent.glob(f"{path.name}*.data"):
        stale.unlink()
    onnx.save_model(proto, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)


def set_metadata(proto, metadata: dict[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, without loading its weights."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def model_metadata(config: ModelConfig, **extra) -> dict[str, str]:
    """What a file needs to be used without this project: what the network is and its input rules."""
    meta = {
        "model_type": "depth-anything",
        "encoder": config.encoder, "version": config.version, "kind": config.output_kind,
        "max_depth": f"{config.max_depth:g}" if config.metric else "",
        "unit": "m" if config.metric else "relative disparity (affine-invariant inverse depth)",
        "mean": ",".join(f"{v:g}" for v in IMAGENET_MEAN), "std": ",".join(f"{v:g}" for v in IMAGENET_STD),
        "patch_size": str(PATCH_SIZE),
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W) RGB in [0, 1], then (x - mean) / std; H, W multiples "
                 f"of {PATCH_SIZE} (official rule: short side resized to 518, bicubic)",
        "output": f"{OUTPUT_NAME}: float32 (N, H, W)",
        "resize_back": "bilinear, align_corners=" + ("True" if config.align_corners_out else "False"),
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def convert_fp16(src: Path, dst: Path) -> None:
    """Weights and arithmetic in float16, input and output kept float32.

    The nodes that compute a Resize's scales/sizes stay float32 (ONNX requires it; converting
    them makes an invalid graph).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    proto = onnx.load(str(src), load_external_data=True)
    resize_args = {name for n in proto.graph.node if n.op_type == "Resize" for name in n.input[1:]}
    keep = [n.name for n in proto.graph.node if set(n.output) & resize_args]
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True, node_block_list=keep)
    big = sum(len(t.raw_data) for t in half.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save_model(half, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=f"{dst.name}.data", size_threshold=1024)
