"""`python -m pipeline evaluate`: AbsRel / δ1 / pair accuracy of a checkpoint or of saved predictions.

    python -m pipeline evaluate --checkpoint depth_anything_v2_vits.pth --data DIR --gt-kind depth --out m.json
    python -m pipeline evaluate --pred PREDDIR --pred-kind disparity --data DIR --gt-kind depth --out m.json
    python -m pipeline evaluate --checkpoint X --sample motorcycle        # built-in Middlebury sample

The protocol (alignment, depth cap, invalid pixels) is in pipeline/evaluation.py and is written
into the output JSON next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import evaluation as ev
from ..errors import ConfigError

HELP = "score depth predictions (a checkpoint or saved .npy files) against ground truth: AbsRel, delta1, pair accuracy"
SAMPLES = ("motorcycle",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file or registry name to run on every image")
    src.add_argument("--pred", metavar="PREDDIR", help="folder of saved predictions, one <image name>.npy per image")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", metavar="DIR", help="images with same-named ground truth, or the store's export")
    data.add_argument("--sample", choices=SAMPLES, help="built-in sample: Middlebury 2014 motorcycle (depth from its calibration)")
    parser.add_argument("--gt-kind", choices=ev.GT_KINDS, default=None,
                        help="what the GT files hold (default: the export manifest's kind, else depth)")
    parser.add_argument("--pred-kind", choices=ev.PRED_KINDS, default="disparity",
                        help="with --pred: relative disparity (aligned) or metric depth (as is); default disparity")
    parser.add_argument("--depth-cap", default=None, metavar="M",
                        help="depth cap in GT units, or 'gt-max' (per image). Default: 80 for depth GT, "
                             "gt-max for disparity GT, 10 for the motorcycle sample")
    parser.add_argument("--min-depth", type=float, default=None,
                        help="GT depth below this is invalid (default 0.001 for depth GT, 0 for disparity GT)")
    parser.add_argument("--gt-scale", type=float, default=1.0, help="multiply GT values (e.g. 0.001 for millimetre PNGs)")
    parser.add_argument("--out", metavar="JSON", help="write the per-image and averaged metrics here")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--input-size", type=int, default=518, help="network input size (default 518)")


def _depth_cap(value: str | None, gt_kind: str, sample: str | None) -> float | None:
    if value is None:
        if sample:
            from ..sample_data import MOTORCYCLE_DEPTH_CAP
            return MOTORCYCLE_DEPTH_CAP
        return ev.DEFAULT_DEPTH_CAP if gt_kind == "depth" else None
    if value == "gt-max":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--depth-cap must be a number or 'gt-max', got {value!r}") from None


def _min_depth(value: float | None, gt_kind: str) -> float:
    """Metres for depth GT; disparity GT has no unit, so no floor unless asked."""
    if value is not None:
        return value
    return ev.DEFAULT_MIN_DEPTH if gt_kind == "depth" else 0.0


def _gt_kind(explicit: str | None, items: list[ev.EvalItem]) -> str:
    """--gt-kind if given, else the kind the data records (an export's manifest), else depth."""
    if explicit:
        return explicit
    kinds = {it.gt_kind for it in items if it.gt_kind and it.load_gt}
    if len(kinds) > 1:
        raise ConfigError(f"the data mixes {' and '.join(sorted(kinds))} labels; pass --gt-kind to choose how to read them")
    return kinds.pop() if kinds else "depth"


def sample_items(name: str) -> list[ev.EvalItem]:
    """The built-in sample as an evaluation item: RGB + depth in metres from the Middlebury calibration."""
    from ..sample_data import motorcycle_depth
    rgb, depth, _calib = motorcycle_depth()
    return [ev.EvalItem(name=name, load_image=lambda: rgb, load_gt=lambda: depth)]


def _checkpoint_predictor(args):
    from ..predictor import Predictor
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, input_size=args.input_size)

    def predict(item: ev.EvalItem) -> tuple[np.ndarray, str]:
        p = predictor.predict(item.load_image())
        return p.array, "depth" if p.kind == "metric_depth" else "disparity"

    return predict, {"checkpoint": str(args.checkpoint), "model_id": predictor.model_id,
                     "device": str(predictor.device), "input_size": args.input_size}


def _saved_predictions(args):
    root = Path(args.pred)
    if not root.is_dir():
        raise ev.EvaluationDataError(f"prediction folder {root} does not exist; pass the folder holding <image name>.npy files")

    def predict(item: ev.EvalItem) -> tuple[np.ndarray, str]:
        cands = [root / f"{item.name}.npy", root / f"{Path(item.name).name}.npy"]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            raise ev.EvaluationDataError(f"no prediction for {item.name}: expected {cands[0]} (or {cands[1].name} in {root})")
        return ev.read_array(path), args.pred_kind

    return predict, {"pred": str(root), "pred_kind": args.pred_kind}


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ev.clean_json(report), indent=2, allow_nan=False))
    os.replace(tmp, path)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def run(args) -> int:
    items = sample_items(args.sample) if args.sample else ev.find_items(args.data, args.gt_scale)
    gt_kind = "depth" if args.sample else _gt_kind(args.gt_kind, items)
    protocol = ev.Protocol(gt_kind=gt_kind, depth_cap=_depth_cap(args.depth_cap, gt_kind, args.sample),
                           min_depth=_min_depth(args.min_depth, gt_kind))
    if args.pred and args.pred_kind == "depth" and gt_kind == "disparity":
        raise ConfigError("metric depth predictions need depth ground truth: use --gt-kind depth")
    predict, source = _checkpoint_predictor(args) if args.checkpoint else _saved_predictions(args)

    def progress(i: int, name: str) -> None:
        print(f"[{i}/{len(items)}] {name}", file=sys.stderr)

    report = ev.evaluate(items, predict, protocol, progress=progress)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "source": source, "data": args.data or f"sample:{args.sample}", **report}
    s = report["summary"]
    print(f"AbsRel {_fmt(s['abs_rel'])}  delta1 {_fmt(s['delta1'])}  over {s['images_scored']} images"
          + (f"; pair accuracy {_fmt(s['pair_accuracy'])} over {s['pairs_total']} pairs" if s["pairs_total"] else ""))
    for skip in report["skipped"]:
        print(f"skipped {skip['name']}: {skip['reason']}", file=sys.stderr)
    if args.out:
        _write_json(Path(args.out), report)
        print(f"wrote {args.out}")
    return 0
