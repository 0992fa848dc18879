"""Making user-supplied strings (image, run, folder, model or tag names, messages) safe to show.

An image called `<img src=x onerror=...>.jpg` would otherwise be rendered (Gradio's sanitizer
drops the script, but the browser still loads the outside image), a name with a newline or a
backtick breaks the layout, and `**` or `[..](..)` would format or link. Every handler that puts
such a string into gr.Markdown uses `md`, into gr.HTML `html_text`:
- `md(text)`: one line, HTML-escaped (&, <, >) and Markdown's punctuation backslash-escaped;
- `html_text(text)`: one line, HTML-escaped (for gr.HTML, where backslashes would show).
"""
from __future__ import annotations

import html
import re

from pipeline.errors import one_line

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#!|~])")          # inline specials; md() output is never a line start


def html_text(text: object) -> str:
    return html.escape(one_line(text), quote=False)


def md(text: object) -> str:
    return _MARKDOWN.sub(r"\\\1", html_text(text))
