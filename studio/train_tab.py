"""The train tab: start, watch, cancel and resume training runs; compare teacher and student.

Endpoints (gradio_client `api_name`):
    /train_start   (name, init, encoder, steps, batch_size, lr_encoder, decoder_lr_mult, ratio, input_size,
                    feature_alignment, folder, gt_kind, save_every, held-out share, feature target)
                   -> (job id, status Markdown); the held-out share is the comparison's: those images are
                   left out of training; init "" = DINOv2 encoder (the paper's), "random", or a model to
                   fine-tune; feature target "dinov2" (the paper's) or "init"
    /train_status  (job id or None = newest) -> (job id, status, loss curves, log tail, runs, checkpoints,
                    cancel button, resume button)
    /train_cancel  (job id) -> status;  /train_resume (job id) -> (new job id, status)
    /train_checkpoints () -> table of the trained checkpoints in the label store
    /train_compare (teacher, student, held-out share, max images, input size) -> (table, gallery, summary):
                   scored only against ground truth, pixels a person set and point pairs, with fitted scales,
                   failed alignments, both baselines and a verdict; "nothing independent to score against" if none
    /train_compare_sample (teacher, student, input size) -> the same on the Middlebury motorcycle image
Runs are background jobs (pipeline.jobs, one GPU job at a time); the page polls them with a timer.
"""
from __future__ import annotations

import gradio as gr

from pipeline.config import ENCODERS

from .components import lenient
from .gpu import CONCURRENCY_ID
from .train_handlers import CKPT_HEADERS, COMPARE_HEADERS, POLL_S, RUN_HEADERS, TrainHandlers

TITLE = "Train"
REQUIRES = ("training",)
GALLERY_CSS = ("#train-compare-gallery .thumbnail-item {aspect-ratio: auto !important; height: auto !important}"
               " #train-compare-gallery .thumbnail-item img {height: auto !important}"
               " #train-compare-gallery .grid-container {grid-auto-rows: auto !important}")   # wide rows, not squares


def _form(h: TrainHandlers, service) -> dict:
    f = {}
    data = service.data_summary()
    with gr.Accordion("New training run", open=True):
        gr.Markdown(f"The run trains on the label store's curated labels (**{data['accepted']}** accepted, "
                    f"**{data['corrected']}** corrected, newest revision of each, with masks and point pairs) "
                    f"and, optionally, a folder of image / ground-truth pairs under `{data['data_root']}`. "
                    f"It runs in the background ({service.launch_note()}); one GPU job runs at a time, "
                    f"the others wait in the queue. The images in the *held-out share* (Teacher vs student, "
                    f"below) are left out of training.", elem_id="train-data-note")
        with gr.Row():
            f["name"] = gr.Textbox(label="Run name (= model id; empty: student-<date>)", elem_id="train-name")
            choices = service.init_choices()
            f["init"] = gr.Dropdown(choices, value=service.default_init(),
                                    label="Start from (default: fine-tune the studio's model; the paper's student "
                                          "starts from DINOv2)", elem_id="train-init")
            f["encoder"] = gr.Dropdown(list(ENCODERS), value="vits", label="Student encoder", elem_id="train-encoder")
        with gr.Row():
            f["steps"] = gr.Number(1000, precision=0, minimum=1, label="Steps", elem_id="train-steps")
            f["batch_size"] = gr.Number(4, precision=0, minimum=1, label="Batch size", elem_id="train-batch")
            f["lr_encoder"] = gr.Number(5e-6, minimum=0, label="Encoder learning rate", elem_id="train-lr")
            f["decoder_lr_mult"] = gr.Number(10, minimum=0, label="Decoder lr = encoder lr ×", elem_id="train-lr-mult")
        with gr.Row():
            f["ratio"] = gr.Textbox("1:2", label="Labelled : pseudo-labelled per batch", elem_id="train-ratio")
            f["input_size"] = gr.Number(518, precision=0, minimum=14, step=14, label="Crop size (multiple of 14)",
                                        elem_id="train-size")
            f["feature_alignment"] = gr.Checkbox(True, label="Feature alignment (α = 0.85)", elem_id="train-feat")
            f["feature_target"] = gr.Radio([("frozen DINOv2 (the paper's; needs its weights)", "dinov2"),
                                            ("the student's initial encoder", "init")], value="dinov2",
                                           label="Feature-alignment target", elem_id="train-feat-target")
            f["save_every"] = gr.Number(500, precision=0, minimum=1, label="Checkpoint every N steps",
                                        elem_id="train-save-every")
        with gr.Row():
            f["folder"] = gr.Textbox(label=f"Extra folder of image / GT pairs (under {data['data_root']}; optional)",
                                     elem_id="train-folder")
            f["gt_kind"] = gr.Radio(["depth", "disparity"], value="depth", label="The folder's ground truth holds",
                                    elem_id="train-gt-kind")
        f["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
    for key in ("steps", "batch_size", "lr_encoder", "decoder_lr_mult", "input_size", "save_every"):
        lenient(f[key])                       # the service checks the ranges (training_service.RANGES)
    return f


def _runs_panel() -> dict:
    r = {}
    with gr.Row():
        r["job"] = gr.Dropdown([], label="Run", elem_id="train-job", allow_custom_value=True, scale=3)
        r["cancel"] = gr.Button("Cancel", variant="stop", interactive=False, elem_id="train-cancel", scale=1)
        r["resume"] = gr.Button("Resume", interactive=False, elem_id="train-resume", scale=1)
    r["status"] = gr.Markdown(elem_id="train-status")
    with gr.Row():
        r["curves"] = gr.LinePlot(x="step", y="value", color="series", label="Loss curves", x_title="step",
                                  y_title="loss", height=260, elem_id="train-curves", scale=3)
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
                    "constant and image-row baselines on the same pixels and a verdict; the protocol is stated "
                    "under the results. The held-out images are chosen by the hash of the image (the same every "
                    "time). At most *max images* are scored per press (up to 50), inside the request.")
        choices = h.compare_choices()
        with gr.Row():
            c["teacher"] = gr.Dropdown(choices, value=default_key, label="Teacher", allow_custom_value=True,
                                       elem_id="train-teacher")
            c["student"] = gr.Dropdown(choices, value=default_key, label="Student", allow_custom_value=True,
                                       elem_id="train-student")
            c["refresh"] = gr.Button("↻ models", elem_id="train-refresh-models", scale=0)
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


def build(services, banner_box: gr.HTML) -> TrainHandlers:
    service = services.training
    h = TrainHandlers(service)
    depth = services.get("depth")
    f = _form(h, service)
    r = _runs_panel()
    c = _compare_panel(h, depth.default_key if depth is not None else None)
    timer = gr.Timer(POLL_S)

    form = [f[k] for k in ("name", "init", "encoder", "steps", "batch_size", "lr_encoder", "decoder_lr_mult", "ratio",
                           "input_size", "feature_alignment", "folder", "gt_kind", "save_every")]
    poll_out = [r["job"], r["status"], r["curves"], r["log"], r["runs"], r["checkpoints"], r["cancel"], r["resume"],
                timer]
    poll = dict(fn=h.poll, inputs=[r["job"]], outputs=poll_out, api_visibility="private", queue=False)
    f["start"].click(h.start, form + [c["fraction"], f["feature_target"]], [r["job"], r["status"]], api_name="train_start",
                     concurrency_limit=1).success(**poll)
    r["cancel"].click(h.cancel, [r["job"]], [r["status"]], api_name="train_cancel").success(**poll)
    r["resume"].click(h.resume, [r["job"]], [r["job"], r["status"]], api_name="train_resume",
                      concurrency_limit=1).success(**poll)
    r["job"].input(**poll)
    timer.tick(h.poll, [r["job"]], poll_out, api_name="train_status", queue=False)
    c["refresh"].click(h.checkpoints, None, [r["checkpoints"]], api_name="train_checkpoints").then(
        h.model_choices, None, [c["teacher"], c["student"]], api_visibility="private")
    gpu = dict(concurrency_id=CONCURRENCY_ID, concurrency_limit=services.settings.gpu_concurrency)
    c["run"].click(h.compare, [c["teacher"], c["student"], c["fraction"], c["max_images"], c["input_size"]],
                   [c["table"], c["gallery"], c["summary"]], api_name="train_compare", **gpu)
    c["sample"].click(h.compare_sample, [c["teacher"], c["student"], c["input_size"]],
                      [c["table"], c["gallery"], c["summary"]], api_name="train_compare_sample", **gpu)
    return h
