"""The banner at the top of the page: missing weights and other states a visitor must know about.

One line (the notice's first paragraph); the cause and what to do sit in a closed details fold.
"""
from __future__ import annotations

import html

BANNER_ID = "studio-banner"


def banner_html(notice: str | None) -> str:
    """HTML for the banner; empty when there is nothing to say."""
    if not notice:
        return ""
    paragraphs = [p.strip() for p in notice.split("\n\n") if p.strip()]
    head, rest = paragraphs[0], paragraphs[1:]
    details = ("<details><summary>Details and how to fix</summary>"
               + "".join(f"<p>{html.escape(p)}</p>" for p in rest) + "</details>") if rest else ""
    return (f'<div class="studio-warning" role="alert"><strong>Untrained weights in use:</strong> '
            f'<span class="studio-warning-line">{html.escape(head)}</span>{details}</div>')
