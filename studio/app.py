"""`build_app(services) -> gr.Blocks`: the studio page, composed from tab modules.

A tab is a module `studio/<name>.py` with
    TITLE: str                      # the tab's label
    REQUIRES: tuple[str, ...]       # services it needs, e.g. ("depth",) or ("store", "jobs")
    def build(services, banner) -> None  # creates its components inside the current gr.Tab;
                                         # `banner` is the page's gr.HTML warning banner (an output)
and is listed in TABS. A listed module that does not exist yet, or whose services are not
provided, is left out, so tabs can land one at a time.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from . import banner, theme

if TYPE_CHECKING:
    from pipeline.settings import StudioSettings

log = logging.getLogger(__name__)

TABS: tuple[str, ...] = ("depth_tab", "curate_tab", "train_tab")   # page order


@dataclass
class Services:
    """The pipeline services the tabs call. `extra` holds later ones (store, jobs, ...) by name."""

    settings: StudioSettings
    depth: Any = None                          # pipeline.depth_service.DepthService
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return getattr(self, name, None) if name in ("settings", "depth") else self.extra.get(name)

    def __getattr__(self, name: str) -> Any:   # services.store, services.jobs, ...
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)


def tab_modules(names: tuple[str, ...] = TABS) -> list:
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(f"{__package__}.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise                          # the tab exists but something it imports is missing
            log.info("tab %s not present; skipped", name)
    return mods


def build_app(services: Services, tabs: tuple[str, ...] = TABS) -> gr.Blocks:
    depth = services.depth
    notice = depth.notice() if depth is not None else None
    with gr.Blocks(title="Depth Anything Studio", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown("# Depth Anything Studio\nDepth maps, point clouds, label curation and retraining.")
        banner_box = gr.HTML(banner.banner_html(notice), elem_id=banner.BANNER_ID, visible=bool(notice))
        for module in tab_modules(tabs):
            missing = [s for s in getattr(module, "REQUIRES", ()) if services.get(s) is None]
            if missing:
                log.info("tab %s needs %s; skipped", module.TITLE, ", ".join(missing))
                continue
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
