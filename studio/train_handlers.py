"""The train tab's event handlers (no layout): they call pipeline.training_service and format for the page.

Tests call these directly; studio/train_tab.py wires them to components and api names.
"""
from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from pipeline.training_service import RANGES, RunSettings, run_name_of

from .errors import refuse, user_errors
from .gpu import gpu
from .text import md

RUN_HEADERS = ["job", "run", "status", "step", "of", "started", "error"]
CKPT_HEADERS = ["id", "model", "encoder", "step", "last loss", "AbsRel", "δ1", "measured against", "beats baselines",
                "job", "created", "path"]
COMPARE_HEADERS = ["image", "evidence", "teacher AbsRel", "student AbsRel", "teacher δ1", "student δ1",
                   "teacher scale", "student scale", "constant AbsRel", "row prior AbsRel", "teacher pairs",
                   "student pairs", "valid px", "label"]
CURVE_COLUMNS = ["step", "value", "series"]
RESUMABLE = ("failed", "cancelled")
ACTIVE = ("queued", "running", "cancelling")
POLL_S, IDLE_POLL_S = 2.0, 10.0            # seconds between polls: a run in flight / none (a CLI run may start)


def _num(x, digits: int = 4):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), digits)


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 \
        else f"{s} s"


def status_markdown(info) -> str:
    """One run's state in a few lines: status, step/total, throughput, ETA, error."""
    if info is None:
        return "No training run yet: fill in the settings and press **Start training**."
    head = f"**{md(run_name_of(info))}** (job {info.id}): **{info.status}**"
    total = f"/{info.total}" if info.total else ""
    lines = [head, f"step {info.step}{total}"]
    m = info.metrics or {}
    if m.get("loss") is not None:
        lines.append(f"loss {m['loss']:.4f}")
    if m.get("images_per_s") is not None:
        lines.append(f"{m['images_per_s']:.2f} images/s")
    if info.throughput:
        lines.append(f"{info.throughput:.2f} steps/s")
    if info.status == "running":
        lines.append(f"ETA {_duration(m.get('eta_s', info.eta_s))}")
    text = " · ".join(lines)
    if info.status == "queued":
        text += "\n\nQueued: another GPU job is running; this one starts when it ends."
    if info.status == "done":
        text += "\n\nFinished: its checkpoint is registered (below) and listed in the Depth tab's model picker."
    if info.error:
        text += f"\n\n**Error:** {md(info.error)}"
    if info.status in RESUMABLE:
        text += "\n\nPress **Resume** to continue from its last checkpoint."
    return text


def runs_table(runs) -> pd.DataFrame:
    rows = [[r.id, run_name_of(r), r.status, r.step, r.total, (r.started_at or r.created_at or "")[:19],
             (r.error or "")[:120]] for r in runs]
    return pd.DataFrame(rows, columns=RUN_HEADERS)


def _yes_no(flag) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def checkpoints_table(rows: list[dict]) -> pd.DataFrame:
    """The figure comes from the last comparison against independent labels (never the teacher's own)."""
    out = [[r["id"], r["model"], r["encoder"], r["step"], _num(r["loss"]), _num(r["abs_rel"]), _num(r["delta1"]),
            r["against"] or "not measured", _yes_no(r["beats_baselines"]), r["job"], (r["created"] or "")[:19],
            r["path"]] for r in rows]
    return pd.DataFrame(out, columns=CKPT_HEADERS)


def curves_frame(points: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=CURVE_COLUMNS)


def run_choices(runs) -> list[tuple[str, int]]:
    return [(f"{r.id}: {run_name_of(r)} ({r.status})", r.id) for r in runs]


class TrainHandlers:
    """`service` is a pipeline.training_service.TrainingService."""

    def __init__(self, service, compare=None):
        self.service = service
        # Comparisons run two networks: on ZeroGPU they need a GPU for the call, like /predict.
        self.run_compare = compare or gpu(service.compare, duration=120)

    # ---- start ----------------------------------------------------------------------
    @user_errors("Cannot start training")
    def start(self, name, init, encoder, steps, batch_size, lr_encoder, decoder_lr_mult, ratio, input_size,
              feature_alignment, folder, gt_kind, save_every, holdout=0.0, feature_target="dinov2"):
        """Start (or queue) a run from the form; -> (selected job, status text). `holdout`: the comparison's
        held-out share, left out of training; `feature_target`: "dinov2" (the paper's) or "init". Numbers go
        to the service as sent: it checks their ranges."""
        run = RunSettings(name=name or "", init=init or "", encoder=encoder, steps=steps, batch_size=batch_size,
                          lr_encoder=lr_encoder, decoder_lr_mult=decoder_lr_mult, ratio=str(ratio or ""),
                          input_size=input_size, feature_alignment=bool(feature_alignment), folder=folder or "",
                          gt_kind=gt_kind or "depth", save_every=save_every, holdout=holdout or 0.0,
                          feature_target=feature_target or "dinov2")
        job_id = self.service.start(run)
        info = self.service.status(job_id)
        runs = self.service.runs()
        return gr.update(choices=run_choices(runs), value=job_id), status_markdown(info)

    # ---- watch ----------------------------------------------------------------------
    @user_errors("Cannot show the run")
    def poll(self, job_id):
        """Everything the page shows about runs: -> (job choices, status, curves, log tail, runs table,
        checkpoints table, cancel button, resume button, timer). No job chosen: the newest run.
        The timer polls every POLL_S while a run is queued or running, every IDLE_POLL_S otherwise."""
        runs = self.service.runs()
        ids = [r.id for r in runs]
        wanted = None if job_id in (None, "") else RANGES["job_id"].check(job_id)   # "abc" is refused in one line
        job_id = wanted if wanted in ids else (ids[0] if ids else None)
        info = next((r for r in runs if r.id == job_id), None)
        if info is not None and info.finished:
            info = self.service.status(job_id)             # registers a finished run's checkpoint
        curves = self.service.curves(job_id) if job_id is not None else []
        log = "\n".join(info.log_tail) if info is not None else ""
        status = info.status if info is not None else None
        busy = any(r.status in ACTIVE for r in runs)
        return (gr.update(choices=run_choices(runs), value=job_id), status_markdown(info), curves_frame(curves),
                log, runs_table(runs), checkpoints_table(self.service.checkpoints()),
                gr.update(interactive=status in ACTIVE), gr.update(interactive=status in RESUMABLE),
                gr.Timer(POLL_S if busy else IDLE_POLL_S))

    @user_errors("Cannot cancel")
    def cancel(self, job_id):
        if job_id in (None, ""):
            refuse("choose a run first")
        return status_markdown(self.service.cancel(job_id))

    @user_errors("Cannot resume")
    def resume(self, job_id):
        """-> (the new job selected, its status)."""
        if job_id in (None, ""):
            refuse("choose a failed or cancelled run first")
        new_id = self.service.resume(job_id)
        info = self.service.status(new_id)
        return gr.update(choices=run_choices(self.service.runs()), value=new_id), status_markdown(info)

    def checkpoints(self) -> pd.DataFrame:
        self.service.sync_checkpoints()
        return checkpoints_table(self.service.checkpoints())

    def model_choices(self):
        """Both model pickers of the comparison, refreshed (a run may have finished)."""
        choices = self.compare_choices()
        return gr.update(choices=choices), gr.update(choices=choices)

    def compare_choices(self) -> list[tuple[str, str]]:
        depth = self.service.depth
        return [(c.label, c.key) for c in depth.choices()] if depth is not None else []

    # ---- teacher vs student ------------------------------------------------------------
    @user_errors("Cannot compare")
    def compare(self, teacher, student, fraction, max_images, input_size, progress=gr.Progress()):
        """Both models on the held-out curated labels -> (table, gallery, summary + protocol text)."""
        return self._compare(teacher, student, dict(fraction=fraction, max_images=max_images), input_size, progress)

    @user_errors("Cannot compare")
    def compare_sample(self, teacher, student, input_size, progress=gr.Progress()):
        """Both models on the Middlebury motorcycle image with true depth."""
        return self._compare(teacher, student, dict(sample=True), input_size, progress)

    def _compare(self, teacher, student, kwargs, input_size, progress):
        res = self.run_compare(teacher, student, input_size=input_size,
                               progress=lambda f, msg: progress(f, desc=msg), **kwargs)
        return compare_table(res), res.panels, compare_markdown(res)


def compare_table(res) -> pd.DataFrame:
    def scale(r, role):
        x = _num(r.get(f"{role}_scale"))
        return None if x is None else (f"{x:.4g} FAILED" if r.get(f"{role}_failed") else f"{x:.4g}")
    rows = [[r["image"], r.get("evidence", ""), _num(r.get("teacher_abs_rel")), _num(r.get("student_abs_rel")),
             _num(r.get("teacher_delta1")), _num(r.get("student_delta1")), scale(r, "teacher"), scale(r, "student"),
             _num(r.get("constant_abs_rel")), _num(r.get("row_prior_abs_rel")), _num(r.get("teacher_pairs")),
             _num(r.get("student_pairs")), r.get("valid_pixels"), r.get("label", "")] for r in res.rows]
    return pd.DataFrame(rows, columns=COMPARE_HEADERS)


def _fmt(x, digits: int = 4) -> str:
    v = _num(x, digits)
    return "n/a" if v is None else f"{v:.{digits}f}"


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
    lines = ["| model | | AbsRel ↓ | δ1 ↑ | images | failed alignments | constant AbsRel | row prior AbsRel | "
             "pair accuracy | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for role, title in res.models.items():
        s = res.summary.get(role) or {}
        b = s.get("baselines") or {}
        pairs = f"{_fmt(s.get('pair_accuracy'), 3)} (row prior {_fmt((b.get('row_prior') or {}).get('pair_accuracy'), 3)})" \
            if s.get("pairs_total") else "–"
        lines.append(f"| {role} | {title} | {_fmt(s.get('abs_rel'))} | {_fmt(s.get('delta1'))} | {s.get('images_scored', 0)} "
                     f"| {s.get('images_failed', 0)} | {_fmt((b.get('constant') or {}).get('abs_rel'))} | "
                     f"{_fmt((b.get('row_prior') or {}).get('abs_rel'))} | {pairs} | {(s.get('verdict') or {}).get('text', '')} |")
    lines += ["", _versus(res), "", f"Scored {len(res.rows)} of {res.held_out} held-out image(s) against "
              + ", ".join(f"{k} ({n})" for k, n in sorted(res.evidence.items()))
              + ": labels neither model produced (never an accepted pseudo-label)."]
    lines += [f"- skipped {line}" for line in res.skipped]
    lines.append(_protocol_text(res.protocol))
    lines.append("\nA corrected region is a plane fitted to the label it corrected, so it leans towards the model "
                 "that made that label (the row says which). Rows say when an image was in a model's training data.")
    return "\n".join(lines)


def _versus(res) -> str:
    t, s = res.summary.get("teacher") or {}, res.summary.get("student") or {}
    if not (t.get("abs_rel") is not None and s.get("abs_rel") is not None):
        return "**Teacher vs student:** no dense score for both models; no claim."
    beats = [r for r, x in (("teacher", t), ("student", s)) if (x.get("verdict") or {}).get("beats_baselines")]
    better = "student" if s["abs_rel"] < t["abs_rel"] else "teacher"
    note = "" if "student" in beats else " The student does not beat both baselines, so its score says little."
    return (f"**Teacher vs student:** the {better} has the lower AbsRel ({_fmt(s['abs_rel'])} student vs "
            f"{_fmt(t['abs_rel'])} teacher, images whose alignment succeeded).{note}")


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
