"""What keeps the dashboard safe to open: sanitised Markdown, hidden secrets, contained file paths.

Notes are written by people (and imported from old notebooks), so they are rendered as Markdown
and then cleaned with an allow-list sanitiser: no scripts, no event handlers, no ``javascript:``
links. Provenance is shown only after every secret-looking value is hidden, even though capture
already filters the environment (an imported or older run may not have been). Artifact files are
served only from inside the artifact folder, whatever path the database row claims.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

__all__ = ["render_markdown", "redact_secrets", "contained_path", "HIDDEN"]

HIDDEN = "[hidden]"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PWD|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE|SIGNATURE|API_?KEY|"
                          r"ACCESS_?KEY|_KEY$|^KEY$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"(?:ghp_|gho_|github_pat_|glpat-|xox[abpr]-|sk-[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|"
                           r"hf_[A-Za-z0-9]{20,}|lf_[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{10,}\.)")
_WIKILINK = re.compile(r"\[\[([^\]|]+)(?:\|([^\]]+))?\]\]")
_ALLOWED_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3",
                 "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "mark", "ol", "p", "pre", "s", "span", "strong",
                 "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul"}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "td": {"align"}, "th": {"align"},
                       "span": {"title"}, "abbr": {"title"}}


def render_markdown(text: str, link_for: Callable[[str, str], str | None] | None = None) -> str:
    """Sanitised HTML for Markdown a person wrote. ``link_for(target, label)`` turns an Obsidian
    wikilink into a URL (None keeps just the label)."""
    from markdown_it import MarkdownIt
    import nh3

    def wikilink(match: re.Match) -> str:
        target, label = match.group(1).strip(), (match.group(2) or match.group(1)).strip()
        url = link_for(target, label) if link_for is not None else None
        label = label.replace("[", "\\[").replace("]", "\\]")
        return f"[{label}](<{url}>)" if url else label

    source = _WIKILINK.sub(wikilink, text or "")
    html = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").enable("strikethrough").render(source)
    return nh3.clean(html, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     strip_comments=True)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_secrets(value: Any, name: str = "") -> Any:
    """A copy of ``value`` with every value under a secret-looking key, and every string shaped
    like a known token, replaced by ``[hidden]``."""
    if isinstance(value, dict):
        return {k: (HIDDEN if _secret_name(str(k)) and not isinstance(v, (dict, list)) and v not in (None, "")
                    else redact_secrets(v, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v, name) for v in value]
    if isinstance(value, str):
        if _SECRET_VALUE.search(value):
            return _SECRET_VALUE.sub(HIDDEN, value) if len(value) > 200 else HIDDEN
        # "NAME=value" pairs inside argv or env dumps
        match = re.match(r"^(?:--)?([A-Za-z_][A-Za-z0-9_.-]*)=(.+)$", value)
        if match and _secret_name(match.group(1)):
            return f"{match.group(1)}={HIDDEN}"
    return value


def contained_path(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (symlinks resolved), else None."""
    try:
        base = root.resolve()
        candidate = (base / relative).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if candidate != base and base not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None
