"""The depth tab's event handlers (tested without a browser); the layout and wiring live in depth_tab.py.

A prediction's page state (`view`) is {"request": id, "files": {...}, "summary": {...}}; every
follow-up (re-colour, measure, exports, mesh view) names the request and the pipeline reads the
saved prediction, so nothing heavy travels with the page and nothing re-runs the network.
"""
from __future__ import annotations

import gradio as gr

from pipeline.geometry.picture_marks import draw_points
from pipeline.services.depth_outputs import EXPORTS

from . import banner
from .depth_readout import EMPTY_LEGEND, MEASURE_HINT, legend_html, measure_markdown
from .errors import refuse, said_in_panel, user_errors
from .gpu import gpu
from .summary import format_summary
from .text import html_text, md

CLOUD_VIEWS = ("points", "mesh")
EXPORT_CHOICES = [(f.label, f.key) for f in EXPORTS.values()]


class DepthHandlers:
    """The tab's event handlers; `service` is a pipeline.services.depth_service.DepthService."""

    def __init__(self, service, infer=None):
        self.service = service
        self.results = service.results
        self.infer = infer or gpu(service.infer)

    # ---- predict and the views that follow it --------------------------------------------
    @user_errors("Cannot compute depth")
    def predict(self, image, model, input_size, cmap, focal_px, voxel_size, remove_outliers, vmin=None, vmax=None,
                progress=gr.Progress()):
        """Depth for one image: the colour picture, the .npy of the values, the summary (+ the page's view state).

        Two files, because an API client downloads every file it is sent (gradio_client: one new HTTP
        client per file); the request's other files (the input JPEG, the 16-bit PNG and the viewer's .ply,
        made when first asked) reach the page through `show`, and API clients through /export.
        The numbers go to the service as sent: it checks their ranges (pipeline.services.depth_service.RANGES)."""
        result = self.service.run(
            image, model or None, input_size, cmap or None, focal_px, voxel_size, bool(remove_outliers), vmin, vmax,
            infer=self.infer, progress=lambda fraction, desc: progress(fraction, desc=desc))
        f = {k: str(v) for k, v in result.files.items()}
        view = {"request": result.summary["request"], "files": f, "summary": result.summary}
        return f["color"], f["npy"], result.summary, view

    @user_errors("Cannot show the result")
    def show(self, view: dict | None):
        """After a prediction: image/depth slider, depth picture, 3D view, banner, summary line, legend,
        downloads, measure reset, 3D mode, zip (none yet), request id (the export button's input).
        The slider's JPEG, the 16-bit PNG and the viewer's cloud are made here (/predict does not wait for them)."""
        if not view:
            return self.empty_views()
        f, summary = {k: str(p) for k, p in self.results.files(view["request"]).items()}, view["summary"]
        notice = summary.get("notice")
        return ((f["input"], f["color"]), f["color"], f.get("ply"),
                gr.update(value=banner.banner_html(notice), visible=bool(notice)), format_summary(summary),
                self.legend(view["request"]), list(f.values()), MEASURE_HINT, [], CLOUD_VIEWS[0], None, view["request"])

    @staticmethod
    def empty_views() -> tuple:
        """show's outputs with nothing in them."""
        return (None, None, None, gr.update(), "", EMPTY_LEGEND, None, MEASURE_HINT, [], CLOUD_VIEWS[0], None, "")

    @said_in_panel(lambda e: f"<p>{html_text(e)}</p>")
    def legend(self, request: str) -> str:
        """The colour bar, histogram and hover grid of a request (a read-out: a problem is said in it)."""
        return legend_html(self.results.legend(request))

    def cleared(self):
        """Every output of predict + show emptied: a failed prediction leaves nothing of the previous one."""
        return (None, None, None, None) + self.empty_views()                    # predict's outputs + view, then show's

    # ---- colour range --------------------------------------------------------------------
    @user_errors("Cannot change the colours")
    def recolour(self, view, cmap, vmin, vmax):
        """New colours over [vmin, vmax] (empty: the data's range) without running the network again."""
        if not view:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        path, legend = self.results.recolour(view["request"], cmap or None, vmin, vmax)
        view["files"]["color"] = str(path)
        return (str(path), (view["files"]["input"], str(path)), legend_html(legend), view, MEASURE_HINT, [])

    # ---- measure -------------------------------------------------------------------------
    @user_errors("Cannot measure")
    def click(self, view, pending, evt: gr.SelectData):
        """A click on the depth picture: point A, then B (distance), a third click starts over."""
        if not view:
            refuse("compute depth first, then click on the depth map")
        pts = list(pending or [])
        pts = ([] if len(pts) >= 2 else pts) + [[int(evt.index[0]), int(evt.index[1])]]
        return self._measured(view["request"], pts)

    @said_in_panel(lambda e: (gr.update(), [], f"**Cannot measure here:** {md(e)}"))
    def _measured(self, request: str, pts: list) -> tuple:
        """(the depth picture with the points, the points, the read-out): a read-out, not a refused action."""
        m = self.results.measure(request, pts)
        return draw_points(self.results.colour_rgb(request), pts), pts, measure_markdown(m)

    @user_errors("Cannot measure")
    def measure(self, request: str, ax: float, ay: float, bx: float | None = None, by: float | None = None) -> dict:
        """API: values under pixel A (and B) of a request and, for metric models, their 3D distance in metres."""
        points = [(ax, ay)] + ([(bx, by)] if bx is not None and by is not None else [])
        return self.results.measure(request, points)

    # ---- exports and the 3D view ---------------------------------------------------------
    @user_errors("Cannot build the downloads")
    def export(self, request, formats, progress=gr.Progress()):
        """Build the asked-for formats (once) -> (every file of the request, one zip of them all).

        `request`: the `request` of a /predict summary (or the page's view state)."""
        request = request.get("request") if isinstance(request, dict) else request
        if not request:
            refuse("compute depth first; the downloads are made from a prediction")
        files, zipped = self.results.exports(request, formats or [],
                                             progress=lambda fraction, desc: progress(fraction, desc=desc))
        return [str(p) for p in files], str(zipped)

    def cloud_view(self, view, mode, progress=gr.Progress()):
        """The 3D view: the light point cloud, or the coloured mesh (.glb, built on first ask)."""
        if not view:
            return None
        if mode != "mesh":
            return view["files"].get("ply")
        files, _ = self.export(view, ["glb"], progress)
        return next(f for f in files if f.endswith("_mesh.glb"))

    # ---- model picker and image info -----------------------------------------------------
    @user_errors("Cannot list the models")
    def refresh_models(self, model: str | None):
        """The picker's choices again (a student registered since the page loaded shows up)."""
        return gr.update(choices=model_choices(self.service), value=model)

    @said_in_panel(lambda e: f"**{md(e)}**")
    def model_info(self, model: str | None) -> str:
        """Licence and source of a model, and whether its weights are at hand (no loading, no download)."""
        choice = self.service.choice(model)
        problem = self.service.weights_problem(choice.key)
        text = f"**{md(choice.title)}** · licence: **{md(choice.licence)}**"
        if choice.note:
            text += f" · source: {md(choice.note)}"
        return text + (f"\n\n**Weights missing ({problem}): this model would run untrained.**" if problem else "")

    @said_in_panel(lambda e: (0, f"**Cannot use this image:** {md(e)}"))
    def inspect(self, image):
        """On a new input: the focal length to prefill (EXIF, else 0 = automatic) and a line about it."""
        if image is None:
            return 0, ""
        decoded = self.service.decode(image)
        h, w = decoded.rgb.shape[:2]
        focal = f"EXIF focal length {decoded.focal_px:.1f} px" if decoded.focal_px else \
            "no EXIF focal length (a 60° field of view is assumed; type one to override)"
        return round(decoded.focal_px or 0, 2), f"{w}×{h} pixels, {decoded.original_mode}; {focal}"


def model_choices(service) -> list[tuple[str, str]]:
    return [(c.label, c.key) for c in service.choices()]
