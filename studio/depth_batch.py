"""The depth tab's batch panel: several images at once, a gallery of results, one zip of all outputs.

Endpoint (gradio_client `api_name`):
    /predict_batch  (images, model, input_size, cmap) -> (gallery of colour depth pictures, zip, report)
The model, input size and colour map are the image panel's controls. Work is done by
pipeline.services.depth_batch.run_batch (one model load, each image through the same `infer` as /predict).
"""
from __future__ import annotations

import gradio as gr

from pipeline.services.depth_batch import run_batch

from .errors import user_errors
from .gpu import CONCURRENCY_ID, gpu
from .text import md


class BatchHandlers:
    def __init__(self, service, infer=None):
        self.service = service
        self.infer = infer or gpu(service.infer)

    @user_errors("Cannot compute depth for these images")
    def run(self, files, model, input_size, cmap, progress=gr.Progress()):
        """Every image -> (gallery of (colour picture, caption), the zip, a Markdown report)."""
        paths = [getattr(f, "name", f) for f in (files or [])]
        result = run_batch(self.service, paths, model or None, input_size, cmap or None,
                           infer=self.infer, progress=lambda fraction, desc: progress(fraction, desc=desc))
        unit = "m" if result.summary["kind"] == "metric_depth" else "(relative)"
        gallery = [(str(i.color), f"{i.name}: {i.min:.3g} to {i.max:.3g} {unit}") for i in result.items]
        return gallery, str(result.zip_path) if result.zip_path else None, batch_report(result.summary)


def batch_report(s: dict) -> str:
    lines = [f"**{s['images']} image(s)** with **{md(s['model_title'])}** in {s['seconds']:.1f} s; "
             "each has `_depth.npy` (float32), `_depth16.png` (values recoverable) and `_depth_color.png` in the zip."]
    if s.get("untrained"):
        lines.insert(0, "**UNTRAINED weights: these depth maps are meaningless (see the banner).**")
    if s["failed"]:
        lines.append(f"**{len(s['failed'])} skipped:** " + "; ".join(md(f) for f in s["failed"]))
    return "\n\n".join(lines)


def build(service, settings, model, input_size, cmap) -> BatchHandlers:
    """The panel; `model`, `input_size`, `cmap` are the image panel's controls."""
    h = BatchHandlers(service)
    with gr.Row():
        with gr.Column(scale=2):
            files = gr.File(label=f"Images (up to {settings.max_batch_images})", file_count="multiple",
                            file_types=["image"], type="filepath", elem_id="depth-batch-input")
            run = gr.Button("Compute depth for every image", variant="primary", elem_id="depth-batch-run")
            zipped = gr.File(label="All outputs in one zip", interactive=False, elem_id="depth-batch-zip")
            report = gr.Markdown(elem_id="depth-batch-report")
        with gr.Column(scale=5):
            gallery = gr.Gallery(label="Results (colour depth)", columns=5, height=360, object_fit="contain",
                                 elem_id="depth-batch-gallery")
    run.click(h.run, [files, model, input_size, cmap], [gallery, zipped, report], api_name="predict_batch",
              concurrency_id=CONCURRENCY_ID, concurrency_limit=settings.gpu_concurrency)
    return h
