"""What the Curate tab writes: headers, tables, reports and job progress (user-supplied names escaped).

Revisions are named by their per-image number everywhere ("revision 2 of 3"), as the store's
messages and the Train tab's comparison name them.
"""
from __future__ import annotations

from pipeline.geometry.picture_marks import mask_area

from .text import html_text, md

HISTORY_HEADERS = ["#", "tool", "author", "values from", "time (UTC)", "head", "note"]
PAIR_HEADERS = ["pair", "point 1 [h, w]", "point 2 [h, w]", "closer", "label agrees"]
REFERENCE_HEADERS = ["#", "reference", "where [h, w]", "metres"]


def header_markdown(view) -> str:
    rec, head = view.image, view.head
    conf = "–" if rec.confidence is None else f"{rec.confidence:.3f}"
    if head is None:
        rev = "no label yet"
    else:
        unit = "metres" if head.kind == "metric_depth" else "disparity"
        rev = f"revision {head.number} of {view.revisions} ({md(head.tool)} by {md(head.author)}, {unit})"
        rev += " · at the first revision: nothing to undo" if not view.history.can_undo else ""   # say so
    tags = f" · tags: {md(', '.join(view.tags))}" if view.tags else ""
    return f"**#{rec.id} {md(rec.name)}** · **{rec.status}** · confidence {conf} · {rev} · {rec.width}×{rec.height}{tags}"


def history_rows(view) -> list[list]:
    return [[r.number, r.tool, r.author, r.source, r.created_at.replace("T", " ")[:19],
             "◀ head" if r.id == view.head_id else "", r.note or ""] for r in view.history.revisions]


def pair_rows(pairs) -> list[list]:
    return [[p.id, f"{list(p.point1)}", f"{list(p.point2)}", f"point {p.closer}",
             "no (flagged)" if p.flagged else "yes"] for p in pairs]


def selection_markdown(selection) -> str:
    n, total = mask_area(selection)
    if not n:
        return "Nothing selected: click the image with the magic wand, or paint in the Brush tab."
    return f"Selected: **{n:,} px** ({100.0 * n / total:.1f}% of the image)"


def _where(ref: dict) -> str:
    if ref["type"] == "distance":
        return f"{list(ref['a'])} to {list(ref['b'])}"
    if ref.get("point") is not None:
        return f"{list(ref['point'])}"
    parts = [ref.get("region"), ref.get("region_b")]
    sizes = [f"{mask_area(p)[0]:,} px" for p in parts if p is not None]
    if ref["type"] == "right_angle" and ref.get("region_b") is None:
        sizes.append("select the second plane, add again")
    return " and ".join(sizes)


def reference_rows(refs) -> list[list]:
    names = {"distance": "distance", "depth": "depth", "camera_height": "camera height", "right_angle": "right angle"}
    return [[i + 1, names.get(r["type"], r["type"]), _where(r), "" if r.get("metres") is None else r["metres"]]
            for i, r in enumerate(refs or [])]


def calibration_markdown(done) -> str:
    c = done.calibration
    lines = [f"**Calibrated:** revision {done.revision.number} is metric depth ({c.formula}; focal "
             f"{c.focal_px:.0f} px, {md(c.focal_source)})."]
    for r in c.references:
        if "given_m" in r:
            lines.append(f"- {r['reference']}: given {r['given_m']:.3g} m, fitted {r['fitted_m']:.3g} m "
                         f"({r['residual_pct']:+.1f}%)")
        else:
            lines.append(f"- {r['reference']}: {r['fitted_deg']:.1f}° (90° given)")
    if c.beyond_horizon:
        lines.append(f"- {c.beyond_horizon:,} px beyond the horizon have no depth: added to the ignore mask")
    return "\n".join(lines)


def histogram_markdown(hist, status: str) -> str:
    """The confidence histogram as a row of bars (the store keeps it; 20 bins over 0..1)."""
    total = sum(hist.counts)
    if not total:
        return f"No confidence yet for {md(status or 'all')} images ({hist.unscored} not pseudo-labelled)."
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(hist.counts)
    bars = "".join(blocks[0 if n == 0 else max(1, round(8 * n / top))] for n in hist.counts)
    return (f"Confidence ({md(status or 'all')}, {total} scored, {hist.unscored} not yet): "
            f"`0 {bars} 1`")


def job_html(info) -> str:
    """A job's progress as HTML (a <progress> bar, counts, rate, error and the last log lines)."""
    if info is None:
        return "<p>No pseudo-labelling job yet.</p>"
    total = info.total or 0
    bar = f"<progress value='{info.done}' max='{total}'></progress> " if total else ""
    rate = f" · {info.throughput:.2f} img/s" if info.throughput else ""
    eta = f" · about {info.eta_s:.0f} s left" if info.eta_s is not None and not info.finished else ""
    text = (f"<p><b>Job {info.id}: {html_text(info.status)}</b> {bar}{info.done}/{total or '?'}"
            f"{rate}{eta}</p>")
    if info.message:
        text += f"<p>{html_text(info.message)}</p>"
    if info.error:
        text += f"<p><b>Error:</b> {html_text(info.error)}</p>"
    lines = [line for line in info.log_tail[-6:] if not line.lstrip().startswith(("{", "["))]  # words, not JSON
    if lines:
        text += "<pre>" + "\n".join(html_text(line) for line in lines) + "</pre>"
    return text


def import_markdown(report) -> str:
    lines = [f"**Import:** {report.summary()}"]
    lines += [f"- duplicate: **{md(d.name)}** is image #{d.image_id} (**{md(d.existing_name)}**)"
              for d in report.duplicates[:20]]
    lines += [f"- rejected: **{md(name)}**: {md(why)}" for name, why in report.rejected[:50]]
    return "\n".join(lines)


def changes_markdown(changes, *, dry_run: bool = False) -> str:
    """A batch decision's report: what changed (the first 20 by name), what was skipped and why."""
    head = (f"**{'Would set' if dry_run else 'Set'} {len(changes.changed)} image(s) to {changes.status}**; "
            f"{len(changes.unchanged)} already {changes.status}, {len(changes.skipped)} skipped.")
    lines = [head] + [f"- #{i} {md(name)}: {old} → {changes.status}" for i, name, old in changes.changed[:20]]
    lines += [f"- skipped #{i} {md(name)}: {md(why)}" for i, name, why in changes.skipped[:10]]
    return "\n".join(lines)
