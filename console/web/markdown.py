"""Model output as HTML: Markdown rendered without raw HTML, then sanitised by nh3 (ammonia).

A model's answer is untrusted input. markdown-it runs with `html` off (raw HTML in the answer is
shown as text), and nh3 keeps only the tags below with safe URL schemes, whatever the renderer did.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}


def render(text: str | None) -> SafeString:
    """Sanitised HTML for Markdown `text` (empty for None)."""
    if not text:
        return mark_safe("")
    html = _md.render(text)
    clean = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)  # sanitised by nh3 just above
