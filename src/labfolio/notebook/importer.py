"""``labfolio import notes FILE_OR_DIR``: bring hand-written notebooks into the store.

What is created, per shape (NOTEBOOK_FORMAT.md):

- §1 chronological log: one experiment per entry, ``previous`` from file order (the entry below is
  the older one); a variant per results sub-heading; one imported run per results row; the status
  from the emoji line; hypothesis, observations, conclusion, next steps and every other sentence
  as note fields.
- §2 experiment note: the experiment, its variants (from the wikilinks), its sections and
  Dataview fields.
- §3 master log: one imported run per row of the training and evaluation tables, every cell kept
  (in the run's provenance, shown again by the master log); the status and conclusion cells; the
  rest (baseline tables, decision records) verbatim.
- §4 hyperparameter study: one experiment, one variant and one imported run per version: config
  from the fenced block, metrics from the bullets (ranges stay ranges), CURRENT as a tag; key
  findings, and the metrics-to-watch table (read into rules).

Imported runs carry summary values only, the tag ``imported`` and ``provenance.imported_from``/
``line``. Run ids are derived from what the file says (experiment, variant, row), so importing the
same file again updates the same runs instead of adding new ones. A run that was tracked (not
imported) is never changed by an import. Nothing is ever dropped: what cannot be read as data
stays in the human text of its section and is listed in the report with its line number.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, RunNotFoundError
from ..store.batch import Batch
from .experiment_log import ENTRY_LAYOUT
from .experiment_note import FRONTMATTER_KEYS as EXPERIMENT_FRONT_KEYS
from .experiment_note import LAYOUT as EXPERIMENT_LAYOUT
from .master_log import column_key
from .mdtext import clean_cell, normalize_heading, parse_datetime, parse_number, safe_name
from .parse import (Kept, detect_shape, is_rendered, read_experiment_note, read_log, read_master_log, read_study,
                    read_variant_note)
from .sections import FRONTMATTER_FIELD, dataview_fields, human_frontmatter, normalize_human
from .snapshot import IMPORTED_TAG, PROJECT_OWNER
from .variant_note import LAYOUT as VARIANT_LAYOUT

__all__ = ["ImportReport", "import_notes", "imported_run_id"]

_SPECIAL_RESULT_COLUMNS = {"seed": "seed", "seeds": "seed", "run id": "run_id", "run": "run_id", "run_id": "run_id"}
_SCORE_PAIR = re.compile(r"\*\*\s*([^*:]+?)\s*:?\s*\*\*\s*:?\s*(.+?)\s*(?=<br\s*/?>|\*\*[^*]+\*\*|$)")
_TIMESTAMP_SUFFIX = re.compile(r"[_-](\d{8}[_-]?\d{4,6}|\d{8}|\d{4}-\d{2}-\d{2}[_T]?[\d-]*)$")


def imported_run_id(*parts: str) -> str:
    """A stable run id for an imported row: readable parts, safe characters."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "imported"


@dataclass
class ImportReport:
    """What an import created, what it left verbatim, and what it could not read."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (path, shape)
    experiments: list[str] = field(default_factory=list)
    variants: int = 0
    runs_created: list[str] = field(default_factory=list)
    runs_updated: list[str] = field(default_factory=list)  # imported before: same values written again
    runs_skipped: list[str] = field(default_factory=list)  # tracked runs an import never changes
    fields: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    rules: int = 0
    kept: list[tuple[str, Kept]] = field(default_factory=list)  # (path, what was kept verbatim)
    warnings: list[str] = field(default_factory=list)

    def format(self) -> str:
        """The report as printed by ``labfolio import notes``."""
        lines = [f"Imported {len(self.files)} file(s): "
                 + ", ".join(f"{path} ({shape})" for path, shape in self.files)]
        lines.append(f"- experiments: {len(self.experiments)}"
                     + (f" ({', '.join(self.experiments[:8])}{', ...' if len(self.experiments) > 8 else ''})"
                        if self.experiments else ""))
        lines.append(f"- variants: {self.variants}")
        lines.append(f"- runs: {len(self.runs_created)} new, {len(self.runs_updated)} already imported (updated), "
                     f"{len(self.runs_skipped)} tracked runs left unchanged")
        lines.append(f"- note fields: {len(self.fields)}; statuses: {len(self.statuses)}; rules: {self.rules}")
        if self.kept:
            lines.append("Kept verbatim:")
            lines += [f"  {path}:{kept.line}: {kept.excerpt[:70]} — {kept.reason} ({kept.where})"
                      for path, kept in self.kept]
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  {warning}" for warning in self.warnings]
        return "\n".join(lines)


class _Importer:
    def __init__(self, store, report: ImportReport):
        self.store = store
        self.report = report
        self.events: list[dict] = []
        self._run_cache: dict[str, object] = {}

    # -- events --
    def note(self, scope: str, owner: str, name: str, value: str) -> None:
        value = normalize_human(value)
        if not value:
            return
        self.events.append({"type": "note", "scope": scope, "owner": owner, "field": name, "value": value})
        self.report.fields.append((scope, owner, name))
        if not name.startswith("dv."):
            for key, dv_value in dataview_fields(value).items():
                self.events.append({"type": "note", "scope": scope, "owner": owner, "field": f"dv.{key}",
                                    "value": dv_value})

    def experiment(self, name: str, variants: list[str], previous: str | None = None,
                   baseline: str | None = None, tags: list[str] | None = None) -> None:
        event = {"type": "experiment", "project": "", "name": name, "variants": variants}
        if tags:
            event["tags"] = tags
        if previous:
            event["previous"] = previous
        if baseline:
            event["baseline"] = baseline
        self.events.append(event)
        if name not in self.report.experiments:
            self.report.experiments.append(name)
        self.report.variants += len(variants)

    def _existing(self, run_id: str):
        if run_id not in self._run_cache:
            try:
                run = self.store.get_run(run_id)
                self._run_cache[run_id] = run if run.run_id == run_id else None
            except RunNotFoundError:
                self._run_cache[run_id] = None
        return self._run_cache[run_id]

    def run(self, run_id: str, *, experiment: str, variant: str, source: str, line: int, cells, values: dict,
            written: dict, seed=None, started_at=None, machine=None, git=None, evaluates=None, config=None,
            tags=(), status=None, conclusion=None, kind: str = "") -> bool:
        existing = self._existing(run_id)
        if existing is not None and IMPORTED_TAG not in (existing.tags or []):
            self.report.runs_skipped.append(run_id)
            self.report.warnings.append(f"{source}:{line}: run {run_id} is a tracked run; the import leaves it as is")
            return False
        provenance = {"imported_from": source, "line": line, "source": kind,
                      "cells": [[h, c] for h, c in cells], "values_as_written": written,
                      "metric_order": list(values)}
        if git:
            provenance["git"] = git
        start = {"type": "start", "run_id": run_id, "project": "", "experiment": experiment, "variant": variant,
                 "seed": seed, "tags": [IMPORTED_TAG, *tags], "config": config or {}, "provenance": provenance,
                 "machine": machine, "host": None, "evaluates": evaluates, "started_at": started_at,
                 "state": "finished"}
        self.events.append(start)
        if values:
            self.events.append({"type": "summary", "run_id": run_id, "values": values})
        self.events.append({"type": "finish", "run_id": run_id, "state": "finished", "time": started_at})
        if status is not None:
            self.events.append({"type": "status", "run_id": run_id, "status": status[0], "reason": status[1]})
            self.report.statuses.append((run_id, status[0]))
        if conclusion:
            self.note("run", run_id, "conclusion", conclusion)
        (self.report.runs_updated if existing is not None else self.report.runs_created).append(run_id)
        return True

    def flush(self) -> None:
        if self.events:
            self.store.write_batch(Batch(events=self.events))
        self.events = []

    # -- §1 --
    def log(self, text: str, source: str, stem: str) -> None:
        from .experiment_log import parse_experiment_log

        entries = read_log(text, stem)
        rendered = is_rendered(text)
        whole = parse_experiment_log(text)
        preamble = whole.preamble
        if whole.title and not rendered and normalize_heading(whole.title) != "experiment log":
            preamble = f"# {whole.title}\n\n{preamble}".strip()  # a title of the human's own is kept
        self.note("project", PROJECT_OWNER, "log_preamble", preamble)
        # Empty templates are not experiments; they are kept, verbatim, at the end of the log.
        templates = [e.text for e in entries if e.empty]
        self.note("project", PROJECT_OWNER, "log_trailer", "\n\n".join([*templates, whole.trailer]))
        names: list[str | None] = []
        total = len(entries)
        folders = {safe_name(e["name"]): e["name"] for e in self.store.experiments()} if rendered else {}
        for position, entry in enumerate(entries):
            name = folders.get(entry.name, entry.name) if entry.name else None  # a rendered log names folders
            if name is None:
                name = f"{safe_name(stem).replace(' ', '_').lower()}_{total - position:03d}"
            names.append(name)
        for position in range(total - 1, -1, -1):  # oldest (bottom) first
            entry, name = entries[position], names[position]
            self._collect(source, entry.kept, entry.warnings)
            if entry.empty:
                self.report.warnings.append(f"{source}:{entry.line}: empty template entry: kept at the end of the "
                                            "log, not imported as an experiment")
                continue
            # Lineage is the file order of a hand-written log; a log labfolio wrote is in date order and its
            # lineage is already in the store.
            previous = None if rendered else next(
                (names[p] for p in range(position + 1, total) if not entries[p].empty), None)
            variants = list(dict.fromkeys(v for v, _ in entry.variants))
            baseline = next((v for v, is_base in entry.variants if is_base), None)
            self.experiment(name, variants, previous, baseline)
            for slot in ENTRY_LAYOUT.slots:
                self.note("experiment", name, slot.field, entry.fields.get(slot.field, ""))
            for row in entry.results:
                self._result_row(row, name, entry, source)

    def _result_row(self, row, experiment: str, entry, source: str) -> None:
        values, written, seed, run_id = {}, {}, None, None
        for header, cell in row.cells:
            key = _SPECIAL_RESULT_COLUMNS.get(clean_cell(header).lower())
            text = clean_cell(cell)
            if key == "seed":
                number = parse_number(cell)
                seed = int(number) if number is not None and number == int(number) else None
                continue
            if key == "run_id" and text:
                run_id = text
                continue
            metric = clean_cell(header) or header
            if not text:
                continue
            number = parse_number(cell)
            values[metric] = number if number is not None else text
            written[metric] = cell
        run_id = run_id or imported_run_id(experiment, row.variant, "imported", str(row.index + 1))
        self.run(run_id, experiment=experiment, variant=row.variant, source=source, line=row.line, cells=row.cells,
                 values=values, written=written, seed=seed, started_at=entry.datetime, status=entry.status,
                 kind="experiment-log")

    # -- §2 --
    def experiment_note(self, text: str, source: str, path: Path) -> None:
        data = read_experiment_note(text, path)
        self._collect(source, data.kept, data.warnings)
        baseline = next((v for v in data.variants if v.lower() == "baseline"), None)
        self.experiment(data.name, data.variants, baseline=baseline, tags=data.tags)
        for slot in EXPERIMENT_LAYOUT.slots:
            self.note("experiment", data.name, slot.field, data.fields.get(slot.field, ""))
        self.note("experiment", data.name, FRONTMATTER_FIELD,
                  human_frontmatter(data.frontmatter, ("tags", *EXPERIMENT_FRONT_KEYS)))
        self._count_rules(data.fields.get("rules", ""), source)

    def variant_note(self, text: str, source: str, path: Path) -> None:
        experiment, variant, fields = read_variant_note(text, path)
        if not experiment or not variant:
            self.report.warnings.append(f"{source}: cannot tell which experiment this variant note belongs to; "
                                        "kept as a page")
            self.note("project", PROJECT_OWNER, f"page:{path.stem}", text)
            return
        self.experiment(experiment, [variant])
        for slot in VARIANT_LAYOUT.slots:
            self.note("variant", f"{experiment}/{variant}", slot.field, fields.get(slot.field, ""))

    # -- §3 --
    def master_log(self, text: str, source: str, stem: str) -> None:
        data = read_master_log(text)
        self._collect(source, data.kept, data.warnings)
        for slot_field, value in data.fields.items():
            self.note("project", PROJECT_OWNER, slot_field, value)
        order: list[str] = []
        known_ids: dict[str, tuple[str, str]] = {}  # run id -> (experiment, variant), for evaluations
        for row in data.rows:
            if row.kind == "training":
                run_id, experiment, variant = self._training_row(row, source, stem)
                known_ids[run_id] = (experiment, variant)
                if experiment and experiment not in order:
                    order.append(experiment)
        for previous, name in zip([None, *order], order):
            self.experiment(name, [], previous)
        for row in data.rows:
            if row.kind == "eval":
                self._eval_row(row, source, known_ids)

    def _row_common(self, row):
        by_key: dict[str, str] = {}
        for header, cell in row.cells:
            key = column_key(header)
            if key is not None and key not in by_key:
                by_key[key] = cell
        from .sync import parse_status_line

        status = parse_status_line(clean_cell(by_key.get("status", ""))) if by_key.get("status") else None
        git_text = clean_cell(by_key.get("git", ""))
        git = None
        if git_text and git_text not in ("--", "-"):
            git = {"short_sha": git_text} if re.fullmatch(r"[0-9a-f]{6,40}", git_text) else {"tags": [git_text]}
        machine = clean_cell(by_key.get("machine", "")) or None
        speed = parse_number(by_key.get("speed", "")) if by_key.get("speed") else None
        values, written = {}, {}
        for metric, raw in _SCORE_PAIR.findall(by_key.get("key_scores", "")):
            raw = raw.strip()
            number = parse_number(raw)
            values[metric.strip()] = number if number is not None else clean_cell(raw)
            written[metric.strip()] = raw
        if by_key.get("eff_rank") and clean_cell(by_key["eff_rank"]) not in ("", "--", "-"):
            number = parse_number(by_key["eff_rank"])
            values["eff_rank"] = number if number is not None else clean_cell(by_key["eff_rank"])
            written["eff_rank"] = by_key["eff_rank"]
        if speed is not None:
            values["steps_per_s"] = speed
        for header, cell in row.cells:
            if column_key(header) is None and parse_number(cell) is not None:
                values[clean_cell(header)] = parse_number(cell)
                written[clean_cell(header)] = cell
        conclusion = clean_cell(by_key.get("conclusion", "")) and by_key.get("conclusion", "").replace("<br>", "\n")
        if status is None and by_key.get("status") and clean_cell(by_key["status"]) not in ("", "--", "-"):
            row.cells = [(f"{h} (as written)" if column_key(h) == "status" else h, c) for h, c in row.cells]
        when = parse_datetime(clean_cell(by_key.get("date", "")))
        return by_key, status, git, machine, values, written, conclusion, when

    def _training_row(self, row, source: str, stem: str) -> tuple[str, str, str]:
        by_key, status, git, machine, values, written, conclusion, when = self._row_common(row)
        run_id = clean_cell(by_key.get("run_id", ""))
        if not run_id or run_id in ("--", "-"):
            digest = hashlib.sha1("|".join(c for _, c in row.cells).encode()).hexdigest()[:10]
            run_id = imported_run_id(safe_name(stem).lower(), "row", digest)
        experiment = clean_cell(by_key.get("experiment", "")).split(" / ")[0].strip()
        if not experiment:
            stripped = _TIMESTAMP_SUFFIX.sub("", run_id)
            experiment = stripped if stripped != run_id else imported_run_id(safe_name(stem).lower())
        variant = clean_cell(by_key.get("architecture", "")) or "default"
        self.run(run_id, experiment=experiment, variant=variant, source=source, line=row.line, cells=row.cells,
                 values=values, written=written, started_at=when, machine=machine, git=git, status=status,
                 conclusion=conclusion, kind="master-log")
        return run_id, experiment, variant

    def _eval_row(self, row, source: str, known_ids: dict[str, tuple[str, str]]) -> None:
        by_key, status, git, machine, values, written, conclusion, when = self._row_common(row)
        evaluates = clean_cell(by_key.get("source", "")) or None
        target = self._existing(evaluates) if evaluates and evaluates not in known_ids else None
        experiment, variant = known_ids.get(evaluates or "", (target.experiment, target.variant) if target is not None
                                            else ("", ""))
        eval_type = clean_cell(by_key.get("eval_type", "")) or "evaluation"
        tasks = clean_cell(by_key.get("tasks", ""))
        digest = hashlib.sha1("|".join([by_key.get("date", ""), eval_type, evaluates or "", tasks]).encode()).hexdigest()
        run_id = clean_cell(by_key.get("run_id", "")) or imported_run_id("eval", eval_type, digest[:10])
        self.run(run_id, experiment=experiment,
                 variant=variant or eval_type, source=source, line=row.line, cells=row.cells, values=values, written=written,
                 started_at=when, machine=machine, git=git, evaluates=evaluates, status=status, conclusion=conclusion,
                 config={"eval_type": eval_type, **({"tasks": tasks} if tasks else {})}, kind="eval-table")

    # -- §4 --
    def study(self, text: str, source: str, path: Path) -> None:
        data = read_study(text, path)
        self._collect(source, data.kept, data.warnings)
        name = imported_run_id(data.name) if data.name else path.stem
        variants = [v.name for v in data.versions]
        self.experiment(name, variants, baseline=variants[0] if variants else None)
        for slot_field, value in data.fields.items():
            self.note("experiment", name, slot_field, value)
        self._count_rules(data.fields.get("rules", ""), source)
        for version in data.versions:
            owner = f"{name}/{version.name}"
            self.note("variant", owner, "config_notes", version.config_block)
            self.note("variant", owner, "notes", version.notes)
            values = {metric: (parse_number(raw) if parse_number(raw) is not None else clean_cell(raw))
                      for metric, raw in version.metrics}
            cells = [("version", version.name), *version.metrics]
            self.run(imported_run_id(name, version.name, "imported"), experiment=name, variant=version.name,
                     source=source, line=version.line, cells=cells, values=values,
                     written={m: raw for m, raw in version.metrics}, started_at=version.date, config=version.config,
                     tags=("current",) if version.current else (), kind="study")

    def page(self, text: str, source: str, path: Path) -> None:
        from .mdtext import split_frontmatter

        _, body, _ = split_frontmatter(text)
        self.note("project", PROJECT_OWNER, f"page:{path.stem}", body)
        self.report.kept.append((source, Kept(1, f"page {path.stem}", "not one of the four shapes; kept whole as a "
                                              "page of the vault", (body.strip().split("\n") or [""])[0])))

    def _count_rules(self, text: str, source: str) -> None:
        from ..analysis import parse_metrics_table

        table = parse_metrics_table(text or "")
        self.report.rules += len(table.rules)
        for row in table.unparsed:
            self.report.warnings.append(f"{source}: metrics-to-watch row kept verbatim, not a rule: {row.line.strip()} "
                                        f"({row.reason})")

    def _collect(self, source: str, kept: list[Kept], warnings: list[str]) -> None:
        self.report.kept += [(source, k) for k in kept]
        self.report.warnings += [f"{source}: {w}" for w in warnings]


def _markdown_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for path in sorted(root.rglob("*.md")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        files.append(path)
    return files


def import_notes(store, path: str | os.PathLike) -> ImportReport:
    """Import a Markdown file, or every ``.md`` file under a folder, into `store`."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"{root} does not exist: give a Markdown file or a folder of notes")
    report = ImportReport()
    importer = _Importer(store, report)
    files = _markdown_files(root)
    if not files:
        raise ConfigError(f"no Markdown (.md) files under {root}")
    rank = {"log": 0, "study": 1, "experiment": 2, "variant": 3, "master": 4, "page": 5}
    planned = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = file.read_bytes().decode("utf-8", errors="replace")
            report.warnings.append(f"{file}: not valid UTF-8; undecodable bytes replaced")
        planned.append((rank[detect_shape(text, file)], str(file), file, text))
    for _, _, file, text in sorted(planned, key=lambda item: (item[0], item[1])):
        shape = detect_shape(text, file)
        source = _display_path(file)
        report.files.append((source, shape + (" (written by labfolio)" if is_rendered(text) else "")))
        try:
            if shape == "log":
                importer.log(text, source, file.stem)
            elif shape == "experiment":
                importer.experiment_note(text, source, file)
            elif shape == "variant":
                importer.variant_note(text, source, file)
            elif shape == "master":
                importer.master_log(text, source, file.stem)
            elif shape == "study":
                importer.study(text, source, file)
            else:
                importer.page(text, source, file)
        except Exception as error:  # one unreadable file must not abort the others: keep it whole
            report.warnings.append(f"{source}: could not be read as a {shape} ({type(error).__name__}: {error}); "
                                   "kept whole as a page")
            importer.events = []
            importer.page(text, source, file)
        importer.flush()
    return report


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
