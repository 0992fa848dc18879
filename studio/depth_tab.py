"""The depth explorer tab: an image in; depth as a slider, grayscale, point cloud and downloads out.

Endpoints (gradio_client `api_name`):
    /predict     (image, model, input_size, cmap, focal_px, voxel_size, remove_outliers)
                 -> (slider pair [input, colour depth], 16-bit PNG, .npy, .ply, summary dict)
    /model_info  (model) -> Markdown with the model's licence and source
    /inspect     (image) -> (focal length from EXIF or 0, Markdown about the image)
    /predict_video  a clip -> depth video, side-by-side video, .npz (studio/depth_video.py)
Handlers live in `DepthHandlers` so tests can call them without a browser.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipeline.depth_service import RANGES
from pipeline.errors import StudioError
from pipeline.settings import COLORMAPS

from . import banner, depth_video
from .components import lenient, passthrough_image
from .errors import user_errors
from .gpu import CONCURRENCY_ID, gpu
from .summary import format_summary
from .text import md

TITLE = "Depth"
REQUIRES = ("depth",)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"


def example_images() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


class DepthHandlers:
    """The tab's event handlers; `service` is a pipeline.depth_service.DepthService."""

    def __init__(self, service, infer=None):
        self.service = service
        self.infer = infer or gpu(service.infer)

    @user_errors("Cannot compute depth")
    def predict(self, image, model, input_size, cmap, focal_px, voxel_size, remove_outliers,
                progress=gr.Progress()):
        """Depth for one image: slider pair, 16-bit PNG, .npy, .ply, summary (+ a private view state).
        The numbers go to the service as sent: it checks their ranges (pipeline.depth_service.RANGES)."""
        result = self.service.run(
            image, model or None, input_size, cmap or None, focal_px, voxel_size,
            bool(remove_outliers), infer=self.infer,
            progress=lambda fraction, desc: progress(fraction, desc=desc))
        f = {k: str(v) for k, v in result.files.items()}
        view = {"files": f, "summary": result.summary}
        return (f["input"], f["color"]), f["depth16"], f["npy"], f.get("ply"), result.summary, view

    def show(self, view: dict | None):
        """The views that follow a prediction: grayscale, colour PNG, point cloud, banner, summary text."""
        if not view:
            return None, None, None, gr.update(), ""
        f, summary = view["files"], view["summary"]
        notice = summary.get("notice")
        return (f["gray"], f["color"], f.get("ply"),
                gr.update(value=banner.banner_html(notice), visible=bool(notice)), format_summary(summary))

    def refresh_models(self, model: str | None):
        """The picker's choices again (a student registered since the page loaded shows up)."""
        return gr.update(choices=_model_choices(self.service), value=model)

    def model_info(self, model: str | None) -> str:
        try:
            choice = self.service.choice(model)
        except StudioError as e:
            return f"**{md(e)}**"
        text = f"**{md(choice.title)}** · licence: **{md(choice.licence)}**"
        if choice.note:
            text += f" · source: {md(choice.note)}"
        notice = self.service.notice(choice.key)
        return text + ("\n\n**Weights missing: running untrained.**" if notice else "")

    def inspect(self, image):
        """On a new input: the focal length to prefill (EXIF, else 0 = automatic) and a line about it."""
        if image is None:
            return 0, ""
        try:
            decoded = self.service.decode(image)
        except StudioError as e:
            return 0, f"**Cannot use this image:** {md(e)}"
        h, w = decoded.rgb.shape[:2]
        focal = f"EXIF focal length {decoded.focal_px:.1f} px" if decoded.focal_px else \
            "no EXIF focal length (a 60° field of view is assumed; type one to override)"
        return round(decoded.focal_px or 0, 2), f"{w}×{h} pixels, {decoded.original_mode}; {focal}"


def _model_choices(service) -> list[tuple[str, str]]:
    return [(c.label, c.key) for c in service.choices()]


def build(services, banner_box: gr.HTML) -> DepthHandlers:
    service, settings = services.depth, services.settings
    h = DepthHandlers(service)
    with gr.Row():
        with gr.Column(scale=1):
            image = passthrough_image(label="Image (upload, paste or webcam)", sources=["upload", "clipboard", "webcam"],
                               type="filepath", image_mode=None, elem_id="depth-input")
            gr.Examples(example_images(), inputs=[image], label="Examples (CC0 / public domain)")
            image_info = gr.Markdown(elem_id="depth-image-info")
            model = gr.Dropdown(_model_choices(service), value=service.default_key, label="Model",
                                allow_custom_value=True,       # the service checks the name (students appear later)
                                elem_id="depth-model")
            model_info = gr.Markdown(h.model_info(service.default_key), elem_id="depth-model-info")
            with gr.Row():
                size = RANGES["input_size"]
                input_size = lenient(gr.Slider(140, size.high, value=settings.input_size, step=size.multiple_of,
                                               label="Input size", info="network resolution (short side); 518 as "
                                               "trained", elem_id="depth-size"))
                cmap = gr.Dropdown(list(COLORMAPS), value=settings.cmap, label="Colour map", elem_id="depth-cmap")
            with gr.Accordion("Point cloud options", open=False):
                focal = lenient(gr.Number(0, label="Focal length (pixels, 0 = EXIF or 60° field of view)", minimum=0,
                                          maximum=RANGES["focal_px"].high, elem_id="depth-focal"))
                voxel = lenient(gr.Number(0, label="Downsample: voxel size (0 = keep every point)", minimum=0,
                                          maximum=RANGES["voxel_size"].high, elem_id="depth-voxel"))
                outliers = gr.Checkbox(False, label="Remove outliers", elem_id="depth-outliers")
            run = gr.Button("Compute depth", variant="primary", elem_id="depth-run")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="Image | depth", type="filepath", elem_id="depth-slider")
            summary_text = gr.Markdown(elem_id="depth-summary-text")
            with gr.Row():
                gray = gr.Image(label="Grayscale depth", type="filepath", interactive=False, elem_id="depth-gray")
                cloud = gr.Model3D(label="Point cloud (coloured by the image)", elem_id="depth-cloud",
                                   camera_position=(110, 75, None))   # (90, 90) is the camera's own view; a little to the side
            with gr.Row():
                depth16 = gr.File(label="16-bit PNG (values recoverable)", elem_id="depth-png16")
                npy = gr.File(label="float32 .npy", elem_id="depth-npy")
                color_png = gr.File(label="colour PNG", elem_id="depth-color-png")
                ply = gr.File(label="point cloud .ply", elem_id="depth-ply")
            with gr.Accordion("Summary (JSON)", open=False):
                summary = gr.JSON(label="Summary", elem_id="depth-summary")
    view = gr.State()

    run.click(h.predict, [image, model, input_size, cmap, focal, voxel, outliers],
              [slider, depth16, npy, ply, summary, view], api_name="predict",
              concurrency_id=CONCURRENCY_ID, concurrency_limit=settings.gpu_concurrency,
              ).success(h.show, [view], [gray, color_png, cloud, banner_box, summary_text],
                        api_visibility="private", queue=False)
    model.change(h.model_info, [model], [model_info], api_name="model_info", concurrency_limit=4)
    model.focus(h.refresh_models, [model], [model], api_name="refresh_models", api_visibility="undocumented",
                queue=False)
    image.change(h.inspect, [image], [focal, image_info], api_name="inspect", concurrency_limit=4)
    h.video = depth_video.build(service, settings, model, input_size, cmap)
    return h
