"""Generated sections and human sections: how a note is laid out, written and read back.

A note is a title and a list of sections (``Slot``). Each section may hold one *generated block*,
written between two HTML comments that Obsidian does not show::

    ## Results:

    <!-- labfolio:begin results -->
    ...tables written from the store...
    <!-- labfolio:end results -->

    Anything a person writes in the section, above or below the block, is theirs.

Regeneration replaces the blocks and writes the human text back from the store; reading a note
returns the human text of every section (``ParsedNote.human``), keyed by the store field it
belongs to. A heading the layout does not know ("## Side notes", "## Switch to L4 (2026-04-05)")
and its text stay, verbatim, in the section above it, so nothing a person wrote is ever dropped
and it comes back where it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .mdtext import dump_frontmatter, fenced_lines, heading_of, match_heading, split_frontmatter, strip_blank_edges

__all__ = [
    "Slot",
    "Layout",
    "ParsedNote",
    "begin_marker",
    "end_marker",
    "marker_of",
    "block",
    "parse_note",
    "render_note",
    "render_sections",
    "FRONTMATTER_COMMENT",
    "normalize_human",
    "dataview_fields",
    "FRONTMATTER_FIELD",
    "with_human_frontmatter",
    "human_frontmatter",
]

FRONTMATTER_FIELD = "frontmatter"  # note field holding the frontmatter keys a human added (JSON)

FRONTMATTER_COMMENT = ("written by `labfolio notes`: text between labfolio:begin/end markers is "
                       "regenerated; everything else is yours and is kept")
_MARKER = re.compile(r"^\s*<!--\s*labfolio:(begin|end)\s+([\w.:-]+)\s*-->\s*$")


def normalize_human(value: str | None) -> str:
    """Human text as reading a note gives it back: no blank lines at either end."""
    if not value:  # most sections have no human text: every note asks for each of them
        return ""
    return "\n".join(strip_blank_edges(value.split("\n")))


_DATAVIEW = re.compile(r"^\s*(?:[-*+]\s+)?\**([A-Za-z][\w -]{0,60}?)\**::\s*(.*?)\s*$")


def dataview_fields(text: str) -> dict[str, str]:
    """Dataview inline fields (``key:: value`` lines) in `text`, keys lower-cased with '_' for spaces."""
    found: dict[str, str] = {}
    for line in (text or "").split("\n"):
        match = _DATAVIEW.match(line)
        if match:
            found["_".join(match.group(1).strip().lower().split())] = match.group(2)
    return found


def with_human_frontmatter(front: dict, stored: str | None) -> dict:
    """`front` plus the keys a human added to the note's frontmatter (aliases, cssclasses ...)."""
    import json

    try:
        extra = json.loads(stored) if stored else {}
    except ValueError:
        extra = {}
    merged = dict(front)
    for key, value in (extra if isinstance(extra, dict) else {}).items():
        merged.setdefault(key, value)
    return merged


def human_frontmatter(front: dict, generated_keys) -> str:
    """The JSON of the frontmatter keys labfolio does not write, '' when there are none."""
    import json

    extra = {k: v for k, v in front.items() if k not in set(generated_keys)}
    return json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str) if extra else ""


def begin_marker(name: str) -> str:
    return f"<!-- labfolio:begin {name} -->"


def end_marker(name: str) -> str:
    return f"<!-- labfolio:end {name} -->"


def marker_of(line: str) -> tuple[str, str] | None:
    """('begin' | 'end', name) when `line` is a labfolio marker."""
    match = _MARKER.match(line)
    return (match.group(1), match.group(2)) if match else None


def block(name: str, lines: Sequence[str]) -> list[str]:
    """A generated block: begin marker, `lines`, end marker."""
    return [begin_marker(name), *lines, end_marker(name)]


@dataclass(frozen=True)
class Slot:
    """One section of a note."""

    field: str  # store note field holding the human text of this section
    heading: str | None  # the heading line as written ('## Hypothesis:'); None for the preamble
    aliases: tuple[str, ...] = ()  # normalised heading names that mean this section when read
    block: str | None = None  # name of the generated block in this section, if it has one


@dataclass(frozen=True)
class Layout:
    """The sections of one kind of note, in order; the first one is the preamble (no heading)."""

    slots: tuple[Slot, ...]
    level: int = 2  # headings at this level or above start a section

    def __post_init__(self) -> None:
        assert self.slots and self.slots[0].heading is None, "a layout starts with its preamble slot"
        fields = [slot.field for slot in self.slots]
        assert len(fields) == len(set(fields)), f"duplicate fields in a layout: {fields}"

    @property
    def aliases(self) -> dict[str, tuple[str, ...]]:
        return {slot.field: slot.aliases for slot in self.slots[1:]}

    def slot(self, field_name: str) -> Slot:
        return next(slot for slot in self.slots if slot.field == field_name)


@dataclass
class ParsedNote:
    """What reading a note found."""

    frontmatter: dict
    title: str | None  # text of the first level-1 heading, if it came before any section
    human: dict[str, str]  # field -> the human text of its section (every slot present)
    blocks: dict[str, str]  # generated block name -> its content as found
    seen: set[str] = field(default_factory=set)  # fields whose heading was present
    warnings: list[str] = field(default_factory=list)
    heading_lines: dict[str, int] = field(default_factory=dict)  # field -> line number (1-based)


def parse_note(text: str, layout: Layout, *, line_offset: int = 0, expect_title: bool = True) -> ParsedNote:
    """Split a note into its human text per section and its generated blocks.

    `line_offset` is added to line numbers in warnings (for entries inside a larger file).
    """
    front, body, front_lines = split_frontmatter(text)
    lines = body.split("\n")
    fenced = fenced_lines(lines)
    human: dict[str, list[str]] = {slot.field: [] for slot in layout.slots}
    blocks: dict[str, list[str]] = {}
    seen: set[str] = set()
    heading_lines: dict[str, int] = {}
    warnings: list[str] = []
    title: str | None = None
    current = layout.slots[0].field
    open_block: str | None = None
    aliases = layout.aliases
    for index, line in enumerate(lines):
        number = index + 1 + front_lines + line_offset
        if open_block is not None:
            marker = marker_of(line)
            if marker == ("end", open_block):
                open_block = None
                continue
            heading = None if fenced[index] else heading_of(line)
            if marker is None and not (heading and heading[0] <= layout.level and match_heading(heading[1], aliases)):
                blocks[open_block].append(line)
                continue
            warnings.append(f"line {number}: generated block {open_block!r} has no end marker; "
                            "it is taken to end here")
            open_block = None
        marker = None if fenced[index] else marker_of(line)
        if marker is not None:
            kind, name = marker
            if kind == "begin":
                open_block = name
                blocks[name] = []
            continue
        heading = None if fenced[index] else heading_of(line)
        if heading is not None and heading[0] <= layout.level:
            level, heading_text = heading
            if expect_title and level == 1 and title is None and not seen and level < layout.level:
                title = heading_text
                continue
            key = match_heading(heading_text, aliases)
            if key is not None and key not in seen:
                current = key
                seen.add(key)
                heading_lines[key] = number
                continue
        human[current].append(line)
    if open_block is not None:
        warnings.append(f"generated block {open_block!r} has no end marker; it runs to the end of the note")
    return ParsedNote(
        frontmatter=front, title=title,
        human={key: normalize_human("\n".join(value)) for key, value in human.items()},
        blocks={name: "\n".join(value) for name, value in blocks.items()},
        seen=seen, warnings=warnings, heading_lines=heading_lines)


def render_sections(layout: Layout, human: Mapping[str, str], blocks: Mapping[str, Sequence[str]]) -> list[str]:
    """The sections of a note as lines: heading, generated block, then the human text."""
    out: list[str] = []
    for slot in layout.slots:
        if slot.heading is not None:
            out += [slot.heading, ""]
        if slot.block is not None and slot.block in blocks:
            out += block(slot.block, blocks[slot.block])
            out.append("")
        value = normalize_human(human.get(slot.field))
        if value:
            out += [*value.split("\n"), ""]
    return out


def render_note(frontmatter: Mapping, title: str | None, layout: Layout, human: Mapping[str, str],
                blocks: Mapping[str, Sequence[str]]) -> str:
    """A whole note: frontmatter, '# title', then every section."""
    lines = dump_frontmatter(frontmatter, FRONTMATTER_COMMENT).rstrip("\n").split("\n")
    if title is not None:
        lines += [f"# {title}", ""]
    lines += render_sections(layout, human, blocks)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"
