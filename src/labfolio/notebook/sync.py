"""Reading human edits in the vault back into the store: ``labfolio notes sync``.

Every human section of every note labfolio wrote is compared with what was written (the hashes in
``.labfolio/state.json``); a section that changed is a human edit and becomes a ``note`` event. A
status line under "Run status" ("❌ Invalid (eval on the wrong split)") or an edited Status cell
in the master log becomes a ``status`` event; an edited Conclusion cell, a run note. Everything
goes through ``store.write_batch``, in one batch.

An entry added to the experiment log for an experiment the store does not know yet (a plan
written before any run) creates that experiment, so its hypothesis is waiting for its runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..store.batch import Batch
from .context import EXPERIMENT_LOG, MASTER_LOG
from .experiment_log import ENTRY_LAYOUT, parse_experiment_log
from .experiment_log import FRONTMATTER_KEYS as LOG_FRONT_KEYS
from .experiment_log import FRONTMATTER_NOTE_FIELD as LOG_FRONT_FIELD
from .experiment_note import FRONTMATTER_KEYS as EXPERIMENT_FRONT_KEYS
from .experiment_note import LAYOUT as EXPERIMENT_LAYOUT
from .master_log import FRONTMATTER_KEYS as MASTER_FRONT_KEYS
from .master_log import FRONTMATTER_NOTE_FIELD as MASTER_FRONT_FIELD
from .master_log import LAYOUT as MASTER_LAYOUT
from .mdtext import find_tables, normalize_heading, safe_name, split_frontmatter
from .sections import (FRONTMATTER_FIELD, Layout, dataview_fields, human_frontmatter, marker_of, normalize_human,
                       parse_note)
from .snapshot import PROJECT_OWNER
from .state import VaultState, field_key, split_field_key, text_hash
from .variant_note import FRONTMATTER_KEYS as VARIANT_FRONT_KEYS
from .variant_note import LAYOUT as VARIANT_LAYOUT

__all__ = ["SyncReport", "sync_vault", "master_table_cells", "parse_status_line", "status_events_for"]

_STATUS_WORD = re.compile(r"(?i)^(?:override\s*:\s*|status\s*:\s*|set\s*:\s*)?([✅⚠❌]|valid\b|invalid\b|partially)")


@dataclass
class SyncReport:
    """What was read back from the vault."""

    files_read: list[str] = field(default_factory=list)  # notes that differed from what was written
    fields_updated: list[tuple[str, str, str]] = field(default_factory=list)  # (scope, owner, field)
    statuses: list[tuple[str, str | None]] = field(default_factory=list)  # (run id, status)
    experiments_created: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    file_hashes: dict[str, str] = field(default_factory=dict)  # relpath -> hash of the note as it was read

    @property
    def changed(self) -> bool:
        return bool(self.fields_updated or self.statuses or self.experiments_created)

    def summary(self) -> str:
        if not self.changed:
            return f"no edits to read back ({len(self.files_read)} edited note(s) checked)"
        return (f"read back {len(self.fields_updated)} field(s), {len(self.statuses)} status override(s), "
                f"{len(self.experiments_created)} new experiment(s) from {len(self.files_read)} note(s)")


def parse_status_line(text: str) -> tuple[str, str | None] | None:
    """(status, reason) from the last status line in `text` ('- ⚠️ Partially invalid (why)'), else None."""
    from ..analysis import AnalysisInputError, RunStatus

    found = None
    for line in (text or "").split("\n"):
        cleaned = re.sub(r"^\s*(?:[-*+]\s+(?:\[[ xX]\]\s+)?|>\s*)", "", line).strip().replace("**", "")
        match = _STATUS_WORD.match(cleaned)
        if not match:
            continue
        cleaned = re.sub(r"(?i)^(override|status|set)\s*:\s*", "", cleaned)
        cleaned = re.sub(r"\s*\(proposed\)\s*$", "", cleaned)
        try:
            status, reason = RunStatus.parse_label(cleaned)
        except AnalysisInputError:
            continue
        found = (status.value, reason)
    return found


def status_events_for(run_ids, status: str | None, reason: str | None) -> list[dict]:
    return [{"type": "status", "run_id": run_id, "status": status, "reason": reason} for run_id in run_ids]


def _unescape_cell(text: str) -> str:
    return text.replace("\\|", "|").replace("<br>", "\n").strip()


def master_table_cells(content: str) -> dict[tuple[str, str], str]:
    """(run id, 'status_cell' | 'conclusion') -> cell text, from the master log's run tables."""
    lines = content.split("\n")
    cells: dict[tuple[str, str], str] = {}
    inside: str | None = None
    block_lines: list[str] = []
    for line in lines:
        marker = marker_of(line)
        if marker and marker[0] == "begin" and marker[1] in ("training", "evals"):
            inside, block_lines = marker[1], []
            continue
        if marker and marker[0] == "end" and inside is not None:
            for table in find_tables(block_lines):
                header = [normalize_heading(h) for h in table.header]
                if "run id" not in header:
                    continue
                id_col = header.index("run id")
                status_col = header.index("status") if "status" in header else None
                conclusion_col = header.index("conclusion") if "conclusion" in header else None
                for row in table.rows:
                    run_id = row[id_col].strip().strip("`").strip()
                    if not run_id:
                        continue
                    if status_col is not None:
                        cells[(run_id, "status_cell")] = row[status_col].strip()
                    if conclusion_col is not None:
                        cells[(run_id, "conclusion")] = row[conclusion_col].strip()
            inside = None
            continue
        if inside is not None:
            block_lines.append(line)
    return cells


def _vault_notes(vault: Path, state: VaultState) -> list[str]:
    found = set(state.files)
    for pattern in ("*.md", "experiments/*/experiment.md", "experiments/*/variants/*.md"):
        for path in vault.glob(pattern):
            relpath = path.relative_to(vault).as_posix()
            if " (before labfolio)" in relpath:
                continue
            found.add(relpath)
    order = {MASTER_LOG: 3, EXPERIMENT_LOG: 0}
    return sorted((p for p in found if (vault / p).is_file()),
                  key=lambda p: (order.get(p, 2 if "/variants/" in p else 1), p))


def _fields_of(scope: str, owner: str, layout: Layout, human: dict[str, str]) -> dict[str, str]:
    return {field_key(scope, owner, slot.field): human.get(slot.field, "") for slot in layout.slots}


class _Reader:
    """Collects edits from the notes, then writes them as one batch."""

    def __init__(self, store, vault: Path, state: VaultState):
        self.store = store
        self.vault = vault
        self.state = state
        self.report = SyncReport()
        self.edits: dict[str, tuple[str, str]] = {}  # field key -> (value, relpath)
        self.status_edits: list[tuple[list[str], str | None, str | None]] = []
        self.new_experiments: list[str] = []
        self.seen_cells: dict[tuple[str, str], str] = {}  # master-log cells read as edits: hash as written
        self._store_values: dict[tuple[str, str], dict[str, str]] = {}
        experiments = store.experiments()
        self.experiment_names = {e["name"] for e in experiments}
        self.folders = {safe_name(e["name"]): e["name"] for e in experiments}
        self.folders.update(state.folders)

    def store_value(self, key: str) -> str:
        scope, owner, name = split_field_key(key)
        if (scope, owner) not in self._store_values:
            self._store_values[(scope, owner)] = self.store.note_fields(scope, owner)
        return normalize_human(self._store_values[(scope, owner)].get(name, ""))

    def offer(self, relpath: str, key: str, value: str) -> bool:
        """Record `value` for `key` if it is a human edit; True when it is."""
        value = normalize_human(value)
        last = self.state.field_hash(relpath, key)
        if last is not None:
            if text_hash(value) == last:
                return False
        elif value == self.store_value(key):
            return False
        previous = self.edits.get(key)
        if previous is not None and previous[0] != value:
            self.report.warnings.append(f"{key.replace('|', ' / ')} was edited in both {previous[1]} and {relpath}; "
                                        f"keeping the text from {relpath}")
        self.edits[key] = (value, relpath)
        return True

    def experiment_name(self, folder: str | None) -> str | None:
        if not folder:
            return None
        from urllib.parse import unquote

        folder = unquote(folder).strip()
        return self.folders.get(folder) or (folder if folder in self.experiment_names else None)

    # -- per kind of note --
    def read_log(self, relpath: str, text: str) -> None:
        from .parse import is_template

        parsed = parse_experiment_log(text)
        self.offer(relpath, field_key("project", PROJECT_OWNER, "log_preamble"), parsed.preamble)
        self.offer(relpath, field_key("project", PROJECT_OWNER, LOG_FRONT_FIELD),
                   human_frontmatter(parsed.frontmatter, LOG_FRONT_KEYS))
        templates = []
        for entry in parsed.entries:
            self.report.warnings += [f"{relpath}: {w}" for w in entry.note.warnings]
            human = dict(entry.note.human)
            if entry.after:
                human["status_notes"] = normalize_human(f"{human.get('status_notes', '')}\n\n{entry.after}")
            name = self.experiment_name(entry.folder)
            if name is None and is_template(human):
                # an empty template stays a template, at the end of the log
                templates.append(normalize_human(entry.text + (f"\n\n{entry.after}" if entry.after else "")))
                continue
            if name is None:
                if not any(v.strip() for v in human.values()):
                    continue  # an empty template entry
                name = entry.folder and safe_name(entry.folder) or f"untitled_{text_hash(entry.text)[:8]}"
                if name not in self.experiment_names and name not in self.new_experiments:
                    self.new_experiments.append(name)
                    self.report.warnings.append(
                        f"{relpath} line {entry.line}: the entry names no known experiment; created experiment "
                        f"{name!r} for it")
            for key, value in _fields_of("experiment", name, ENTRY_LAYOUT, human).items():
                if self.offer(relpath, key, value) and key.endswith("|status_notes"):
                    status = parse_status_line(value)
                    if status is not None:
                        self.status_edits.append(([f"experiment:{name}"], *status))
        self.offer(relpath, field_key("project", PROJECT_OWNER, "log_trailer"),
                   "\n\n".join([*templates, parsed.trailer]))

    def read_experiment(self, relpath: str, text: str) -> None:
        folder = relpath.split("/")[1]
        note = parse_note(text, EXPERIMENT_LAYOUT)
        name = self.experiment_name(folder) or str(note.frontmatter.get("experiment") or "") or None
        if name is None:
            self.report.warnings.append(f"{relpath}: no experiment {folder!r} in the store; its edits are not read")
            return
        self.report.warnings += [f"{relpath}: {w}" for w in note.warnings]
        for key, value in _fields_of("experiment", name, EXPERIMENT_LAYOUT, note.human).items():
            self.offer(relpath, key, value)
        self.offer(relpath, field_key("experiment", name, FRONTMATTER_FIELD),
                   human_frontmatter(note.frontmatter, EXPERIMENT_FRONT_KEYS))

    def read_variant(self, relpath: str, text: str) -> None:
        parts = relpath.split("/")
        mapped = self.state.variants.get(f"{parts[1]}/{Path(parts[3]).stem}")
        note = parse_note(text, VARIANT_LAYOUT)
        if mapped is None:
            experiment, variant = note.frontmatter.get("experiment"), note.frontmatter.get("variant")
            if not experiment or not variant:
                self.report.warnings.append(f"{relpath}: cannot tell which variant this note is; its edits are not read")
                return
            mapped = [str(experiment), str(variant)]
        self.report.warnings += [f"{relpath}: {w}" for w in note.warnings]
        for key, value in _fields_of("variant", f"{mapped[0]}/{mapped[1]}", VARIANT_LAYOUT, note.human).items():
            self.offer(relpath, key, value)
        self.offer(relpath, field_key("variant", f"{mapped[0]}/{mapped[1]}", FRONTMATTER_FIELD),
                   human_frontmatter(note.frontmatter, VARIANT_FRONT_KEYS))

    def read_master(self, relpath: str, text: str) -> None:
        note = parse_note(text, MASTER_LAYOUT)
        self.report.warnings += [f"{relpath}: {w}" for w in note.warnings]
        for key, value in _fields_of("project", PROJECT_OWNER, MASTER_LAYOUT, note.human).items():
            self.offer(relpath, key, value)
        self.offer(relpath, field_key("project", PROJECT_OWNER, MASTER_FRONT_FIELD),
                   human_frontmatter(note.frontmatter, MASTER_FRONT_KEYS))
        for (run_id, name), cell in master_table_cells(text).items():
            key = field_key("run", run_id, name)
            last = self.state.field_hash(relpath, key)
            if last is None or text_hash(cell) == last:
                continue
            self.seen_cells[(relpath, key)] = text_hash(cell)
            if name == "conclusion":
                self.edits[key] = (_unescape_cell(cell), relpath)
            else:
                status = parse_status_line(_unescape_cell(cell))
                if status is None:
                    self.report.warnings.append(f"{relpath}: cannot read the status {cell!r} of run {run_id}; write "
                                                "'✅ Valid', '⚠️ Partially invalid (reason)' or '❌ Invalid (reason)'")
                else:
                    self.status_edits.append(([run_id], *status))

    def read_page(self, relpath: str, text: str) -> None:
        _, body, _ = split_frontmatter(text)
        stem = Path(relpath).stem
        self.offer(relpath, field_key("project", PROJECT_OWNER, f"page:{stem}"), body)

    # -- writing --
    def events(self) -> list[dict]:
        events = [{"type": "experiment", "project": "", "name": name} for name in self.new_experiments]
        by_owner: dict[tuple[str, str], dict[str, str]] = {}
        for key, (value, _) in sorted(self.edits.items()):
            scope, owner, name = split_field_key(key)
            events.append({"type": "note", "scope": scope, "owner": owner, "field": name, "value": value})
            self.report.fields_updated.append((scope, owner, name))
            by_owner.setdefault((scope, owner), {})[name] = value
        for (scope, owner), changed in by_owner.items():
            current = dict(self.store.note_fields(scope, owner))
            merged = {**current, **changed}
            wanted: dict[str, str] = {}
            for name, value in sorted(merged.items()):
                if not name.startswith("dv."):
                    for dv_key, dv_value in dataview_fields(value).items():
                        wanted[f"dv.{dv_key}"] = dv_value
            for name in sorted(set(wanted) | {n for n in current if n.startswith("dv.")}):
                value = wanted.get(name, "")
                if current.get(name, "") != value:
                    events.append({"type": "note", "scope": scope, "owner": owner, "field": name, "value": value})
        runs_by_experiment: dict[str, list[str]] = {}
        for targets, status, reason in self.status_edits:
            run_ids: list[str] = []
            for target in targets:
                if target.startswith("experiment:"):
                    name = target[len("experiment:"):]
                    if name not in runs_by_experiment:
                        runs_by_experiment[name] = [r.run_id for r in self.store.list_runs(experiment=name,
                                                                                         with_summary=False)]
                    run_ids += runs_by_experiment[name]
                elif self._run_exists(target):
                    run_ids.append(target)
                else:
                    self.report.warnings.append(f"status for unknown run {target!r} ignored")
            events += status_events_for(run_ids, status, reason)
            self.report.statuses += [(run_id, status) for run_id in run_ids]
        return events

    def _run_exists(self, run_id: str) -> bool:
        from ..errors import RunNotFoundError

        try:
            return self.store.get_run(run_id).run_id == run_id
        except RunNotFoundError:
            return False


def sync_vault(store, out_dir: str | Path, *, state: VaultState | None = None) -> SyncReport:
    """Read human edits in the vault at `out_dir` into `store` (one batch). Safe to run any time."""
    vault = Path(out_dir)
    if not vault.is_dir():
        return SyncReport(warnings=[f"{vault} does not exist yet: nothing to read back"])
    standalone = state is None
    state = state if state is not None else VaultState.load(vault)
    reader = _Reader(store, vault, state)
    read_texts: dict[str, str] = {}
    for relpath in _vault_notes(vault, state):
        path = vault / relpath
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reader.report.warnings.append(f"{relpath}: cannot read ({error})")
            continue
        sha = reader.report.file_hashes[relpath] = text_hash(text)
        known = state.files.get(relpath)
        if known is not None and known.get("sha") == sha:
            continue
        if known is None and "labfolio:begin" not in text and "written by `labfolio notes`" not in text:
            if relpath in (MASTER_LOG, EXPERIMENT_LOG) or relpath.startswith("experiments/"):
                reader.report.warnings.append(f"{relpath} was not written by labfolio; bring it into the store "
                                              "with `labfolio import notes`")
            continue
        reader.report.files_read.append(relpath)
        read_texts[relpath] = text
        if relpath == EXPERIMENT_LOG:
            reader.read_log(relpath, text)
        elif relpath == MASTER_LOG:
            reader.read_master(relpath, text)
        elif relpath.startswith("experiments/") and relpath.endswith("/experiment.md"):
            reader.read_experiment(relpath, text)
        elif relpath.startswith("experiments/") and "/variants/" in relpath:
            reader.read_variant(relpath, text)
        elif "/" not in relpath:
            reader.read_page(relpath, text)
    events = reader.events()
    if events:
        store.write_batch(Batch(events=events))
    reader.report.experiments_created = list(reader.new_experiments)
    # What was read is now in the store: remember it as seen, so the next sync does not read it again.
    for key, (value, relpath) in reader.edits.items():
        entry = state.files.setdefault(relpath, {"sha": "", "fields": {}})
        entry.setdefault("fields", {})[key] = reader.seen_cells.get((relpath, key)) or text_hash(value)
    for (relpath, key), cell_hash in reader.seen_cells.items():
        state.files.setdefault(relpath, {"sha": "", "fields": {}}).setdefault("fields", {})[key] = cell_hash
    for relpath, text in read_texts.items():
        if relpath in state.files:
            state.files[relpath]["sha"] = text_hash(text)
    if standalone:
        state.save(vault)
    return reader.report
