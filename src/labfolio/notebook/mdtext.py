"""Small, tolerant Markdown helpers shared by the notebook's writers and readers.

Hand-written notebooks are messy: headings with typos, colons or none, emoji, HTML spans, bold
cells, tables without a separator line. Everything here accepts that and never raises on text.
Everything that writes is deterministic: the same input always gives the same bytes.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "Table",
    "split_frontmatter",
    "dump_frontmatter",
    "heading_of",
    "normalize_heading",
    "match_heading",
    "clean_cell",
    "split_row",
    "is_separator",
    "find_tables",
    "render_table",
    "escape_cell",
    "parse_number",
    "format_number_text",
    "safe_name",
    "format_datetime",
    "format_date",
    "format_duration",
    "parse_datetime",
    "fenced_lines",
    "strip_blank_edges",
]

_FRONTMATTER_FENCE = "---"
_HTML_TAG = re.compile(r"<[^>]+>")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
# Pictographs, dingbats, variation selectors: decoration in headings ("## ✅ Results 🎉").
_DECORATION = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff\ufe0f\u200d]")


@dataclass(frozen=True)
class Table:
    """A Markdown table as found in a file: header cells, body rows, and where it was."""

    header: tuple[str, ...]  # raw header cells (not cleaned)
    rows: tuple[tuple[str, ...], ...]  # raw body cells, padded to the header's width
    first_line: int  # 0-based index of the header line in the lines given
    last_line: int  # 0-based index of the last row
    has_separator: bool  # False for a table written without its '| --- |' line


# -- frontmatter -------------------------------------------------------------------------------

def split_frontmatter(text: str) -> tuple[dict, str, int]:
    """(frontmatter mapping, body, number of lines the frontmatter took). Bad YAML gives {}."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != _FRONTMATTER_FENCE:
        return {}, text, 0
    for index in range(1, len(lines)):
        if lines[index].strip() == _FRONTMATTER_FENCE:
            import yaml

            try:
                data = yaml.safe_load("\n".join(lines[1:index])) or {}
            except yaml.YAMLError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            return data, "\n".join(lines[index + 1:]), index + 1
    return {}, text, 0


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    return _yaml_text(str(value))


@functools.lru_cache(maxsize=4096)  # names, statuses and dates repeat across thousands of notes
def _yaml_text(text: str) -> str:
    if re.fullmatch(r"[A-Za-z_][\w./+-]*", text) and text.lower() not in (
            "null", "true", "false", "yes", "no", "on", "off", "y", "n", "~"):
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML string


def dump_frontmatter(data: Mapping[str, Any], comment: str | None = None) -> str:
    """YAML frontmatter, keys in the given order, lists in flow style, ending with a newline."""
    lines = [_FRONTMATTER_FENCE]
    if comment:
        lines.append(f"# {comment}")
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            lines.append(f"{key}: [" + ", ".join(_yaml_scalar(v) for v in value) + "]")
        elif isinstance(value, Mapping):
            lines.append(f"{key}: " + json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    lines.append(_FRONTMATTER_FENCE)
    return "\n".join(lines) + "\n"


# -- headings ----------------------------------------------------------------------------------

def heading_of(line: str) -> tuple[int, str] | None:
    """(level, text) when `line` is an ATX heading ('## Results:'), else None."""
    match = re.match(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$", line)
    if match is None:
        match = re.match(r"^(#{1,6})$", line.rstrip())
        return (len(match.group(1)), "") if match else None
    return len(match.group(1)), match.group(2)


def normalize_heading(text: str) -> str:
    """Heading text reduced to lower-case words: '**Observations / Interpretation:** 🎉' ->
    'observations interpretation'."""
    text = _HTML_TAG.sub(" ", text)
    text = _DECORATION.sub(" ", text)
    text = unicodedata.normalize("NFKC", text).replace("&", " and ")
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def match_heading(text: str, aliases: Mapping[str, Sequence[str]], cutoff: float = 0.8) -> str | None:
    """The key of `aliases` whose names match the heading `text` (typos tolerated), else None.

    Exact name first, then a name the heading starts with, then the closest name by edit
    similarity ('experiemnt summary' is 'experiment summary').
    """
    norm = normalize_heading(text)
    if not norm:
        return None
    names = [(name, key) for key, alias_list in aliases.items() for name in alias_list]
    for name, key in names:
        if norm == name:
            return key
    for name, key in sorted(names, key=lambda pair: -len(pair[0])):
        if len(name) >= 4 and (norm.startswith(name + " ") or norm.rstrip("s") == name.rstrip("s")):
            return key
    close = difflib.get_close_matches(norm, [name for name, _ in names], n=1, cutoff=cutoff)
    if close:
        return next(key for name, key in names if name == close[0])
    return None


# -- cells and tables --------------------------------------------------------------------------

def clean_cell(text: str) -> str:
    """A cell's plain text: HTML, bold, backticks and decoration removed, spaces collapsed."""
    text = text.replace("<br>", " ").replace("<br/>", " ").replace("<br />", " ")
    text = _HTML_TAG.sub(" ", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = text.replace("`", "")
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    return " ".join(text.split())


def split_row(line: str) -> list[str]:
    """Cells of a table row, '\\|' kept as a literal bar, outer bars optional."""
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", text)]


def is_separator(line: str) -> bool:
    """Whether `line` is a table's '| --- | :-: |' line."""
    return bool(re.fullmatch(r"\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*", line)) and "-" in line


def _looks_like_row(line: str) -> bool:
    stripped = line.strip()
    return stripped.count("|") >= 1 and (stripped.startswith("|") or stripped.count("|") >= 2)


def find_tables(lines: Sequence[str]) -> list[Table]:
    """Every table in `lines` (outside code fences). A table is consecutive row-like lines."""
    tables: list[Table] = []
    fenced = fenced_lines(lines)
    index = 0
    while index < len(lines):
        if fenced[index] or not _looks_like_row(lines[index]):
            index += 1
            continue
        start = index
        while index < len(lines) and not fenced[index] and _looks_like_row(lines[index]):
            index += 1
        block = lines[start:index]
        header = split_row(block[0])
        has_separator = len(block) > 1 and is_separator(block[1])
        body_lines = block[2:] if has_separator else block[1:]
        rows = []
        for row_line in body_lines:
            if is_separator(row_line):
                continue
            cells = split_row(row_line)
            cells += [""] * (len(header) - len(cells))
            rows.append(tuple(cells))
        tables.append(Table(tuple(header), tuple(rows), start, index - 1, has_separator))
    return tables


def escape_cell(value: Any) -> str:
    """Text safe inside a table cell: bars escaped, line breaks as <br>."""
    text = "" if value is None else str(value)
    if "|" not in text and "\n" not in text:  # most cells: nothing to escape
        return text
    text = text.replace("\\|", "|").replace("|", "\\|")
    return "<br>".join(part.strip() for part in text.splitlines()) if "\n" in text else text


def _table_line(cells: Sequence[Any]) -> str:
    # A line of plain strings with no bar but the separators and no line break needs no escaping,
    # which is nearly every row of a generated table; escape_cell cell by cell is the slow path
    # (it also writes what is not a str, str subclasses included, as str() does).
    for cell in cells:
        if type(cell) is not str:
            break
    else:
        line = " | ".join(cells)
        if "\n" not in line and line.count("|") == len(cells) - 1:
            return f"| {line} |"
    return "| " + " | ".join([escape_cell(c) for c in cells]) + " |"


def render_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table as lines (cells escaped)."""
    out = [_table_line(header), "| " + " | ".join(["---" for _ in header]) + " |"]
    for row in rows:
        cells = list(row) + [""] * (len(header) - len(row))
        out.append(_table_line(cells))
    return out


# -- numbers -----------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """A plain number written in a cell ('0.7121', '**1.2e-3**', '`3`'), else None."""
    cleaned = clean_cell(text).replace(",", "") if text else ""
    if cleaned.lower() in ("nan", "inf", "+inf", "-inf"):
        return float(cleaned)
    return float(cleaned) if _NUMBER.fullmatch(cleaned) else None


def format_number_text(value: Any) -> str:
    """A stored value as a cell shows it: integers without '.0', floats with up to 6 significant
    digits, strings as written."""
    if value is None:
        return "--"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


# -- names and times ---------------------------------------------------------------------------

def safe_name(name: str) -> str:
    """A file or folder name for `name`: path separators and characters Obsidian rejects replaced."""
    text = re.sub(r'[\\/:*?"<>|#^\[\]\x00-\x1f]', "_", name.strip()) or "_"
    return text.lstrip(".") or "_"


def format_duration(seconds: float | None) -> str:
    """A duration as the runner prints it: 45s, 15m19s, 2h05m ("-" for none)."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def format_datetime(ts: float | None) -> str:
    """'2026-03-02_09-14-55' (UTC) as the chronological log writes it; '--' when unknown."""
    if ts is None:
        return "--"
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    if 1000 <= moment.year <= 9999:  # what strftime writes, built without its per-call setup
        return (f"{moment.year}-{moment.month:02d}-{moment.day:02d}_"
                f"{moment.hour:02d}-{moment.minute:02d}-{moment.second:02d}")
    return moment.strftime("%Y-%m-%d_%H-%M-%S")


def format_date(ts: float | None) -> str:
    """'2026-03-02' (UTC); '--' when unknown."""
    if ts is None:
        return "--"
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    if 1000 <= moment.year <= 9999:  # as format_datetime
        return f"{moment.year}-{moment.month:02d}-{moment.day:02d}"
    return moment.strftime("%Y-%m-%d")


_DATETIME_FORMATS = ("%Y-%m-%d_%H-%M-%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                     "%Y-%m-%d_%H-%M", "%Y%m%d_%H%M%S", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y")


def parse_datetime(text: str) -> float | None:
    """Unix seconds (read as UTC) from the first date or datetime in `text`, else None."""
    candidates = re.findall(
        r"\d{4}-\d{2}-\d{2}(?:[ _T]\d{2}[-:]\d{2}(?:[-:]\d{2})?)?|\d{8}_\d{6}|\d{4}/\d{2}/\d{2}|\d{2}\.\d{2}\.\d{4}",
        text or "")
    for candidate in candidates:
        for fmt in _DATETIME_FORMATS:
            try:
                parsed = datetime.strptime(candidate, fmt)
            except ValueError:
                continue
            return parsed.replace(tzinfo=timezone.utc).timestamp()
    return None


# -- blocks ------------------------------------------------------------------------------------

def fenced_lines(lines: Sequence[str]) -> list[bool]:
    """For each line, whether it is inside (or delimits) a ``` or ~~~ code fence."""
    out = []
    fence: str | None = None
    for line in lines:
        stripped = line.strip()
        if fence is None:
            if stripped.startswith(("```", "~~~")):
                fence = stripped[:3]
                out.append(True)
            else:
                out.append(False)
            continue
        out.append(True)
        if stripped.startswith(fence) and not stripped.strip(fence[0]).strip():
            fence = None
    return out


def strip_blank_edges(lines: Sequence[str]) -> list[str]:
    """`lines` without leading and trailing blank lines."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return list(lines[start:end])
