"""Small component tweaks the studio needs."""
from __future__ import annotations

import gradio as gr

class DepthInput(gr.Image):
    """A gr.Image that hands the handler the uploaded file untouched.

    gr.Image opens uploads with PIL before the handler runs, so a non-image, a decompression
    bomb or a CMYK JPEG fails inside Gradio with a bare "Error". Passing the path through lets
    pipeline.image_io decode it and raise an ImageError whose message the page shows. It is
    drawn by the ordinary Image front end.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)
    from collections.abc import Callable, Sequence
    from typing import TYPE_CHECKING, Any, Literal

    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component
