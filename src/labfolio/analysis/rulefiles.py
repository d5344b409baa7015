"""Where rules come from besides the built-in packs: project files and Markdown tables.

Project rules live in ``.labfolio/rules.yaml`` or under ``[tool.labfolio.rules]`` in
``pyproject.toml`` (both are read; the YAML file wins on conflicts). Same shape in both::

    # .labfolio/rules.yaml
    packs: [general, mhc]        # built-in packs to start from (default: all of them)
    disable: [val/bpb]           # drop rules by metric
    grad_norm:                   # add a rule, or override fields of a built-in one
      good: "< 5"
      bad: "> 50"
      aggregation: max
      note: Spikes precede divergence
    rules:                       # a list of rule tables works too
      - {metric: val/acc, good: "> 0.9", start_step: 1000}

    # pyproject.toml
    [tool.labfolio.rules]
    packs = ["general"]
    [tool.labfolio.rules.grad_norm]
    bad = "> 50"
    [tool.labfolio.rules."val/bpb"]
    bad = "> 1.3"

An override merges field by field into the built-in rule of the same metric, so ``bad`` alone
keeps the built-in ``good`` and note.

The Markdown "metrics to watch" table (``| Metric | Good Value | Bad Value | Notes |``) is read
by ``parse_metrics_table`` and written by ``format_metrics_table``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labfolio.analysis.errors import RangeSyntaxError, RulesFileError
from labfolio.analysis.rules import RULE_PACKS, Rule

__all__ = [
    "RulesConfig",
    "UnparsedRow",
    "MetricsTable",
    "parse_rules_config",
    "resolve_rules",
    "extra_rules",
    "load_project_rules",
    "parse_metrics_table",
    "format_metrics_table",
]

_RULE_FIELDS = ("metric", "good", "bad", "aggregation", "last_n", "start_step", "note", "live")
_RESERVED = ("packs", "disable", "rules")


@dataclass(frozen=True)
class RulesConfig:
    """One parsed rules source, before it is merged with the built-in packs."""

    source: str  # where it came from, for error messages
    packs: tuple[str, ...] | None  # None: not set here
    disable: tuple[str, ...]  # metrics whose rules are dropped
    entries: tuple[dict[str, Any], ...]  # partial rule fields, each with 'metric'


def _check_fields(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    for name in entry:
        if name not in _RULE_FIELDS:
            hint = difflib.get_close_matches(str(name), _RULE_FIELDS, n=1)
            raise RulesFileError(
                f"{where}: unknown field {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; a rule accepts {', '.join(_RULE_FIELDS)}"
            )
    fields = dict(entry)
    for name in ("good", "bad", "note"):
        if fields.get(name) is not None:
            fields[name] = str(fields[name])
    return fields


def _string_list(value: Any, name: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RulesFileError(f"{source}: {name} must be a list of names, got {value!r}")


def parse_rules_config(data: Mapping[str, Any] | None, source: str = "rules") -> RulesConfig:
    """Read one rules source (the YAML document or the pyproject table) into a ``RulesConfig``."""
    if data is None:
        return RulesConfig(source, None, (), ())
    if not isinstance(data, Mapping):
        raise RulesFileError(f"{source}: expected a mapping of metric -> rule fields, got {type(data).__name__}")
    packs = _string_list(data["packs"], "packs", source) if "packs" in data else None
    for pack in packs or ():
        if pack not in RULE_PACKS:
            raise RulesFileError(f"{source}: unknown rule pack {pack!r}; built-in packs: {', '.join(RULE_PACKS)}")
    disable = _string_list(data.get("disable", ()), "disable", source)
    entries: list[dict[str, Any]] = []
    listed = data.get("rules", ())
    if isinstance(listed, Mapping):
        listed = [{"metric": metric, **fields} for metric, fields in listed.items()]
    if not isinstance(listed, (list, tuple)):
        raise RulesFileError(f"{source}: 'rules' must be a list of rule tables or a mapping, got {listed!r}")
    for i, entry in enumerate(listed):
        if not isinstance(entry, Mapping) or "metric" not in entry:
            raise RulesFileError(f"{source}: rules[{i}] must be a table with a 'metric', got {entry!r}")
        entries.append(_check_fields(entry, f"{source}: rule {entry['metric']!r}"))
    for metric, fields in data.items():
        if metric in _RESERVED:
            continue
        if not isinstance(fields, Mapping):
            raise RulesFileError(
                f"{source}: {metric!r} must be a table of rule fields such as "
                f"{{good: '< 0.2', bad: '> 0.4'}}, got {fields!r}"
            )
        entries.append(_check_fields({"metric": metric, **fields}, f"{source}: rule {metric!r}"))
    return RulesConfig(source, packs, disable, tuple(entries))


def resolve_rules(configs: Iterable[RulesConfig], default_packs: Iterable[str] = tuple(RULE_PACKS)) -> list[Rule]:
    """Built-in packs (the last source that names packs wins), minus disabled, plus overrides in order."""
    configs = list(configs)
    packs = tuple(default_packs)
    for config in configs:
        if config.packs is not None:
            packs = config.packs
    disabled = {metric for config in configs for metric in config.disable}
    rules: dict[str, Rule] = {}
    for pack in packs:
        for rule in RULE_PACKS[pack]:
            if rule.metric not in disabled:
                rules[rule.metric] = rule
    for config in configs:
        for entry in config.entries:
            metric = entry["metric"]
            base = rules.get(metric)
            try:
                if base is None:
                    rules[metric] = Rule(**entry)
                else:
                    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Rule) if f.init}
                    rules[metric] = Rule(**{**fields, **entry})
            except (RangeSyntaxError, RulesFileError, TypeError) as error:
                raise RulesFileError(f"{config.source}: rule {metric!r}: {error}") from error
    return list(rules.values())


def extra_rules(document: Any, source: str) -> list[Rule]:
    """Rules added on top of the project's (a spec's ``rules:``, ``$LABFOLIO_RULES``): a rules
    document as in rules.yaml, or just its list of rule tables; no built-in pack is implied."""
    if not document:
        return []
    document = document if isinstance(document, Mapping) else {"rules": document}
    return resolve_rules([parse_rules_config(document, source)], default_packs=())


def load_project_rules(root: str | Path = ".") -> list[Rule]:
    """The rules of the project at `root`: built-in packs merged with pyproject and rules.yaml."""
    root = Path(root)
    configs = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise RulesFileError(f"{pyproject}: not valid TOML: {error}") from error
        table = document.get("tool", {}).get("labfolio", {}).get("rules")
        if table is not None:
            configs.append(parse_rules_config(table, f"{pyproject} [tool.labfolio.rules]"))
    for name in ("rules.yaml", "rules.yml"):
        path = root / ".labfolio" / name
        if path.is_file():
            import yaml

            try:
                document = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                raise RulesFileError(f"{path}: not valid YAML: {error}") from error
            configs.append(parse_rules_config(document, str(path)))
            break
    return resolve_rules(configs)


# --- the Markdown "metrics to watch" table -------------------------------------------------------

_EMPTY_CELLS = {"", "-", "--", "—", "–", "n/a", "na", "none", "tbd", "?"}
_HTML_TAG = re.compile(r"<[^>]+>")
_EDGE_EMPHASIS = re.compile(r"^(\*\*|__|\*|_)(.+)\1$")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")


@dataclass(frozen=True)
class UnparsedRow:
    """A table row that could not become a rule, kept verbatim with the reason."""

    line: str
    reason: str


@dataclass(frozen=True)
class MetricsTable:
    """Rules read from a Markdown table, and the rows that could not be read."""

    rules: tuple[Rule, ...]
    unparsed: tuple[UnparsedRow, ...]


def _split_row(line: str) -> list[str]:
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    cells = re.split(r"(?<!\\)\|", text)
    return [cell.replace("\\|", "|") for cell in cells]


def _clean_cell(cell: str) -> str:
    text = " ".join(_HTML_TAG.sub(" ", cell).split())
    while True:
        code = re.fullmatch(r"`+([^`]+)`+", text)
        if code:
            return code.group(1).strip()  # inside backticks everything is literal ('*loss')
        match = _EDGE_EMPHASIS.match(text)
        if not match:
            return text.replace("`", "").strip()
        text = match.group(2).strip()


def _is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*", line))


def _header_columns(cells: list[str]) -> dict[str, int] | None:
    names = [_clean_cell(cell).lower() for cell in cells]
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        if "metric" in name and "metric" not in columns:
            columns["metric"] = index
        elif name.startswith("good") and "good" not in columns:
            columns["good"] = index
        elif name.startswith("bad") and "bad" not in columns:
            columns["bad"] = index
        elif name.startswith(("note", "comment", "why", "description")) and "note" not in columns:
            columns["note"] = index
    if "metric" in columns and ("good" in columns or "bad" in columns):
        return columns
    return None


def _range_cell(text: str) -> str | None:
    if text.lower() in _EMPTY_CELLS:
        return None
    return text


def _rule_from_cells(cells: list[str], columns: dict[str, int]) -> Rule:
    def cell(name: str) -> str:
        index = columns.get(name)
        return _clean_cell(cells[index]) if index is not None and index < len(cells) else ""

    metric = cell("metric")
    if not metric:
        raise RulesFileError("the Metric cell is empty")
    good, bad, note = _range_cell(cell("good")), _range_cell(cell("bad")), cell("note")
    try:
        return Rule(metric, good=good, bad=bad, note=note)
    except RangeSyntaxError:
        # '> 50 (spikes)': a comment in parentheses after the range
        good = _PARENTHETICAL.sub("", good) if good else good
        bad = _PARENTHETICAL.sub("", bad) if bad else bad
        return Rule(metric, good=good or None, bad=bad or None, note=note)


def parse_metrics_table(text: str) -> MetricsTable:
    """Every "metrics to watch" table in `text` (Markdown) as rules.

    Tolerates extra spaces, a missing separator or Notes column, backticks, bold and HTML in
    cells, and other tables around it. Rows that cannot become a rule are returned verbatim in
    ``unparsed`` with the reason, never dropped silently.
    """
    rules: list[Rule] = []
    unparsed: list[UnparsedRow] = []
    columns: dict[str, int] | None = None
    for line in text.splitlines():
        if "|" not in line:
            columns = None  # a table ends at the first line without cells
            continue
        if columns is None:
            columns = _header_columns(_split_row(line))
            continue
        if _is_separator(line):
            continue
        try:
            rules.append(_rule_from_cells(_split_row(line), columns))
        except (RangeSyntaxError, RulesFileError) as error:
            unparsed.append(UnparsedRow(line, str(error)))
    return MetricsTable(tuple(rules), tuple(unparsed))


def _table_cell(text: str | None) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def format_metrics_table(rules: Iterable[Rule]) -> str:
    """The "metrics to watch" table for `rules` (one row per rule, ranges as written)."""
    lines = ["| Metric | Good Value | Bad Value | Notes |", "| --- | --- | --- | --- |"]
    for rule in rules:
        # a glob such as '*loss' would read as emphasis in Markdown, so it goes in backticks
        metric = f"`{rule.metric}`" if any(c in rule.metric for c in "*?[") else rule.metric
        cells = [metric, rule.good, rule.bad, rule.note]
        lines.append("| " + " | ".join(_table_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
