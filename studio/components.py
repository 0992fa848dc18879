"""Small component tweaks the studio needs."""
from __future__ import annotations

import gradio as gr


def passthrough_image(**kwargs) -> gr.Image:
    """A gr.Image whose handler receives the uploaded file untouched (its path).

    gr.Image opens uploads with PIL before the handler runs, so a non-image, a decompression
    bomb or a CMYK JPEG fails inside Gradio with a bare "Error". Passing the path through lets
    pipeline.files.image_io decode it and raise an ImageError whose message the page shows. Done on
    the instance, not in a subclass: Gradio writes a .pyi beside every Component subclass.
    """
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def raw_preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return preprocess(payload)

    image.preprocess = raw_preprocess
    return image


def lenient(component):
    """Let a value the component cannot parse reach the handler as sent (an API client may send "abc"
    for a number): the service then refuses it in one line naming the range. Gradio's own preprocess
    would fail with a bare TypeError ("the upstream app has raised an exception")."""
    preprocess = component.preprocess

    def tolerant(payload):
        try:
            return preprocess(payload)
        except (TypeError, ValueError):
            return payload

    component.preprocess = tolerant
    return component
