"""How user errors leave a handler: one decorator, the same line on the page and through the API.

    @user_errors("Cannot apply")
    def apply_tool(self, ...): ...

A `StudioError` raised inside (a refused edit, an unknown id, a value out of range) becomes a
`gr.Error`: the page shows it as a toast with the title, and an API client's call fails with it
(gradio_client raises AppError carrying the message), instead of a success with a toast only.
The message is made one line (`pipeline.errors.one_line`) and HTML-escaped, because Gradio
renders toast messages as HTML (a file named `<img src=...>.jpg` must not load anything).
`refuse(message)` raises such an error from the studio itself (nothing selected, ...).

A read-out that is not an action (a legend, a model's licence line, what an image is) says a
StudioError in its own panel instead of a toast:

    @said_in_panel(lambda e: f"**{md(e)}**")
    def model_info(self, model): ...

These two decorators are the only places the studio catches a StudioError.
"""
from __future__ import annotations

import functools
import html
from collections.abc import Callable
from typing import Any

import gradio as gr

from pipeline.errors import StudioError, one_line


class Refused(StudioError):
    """A request the page refuses before calling a service (nothing selected, a missing input)."""


def refuse(message: str):
    raise Refused(message)


def as_gr_error(e: BaseException, title: str) -> gr.Error:
    return gr.Error(html.escape(one_line(e), quote=False), title=title, print_exception=False)


def user_errors(title: str) -> Callable:
    """Decorator: StudioError -> gr.Error(one escaped line, title); everything else passes through."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StudioError as e:
                raise as_gr_error(e, title) from None
        return handler
    return decorate


def said_in_panel(fallback: Callable[[StudioError], Any]) -> Callable:
    """Decorator for read-outs: a StudioError -> what `fallback(error)` returns (shown in the panel the
    handler fills; `fallback` escapes the message as its panel needs). Everything else passes through."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StudioError as e:
                return fallback(e)
        return handler
    return decorate
