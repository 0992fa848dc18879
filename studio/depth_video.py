"""The depth tab's video panel: a clip in (upload or webcam recording); depth video, side-by-side video,
float depth (.npz) and a summary out.

Endpoint (gradio_client `api_name`):
    /predict_video  (video, model, input_size, cmap, stride, max_frames, align)
                    -> (depth video .mp4, side-by-side .mp4, .npz, summary dict)
The model, input size and colour map are the image panel's controls. The clip's audio is
ignored; no ffmpeg program is needed (gr.Video gets `include_audio=True` and no `format`, the two
settings under which Gradio would call ffmpeg; PyAV decodes and encodes).
"""
from __future__ import annotations

import gradio as gr

from pipeline.services.depth_video import run_video

from .components import lenient
from .errors import user_errors
from .gpu import CONCURRENCY_ID, gpu
from .text import md


class VideoHandlers:
    def __init__(self, service, runner=None):
        self.service = service
        self.runner = runner or gpu(self._run, duration=300)

    def _run(self, *args, **kwargs):
        return run_video(self.service, *args, **kwargs)

    @user_errors("Cannot compute depth for this video")
    def predict_video(self, video, model, input_size, cmap, stride, max_frames, align, progress=gr.Progress()):
        """Depth for a clip: depth video, side-by-side video, .npz, summary, summary text (numbers are
        range-checked by the service, pipeline/services/depth_video.py)."""
        result, summary = self.runner(
            video, model or None, input_size, cmap or None, stride, max_frames, bool(align), True,
            progress=lambda fraction, desc: progress(fraction, desc=desc))
        f = {k: str(v) for k, v in result.files.items()}
        return f["depth_video"], f.get("side_by_side"), f["npz"], summary, format_video_summary(summary)


def format_video_summary(s: dict) -> str:
    if not s:
        return ""
    what = "depth in metres" if s.get("kind") == "metric_depth" else "relative disparity (near = large)"
    align = ("aligned to one scale across frames" if s.get("aligned") and s.get("kind") == "disparity"
             else "each frame as predicted")
    lines = [f"**{s['frames']} frames** {s['width']}×{s['height']} at {s['fps']:g} fps · {what}, {align}",
             f"model **{md(s.get('model_title', s.get('model')))}** · device **{s.get('device')}** · backend "
             f"**{s.get('backend', 'torch')}** · input size {s.get('input_size')} · {s.get('fps_end_to_end')} "
             "frames/s end to end, "
             f"{s.get('fps_inference')} frames/s inference"]
    if s.get("cut_to_frames"):
        lines.append(f"The clip was cut to its first {s['cut_to_frames']} predicted frames (the studio's limit).")
    if s.get("untrained"):
        lines.insert(0, "**UNTRAINED weights: this depth video is meaningless (see the banner).**")
    return "\n\n".join(lines)


def build(service, settings, model, input_size, cmap) -> VideoHandlers:
    """The panel (in the depth tab's "Video" fold); `model`, `input_size`, `cmap` are the image panel's controls."""
    h = VideoHandlers(service)
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Clip (upload or record with the webcam)", sources=["upload", "webcam"],
                             include_audio=True, format=None, elem_id="depth-video-input")
            with gr.Row():
                stride = lenient(gr.Number(1, label="Frame stride", precision=0, minimum=1, elem_id="depth-video-stride"))
                max_frames = lenient(gr.Number(settings.max_video_frames, label="Max frames", precision=0, minimum=1,
                                               maximum=settings.max_video_frames, elem_id="depth-video-max-frames"))
            align = gr.Checkbox(True, label="Align frames (one scale for the clip: removes flicker)",
                                elem_id="depth-video-align")
            run = gr.Button("Compute depth video", variant="primary", elem_id="depth-video-run")
        with gr.Column(scale=2):
            with gr.Row():
                depth_video = gr.Video(label="Depth video", interactive=False, autoplay=True, loop=True,
                                       elem_id="depth-video-output")
                side = gr.Video(label="Side by side", interactive=False, autoplay=True, loop=True,
                                elem_id="depth-video-sbs")
            text = gr.Markdown(elem_id="depth-video-summary-text")
            npz = gr.File(label="float depth (.npz: depth (T, H, W), fps, scale, shift)", elem_id="depth-video-npz")
            with gr.Accordion("Video summary (JSON)", open=False):
                summary = gr.JSON(label="Summary", elem_id="depth-video-summary")
    run.click(h.predict_video, [video, model, input_size, cmap, stride, max_frames, align],
              [depth_video, side, npz, summary, text], api_name="predict_video",
              concurrency_id=CONCURRENCY_ID, concurrency_limit=settings.gpu_concurrency)
    return h
