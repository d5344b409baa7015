"""Tolerant readers for hand-written notebooks in the four shapes of NOTEBOOK_FORMAT.md.

Each reader turns a file into plain data (entries, result rows, table rows, study versions) plus
the human text of each section, keyed by the store field the notebook writer uses for it. Typos
in headings ("Experiemnt", "Varient"), missing colons, missing sections, empty tables, prose
between sections, HTML spans and emoji are all accepted. What cannot be read as data is never
dropped: it stays in the human text of the section it was found in, and is listed in ``kept``
with its line number and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .experiment_log import parse_experiment_log, variant_from_heading
from .experiment_note import LAYOUT as EXPERIMENT_LAYOUT
from .master_log import LAYOUT as MASTER_LAYOUT
from .master_log import column_key
from .mdtext import (clean_cell, fenced_lines, find_tables, heading_of, normalize_heading, parse_datetime,
                     split_frontmatter, strip_blank_edges)
from .sections import ParsedNote, parse_note
from .variant_note import LAYOUT as VARIANT_LAYOUT

__all__ = [
    "Kept",
    "ResultRow",
    "LogEntryData",
    "ExperimentNoteData",
    "TableRow",
    "MasterLogData",
    "StudyVersion",
    "StudyData",
    "detect_shape",
    "read_log",
    "read_experiment_note",
    "read_master_log",
    "read_study",
    "read_variant_note",
    "is_rendered",
    "is_template",
]

_VERSION_HEADING = re.compile(r"^(?:version\s*v?|v)(\d+[a-z]?)\b(.*)$", re.I)
_CURRENT = re.compile(r"\bCURRENT\b|\(current\)|\bcurrent config(uration)?\b|✅\s*current", re.I)
_WAS_NOTE = re.compile(r"\s*(\((?:was|previously|prev\.?|from)\b[^)]*\)|#.*)$", re.I)
_METRIC_VALUE = re.compile(r"^[~≈<>≤≥]?\s*[-+]?(\d|\.\d|nan\b|inf\b)", re.I)


@dataclass
class Kept:
    """Text kept verbatim because it is prose or could not be read as data."""

    line: int  # 1-based line in the file
    where: str  # the section it was kept in, e.g. "experiment gated_003: results notes"
    reason: str
    excerpt: str  # its first line


@dataclass
class ResultRow:
    variant: str
    is_baseline: bool
    index: int  # 0-based row index within the variant's table
    line: int
    cells: list[tuple[str, str]]  # (header, cell as written)


@dataclass
class LogEntryData:
    name: str | None  # experiment named by the entry's path link
    line: int
    datetime: float | None
    fields: dict[str, str]  # ENTRY_LAYOUT field -> human text
    results: list[ResultRow]
    variants: list[tuple[str, bool]]  # every variant heading found, with its baseline flag
    status: tuple[str, str | None] | None
    empty: bool  # an empty template entry
    text: str = ""  # the entry verbatim, delimiters included
    kept: list[Kept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExperimentNoteData:
    name: str | None
    fields: dict[str, str]
    variants: list[str]
    tags: list[str] = field(default_factory=list)  # from the frontmatter
    frontmatter: dict = field(default_factory=dict)
    kept: list[Kept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class TableRow:
    kind: str  # 'training' | 'eval'
    line: int
    cells: list[tuple[str, str]]


@dataclass
class MasterLogData:
    fields: dict[str, str]
    rows: list[TableRow]
    kept: list[Kept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class StudyVersion:
    name: str  # 'v3a'
    line: int
    date: float | None
    config: dict  # parsed from the fenced block
    config_block: str  # the fenced block as written (change notes included)
    metrics: list[tuple[str, str]]  # (metric, value as written); ranges stay ranges
    notes: str  # prose and non-metric bullets, verbatim
    current: bool


@dataclass
class StudyData:
    name: str | None
    fields: dict[str, str]  # experiment fields: note, findings, rules
    versions: list[StudyVersion]
    kept: list[Kept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_rendered(text: str) -> bool:
    """Whether labfolio wrote this note (it has generated blocks)."""
    return "<!-- labfolio:begin" in text


def _headings(text: str) -> list[tuple[int, str, int]]:
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    out = []
    for index, line in enumerate(lines):
        if fenced[index]:
            continue
        heading = heading_of(line)
        if heading:
            out.append((heading[0], normalize_heading(heading[1]), index + 1))
    return out


def detect_shape(text: str, path: str | Path = "") -> str:
    """'log' | 'master' | 'experiment' | 'variant' | 'study' | 'page' for one file."""
    front, body, _ = split_frontmatter(text)
    kind = str(front.get("type") or "")
    by_type = {"experiment-log": "log", "master-log": "master", "experiment": "experiment", "variant": "variant",
               "page": "page"}
    if kind in by_type:
        return by_type[kind]
    path = Path(path)
    headings = _headings(body)
    names = [name for _, name, _ in headings]
    if re.search(r"(?m)^#{1,2}\s*-{2,}.*(path|experi|entry).*-{2,}\s*$", body, re.I):
        return "log"
    if sum(1 for n in names if _VERSION_HEADING.match(n)) >= 1 and (
            any("finding" in n or "metrics to watch" in n or "version" in n for n in names)
            or "```" in body):
        return "study"
    for table in find_tables(body.split("\n")):
        keys = [column_key(h) for h in table.header]
        if "run_id" in keys and len(table.header) >= 3 or ("eval_type" in keys and "source" in keys):
            return "master"
    titles = [n for level, n, _ in headings if level == 1]
    if path.parent.name.lower() in ("variants", "varients") or any(t.startswith(("variant", "varient")) for t in titles):
        return "variant"
    if any(re.match(r"^ex\w*ri\w*nt\b", t) for t in titles) or path.stem.lower() == "experiment" or (
            "hypothesis" in names and any(n.startswith(("variant", "varient", "parameters", "observations"))
                                          for n in names)):
        return "experiment"
    if "experiment summary" in names or ("hypothesis" in names and "results" in names):
        return "log"
    return "page"


def _title_name(title: str | None, prefixes: str) -> str | None:
    if not title:
        return None
    cleaned = clean_cell(title)
    cleaned = re.sub(r"[\u2600-\u27bf\U0001f000-\U0001faff\ufe0f]", "", cleaned).strip()
    cleaned = re.sub(rf"(?i)^({prefixes})\w*\s*[:\-–—]?\s*", "", cleaned).strip()
    return cleaned or None


# -- §1 the chronological log ------------------------------------------------------------------

def _locator(text: str, start: int):
    """A function giving the 1-based line number of a line's text, searching from line `start`."""
    lines = text.split("\n")
    position = [max(start - 1, 0)]  # tables are located in order, each after the previous one

    def locate(wanted: str) -> int:
        wanted = wanted.strip()
        for index in range(position[0], len(lines)):
            if lines[index].strip() == wanted:
                position[0] = index + 1
                return index + 1
        return start

    return locate


def _strip_tables(text: str, locate, where: str, kept: list[Kept]):
    """Split a results section into variant result tables and the prose left around them."""
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    rows: list[ResultRow] = []
    variants: list[tuple[str, bool]] = []
    leftover: list[str] = []
    warnings: list[str] = []
    current: tuple[str, bool] | None = None
    consumed: set[int] = set()
    for table in find_tables(lines):
        table_line = locate(lines[table.first_line])
        width = len(table.header)
        if any(len([c for c in row if c != ""]) > width for row in table.rows) or width < 1 \
                or any(len(row) > width for row in table.rows):
            warnings.append(f"line {table_line}: malformed table (rows wider than the header) kept verbatim")
            kept.append(Kept(table_line, where, "malformed table", lines[table.first_line].strip()))
            continue
        heading_variant = None
        for index in range(table.first_line - 1, -1, -1):
            heading = None if fenced[index] else heading_of(lines[index])
            if heading:
                heading_variant = variant_from_heading(heading[1])
                break
        keys = [normalize_heading(h) for h in table.header]
        variant_col = next((i for i, k in enumerate(keys) if k in ("variant", "varient", "model", "name")), None)
        if not table.rows:
            warnings.append(f"line {table_line}: empty results table (no rows)")
        for index, row in enumerate(table.rows):
            if variant_col is not None:
                name, is_base = variant_from_heading(row[variant_col]) if row[variant_col] else ("default", False)
                cells = [(h, c) for i, (h, c) in enumerate(zip(table.header, row)) if i != variant_col]
            else:
                name, is_base = heading_variant or ("default", False)
                cells = list(zip(table.header, row))
            same = sum(1 for r in rows if r.variant == name)
            rows.append(ResultRow(name, is_base, same, table_line + (2 if table.has_separator else 1) + index, cells))
        consumed.update(range(table.first_line, table.last_line + 1))
    for index, line in enumerate(lines):
        if index in consumed:
            continue
        heading = None if fenced[index] else heading_of(line)
        if heading and heading[0] >= 3:
            current = variant_from_heading(heading[1])
            if current[0]:
                variants.append(current)
                continue
        leftover.append(line)
    for row in rows:
        if (row.variant, row.is_baseline) not in variants:
            variants.append((row.variant, row.is_baseline))
    return rows, variants, "\n".join(strip_blank_edges(leftover)), warnings


def _status_of(text: str, where: str, warnings: list[str], line: int) -> tuple[str, str | None] | None:
    from .sync import parse_status_line

    found = set()
    for part in text.split("\n"):
        status = parse_status_line(part)
        if status is not None:
            found.add(status)
    if len(found) > 1:
        warnings.append(f"line {line}: {where} lists several statuses (a legend?); none applied")
        return None
    return found.pop() if found else None


def _note_kept(note: ParsedNote, where: str, kept: list[Kept], text: str, line_offset: int) -> None:
    """Record unknown headings (kept in the section above them) with their line numbers."""
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    for index, line in enumerate(lines):
        heading = None if fenced[index] else heading_of(line)
        if heading is None or re.match(r"^#{1,2}\s*-{3,}\s*$", line.strip()):
            continue
        number = index + 1 + line_offset
        if number in note.heading_lines.values() or heading[0] == 1 and note.title == heading[1]:
            continue
        if heading[0] <= 2:
            kept.append(Kept(number, where, "section labfolio has no place for; kept in the section above it",
                             line.strip()))


_LABEL_ONLY = re.compile(r"^\s*(?:[-*+]\s+)?\**[\w /]+\**\s*:?\s*\**\s*$")


def is_template(human: dict[str, str]) -> bool:
    """An entry whose sections hold nothing but labels ('**Datetime**') and the status legend."""
    from .sync import parse_status_line

    for value in human.values():
        for line in value.split("\n"):
            if (not line.strip() or _LABEL_ONLY.match(line) or parse_status_line(line) is not None
                    or re.fullmatch(r"\s*\[[^\]]*\]\(\s*\.?/?experiments/?\s*\)\s*", line)):
                continue
            return False
    statuses = {parse_status_line(line) for line in human.get("status_notes", "").split("\n")} - {None}
    return len(statuses) != 1


def read_log(text: str, stem: str) -> list[LogEntryData]:
    """Entries of a chronological log, in file order (newest first)."""
    parsed = parse_experiment_log(text)
    rendered = is_rendered(text)
    entries: list[LogEntryData] = []
    for entry in parsed.entries:
        human = dict(entry.note.human)
        warnings = [f"line {entry.line}: {w}" for w in entry.note.warnings]
        kept: list[Kept] = []
        where = entry.folder or f"entry at line {entry.line}"
        if entry.after:
            human["status_notes"] = "\n\n".join(p for p in (human.get("status_notes", ""), entry.after) if p)
        results: list[ResultRow] = []
        variants: list[tuple[str, bool]] = []
        when = None
        if not rendered:
            human["log_note"] = "\n".join(line for line in human.get("log_note", "").split("\n")
                                          if not re.search(r"\]\(\s*<?\.?/?experiments/", line)).strip()
            results_line = entry.note.heading_lines.get("results_notes", entry.line)
            results, variants, human["results_notes"], table_warnings = _strip_tables(
                human.get("results_notes", ""), _locator(text, results_line), f"{where}: results", kept)
            warnings += table_warnings
            summary_lines = human.get("summary", "").split("\n")
            date_index = next((i for i, s in enumerate(summary_lines) if re.search(r"(?i)date|time", s)
                               and parse_datetime(s) is not None), None)
            if date_index is None:
                date_index = next((i for i, s in enumerate(summary_lines) if parse_datetime(s) is not None), None)
            if date_index is not None:
                when = parse_datetime(summary_lines[date_index])
                if results:  # the generated summary writes the datetime back from the runs
                    del summary_lines[date_index]
            human["summary"] = "\n".join(strip_blank_edges(summary_lines))
        empty = entry.folder is None and not results and when is None and is_template(human)
        status = _status_of(human.get("status_notes", ""), f"{where}: run status", warnings, entry.line) \
            if not rendered and not empty else None
        _note_kept(entry.note, where, kept, "\n".join(entry.text.split("\n")[1:]), entry.line)
        verbatim = entry.text + (f"\n\n{entry.after}" if entry.after else "")
        entries.append(LogEntryData(entry.folder, entry.line, when, human, results, variants, status, empty,
                                    "\n".join(strip_blank_edges(verbatim.split("\n"))), kept, warnings))
    return entries


# -- §2 one note per experiment ----------------------------------------------------------------

_WIKILINK = re.compile(r"\[\[([^\]|#]+)(?:#[^\]|]*)?(?:\|([^\]]*))?\]\]")


def read_experiment_note(text: str, path: Path) -> ExperimentNoteData:
    note = parse_note(text, EXPERIMENT_LAYOUT)
    rendered = is_rendered(text)
    name = str(note.frontmatter.get("experiment") or "") or _title_name(note.title, "experiment|experiemnt|exp")
    if not name:
        name = path.parent.name if path.stem.lower() == "experiment" else path.stem
    kept: list[Kept] = []
    human = dict(note.human)
    variants: list[str] = []
    if not rendered:
        keep_lines = []
        for line in human.get("variants_notes", "").split("\n"):
            links = _WIKILINK.findall(line)
            if links and re.fullmatch(r"\s*(?:[-*+]\s+)?(\[\[[^\]]+\]\]\s*,?\s*)+", line):
                variants += [target.rstrip("/").split("/")[-1].strip() for target, _ in links]
            else:
                keep_lines.append(line)
        human["variants_notes"] = "\n".join(strip_blank_edges(keep_lines))
    _note_kept(note, f"experiment {name}", kept, split_frontmatter(text)[1], split_frontmatter(text)[2])
    tags = note.frontmatter.get("tags") or []
    tags = [str(t) for t in (tags if isinstance(tags, list) else str(tags).replace(",", " ").split())]
    return ExperimentNoteData(name, human, list(dict.fromkeys(v for v in variants if v)), tags, note.frontmatter,
                              kept, list(note.warnings))


def read_variant_note(text: str, path: Path) -> tuple[str | None, str | None, dict[str, str]]:
    """(experiment, variant, human fields) of a variant note."""
    note = parse_note(text, VARIANT_LAYOUT)
    variant = str(note.frontmatter.get("variant") or "") or None
    experiment = str(note.frontmatter.get("experiment") or "") or None
    if variant is None and note.title:
        match = re.match(r"(?i)^\s*var\w*\s*[:\-–—]?\s*(.+?)(?:\s*\(([^()]+)\))?\s*$", clean_cell(note.title))
        if match:
            variant, experiment = match.group(1).strip(), experiment or (match.group(2) or "").strip() or None
    variant = variant or path.stem
    if experiment is None and path.parent.name.lower() in ("variants", "varients"):
        experiment = path.parent.parent.name
    return experiment, variant, dict(note.human)


# -- §3 the master log -------------------------------------------------------------------------

def read_master_log(text: str) -> MasterLogData:
    note = parse_note(text, MASTER_LAYOUT)
    rendered = is_rendered(text)
    human = dict(note.human)
    rows: list[TableRow] = []
    kept: list[Kept] = []
    warnings = list(note.warnings)
    if not rendered:
        _, body, front_lines = split_frontmatter(text)
        body_lines = body.split("\n")
        for table in find_tables(body_lines):
            keys = [column_key(h) for h in table.header]
            line = table.first_line + 1 + front_lines
            kind = "training" if "run_id" in keys else "eval" if ("eval_type" in keys or "source" in keys) else None
            table_text = "\n".join(body_lines[table.first_line:table.last_line + 1])
            if kind is None:
                reason = "baseline table (old vs new, with a Delta column)" if any(
                    "delta" in normalize_heading(h) for h in table.header) else "table that is not a run registry"
                kept.append(Kept(line, "master log", f"{reason}; kept verbatim", body_lines[table.first_line].strip()))
                continue
            if any(len(row) > len(table.header) for row in table.rows):
                warnings.append(f"line {line}: malformed table (rows wider than the header) kept verbatim")
                kept.append(Kept(line, "master log", "malformed table", body_lines[table.first_line].strip()))
                continue
            for index, row in enumerate(table.rows):
                if not any(cell.strip() for cell in row):
                    continue
                rows.append(TableRow(kind, line + (2 if table.has_separator else 1) + index,
                                     list(zip(table.header, row))))
            for slot_field, value in human.items():
                if table_text in value:
                    human[slot_field] = "\n".join(strip_blank_edges(value.replace(table_text, "").split("\n")))
                    human[slot_field] = re.sub(r"\n{3,}", "\n\n", human[slot_field])
                    break
    _note_kept(note, "master log", kept, split_frontmatter(text)[1], split_frontmatter(text)[2])
    return MasterLogData(human, rows, kept, warnings)


# -- §4 a hyperparameter study page ------------------------------------------------------------

def _config_from_block(block: list[str]) -> dict:
    import yaml

    config: dict = {}
    for line in block:
        if not line.strip() or line.strip().startswith("#") or ":" not in line:
            continue
        key, _, raw = line.partition(":")
        raw = _WAS_NOTE.sub("", raw).strip()
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not raw.startswith(("[", "{")):
            value = raw
        config[key.strip().strip("`")] = value
    return config


def _read_version(name: str, heading_text: str, lines: list[str], line: int) -> StudyVersion:
    fenced = fenced_lines(lines)
    config_lines: list[str] = []
    block_lines: list[str] = []
    metrics: list[tuple[str, str]] = []
    notes: list[str] = []
    when = parse_datetime(heading_text)
    current = bool(_CURRENT.search(heading_text))
    for index, text in enumerate(lines):
        if fenced[index]:
            block_lines.append(text)
            if not text.strip().startswith(("```", "~~~")):
                config_lines.append(text)
            continue
        stripped = text.strip()
        if _CURRENT.search(stripped) and len(stripped) < 40 and not re.search(r"\w+:\s*\S", stripped.replace("CURRENT", "")):
            current = True
            continue
        if when is None and re.search(r"(?i)\bdate\b|^\*?\d{4}-\d{2}-\d{2}\*?$", stripped) \
                and parse_datetime(stripped) is not None:
            when = parse_datetime(stripped)  # the line stays in the notes: the date as the human wrote it
        heading = heading_of(stripped)
        label = normalize_heading(heading[1] if heading else stripped)
        if (heading or stripped.endswith(":") or stripped.startswith("*")) and label in (
                "results", "result", "metrics", "config", "configuration"):
            continue
        bullet = re.match(r"^\s*[-*+]\s+(?:\*\*)?([^:*]+?)(?:\*\*)?\s*:\s*(.+?)\s*$", text)
        if bullet and _METRIC_VALUE.match(clean_cell(bullet.group(2))):
            metrics.append((bullet.group(1).strip().strip("`"), bullet.group(2).strip()))
            continue
        notes.append(text)
    return StudyVersion(name, line, when, _config_from_block(config_lines), "\n".join(strip_blank_edges(block_lines)),
                        metrics, "\n".join(strip_blank_edges(notes)), current)


_STUDY_SECTIONS = {
    "findings": ("key findings", "findings", "observations", "conclusions", "learnings", "summary of findings"),
    "rules": ("metrics to watch", "metrics to monitor", "health rules", "what to watch"),
    "versions": ("versions", "configurations", "history", "tried configurations"),
}


def read_study(text: str, path: Path) -> StudyData:
    from .mdtext import match_heading

    front, body, front_lines = split_frontmatter(text)
    lines = body.split("\n")
    fenced = fenced_lines(lines)
    title = None
    sections: dict[str, list[str]] = {"note": [], "findings": [], "rules": []}
    current = "note"
    versions: list[StudyVersion] = []
    version: tuple[str, str, int, int, list[str]] | None = None  # name, heading, line, level, lines
    kept: list[Kept] = []

    def close_version() -> None:
        if version is not None:
            versions.append(_read_version(version[0], version[1], version[4], version[2]))

    for index, line in enumerate(lines):
        number = index + 1 + front_lines
        heading = None if fenced[index] else heading_of(line)
        if heading is not None:
            level, heading_text = heading
            norm = normalize_heading(heading_text)
            if level == 1 and title is None:
                title = heading_text
                continue
            match = _VERSION_HEADING.match(norm)
            if match:
                close_version()
                version = ("v" + match.group(1).lower(), heading_text, number, level, [])
                continue
            if version is not None and level > version[3]:
                version[4].append(line)
                continue
            key = match_heading(heading_text, _STUDY_SECTIONS)
            if key is not None:
                close_version()
                version = None
                current = key if key != "versions" else "note"
                continue
            if version is not None:
                close_version()
                version = None
            kept.append(Kept(number, f"study: {current}", "section labfolio has no place for; kept in the section "
                             "above it", line.strip()))
            sections[current].append(line)
            continue
        if version is not None:
            version[4].append(line)
        else:
            sections[current].append(line)
    close_version()
    name = _title_name(title, "hyperparameter study|hyper-parameter study|hparam study|study|experiment") or path.stem
    fields = {key: "\n".join(strip_blank_edges(value)) for key, value in sections.items()}
    return StudyData(name, fields, versions, kept, [])

