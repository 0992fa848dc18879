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
CKPT_HEADERS = ["id", "model", "encoder", "step", "last loss", "held-out AbsRel", "held-out δ1", "job", "created",
                "path"]
COMPARE_HEADERS = ["image", "teacher AbsRel", "student AbsRel", "teacher δ1", "student δ1", "valid px", "label"]
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


def checkpoints_table(rows: list[dict]) -> pd.DataFrame:
    out = [[r["id"], r["model"], r["encoder"], r["step"], _num(r["loss"]), _num(r["holdout_abs_rel"]),
            _num(r["holdout_delta1"]), r["job"], (r["created"] or "")[:19], r["path"]] for r in rows]
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
              feature_alignment, folder, gt_kind, save_every, holdout=0.0):
        """Start (or queue) a run from the form; -> (selected job, status text). `holdout`: the comparison's
        held-out share, left out of training. Numbers go to the service as sent: it checks their ranges."""
        run = RunSettings(name=name or "", init=init or "", encoder=encoder, steps=steps, batch_size=batch_size,
                          lr_encoder=lr_encoder, decoder_lr_mult=decoder_lr_mult, ratio=str(ratio or ""),
                          input_size=input_size, feature_alignment=bool(feature_alignment), folder=folder or "",
                          gt_kind=gt_kind or "depth", save_every=save_every, holdout=holdout or 0.0)
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
    rows = [[r["image"], _num(r.get("teacher_abs_rel")), _num(r.get("student_abs_rel")), _num(r.get("teacher_delta1")),
             _num(r.get("student_delta1")), r.get("valid_pixels"), r.get("label", "")] for r in res.rows]
    return pd.DataFrame(rows, columns=COMPARE_HEADERS)


def compare_markdown(res) -> str:
    lines = ["| model | | AbsRel ↓ | δ1 ↑ | images |", "|---|---|---|---|---|"]
    for role, title in res.models.items():
        s = res.summary.get(role) or {}
        a, d = _num(s.get("abs_rel")), _num(s.get("delta1"))
        lines.append(f"| {role} | {title} | {a if a is not None else 'n/a'} | {d if d is not None else 'n/a'} | "
                     f"{s.get('images_scored', 0)} |")
    shown = len(res.rows)
    lines.append("")
    lines.append(f"Scored {shown} of {res.held_out} held-out image(s)"
                 + (" (raise *max images* for more)." if shown < res.held_out else "."))
    proto = res.protocol.get("labels") or [{}]
    p = proto[0]
    lines.append(f"\n**Protocol.** {p.get('metrics', '')}. Alignment: "
                 + "; ".join(f"{k}: {v}" for k, v in (p.get("alignment") or {}).items())
                 + f". Depth cap: {p.get('depth_cap')} ({p.get('depth_cap_unit', '')}); {p.get('depth_cap_rule', '')}."
                 + f" Invalid label pixels: {p.get('invalid_gt', '')}; ignore and sky masks are not scored."
                 + f" Split: {res.protocol.get('split', '')}.")
    lines.append("\nLabels accepted unchanged from a teacher's pseudo-label favour that teacher; corrected labels "
                 "are the fair test. Rows say when an image was in a model's training data.")
    if res.skipped:
        lines.append("\nSkipped: " + "; ".join(res.skipped))
    return "\n".join(lines)
