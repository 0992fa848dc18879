"""The train tab: start, watch, cancel and resume training runs; compare teacher and student.

Endpoints (gradio_client `api_name`):
    /train_start   (settings: a JSON object) -> (job id, status Markdown). The object names settings:
                   TrainConfig's form settings (pipeline/train/train_config.py: steps, batch_size, lr_encoder,
                   metric, max_depth, holdout, ...; left out = the default), plus "name" (run folder and model
                   id), "init" (where it starts from: a model key to fine-tune, "dinov2" = the paper's student,
                   "random") and "folder" (image / ground-truth pairs under the import root)
    /train_status  (job id or None = newest) -> (job id, status, loss curves, log tail, runs, checkpoints,
                    cancel button, resume button)
    /train_cancel  (job id) -> status
    /train_resume  (job id) -> (job id, status, choice, choice text): when the labels changed since the run's
                   last checkpoint nothing starts and the choice is shown:
    /train_resume_keep_data (job id) -> continue on the data the run started with
    /train_restart (job id) -> a new run from the run's last checkpoint on the current data
    /train_checkpoints () -> table of the trained checkpoints in the label store
    /train_compare (teacher, student, held-out share, max images, input size) -> (table, gallery, summary):
                   scored only against ground truth, pixels a person set and point pairs, with fitted scales,
                   failed alignments, both baselines, medians, outliers and a verdict
    /train_compare_sample (teacher, student, input size) -> the same on the Middlebury motorcycle image
The form is built from TrainConfig's settings (one definition: defaults, ranges, help). Everything the tab
shows is read when it is shown (tab selected, page loaded) and polled with a timer while runs are active.
"""
from __future__ import annotations

import gradio as gr
from gradio.context import Context, get_render_context

from pipeline.services.training_form import form_settings

from .components import lenient
from .gpu import CONCURRENCY_ID
from .train_compare_view import COMPARE_HEADERS
from .train_handlers import CKPT_HEADERS, POLL_S, RUN_HEADERS, TrainHandlers

TITLE = "Train"
GALLERY_CSS = ("#train-compare-gallery .thumbnail-item {aspect-ratio: auto !important; height: auto !important}"
               " #train-compare-gallery .thumbnail-item img {height: auto !important}"
               " #train-compare-gallery .grid-container {grid-auto-rows: auto !important}")   # wide rows, not squares
PLACED = ("encoder", "gt_kind", "holdout")        # settings the layout places itself (holdout: the compare slider)
PER_ROW = 4


def elem_id(name: str) -> str:
    return "train-" + name.replace("_", "-")


def setting_component(s):
    """The widget of one TrainConfig setting: its default, range, choices and help come with it."""
    common = dict(label=s.label[:1].upper() + s.label[1:], info=s.help, elem_id=elem_id(s.name))
    if s.kind == "bool":
        return gr.Checkbox(s.default, **common)
    if s.choices:
        choices = list(s.choices) if s.default is not None else [("automatic", ""), *s.choices]
        return gr.Dropdown(choices, value=s.default if s.default is not None else "", **common)
    if s.kind in ("int", "float"):
        r = s.range
        return lenient(gr.Number(s.default, minimum=r.low if r else None, maximum=r.high if r else None,
                                 precision=0 if s.kind == "int" else None,
                                 step=(r.multiple_of or 1) if s.kind == "int" and r else 1, **common))
    return gr.Textbox(s.shown_default(), **common)       # a ratio "1:2", a pair "0.1,2.0"


def _rows(settings) -> dict:
    out = {}
    for i in range(0, len(settings), PER_ROW):
        with gr.Row():
            for s in settings[i:i + PER_ROW]:
                out[s.name] = setting_component(s)
    return out


def _form(h: TrainHandlers) -> dict:
    """The form's components by setting name (plus "name", "init", "folder", the start sentence)."""
    service = h.service
    by_name = {s.name: s for s in form_settings()}
    f = {}
    with gr.Accordion("New training run", open=True):
        f["note"] = gr.Markdown(elem_id="train-data-note")
        with gr.Row():
            f["name"] = gr.Textbox(label="Run name (= model id; empty: student-<date>)", elem_id="train-name")
            f["init"] = gr.Dropdown(service.start_choices(), value=service.default_start(), label="Start from",
                                    elem_id="train-init", scale=2)
            f["encoder"] = setting_component(by_name["encoder"])
        f["start_note"] = gr.Markdown(elem_id="train-start-note")
        main = [s for s in form_settings() if s.form == "main" and s.name not in PLACED]
        f.update(_rows(main))
        with gr.Row():
            f["folder"] = gr.Textbox(label="Extra folder of image / GT pairs (under the import root; optional)",
                                     elem_id="train-folder")
            f["gt_kind"] = setting_component(by_name["gt_kind"])
        with gr.Accordion("Advanced settings (the paper's recipe by default)", open=False):
            f.update(_rows([s for s in form_settings() if s.form == "advanced"]))
        f["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
        f["settings"] = gr.JSON(visible=False)
    return f


def _runs_panel() -> dict:
    r = {}
    with gr.Row():
        r["job"] = gr.Dropdown([], label="Run", elem_id="train-job", allow_custom_value=True, scale=3)
        r["cancel"] = gr.Button("Cancel", variant="stop", interactive=False, elem_id="train-cancel", scale=1)
        r["resume"] = gr.Button("Resume", interactive=False, elem_id="train-resume", scale=1)
    r["status"] = gr.Markdown(elem_id="train-status")
    with gr.Group(visible=False, elem_id="train-resume-choice") as r["choice"]:
        r["choice_text"] = gr.Markdown()
        with gr.Row():
            r["keep"] = gr.Button("Continue on the data it started with", elem_id="train-resume-keep")
            r["restart"] = gr.Button("New run from its checkpoint on the current data", elem_id="train-restart")
    with gr.Row():
        r["curves"] = gr.LinePlot(x="step", y="value", color="series", label="Loss curves", x_title="step",
                                  y_title="loss", color_title="loss term (loss = total)", x_axis_format="d",
                                  height=260, elem_id="train-curves", scale=3)
        r["log"] = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, interactive=False,
                              elem_id="train-log", scale=2)
    r["runs"] = gr.Dataframe(headers=RUN_HEADERS, interactive=False, label="Training runs (newest first)",
                             elem_id="train-runs")
    r["checkpoints"] = gr.Dataframe(headers=CKPT_HEADERS, interactive=False,
                                    label="Trained checkpoints (also in the Depth tab's model picker)",
                                    elem_id="train-checkpoints")
    return r


def _compare_panel(h: TrainHandlers, default_key: str | None) -> dict:
    c = {}
    with gr.Accordion("Teacher vs student", open=True):
        gr.Markdown("Both models predict each held-out image; each prediction is scored only against what "
                    "neither model produced: imported ground truth, the pixels of a label a person set (a plane, "
                    "sky) and point pairs, never an accepted pseudo-label. Images with nothing of that are "
                    "skipped and counted. Each score comes with the fitted scale (≤ 0: a failed alignment), the "
                    "constant and image-row baselines on the same pixels, the median beside the mean, the "
                    "outliers and a verdict; the protocol is stated under the results. The held-out images are "
                    "chosen by the hash of the image (the same every time) and are left out of training runs. "
                    "At most *max images* are scored per press (up to 50), inside the request.")
        choices = h.compare_choices()
        with gr.Row():
            c["teacher"] = gr.Dropdown(choices, value=default_key, label="Teacher", allow_custom_value=True,
                                       elem_id="train-teacher")
            c["student"] = gr.Dropdown(choices, value=default_key, label="Student", allow_custom_value=True,
                                       elem_id="train-student")
        with gr.Row():
            c["fraction"] = gr.Slider(0.01, 1.0, value=0.1, step=0.01, label="Held-out share of the curated labels",
                                      elem_id="train-holdout")
            c["max_images"] = gr.Number(8, precision=0, minimum=1, maximum=50, label="Max images",
                                        elem_id="train-max-images")
            c["input_size"] = gr.Number(518, precision=0, minimum=14, step=14, label="Input size",
                                        elem_id="train-compare-size")
        with gr.Row():
            c["run"] = gr.Button("Compare on held-out labels", variant="primary", elem_id="train-compare")
            c["sample"] = gr.Button("Quick check: Middlebury motorcycle (true depth)", elem_id="train-compare-sample")
        for key in ("fraction", "max_images", "input_size"):
            lenient(c[key])
        c["summary"] = gr.Markdown(elem_id="train-compare-summary")
        c["table"] = gr.Dataframe(headers=COMPARE_HEADERS, interactive=False, elem_id="train-compare-table")
        c["gallery"] = gr.Gallery(label="image | evidence | teacher | student", columns=1, height="auto",
                                  object_fit="contain", preview=False, elem_id="train-compare-gallery")
        gr.HTML(f"<style>{GALLERY_CSS}</style>", container=False, padding=False)
    return c


def form_components(f: dict, c: dict) -> dict:
    """What /train_start's settings object holds, by name -> its component (the held-out share is the
    comparison's slider: the split a run leaves out is the one the comparison scores)."""
    names = ["name", "init", "folder", *(s.name for s in form_settings())]
    return {n: (c["fraction"] if n == "holdout" else f[n]) for n in names}


def build(services, banner_box: gr.HTML) -> TrainHandlers:
    h = TrainHandlers(services.training)
    tab = get_render_context()                       # the gr.Tab studio/app.py builds this tab in
    depth = services.depth
    f = _form(h)
    r = _runs_panel()
    c = _compare_panel(h, depth.default_key if depth is not None else None)
    timer = gr.Timer(POLL_S)

    form = form_components(f, c)
    names = list(form)
    start_args = [f[k] for k in ("init", "encoder", "metric", "feature_alignment", "feature_target")]
    poll_out = [r["job"], r["status"], r["curves"], r["log"], r["runs"], r["checkpoints"], r["cancel"], r["resume"],
                timer]
    poll = dict(fn=h.poll, inputs=[r["job"]], outputs=poll_out, api_visibility="private", queue=False)
    f["start"].click(lambda *values: dict(zip(names, values, strict=True)), list(form.values()), f["settings"],
                     api_visibility="private", queue=False).success(
        h.start, [f["settings"]], [r["job"], r["status"]], api_name="train_start", concurrency_limit=1).success(**poll)
    fixed = [f["encoder"], f["metric"], f["max_depth"]]            # what a start model fixes
    f["init"].change(h.start_changed, start_args, [f["start_note"], *fixed], api_visibility="private", queue=False)
    for key in ("encoder", "metric", "feature_alignment", "feature_target"):
        f[key].change(h.describe, start_args, [f["start_note"]], api_visibility="private", queue=False)
    r["cancel"].click(h.cancel, [r["job"]], [r["status"]], api_name="train_cancel").success(**poll)
    r["resume"].click(h.resume, [r["job"]], [r["job"], r["status"], r["choice"], r["choice_text"]],
                      api_name="train_resume", concurrency_limit=1).success(**poll)
    r["keep"].click(h.resume_keep_data, [r["job"]], [r["job"], r["status"], r["choice"]],
                    api_name="train_resume_keep_data", concurrency_limit=1).success(**poll)
    r["restart"].click(h.restart, [r["job"]], [r["job"], r["status"], r["choice"]], api_name="train_restart",
                       concurrency_limit=1).success(**poll)
    r["job"].input(**poll)
    timer.tick(h.poll, [r["job"]], poll_out, api_name="train_status", queue=False)

    show = dict(fn=h.show, inputs=[f["init"], c["teacher"], c["student"], *start_args[1:]],
                outputs=[f["note"], f["init"], f["start_note"], *fixed, c["teacher"], c["student"],
                         r["checkpoints"]], api_visibility="private", queue=False)
    if isinstance(tab, gr.Tab):
        tab.select(**show)                           # read again whenever the tab is shown
    if Context.root_block is not None:
        Context.root_block.load(**show)              # and when the page loads
        Context.root_block.load(h.checkpoints, None, [r["checkpoints"]], api_name="train_checkpoints", queue=False)
    gpu = dict(concurrency_id=CONCURRENCY_ID, concurrency_limit=services.settings.gpu_concurrency)
    c["run"].click(h.compare, [c["teacher"], c["student"], c["fraction"], c["max_images"], c["input_size"]],
                   [c["table"], c["gallery"], c["summary"]], api_name="train_compare", **gpu)
    c["sample"].click(h.compare_sample, [c["teacher"], c["student"], c["input_size"]],
                      [c["table"], c["gallery"], c["summary"]], api_name="train_compare_sample", **gpu)
    return h
