"""The train tab's event handlers (no layout): they call pipeline.services.training_service and format for the page.

Tests call these directly; studio/train_tab.py wires them to components and api names. Reading
handlers (show, poll, checkpoints) change nothing: a finished run was registered by the run itself.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from pipeline.services.training_service import RANGES, run_name_of

from .errors import refuse, user_errors
from .gpu import gpu
from .text import md
from .train_compare_view import compare_markdown, compare_table, num, outlier_text

RUN_HEADERS = ["job", "run", "status", "step", "of", "started", "error"]
CKPT_HEADERS = ["id", "model", "encoder", "predicts", "step", "last loss", "AbsRel mean", "AbsRel median", "δ1",
                "outliers", "measured against", "beats baselines", "job", "created", "path"]
CURVE_COLUMNS = ["step", "value", "series"]
CURVE_MIN_STEPS = 10                       # the step axis spans at least this, so its ticks are whole steps
RESUMABLE = ("failed", "cancelled")
ACTIVE = ("queued", "running", "cancelling")
POLL_S, IDLE_POLL_S = 2.0, 10.0            # seconds between polls: a run in flight / none (a CLI run may start)


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 \
        else f"{s} s"


def status_markdown(info) -> str:
    """One run's state in a few lines: status, step/total, throughput, ETA, error, what to do next."""
    if info is None:
        return "No training run yet: fill in the settings and press **Start training**."
    head = f"**{md(run_name_of(info))}** (job {info.id}): **{info.status}**"
    total = f"/{info.total}" if info.total else ""
    lines = [head, f"step {info.done}{total}"]
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
        text += ("\n\nPress **Resume** to continue from its last checkpoint; if the labels changed since, the page "
                 "asks whether to continue on the data it started with or to start a new run from that checkpoint.")
    return text


def runs_table(runs) -> pd.DataFrame:
    rows = [[r.id, run_name_of(r), r.status, r.done, r.total, (r.started_at or r.created_at or "")[:19],
             (r.error or "")[:120]] for r in runs]
    return pd.DataFrame(rows, columns=RUN_HEADERS)


def _yes_no(flag) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def checkpoints_table(rows: list[dict]) -> pd.DataFrame:
    """The figure comes from the last comparison against independent labels (never the teacher's own):
    mean and median AbsRel side by side, the outliers that pull the mean named."""
    out = [[r["id"], r["model"], r["encoder"], f"metres (up to {r['max_depth']:g} m)" if r["metric"] else "disparity",
            r["step"], num(r["loss"]), num(r["abs_rel"]), num(r["abs_rel_median"]), num(r["delta1"]),
            outlier_text(r["outliers"]) if r["outliers"] else "", r["against"] or "not measured",
            _yes_no(r["beats_baselines"]), r["job"], (r["created"] or "")[:19], r["path"]] for r in rows]
    return pd.DataFrame(out, columns=CKPT_HEADERS)


CURVE_TYPES = {"step": "int64", "value": "float64", "series": "str"}


def curves_frame(points: list[dict]) -> pd.DataFrame:
    """Typed even when empty: a plot first shown with untyped (object) columns keeps discrete axes and
    draws nothing when the poll later fills it."""
    return pd.DataFrame(points, columns=CURVE_COLUMNS).astype(CURVE_TYPES)


def curves_plot(points: list[dict], total: int | None = None) -> dict:
    """The loss curves (an update of the plot) with whole-step ticks: the step axis spans
    0 .. max(CURVE_MIN_STEPS, the run's steps), so its ticks never fall between steps."""
    frame = curves_frame(points)
    last = int(frame["step"].max()) if len(frame) else 0
    return gr.update(value=frame, x_lim=[0, max(CURVE_MIN_STEPS, last, int(total or 0))])


def run_choices(runs) -> list[tuple[str, int]]:
    return [(f"{r.id}: {run_name_of(r)} ({r.status})", r.id) for r in runs]


def data_note(summary: dict, launch_note: str) -> str:
    metric = f" ({summary['metric']} of them in metres, for metric runs)" if summary.get("metric") else ""
    return (f"The run trains on the label store's curated labels (**{summary['accepted']}** accepted, "
            f"**{summary['corrected']}** corrected{metric}; newest revision of each, with masks and point pairs) "
            f"and, optionally, a folder of image / ground-truth pairs under `{summary['data_root']}`. "
            f"It runs in the background ({launch_note}); one GPU job runs at a time, the others wait in the "
            f"queue. The images in the *held-out share* (Teacher vs student, below) are left out of training.")


class TrainHandlers:
    """`service` is a pipeline.services.training_service.TrainingService."""

    def __init__(self, service, compare=None):
        self.service = service
        # Comparisons run two networks: on ZeroGPU they need a GPU for the call, like /predict.
        self.run_compare = compare or gpu(service.compare, duration=120)

    # ---- what the tab shows when it is shown -----------------------------------------
    @user_errors("Cannot show the training form")
    def show(self, start, teacher, student, encoder=None, metric=False, feature_alignment=True,
             feature_target="dinov2"):
        """Everything the form and pickers read from the store and the model list, read now (tab shown,
        page loaded): -> (data note, start picker, what the run will do, encoder, metric, max depth, teacher
        picker, student picker, checkpoints table). A start, teacher or student no longer offered falls back
        to the default; fine-tuning a model sets the encoder (and for a metric model, metric and max depth)."""
        svc = self.service
        starts = svc.start_choices()
        start = start if start in [k for _, k in starts] else svc.default_start()
        models = self.compare_choices()
        keys = [k for _, k in models]
        default = svc.depth.default_key if svc.depth is not None else None
        sentence, *fixed = self.start_changed(start, encoder, metric, feature_alignment, feature_target)
        return (data_note(svc.data_summary(), svc.launch_note()), gr.update(choices=starts, value=start), sentence,
                *fixed, gr.update(choices=models, value=teacher if teacher in keys else default),
                gr.update(choices=models, value=student if student in keys else default),
                checkpoints_table(svc.checkpoints()))

    @user_errors("Cannot describe the run")
    def describe(self, start, encoder=None, metric=False, feature_alignment=True, feature_target="dinov2") -> str:
        """One sentence: what a run with these settings starts from and what happens offline."""
        return self.service.describe_start(start, encoder, metric=bool(metric),
                                           feature_alignment=bool(feature_alignment),
                                           feature_target=feature_target or "dinov2")

    @user_errors("Cannot describe the run")
    def start_changed(self, start, encoder=None, metric=False, feature_alignment=True, feature_target="dinov2"):
        """-> (the sentence, encoder, metric, max depth): fine-tuning a model fixes the encoder to the
        model's; a metric model is fine-tuned as a metric run up to its own max depth."""
        fixed = self.service.start_encoder(start)
        max_depth = self.service.start_max_depth(start)                # None: not a metric model
        metric = True if max_depth is not None else metric
        return (self.describe(start, fixed or encoder, metric, feature_alignment, feature_target),
                gr.update(value=fixed) if fixed else gr.update(),
                gr.update(value=True) if max_depth is not None else gr.update(),
                gr.update(value=max_depth) if max_depth is not None else gr.update())

    # ---- start ----------------------------------------------------------------------
    @user_errors("Cannot start training")
    def start(self, settings: dict):
        """Start (or queue) a run from the form's settings by name (TrainConfig's form settings, plus
        "name", "init" = where it starts from, "folder"); -> (selected job, status text). Values go to
        the service as sent: TrainConfig checks their ranges."""
        if not isinstance(settings, dict):
            refuse("send the run's settings as a JSON object of setting names and values")
        job_id = self.service.start(settings)
        return gr.update(choices=run_choices(self.service.runs()), value=job_id), \
            status_markdown(self.service.status(job_id))

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
        curves = self.service.curves(job_id) if job_id is not None else []
        log = "\n".join(info.log_tail) if info is not None else ""
        status = info.status if info is not None else None
        busy = any(r.status in ACTIVE for r in runs)
        return (gr.update(choices=run_choices(runs), value=job_id), status_markdown(info),
                curves_plot(curves, info.total if info is not None else None),
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
        """-> (the selected job, its status, the data-changed choice (shown or hidden), its text). When
        the labels changed since the run's last checkpoint nothing starts: the page asks which to do."""
        if job_id in (None, ""):
            refuse("choose a failed or cancelled run first")
        plan = self.service.resume_plan(job_id)
        if plan.data_changed:
            text = (f"**The training data changed** since {md(plan.run.name)} saved its checkpoint at step "
                    f"{plan.step} ({plan.then} images then, {plan.now} now). Continue the run on the data it "
                    f"started with, or start a new run that fine-tunes that checkpoint on the data as it is now.")
            return gr.update(), status_markdown(plan.info), gr.update(visible=True), text
        return (*self._started(self.service.resume(plan.info.id)), gr.update(visible=False), "")

    @user_errors("Cannot resume")
    def resume_keep_data(self, job_id):
        """Continue the run on the data snapshot it started with. -> (job, status, hidden choice)."""
        return (*self._started(self.service.resume(job_id, keep_data=True)), gr.update(visible=False))

    @user_errors("Cannot start the new run")
    def restart(self, job_id):
        """A new run from the run's last checkpoint on the current data. -> (job, status, hidden choice)."""
        return (*self._started(self.service.restart(job_id)), gr.update(visible=False))

    def _started(self, job_id: int):
        info = self.service.status(job_id)
        return gr.update(choices=run_choices(self.service.runs()), value=job_id), status_markdown(info)

    @user_errors("Cannot list the checkpoints")
    def checkpoints(self) -> pd.DataFrame:
        """The trained checkpoints table (reads only)."""
        return checkpoints_table(self.service.checkpoints())

    @user_errors("Cannot list the models")
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
