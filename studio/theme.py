"""Look of the studio: theme, CSS (assets/studio.css) and <head> additions; Gradio 6 takes them in launch()."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CSS_PATH = ASSETS / "studio.css"
HEAD = '<meta name="description" content="Depth Anything Studio: depth maps, point clouds and retraining">'


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="orange", secondary_hue="slate")


def css() -> str:
    return CSS_PATH.read_text() if CSS_PATH.exists() else ""
