"""The teacher-vs-student comparison as the train tab shows it: a table, and a summary in Markdown.

Means beside medians, outliers named: one image with an AbsRel of 2498 must not pass for the model's
figure (pipeline.evaluation.protocol.summarize marks outliers by its OUTLIER_RULE).
"""
from __future__ import annotations

import math

import pandas as pd

from .text import md

COMPARE_HEADERS = ["image", "evidence", "teacher AbsRel", "student AbsRel", "teacher δ1", "student δ1",
                   "teacher scale", "student scale", "constant AbsRel", "row prior AbsRel", "teacher pairs",
                   "student pairs", "valid px", "label"]


def num(x, digits: int = 4):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), digits)


def fmt(x, digits: int = 4) -> str:
    v = num(x, digits)
    return "n/a" if v is None else f"{v:.{digits}f}"


def compare_table(res) -> pd.DataFrame:
    def scale(r, role):
        x = num(r.get(f"{role}_scale"))
        return None if x is None else (f"{x:.4g} FAILED" if r.get(f"{role}_failed") else f"{x:.4g}")
    rows = [[r["image"], r.get("evidence", ""), num(r.get("teacher_abs_rel")), num(r.get("student_abs_rel")),
             num(r.get("teacher_delta1")), num(r.get("student_delta1")), scale(r, "teacher"), scale(r, "student"),
             num(r.get("constant_abs_rel")), num(r.get("row_prior_abs_rel")), num(r.get("teacher_pairs")),
             num(r.get("student_pairs")), r.get("valid_pixels"), r.get("label", "")] for r in res.rows]
    return pd.DataFrame(rows, columns=COMPARE_HEADERS)


def compare_markdown(res) -> str:
    """The honest summary: per model the means, failed alignments, both baselines and the verdict;
    what was scored against; what was skipped and why. No rows: 'nothing independent to score against'."""
    if not res.scored:
        lines = [f"**{res.message[0].upper() + res.message[1:]}.** No score is shown: the held-out images "
                 f"({res.held_out}) have only labels a model produced, and a model's pseudo-label cannot tell "
                 "which model is better. Import ground truth (Curate tab, *Import ground truth*), correct a "
                 "region of a label (plane, sky) or add point pairs, then compare again."]
        lines += [f"- skipped {line}" for line in res.skipped]
        return "\n".join(lines)
    lines = ["| model | | AbsRel ↓ mean | AbsRel median | δ1 ↑ | images | failed alignments | constant AbsRel | "
             "row prior AbsRel | pair accuracy | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for role, title in res.models.items():
        s = res.summary.get(role) or {}
        b = s.get("baselines") or {}
        pairs = f"{fmt(s.get('pair_accuracy'), 3)} (row prior {fmt((b.get('row_prior') or {}).get('pair_accuracy'), 3)})" \
            if s.get("pairs_total") else "–"
        lines.append(f"| {role} | {md(title)} | {fmt(s.get('abs_rel'))} | {fmt(s.get('abs_rel_median'))} | "
                     f"{fmt(s.get('delta1'))} | {s.get('images_scored', 0)} "
                     f"| {s.get('images_failed', 0)} | {fmt((b.get('constant') or {}).get('abs_rel'))} | "
                     f"{fmt((b.get('row_prior') or {}).get('abs_rel'))} | {pairs} | {(s.get('verdict') or {}).get('text', '')} |")
    lines += _outlier_lines(res)
    lines += ["", _versus(res), "", f"Scored {len(res.rows)} of {res.held_out} held-out image(s) against "
              + ", ".join(f"{k} ({n})" for k, n in sorted(res.evidence.items()))
              + ": labels neither model produced (never an accepted pseudo-label)."]
    lines += [f"- skipped {line}" for line in res.skipped]
    lines.append(_protocol_text(res.protocol))
    lines.append("\nA corrected region is a plane fitted to the label it corrected, so it leans towards the model "
                 "that made that label (the row says which). Rows say when an image was in a model's training data.")
    return "\n".join(lines)


def outlier_text(outliers: list[dict], limit: int = 5) -> str:
    """'img3 (AbsRel 2498), ...' for a summary's outliers."""
    shown = ", ".join(f"{md(o['name'])} (AbsRel {o['abs_rel']:.4g})" for o in outliers[:limit])
    return shown + (f" and {len(outliers) - limit} more" if len(outliers) > limit else "")


def _outlier_lines(res) -> list[str]:
    out = []
    for role in res.models:
        s = res.summary.get(role) or {}
        if s.get("outliers"):
            out.append(f"\n**Outliers ({role}):** {outlier_text(s['outliers'])}: far above the other images "
                       f"({s.get('outlier_rule', '')}); they pull the mean, so read the median beside it.")
    return out


def _versus(res) -> str:
    t, s = res.summary.get("teacher") or {}, res.summary.get("student") or {}
    if not (t.get("abs_rel") is not None and s.get("abs_rel") is not None):
        return "**Teacher vs student:** no dense score for both models; no claim."
    beats = [r for r, x in (("teacher", t), ("student", s)) if (x.get("verdict") or {}).get("beats_baselines")]
    better = "student" if s["abs_rel"] < t["abs_rel"] else "teacher"
    note = "" if "student" in beats else " The student does not beat both baselines, so its score says little."
    return (f"**Teacher vs student:** the {better} has the lower AbsRel ({fmt(s['abs_rel'])} student vs "
            f"{fmt(t['abs_rel'])} teacher, images whose alignment succeeded).{note}")


def _protocol_text(protocol: dict) -> str:
    parts = []
    for p in protocol.get("labels") or []:
        text = f"{p.get('space', '')} space: {p.get('metrics', '')}. Alignment: " + \
            "; ".join(f"{k}: {v}" for k, v in (p.get("alignment") or {}).items())
        if p.get("depth_cap") is not None:
            text += f". Depth cap: {p.get('depth_cap')} ({p.get('depth_cap_unit', '')}); {p.get('depth_cap_rule', '')}"
        parts.append(text)
    first = (protocol.get("labels") or [{}])[0]
    return ("\n**Protocol.** " + " | ".join(parts) + f". Failed alignment: {first.get('failed_alignment', '')}. "
            f"Baselines: {first.get('baselines', '')}. Verdict: {first.get('verdict', '')}. "
            f"Split: {protocol.get('split', '')}. Ignore and sky masks are not scored.")
