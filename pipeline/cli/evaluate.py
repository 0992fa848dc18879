"""`python -m pipeline evaluate`: AbsRel / δ1 / pair accuracy against labels no model produced.

    python -m pipeline evaluate --checkpoint depth_anything_v2_vits.pth --data DIR --gt-kind depth --out m.json
    python -m pipeline evaluate --pred PREDDIR --pred-kind disparity --data DIR --gt-kind depth --out m.json
    python -m pipeline evaluate --checkpoint X --sample motorcycle        # built-in Middlebury sample
    python -m pipeline evaluate --checkpoint X --db studio.db [--holdout 0.1]   # the store's evidence

Every image line gives the fitted scale and shift, FAILED when the scale is <= 0 (reversed depth
order: left out of the means and counted), and the constant and row-prior baselines on the same
pixels; the summary gives the failed share, both baselines, the median beside the mean, the
outliers and the verdict. Metric checkpoints (depth in metres) are scored without alignment with
the metric metrics (AbsRel, RMSE, log10, SiLog, d1-d3) over a stated depth range: --min-depth to
--depth-cap, which defaults to the checkpoint's max_depth. The protocol
(pipeline/evaluation/protocol.py) is written into the output JSON next to the numbers. With --db (or the
store's export as --data) only ground truth, pixels a person set and point pairs are scored; an
image whose label is a model's pseudo-label is skipped with that reason.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import ConfigError
from ..evaluation import data as ed
from ..evaluation import protocol as ev

HELP = ("score depth predictions (a checkpoint or saved .npy files) against ground truth, human corrections "
        "and point pairs: AbsRel, delta1, fitted scale, failed alignments, baselines, pair accuracy")
SAMPLES = ("motorcycle",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file or registry name to run on every image")
    src.add_argument("--pred", metavar="PREDDIR", help="folder of saved predictions, one <image name>.npy per image")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", metavar="DIR", help="images with same-named ground truth, or the store's export")
    data.add_argument("--sample", choices=SAMPLES, help="built-in sample: Middlebury 2014 motorcycle (depth from its calibration)")
    data.add_argument("--db", metavar="DB", help="label store: its ground truth, human-set pixels and point pairs")
    parser.add_argument("--holdout", type=float, default=1.0,
                        help="with --db: score the held-out split of this share of the images (by image hash, as "
                             "train --holdout); default 1 = every image with independent evidence")
    parser.add_argument("--gt-kind", choices=ev.GT_KINDS, default=None,
                        help="what the GT files hold (default: what the data records, else depth); disparity GT "
                             "is scored in disparity space")
    parser.add_argument("--pred-kind", choices=ev.PRED_KINDS, default="disparity",
                        help="with --pred: relative disparity (aligned) or metric depth (as is); default disparity")
    parser.add_argument("--depth-cap", default=None, metavar="M",
                        help="depth cap in metres for depth GT, or 'gt-max' (per image); for metric predictions the "
                             "top of the stated depth range. Default: a metric checkpoint's max_depth, else 80, "
                             "10 for the motorcycle sample")
    parser.add_argument("--min-depth", type=float, default=None,
                        help="GT depth below this is invalid (default 0.001 m)")
    parser.add_argument("--gt-scale", type=float, default=1.0, help="multiply GT values (e.g. 0.001 for millimetre PNGs)")
    parser.add_argument("--out", metavar="JSON", help="write the per-image and averaged metrics here")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--input-size", type=int, default=518, help="network input size (default 518)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only, not one line per image")


def _depth_cap(value: str | None, sample: str | None, max_depth: float | None = None) -> float | None:
    if value is None:
        if sample:
            from ..files.sample_data import MOTORCYCLE_DEPTH_CAP
            return MOTORCYCLE_DEPTH_CAP
        return max_depth if max_depth is not None else ev.DEFAULT_DEPTH_CAP
    if value == "gt-max":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--depth-cap must be a number or 'gt-max', got {value!r}") from None


def protocols(args, max_depth: float | None = None) -> dict[str, ev.Protocol]:
    """One protocol per GT kind: depth (cap, min depth) and disparity (disparity space). `max_depth`:
    a metric checkpoint's, the default cap (the top of its depth range)."""
    min_depth = ev.DEFAULT_MIN_DEPTH if args.min_depth is None else args.min_depth
    return {"depth": ev.Protocol("depth", _depth_cap(args.depth_cap, args.sample, max_depth), min_depth),
            "disparity": ev.Protocol("disparity", None, 0.0)}


def sample_items(name: str) -> list[ev.EvalItem]:
    """The built-in sample as an evaluation item: RGB + depth in metres from the Middlebury calibration."""
    from ..files.sample_data import motorcycle_depth
    rgb, depth, calib = motorcycle_depth()
    return [ev.EvalItem(name=name, load_image=lambda: rgb, load_gt=lambda: depth, gt_kind="depth",
                        note=f"ground truth: {calib['source']}")]


def _items(args) -> tuple[list[ev.EvalItem], list[dict]]:
    if args.sample:
        return sample_items(args.sample), []
    if args.db:
        from ..store import Store
        if not Path(args.db).is_file():
            raise ev.EvaluationDataError(f"label store {args.db} not found")
        items, skipped = ed.store_items(Store(args.db), args.holdout)
        if not items:
            print(f"nothing independent to score against in {args.db}: {len(skipped)} image(s) have only labels a "
                  "model produced; import ground truth, correct a region or add point pairs", file=sys.stderr)
        return items, skipped
    items = ed.find_items(args.data, args.gt_scale)
    for it in items:
        if args.gt_kind:
            it.gt_kind = args.gt_kind if it.load_gt else None
        elif it.load_gt and not it.gt_kind:
            it.gt_kind = "depth"
    return items, []


def _checkpoint_predictor(args):
    from ..predictor import Predictor
    from ..weights.loading import load_model
    loaded = load_model(args.checkpoint)
    predictor = Predictor(loaded, device=args.device, input_size=args.input_size)

    def predict(item: ev.EvalItem) -> tuple[np.ndarray, str]:
        p = predictor.predict(item.load_image())
        return p.array, "depth" if p.kind == "metric_depth" else "disparity"

    source = {"checkpoint": str(args.checkpoint), "model_id": predictor.model_id, "device": str(predictor.device),
              "input_size": args.input_size, "kind": loaded.config.output_kind}
    if loaded.config.metric:
        source["max_depth"] = loaded.config.max_depth
    return predict, source


def _saved_predictions(args):
    root = Path(args.pred)
    if not root.is_dir():
        raise ev.EvaluationDataError(f"prediction folder {root} does not exist; pass the folder holding <image name>.npy files")

    def predict(item: ev.EvalItem) -> tuple[np.ndarray, str]:
        cands = [root / f"{item.name}.npy", root / f"{Path(item.name).name}.npy"]
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            raise ev.EvaluationDataError(f"no prediction for {item.name}: expected {cands[0]} (or {cands[1].name} in {root})")
        return ed.read_array(path), args.pred_kind

    return predict, {"pred": str(root), "pred_kind": args.pred_kind}


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(ev.clean_json(report), indent=2, allow_nan=False))


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def image_line(r: dict) -> str:
    """One image: metrics, fitted scale / shift (FAILED when <= 0), the baselines, pairs."""
    parts = [r["name"]]
    if r.get("n_valid"):
        b = r.get("baselines") or {}
        fit = "" if r.get("scale") is None else f"  scale {r['scale']:.4g} shift {r['shift']:.4g}"
        parts.append(f"[{r.get('space')}] AbsRel {_fmt(r['abs_rel'])} delta1 {_fmt(r['delta1'])}{fit}"
                     + ("  FAILED (scale <= 0: not in the means)" if r.get("alignment_failed") else "")
                     + f"  | constant {_fmt(b['constant']['abs_rel'])} row prior {_fmt(b['row_prior']['abs_rel'])}")
    if r.get("metric"):
        m = r["metric"]
        parts.append(f"metric: RMSE {_fmt(m['rmse'])} m log10 {_fmt(m['log10'])} SiLog {_fmt(m['silog'])} "
                     f"d1/d2/d3 {_fmt(m['d1'], 3)}/{_fmt(m['d2'], 3)}/{_fmt(m['d3'], 3)}")
    if "pairs" in r:
        parts.append(f"pairs {r['pairs']['correct']}/{r['pairs']['total']} (row prior "
                     f"{r['row_prior_pairs']['correct']}/{r['row_prior_pairs']['total']})")
    return "  ".join(parts)


def summary_lines(s: dict, title: str = "summary") -> list[str]:
    b = s["baselines"]
    dense = s["images_scored"] + s["images_failed"]
    lines = [f"{title}: AbsRel {_fmt(s['abs_rel'])}  delta1 {_fmt(s['delta1'])}  over {s['images_scored']} image(s); "
             f"failed alignments {s['images_failed']} of {dense}"
             + (f" ({s['failed_share']:.0%}: {', '.join(s['failed_images'][:5])})" if s["images_failed"] else ""),
             f"  baselines on the same images: constant AbsRel {_fmt(b['constant']['abs_rel'])} delta1 "
             f"{_fmt(b['constant']['delta1'])}; row prior AbsRel {_fmt(b['row_prior']['abs_rel'])} delta1 "
             f"{_fmt(b['row_prior']['delta1'])}"
             + (f"; fitted scale from {s['scale_range'][0]:.4g} to {s['scale_range'][1]:.4g}" if s["scale_range"] else "")]
    if s.get("abs_rel_median") is not None:
        lines.append(f"  median AbsRel {_fmt(s['abs_rel_median'])}" + (
            "; outliers: " + ", ".join(f"{o['name']} ({o['abs_rel']:.4g})" for o in s["outliers"][:5])
            + f" ({s['outlier_rule']})" if s["outliers"] else ""))
    if s.get("metric"):
        lines += metric_lines(s["metric"])
    if s["pairs_total"]:
        lines.append(f"  pair accuracy {_fmt(s['pair_accuracy'], 3)} over {s['pairs_total']} pairs (row prior "
                     f"{_fmt(b['row_prior']['pair_accuracy'], 3)}, chance 0.5)")
    lines.append(f"  verdict: {s['verdict']['text']}")
    return lines


def metric_lines(m: dict) -> list[str]:
    """The metric protocol's means (no alignment) and the same metrics of both aligned baselines."""
    def row(x):
        return (f"AbsRel {_fmt(x['abs_rel'])} RMSE {_fmt(x['rmse'])} m log10 {_fmt(x['log10'])} SiLog "
                f"{_fmt(x['silog'])} d1/d2/d3 {_fmt(x['d1'], 3)}/{_fmt(x['d2'], 3)}/{_fmt(x['d3'], 3)}")
    b = m["baselines"]
    return [f"  metric depth, no alignment, over {m['images']} image(s): {row(m)}",
            f"    baselines: constant {row(b['constant'])}; row prior {row(b['row_prior'])}"]


def run(args) -> int:
    items, skipped = _items(args)
    predict, source = _checkpoint_predictor(args) if args.checkpoint else _saved_predictions(args)
    if args.pred and args.pred_kind == "depth" and any(it.gt_kind == "disparity" for it in items):
        raise ConfigError("metric depth predictions need depth ground truth: use --gt-kind depth")

    def progress(i: int, name: str) -> None:
        print(f"[{i}/{len(items)}] {name}", file=sys.stderr)

    report = ev.evaluate(items, predict, protocols(args, source.get("max_depth")), progress=progress)
    report["skipped"] = skipped + report["skipped"]
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": source,
              "data": args.data or args.db or f"sample:{args.sample}", **report}
    if not args.quiet:
        for r in report["images"]:
            print(image_line(r))
    metric = (report["protocol"].get("metric") if isinstance(report["protocol"], dict) else None)
    if metric:
        print(f"metric protocol: {metric.get('alignment', 'no alignment')}; depth range "
              f"{metric.get('depth_range_m')} m")
    print("\n".join(summary_lines(report["summary"])))
    for space, s in (report.get("summary_by_space") or {}).items():
        print("\n".join(summary_lines(s, f"{space} space")))
    for skip in report["skipped"]:
        print(f"skipped {skip['name']}: {skip['reason']}", file=sys.stderr)
    if args.out:
        _write_json(Path(args.out), report)
        print(f"wrote {args.out}")
    return 0
