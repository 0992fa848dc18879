"""`build_app(services) -> gr.Blocks`: the studio page, composed from tab modules.

`Services` names the three pipeline services the tabs call (app.py builds them). A tab is a module
of this package with
    TITLE: str                           # the tab's label
    def build(services, banner) -> ...   # creates its components inside the current gr.Tab;
                                         # `banner` is the page's gr.HTML warning banner (an output)
and TABS lists the modules themselves, in page order: a tab that fails to import fails the
import of this module (nothing is skipped quietly), and a missing service is a TypeError here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from types import ModuleType
from typing import TYPE_CHECKING

import gradio as gr

from . import banner, curate_tab, depth_tab, theme, train_tab

if TYPE_CHECKING:
    from pipeline.services.curation_service import CurationService
    from pipeline.services.depth_service import DepthService
    from pipeline.services.training_service import TrainingService
    from pipeline.settings import StudioSettings

TABS: tuple[ModuleType, ...] = (depth_tab, curate_tab, train_tab)   # page order


@dataclass(frozen=True)
class Services:
    """What the tabs call: the depth explorer, label curation, and training (each owns its store use)."""

    depth: DepthService
    curation: CurationService
    training: TrainingService

    def __post_init__(self):
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if missing:
            raise TypeError(f"Services needs every service; missing: {', '.join(missing)}")

    @property
    def settings(self) -> StudioSettings:
        """The studio's settings (the depth service's: the services are built from one settings object)."""
        return self.depth.settings


def build_app(services: Services, tabs: Sequence[ModuleType] = TABS) -> gr.Blocks:
    """The page with `tabs` (default: all, in page order); tests build one tab at a time."""
    notice = services.depth.notice()
    # The depth requests' files are sent where they lie, not hashed and copied into Gradio's cache (~4 ms a
    # /predict, ~10 ms a `show`, and no second copy on disk): a request's files never change once written
    # (pipeline.services.depth_outputs). The folder is one of settings.served_dirs already.
    gr.set_static_paths([services.settings.temp_dir])
    with gr.Blocks(title="Depth Anything Studio", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown("# Depth Anything Studio\nDepth maps, point clouds, label curation and retraining.")
        banner_box = gr.HTML(banner.banner_html(notice), elem_id=banner.BANNER_ID, visible=bool(notice))
        for module in tabs:
            with gr.Tab(module.TITLE):
                module.build(services, banner_box)
    demo.queue(max_size=64, default_concurrency_limit=services.settings.gpu_concurrency)
    return demo


def launch_kwargs(settings: StudioSettings) -> dict:
    """What launch() needs besides host/port/auth: look, upload cap, the folders served and never served."""
    return {
        "theme": theme.theme(),
        "css": theme.css(),
        "head": theme.HEAD,
        "max_file_size": settings.max_upload_bytes,
        "allowed_paths": [str(p) for p in settings.served_dirs],
        "blocked_paths": [str(p) for p in settings.private_paths],
        "show_error": False,
    }
