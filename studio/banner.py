"""The banner at the top of the page: missing weights and other states a visitor must know about."""
from __future__ import annotations

import html

BANNER_ID = "studio-banner"


def banner_html(notice: str | None) -> str:
    """HTML for the banner; empty when there is nothing to say."""
    if not notice:
        return ""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in notice.split("\n\n") if p.strip())
    return (f'<div class="studio-warning" role="alert"><strong>Untrained weights in use.</strong>'
            f"{paragraphs}</div>")
