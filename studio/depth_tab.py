"""The depth explorer tab: an image in; depth with read-outs, measures, a 3D view and downloads out.

Endpoints (gradio_client `api_name`):
    /predict     (image, model, input_size, cmap, focal_px, voxel_size, remove_outliers, vmin, vmax)
                 -> (slider pair [input, colour depth], 16-bit PNG, .npy, .ply (the light viewer cloud),
                     summary dict; summary["request"] names the result for the calls below)
    /export      (request, formats) -> (every file of the request, one zip); formats from
                 pipeline.services.depth_outputs.EXPORTS: "ply" (every pixel), "exr", "glb", "normals", "gray"
    /measure     (request, ax, ay, bx, by) -> values under the pixels; metres between them for metric models
    /model_info  (model) -> Markdown with the model's licence, source, and whether its weights are at hand
    /inspect     (image) -> (focal length from EXIF or 0, Markdown about the image)
    /predict_batch  several images -> gallery, one zip (studio/depth_batch.py)
    /predict_video  a clip -> depth video, side-by-side video, .npz (studio/depth_video.py)
Handlers live in depth_handlers.DepthHandlers so tests can call them without a browser.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipeline.services.depth_outputs import EXPORTS
from pipeline.services.depth_service import RANGES
from pipeline.settings import COLORMAPS

from . import depth_batch, depth_video
from .components import lenient, passthrough_image
from .depth_handlers import CLOUD_VIEWS, EXPORT_CHOICES, DepthHandlers, model_choices
from .depth_readout import EMPTY_LEGEND, MEASURE_HINT, READOUT_JS
from .gpu import CONCURRENCY_ID

TITLE = "Depth"
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"


def example_images() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


def _controls(h: DepthHandlers, service, settings) -> dict:
    c = {}
    c["image"] = passthrough_image(label="Image (upload, paste or webcam)", sources=["upload", "clipboard", "webcam"],
                                   type="filepath", image_mode=None, height=210, elem_id="depth-input")
    c["run"] = gr.Button("Compute depth", variant="primary", elem_id="depth-run")
    c["image_info"] = gr.Markdown(elem_id="depth-image-info")
    gr.Examples(example_images(), inputs=[c["image"]], label="Examples (CC0 / public domain)")
    c["model"] = gr.Dropdown(model_choices(service), value=service.default_key, label="Model",
                             allow_custom_value=True,        # the service checks the name (students appear later)
                             elem_id="depth-model")
    c["model_info"] = gr.Markdown(h.model_info(service.default_key), elem_id="depth-model-info")
    with gr.Row():
        size = RANGES["input_size"]
        c["input_size"] = lenient(gr.Slider(140, size.high, value=settings.input_size, step=size.multiple_of,
                                            label="Input size", info="network resolution (short side); 518 as trained",
                                            elem_id="depth-size"))
        c["cmap"] = gr.Dropdown(list(COLORMAPS), value=settings.cmap, label="Colour map", elem_id="depth-cmap")
    with gr.Accordion("Colour range (clip)", open=False):
        with gr.Row():
            c["vmin"] = lenient(gr.Number(None, label="From (empty: lowest value)", elem_id="depth-vmin"))
            c["vmax"] = lenient(gr.Number(None, label="To (empty: highest value)", elem_id="depth-vmax"))
        c["apply_range"] = gr.Button("Apply to this result", size="sm", elem_id="depth-apply-range")
    with gr.Accordion("Camera and point cloud", open=False):
        c["focal"] = lenient(gr.Number(0, label="Focal length (pixels, 0 = EXIF or 60° field of view)", minimum=0,
                                       maximum=RANGES["focal_px"].high, elem_id="depth-focal"))
        c["voxel"] = lenient(gr.Number(0, label="Downsample: voxel size (0 = keep every point)", minimum=0,
                                       maximum=RANGES["voxel_size"].high, elem_id="depth-voxel"))
        c["outliers"] = gr.Checkbox(False, label="Remove outliers", elem_id="depth-outliers")
    return c


def _views() -> dict:
    v = {}
    with gr.Tabs(elem_id="depth-views"):
        with gr.Tab("Depth", id="depth-tab-depth"):
            v["measure"] = gr.Image(label="Depth: hover for the value, click two points to measure", type="filepath",
                                    interactive=False, height=430, elem_id="depth-measure")
            v["measure_info"] = gr.Markdown(MEASURE_HINT, elem_id="depth-measure-info")
            v["legend"] = gr.HTML(EMPTY_LEGEND, js_on_load=READOUT_JS, elem_id="depth-legend")
        with gr.Tab("Image | depth", id="depth-tab-slider"):
            v["slider"] = gr.ImageSlider(label="Image | depth", type="filepath", elem_id="depth-slider")
        with gr.Tab("3D", id="depth-tab-3d"):
            v["cloud_mode"] = gr.Radio(list(CLOUD_VIEWS), value=CLOUD_VIEWS[0], label="Show",
                                       info="points: a light cloud for the viewer; mesh: the coloured .glb "
                                            "(depth edges cut), built on first ask", elem_id="depth-cloud-mode")
            v["cloud"] = gr.Model3D(label="3D (coloured by the image)", height=440, elem_id="depth-cloud",
                                    camera_position=(110, 75, None))   # (90, 90) is the camera's own view
        with gr.Tab("Downloads", id="depth-tab-downloads"):
            v["downloads"] = gr.File(label="Files of this result", file_count="multiple", interactive=False,
                                     height=330, elem_id="depth-downloads")
            v["formats"] = gr.CheckboxGroup(EXPORT_CHOICES, value=list(EXPORTS), label="Also build (full resolution)",
                                            elem_id="depth-formats")
            v["export"] = gr.Button("Build them, and one zip of everything", elem_id="depth-export")
            v["zip"] = gr.File(label="Everything in one zip", interactive=False, elem_id="depth-zip")
            with gr.Row(visible=False):    # /predict's file outputs (API): the picture and the values; the page
                # shows them through the views above, and /export hands out the request's other files
                v["color_file"] = gr.File(label="colour depth picture (.png)", elem_id="depth-color-file")
                v["npy"] = gr.File(label="float32 .npy", elem_id="depth-npy")
                v["request"] = gr.Textbox(label="request", elem_id="depth-request")
    v["summary_text"] = gr.Markdown(elem_id="depth-summary-text")
    with gr.Accordion("Summary (JSON)", open=False):
        v["summary"] = gr.JSON(label="Summary", elem_id="depth-summary")
    return v


def build(services, banner_box: gr.HTML) -> DepthHandlers:
    service, settings = services.depth, services.settings
    h = DepthHandlers(service)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=330):
            c = _controls(h, service, settings)
        with gr.Column(scale=5):
            v = _views()
    view, pending = gr.State(), gr.State([])
    _wire(h, c, v, view, pending, banner_box, settings)
    with gr.Accordion("Several images at once (batch)", open=False, elem_id="depth-batch"):
        h.batch = depth_batch.build(service, settings, c["model"], c["input_size"], c["cmap"])
    with gr.Accordion("Video: temporally consistent depth for a clip", open=False, elem_id="depth-video"):
        h.video = depth_video.build(service, settings, c["model"], c["input_size"], c["cmap"])
    return h


def _wire(h: DepthHandlers, c: dict, v: dict, view, pending, banner_box, settings) -> None:
    outputs = [v["color_file"], v["npy"], v["summary"], view]          # /predict: two files (each costs a client a download)
    shown = [v["slider"], v["measure"], v["cloud"], banner_box, v["summary_text"], v["legend"], v["downloads"], v["measure_info"],
             pending, v["cloud_mode"], v["zip"], v["request"]]
    inputs = [c[k] for k in ("image", "model", "input_size", "cmap", "focal", "voxel", "outliers", "vmin", "vmax")]
    run = c["run"].click(h.predict, inputs, outputs, api_name="predict",
                         concurrency_id=CONCURRENCY_ID, concurrency_limit=settings.gpu_concurrency)
    run.success(h.show, [view], shown, api_visibility="private", queue=False)
    run.failure(h.cleared, None, outputs + shown, api_visibility="private", queue=False)
    recoloured = [v["measure"], v["slider"], v["legend"], view, v["measure_info"], pending]
    c["apply_range"].click(h.recolour, [view, c["cmap"], c["vmin"], c["vmax"]], recoloured, api_visibility="private")
    c["cmap"].input(h.recolour, [view, c["cmap"], c["vmin"], c["vmax"]], recoloured, api_visibility="private")
    v["measure"].select(h.click, [view, pending], [v["measure"], pending, v["measure_info"]], api_visibility="private")
    gr.api(h.measure, api_name="measure", concurrency_limit=4)
    v["export"].click(h.export, [v["request"], v["formats"]], [v["downloads"], v["zip"]], api_name="export",
                      concurrency_limit=2)
    v["cloud_mode"].input(h.cloud_view, [view, v["cloud_mode"]], [v["cloud"]], api_visibility="private",
                          concurrency_limit=2)
    c["model"].change(h.model_info, [c["model"]], [c["model_info"]], api_name="model_info", concurrency_limit=4)
    c["model"].focus(h.refresh_models, [c["model"]], [c["model"]], api_name="refresh_models",
                     api_visibility="undocumented", queue=False)
    c["image"].change(h.inspect, [c["image"]], [c["focal"], c["image_info"]], api_name="inspect", concurrency_limit=4)
