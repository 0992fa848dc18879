"""Summaries of per-image evaluation records: means over images whose alignment succeeded, the
median beside the mean and the outliers that pull it, the failed share, both baselines on the same
images, pooled pair accuracy, the metric-depth metrics of metric predictions (pipeline/evaluation/metric_depth.py,
averaged per image as Depth Anything V2's metric protocol does), and the verdict (VERDICT_RULE).
"""
from __future__ import annotations

import numpy as np

from . import metric_depth as mm

BASELINES = ("constant", "row_prior")
VERDICT_RULE = ("better than both baselines = no failed alignment and a lower mean AbsRel than both the constant "
                "prediction and the image-row prior on the same images; with point pairs only: a higher pair "
                "accuracy than the row prior and than chance (0.5)")
OUTLIER_FACTOR = 3.0
OUTLIER_RULE = (f"an outlier is an image whose AbsRel is more than {OUTLIER_FACTOR:g} times the median AbsRel of the "
                "other scored images")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def outliers(records: list[dict]) -> list[dict]:
    """[{"name", "abs_rel"}] of the records OUTLIER_RULE marks, largest first (needs two or more)."""
    scored = [(r.get("name", f"#{i}"), r["abs_rel"]) for i, r in enumerate(records)]
    out = []
    for i, (name, value) in enumerate(scored):
        others = [v for j, (_, v) in enumerate(scored) if j != i]
        if others and value > OUTLIER_FACTOR * float(np.median(others)):
            out.append({"name": name, "abs_rel": value})
    return sorted(out, key=lambda o: -o["abs_rel"])


def metric_summary(records: list[dict]) -> dict | None:
    """The metric-depth metrics (pipeline/evaluation/metric_depth.py) averaged per image, the model's and both
    baselines' on the same images; None when no record holds them (relative predictions)."""
    with_metric = [r for r in records if r.get("metric") is not None]
    if not with_metric:
        return None
    out = mm.mean_metrics([r["metric"] for r in with_metric])
    out["baselines"] = {name: mm.mean_metrics([(r["baselines"][name] or {}).get("metric") for r in with_metric])
                        for name in BASELINES}
    return out


def summarize(records: list[dict]) -> dict:
    """Means (and the AbsRel median and outliers) over images whose alignment succeeded, the failed
    share, both baselines on the same images, pooled pair accuracy (with the row prior's), the
    metric-depth metrics of metric predictions and the verdict (VERDICT_RULE)."""
    dense = [r for r in records if r.get("abs_rel") is not None]
    failed = [r for r in dense if r.get("alignment_failed")]
    ok = [r for r in dense if not r.get("alignment_failed")]
    pairs = [r for r in records if "pairs" in r]
    correct = sum(r["pairs"]["correct"] for r in pairs)
    total = sum(r["pairs"]["total"] for r in pairs)
    prior_correct = sum(r["row_prior_pairs"]["correct"] for r in pairs if "row_prior_pairs" in r)
    baselines = {name: {"abs_rel": _mean(r["baselines"][name]["abs_rel"] for r in ok),
                        "delta1": _mean(r["baselines"][name]["delta1"] for r in ok)} for name in BASELINES}
    baselines["row_prior"]["pair_accuracy"] = prior_correct / total if total else None
    out = {
        "abs_rel": _mean(r["abs_rel"] for r in ok),
        "abs_rel_median": _median(r["abs_rel"] for r in ok),
        "outliers": outliers(ok),
        "outlier_rule": OUTLIER_RULE,
        "delta1": _mean(r["delta1"] for r in ok),
        "images_scored": len(ok),
        "images_failed": len(failed),
        "failed_share": len(failed) / len(dense) if dense else None,
        "failed_images": [r.get("name", f"#{i}") for i, r in enumerate(dense) if r.get("alignment_failed")],
        "pixels_scored": int(sum(r["n_valid"] for r in ok)),
        "scale_range": [min(r["scale"] for r in dense if r.get("scale") is not None),
                        max(r["scale"] for r in dense if r.get("scale") is not None)]
        if any(r.get("scale") is not None for r in dense) else None,
        "pair_accuracy": correct / total if total else None,
        "pairs_correct": correct,
        "pairs_total": total,
        "baselines": baselines,
    }
    metric = metric_summary(ok)
    if metric is not None:
        out["metric"] = metric
    out["verdict"] = verdict(out)
    return out


def verdict(s: dict) -> dict:
    """{"beats_baselines": True | False | None (nothing scored), "text": one line} by VERDICT_RULE."""
    dense = s["images_scored"] + s["images_failed"]
    if dense:
        b = s["baselines"]
        if s["images_failed"]:
            return {"beats_baselines": False,
                    "text": f"not better than the baselines: alignment failed (scale <= 0) on {s['images_failed']} "
                            f"of {dense} image(s)"}
        worse = [name.replace("_", " ") for name in BASELINES
                 if b[name]["abs_rel"] is not None and not s["abs_rel"] < b[name]["abs_rel"]]
        if worse:
            return {"beats_baselines": False, "text": f"not better than the {' and the '.join(worse)} baseline "
                                                      f"(AbsRel {s['abs_rel']:.4f} vs " + ", ".join(
                f"{n.replace('_', ' ')} {b[n]['abs_rel']:.4f}" for n in BASELINES) + ")"}
        return {"beats_baselines": True, "text": f"better than both baselines on {dense} image(s) (AbsRel "
                                                 f"{s['abs_rel']:.4f} vs constant {b['constant']['abs_rel']:.4f}, "
                                                 f"row prior {b['row_prior']['abs_rel']:.4f})"}
    if s["pairs_total"]:
        acc, prior = s["pair_accuracy"], s["baselines"]["row_prior"]["pair_accuracy"]
        ok = acc > 0.5 and acc > prior
        return {"beats_baselines": ok, "text": f"pair accuracy {acc:.3f} vs row prior {prior:.3f} and chance 0.5: "
                                               + ("better" if ok else "not better")}
    return {"beats_baselines": None, "text": "nothing scored"}


