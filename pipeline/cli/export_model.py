"""`python -m pipeline export-model --checkpoint CK --format onnx --out model.onnx`: the network as a file.

    python -m pipeline export-model --checkpoint depth-anything-v2-small --format onnx --out da2s.onnx
    python -m pipeline export-model --checkpoint depth_anything_v2_metric_hypersim_vits.pth \\
        --format openvino --out da2s-indoor.xml

ONNX: input `pixel_values` (N, 3, H, W) float32, ImageNet-normalised, H and W multiples of 14
(all dynamic); output `depth` (N, H, W): disparity, or metres for metric models. The file's
metadata_props say what it is (encoder, version, kind, max_depth, mean/std, patch size,
licence, source checkpoint and its sha256). OpenVINO: the same graph as IR (.xml + .bin).
--fp16 stores float16 weights (ONNX: float16 arithmetic too). Before anything is written the
file is run in its runtime on the motorcycle image (518x770, and 364x518 batch 2) and compared
with the PyTorch model: over 0.005% of the output range (fp16: 1%) it fails and writes nothing.
(`python -m pipeline export` is another command: it exports the curated label set.)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import ENCODERS, VERSIONS
from ..weights import registry as checkpoint_registry

HELP = "export a checkpoint as a verified ONNX file or OpenVINO IR (dynamic batch and size, with metadata)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=checkpoint_registry.DEFAULT_NAME, metavar="FILE|NAME",
                        help=f"checkpoint file or registry name (default {checkpoint_registry.DEFAULT_NAME})")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                        help="onnx (a .onnx file) or openvino (IR: .xml + .bin); default onnx")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file: .onnx, or .xml for openvino")
    parser.add_argument("--fp16", action="store_true", help="float16 weights (verified within 1%% of the range)")
    parser.add_argument("--encoder", choices=list(ENCODERS), help="encoder size (default: read from the weights)")
    parser.add_argument("--version", choices=VERSIONS, help="v1 or v2 (default: from the checkpoint)")
    parser.add_argument("--metric", action="store_true", default=None, help="the checkpoint is a V2 metric model")
    parser.add_argument("--max-depth", type=float, metavar="M", help="metric models: 20 indoor, 80 outdoor")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx exporter for --format onnx (default torchscript: ~1 s for vits; "
                             "dynamo: ~15 s); --format openvino converts with OpenVINO's PyTorch frontend")


def run(args: argparse.Namespace) -> int:
    from ..runtime.export import export_model_file
    from ..weights.loading import load_model

    t0 = time.perf_counter()
    loaded = load_model(args.checkpoint, encoder=args.encoder, version=args.version, metric=args.metric,
                        max_depth=args.max_depth)
    checks = export_model_file(loaded, args.out, args.format, fp16=args.fp16, exporter=args.exporter)
    out = Path(args.out)
    files = [out, out.with_suffix(".bin"), out.parent / f"{out.name}.data"]
    size = sum(p.stat().st_size for p in files if p.is_file() and (p == out or args.format == "openvino"
                                                                     or p.suffix == ".data"))
    print(f"wrote {out} ({args.format}{', fp16' if args.fp16 else ''}, {size / 1e6:.1f} MB): "
          f"{loaded.model_id}, {loaded.config.output_kind}, {loaded.config.encoder} {loaded.config.version}",
          file=sys.stderr)
    for c in checks:
        print(f"  verified on {c.shape}: max |file - PyTorch| {c.max_abs:.2e} "
              f"({100 * c.relative:.5f}% of the output range {c.span:.3g})", file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
