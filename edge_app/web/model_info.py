"""The model in force as the screen, /api/stats and the model card page show it, and the card rendered as HTML."""

from __future__ import annotations

import re
from typing import Any

from flask import url_for
from markdown_it import MarkdownIt
from markupsafe import Markup

from ..bundle import CARD_NAME
from . import get_service


def model_json() -> dict[str, Any]:
    """What the classifier says, the threshold in force (site or model), where the model came from
    (installed / previous / packaged), any fallback, and the URL of its model card."""
    service = get_service()
    in_force = service.model_in_force()
    return service.classifier.describe() | service.site.describe(service.classifier) | {
        "source": in_force.get("source", "packaged"), "signed_by": in_force.get("signed_by"),
        "installed_at": in_force.get("installed_at"), "fallback": in_force.get("fallback"),
        "fallback_detail": in_force.get("fallback_detail"),
        "model_card_url": url_for("pages.model_card") if model_card_file().is_file() else None,
    }


def model_card_file():
    return get_service().classifier.model_path.parent / CARD_NAME


def card_html(markdown_text: str) -> Markup:
    """The model card's Markdown as HTML (CommonMark + tables). Raw HTML in the card is escaped, not passed
    through, so the page keeps its CSP (no inline script or style); headings get ids so the card's own
    `[Reproduce](#reproduce)` links work, and tables scroll sideways on a phone instead of widening the page."""
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    tokens = md.parse(markdown_text)
    used: set[str] = set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            slug = _slug(tokens[i + 1].content) or "section"
            while slug in used:
                slug += "-1"
            used.add(slug)
            token.attrSet("id", slug)
    html = md.renderer.render(tokens, md.options, {})
    html = html.replace("<table>", '<div class="table-wrap"><table>').replace("</table>", "</table></div>")
    return Markup(html)


def _slug(text: str) -> str:
    """GitHub-style heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
