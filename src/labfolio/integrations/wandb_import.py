"""Bring Weights & Biases runs into the store: ``labfolio import wandb PATH``.

PATH can be:

- an offline run folder (``wandb/offline-run-*`` or ``wandb/run-*``), its ``run-<id>.wandb`` file,
  or a ``wandb/`` folder holding several: config, summary, history, alerts and provenance come
  from the run's transaction log, decoded with wandb's own record schema (``wandb.proto``) and
  read with wandb's own reader when the installed wandb still ships it in Python;
- a history export as CSV (``run.history().to_csv()``, or a chart's "Export CSV" with
  ``<run> - <metric>`` columns) or JSON (a list of rows, JSON lines such as
  ``wandb-history.jsonl``, pandas' ``to_json()``, or an object with ``history``, ``config``,
  ``summary``, ``id``, ``name``, ``project``, ``group`` and ``job_type``). ``config.yaml``,
  ``wandb-summary.json`` and ``wandb-metadata.json`` next to the file are read too.

The mapping is the wandb shim's: project → project, group → experiment, job_type → variant,
display name → name, ``config["seed"]`` → seed. The original run id (and URL when the entity is
known) is kept in the run's provenance under ``external``; the labfolio run id is
``wandb_<id>``, so importing the same run again writes nothing.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError
from .importing import (ImportedRun, Series, already_imported, finite_time, number_or_none,
                        open_target_store, slug, stable_run_id, write_imported_run)
from .wandb_log import scan_run_file

__all__ = ["import_wandb", "read_offline_run", "read_history_export", "WandbRun"]

_STEP_COLUMNS = ("_step", "step", "Step")
_SEVERITIES = {"INFO": "info", "WARN": "warning", "WARNING": "warning", "ERROR": "critical"}


@dataclass
class WandbRun:
    """One W&B run as read from its files, before it becomes a labfolio run."""

    source: Path
    id: str | None = None
    project: str = ""
    entity: str = ""
    name: str | None = None
    group: str = ""
    job_type: str = ""
    notes: str | None = None
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    alerts: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    state: str = "finished"
    exit_reason: str | None = None
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    media: list[tuple[str, str, Path, object]] = field(default_factory=list)  # key, type, file, step
    format: str = "offline-run"
    identity: str | None = None  # what the run id hashes when the run has no W&B id

    def add_row(self, row: dict, step: int, *, step_rules: dict[str, str] | None = None,
                step_values: dict[str, float] | None = None) -> None:
        """Add one history row: numbers become points, anything else is counted and skipped."""
        when = finite_time(row.get("_timestamp"))
        when = when if when is not None else (self.started_at or 0.0)
        for key, value in row.items():
            if key.startswith("_"):
                continue  # wandb's own bookkeeping: _step, _timestamp, _runtime, _wandb
            number = number_or_none(value)
            if number is None:
                self.skipped[_skip_reason(value)] += 1
                continue
            point_step = step
            if step_rules and key in step_rules:
                x = step_values.get(step_rules[key]) if step_values is not None else None
                if x is not None and float(x).is_integer():
                    point_step = int(x)  # define_metric(key, step_metric=...): its own x-axis
            self.series[key].add(point_step, number, when)


def _skip_reason(value) -> str:
    if isinstance(value, dict) and "_type" in value:
        return f"{value['_type']} values"
    return f"{type(value).__name__} values"


# ---------------------------------------------------------------------------------------------
# the offline run's records
def _json(value_json: str):
    try:
        return json.loads(value_json) if value_json else None
    except ValueError:
        return value_json


def _item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def _history_value(item):
    if item.value_json:
        return _json(item.value_json)
    kind = item.WhichOneof("value")
    if kind == "json":
        return _json(item.json)
    return None if kind in (None, "none") else getattr(item, kind)


def _set_nested(target: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def _apply_config(config: dict, items, removed=()) -> None:
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        if path and path[0] != "_wandb":
            _set_nested(config, path, _json(item.value_json))
    for item in removed:
        config.pop(item.key or (item.nested_key[0] if item.nested_key else ""), None)


def _provenance(record, environment) -> dict:
    provenance: dict = {}
    git = record.run.git if record is not None and record.run.HasField("git") else None
    if environment is not None:
        provenance["python"] = {"version": environment.python} if environment.python else {}
        provenance["machine"] = {k: v for k, v in (("hostname", environment.host), ("os", environment.os),
                                                   ("cpu_count", environment.cpu_count),
                                                   ("gpu", environment.gpu_type),
                                                   ("gpu_count", environment.gpu_count)) if v}
        program = environment.program or environment.code_path
        if program:
            provenance["invocation"] = {"argv": [program, *environment.args]}
        if environment.HasField("git") and not (git and git.commit):
            git = environment.git
    if git is not None and (git.commit or git.remote_url):
        provenance["git"] = {"sha": git.commit or None, "remote_url": git.remote_url or None}
    return provenance


def read_offline_run(path: str | Path) -> WandbRun:
    """Read an offline run folder (or its ``.wandb`` file) into a ``WandbRun``."""
    file = _run_file_in(Path(path))
    run = WandbRun(source=file.parent)
    summary: dict = {}
    step_rules: dict[str, str] = {}
    glob_rules: list[tuple[str, str]] = []
    step_values: dict[str, float] = {}
    run_record = environment = None
    exit_record = None
    last_step = 0
    for record in scan_run_file(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_record = record
            r = record.run
            run.id, run.project, run.entity = r.run_id, r.project, r.entity
            run.name, run.group, run.job_type = r.display_name or None, r.run_group, r.job_type
            run.notes, run.tags = r.notes or None, list(r.tags)
            if r.start_time.seconds:
                run.started_at = r.start_time.seconds + r.start_time.nanos / 1e9
            _apply_config(run.config, r.config.update)
        elif kind == "config":
            _apply_config(run.config, record.config.update, record.config.remove)
        elif kind == "environment":  # wandb writes it in parts (software, then hardware)
            if environment is None:
                environment = type(record.environment)()
            environment.MergeFrom(record.environment)
        elif kind == "metric" and record.metric.step_metric:
            if record.metric.name:
                step_rules[record.metric.name] = record.metric.step_metric
            elif record.metric.glob_name:
                glob_rules.append((record.metric.glob_name, record.metric.step_metric))
        elif kind == "history":
            row = _drop_media({_item_key(item): _history_value(item) for item in record.history.item},
                              run, files=file.parent / "files")
            step = int(row["_step"]) if isinstance(row.get("_step"), (int, float)) else record.history.step.num
            last_step = step
            for key in row:
                if key not in step_rules:
                    rule = next((m for pattern, m in glob_rules if fnmatch.fnmatchcase(key, pattern)), None)
                    if rule is not None:
                        step_rules[key] = rule
            for key, value in row.items():
                if isinstance(value, (int, float)) and key in step_rules.values():
                    step_values[key] = value
            run.add_row(row, step, step_rules=step_rules, step_values=step_values)
        elif kind == "summary":
            for item in record.summary.update:
                summary[_item_key(item)] = _json(item.value_json)
            for item in record.summary.remove:
                summary.pop(_item_key(item), None)
        elif kind == "alert":
            a = record.alert
            run.alerts.append({"type": "alert", "kind": "user", "metric": None, "step": last_step,
                               "severity": _SEVERITIES.get(a.level.upper(), "warning"),
                               "message": f"{a.title}: {a.text}" if a.text else a.title, "value": None})
        elif kind == "exit":
            exit_record = record.exit
        elif kind in ("stats", "output", "output_raw", "artifact", "use_artifact", "tbrecord"):
            run.skipped[f"{kind} records"] += 1
    if run_record is None:
        raise ConfigError(f"{file} holds no run record: the run never started, or the file is damaged")
    if exit_record is None:
        run.state, run.exit_reason = "crashed", "the W&B log has no exit record (killed, or still running)"
    else:
        if exit_record.exit_code:
            run.state, run.exit_reason = "failed", f"exit code {exit_record.exit_code}"
        if run.started_at is not None and exit_record.runtime:
            run.ended_at = run.started_at + exit_record.runtime
    run.summary = _summary_overrides(_drop_media(summary), run.series)
    run.provenance = _provenance(run_record, environment)
    return run


def _drop_media(row: dict, run: WandbRun | None = None, files: Path | None = None) -> dict:
    """``row`` without its media values, which wandb spreads over ``<key>._type``, ``<key>.path`` ...

    With ``run``, each medium whose file is in the run's ``files/`` folder is kept for import as
    an artifact, and the rest are counted as skipped.
    """
    prefixes = {key[: -len("._type")]: row[key] for key in row if key.endswith("._type")}
    if not prefixes:
        return row
    kept = {k: v for k, v in row.items()
            if not any(k.startswith(f"{prefix}.") for prefix in prefixes)}
    if run is not None:
        for prefix, media_type in prefixes.items():
            relative = row.get(f"{prefix}.path")
            if files is not None and isinstance(relative, str) and (files / relative).is_file():
                run.media.append((prefix, str(media_type), files / relative, row.get("_step")))
            else:
                run.skipped[f"{media_type} values"] += 1
    return kept


def _run_file_in(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".wandb":
            raise ConfigError(f"{path} is not a W&B run file (run-<id>.wandb)")
        return path
    files = sorted(path.glob("run-*.wandb"))
    if len(files) != 1:
        raise ConfigError(f"{path} holds {len(files)} run-*.wandb files; pass one run folder or file")
    return files[0]


def _summary_overrides(summary: dict, series: dict[str, Series]) -> dict:
    """Summary values a script set itself; the last logged values labfolio computes anyway."""
    out = {}
    for key, value in summary.items():
        if key.startswith("_") or (isinstance(value, dict) and "_type" in value):
            continue
        points = series.get(key)
        if points is not None and points.values and number_or_none(value) is not None and \
                _same_number(points.values[-1], float(value)):
            continue
        out[key] = value
    return out


def _same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------------------------------------
# CSV and JSON history exports
def _cell(text: str):
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return _json(text) if text[:1] in "{[" else text


def _read_sidecars(run: WandbRun, folder: Path) -> None:
    """config.yaml, wandb-summary.json and wandb-metadata.json from a run's files/ folder."""
    config_file = folder / "config.yaml"
    if config_file.is_file():
        import yaml

        raw = yaml.safe_load(config_file.read_text()) or {}
        for key, entry in raw.items():
            if key in ("wandb_version", "_wandb"):
                continue
            run.config[key] = entry.get("value") if isinstance(entry, dict) and "value" in entry else entry
    summary_file = folder / "wandb-summary.json"
    if summary_file.is_file():
        run.summary.update(json.loads(summary_file.read_text()))
    metadata_file = folder / "wandb-metadata.json"
    if metadata_file.is_file():
        meta = json.loads(metadata_file.read_text())
        git = meta.get("git") or {}
        if git.get("commit"):
            run.provenance["git"] = {"sha": git.get("commit"), "remote_url": git.get("remote")}
        if meta.get("host"):
            run.provenance["machine"] = {"hostname": meta["host"], "os": meta.get("os")}
        if meta.get("python"):
            run.provenance["python"] = {"version": meta["python"]}
        if meta.get("program"):
            run.provenance["invocation"] = {"argv": [meta["program"], *(meta.get("args") or [])]}


def _rows_to_run(run: WandbRun, rows: Iterable[dict]) -> WandbRun:
    for index, row in enumerate(rows):
        step = next((row[c] for c in _STEP_COLUMNS if isinstance(row.get(c), (int, float))), index)
        # A history table is sparse: an empty or NaN cell means "not logged at this step".
        row = {k: v for k, v in row.items()
               if k not in _STEP_COLUMNS and not (isinstance(v, float) and math.isnan(v))}
        if not math.isfinite(float(step)):
            step = index
        if run.started_at is None:
            run.started_at = finite_time(row.get("_timestamp"))
        run.add_row(row, int(step))
    run.summary = _summary_overrides(run.summary, run.series)
    return run


def _json_rows(payload) -> tuple[list[dict], dict]:
    """(history rows, run fields) from any of the JSON shapes the module docstring lists."""
    if isinstance(payload, list):
        return [r for r in payload if isinstance(r, dict)], {}
    if not isinstance(payload, dict):
        raise ConfigError("a W&B JSON export must be a list of rows or an object with a 'history' list")
    if "history" in payload:
        history = payload["history"]
        rows, _ = _json_rows(history) if not isinstance(history, dict) else _json_rows(_columns_to_rows(history))
        return rows, {k: v for k, v in payload.items() if k != "history"}
    if payload and all(isinstance(v, dict) for v in payload.values()):
        return _columns_to_rows(payload), {}  # pandas' to_json() default: {column: {index: value}}
    raise ConfigError("a W&B JSON export must be a list of rows or an object with a 'history' list")


def _columns_to_rows(columns: dict) -> list[dict]:
    index = sorted({i for column in columns.values() for i in column}, key=lambda i: (len(str(i)), str(i)))
    return [{name: column.get(i) for name, column in columns.items() if column.get(i) is not None}
            for i in index]


def _chart_export_runs(path: Path, header: list[str], body: list[list[str]]) -> list[WandbRun]:
    """A chart's "Export CSV": ``Step`` plus ``<run> - <metric>`` (and __MIN/__MAX) columns."""
    by_run: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, name in enumerate(header):
        if " - " in name and not name.endswith(("__MIN", "__MAX")):
            run_name, metric = name.split(" - ", 1)
            by_run[run_name].append((i, metric))
    step_index = header.index("Step")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    runs = []
    for run_name, columns in by_run.items():
        run = WandbRun(source=path, name=run_name, format="csv-chart", identity=f"{digest}:{run_name}")
        for line in body:
            step = _cell(line[step_index]) if step_index < len(line) else None
            if not isinstance(step, float) or not step.is_integer():
                continue
            run.add_row({metric: _cell(line[i]) for i, metric in columns
                         if i < len(line) and line[i] != ""}, int(step))
        runs.append(run)
    return runs


def read_history_export(path: str | Path) -> list[WandbRun]:
    """Runs from a CSV or JSON history export (one run, or one per run in a chart export)."""
    path = Path(path)
    suffix = path.suffix.lower()
    run = WandbRun(source=path, format=suffix.lstrip(".") or "json",
                   identity=hashlib.sha256(path.read_bytes()).hexdigest())
    _read_sidecars(run, path.parent)
    if suffix == ".csv":
        with open(path, newline="") as fh:
            table = list(csv.reader(fh))
        if not table:
            raise ConfigError(f"{path} is empty")
        header, body = table[0], table[1:]
        if "Step" in header and any(" - " in name for name in header):
            return _chart_export_runs(path, header, body)
        rows = ({name: _cell(value) for name, value in zip(header, line) if value != ""} for line in body)
        return [_rows_to_run(run, rows)]
    if suffix not in (".json", ".jsonl", ".ndjson"):
        raise ConfigError(f"{path}: W&B history exports are .csv, .json or .jsonl files")
    text = path.read_text()
    try:
        payload = json.loads(text)
    except ValueError:  # JSON lines: one history row per line
        try:
            payload = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ConfigError(f"{path} is neither JSON nor JSON lines: {exc}") from None
    rows, fields = _json_rows(payload)
    run.id = fields.get("id") or run.id
    run.name = fields.get("name") or fields.get("display_name") or run.name
    for attribute in ("project", "entity", "group", "job_type", "notes"):
        if fields.get(attribute):
            setattr(run, attribute, fields[attribute])
    run.tags = list(fields.get("tags") or run.tags)
    run.config.update(fields.get("config") or {})
    run.summary.update(fields.get("summary") or {})
    return [_rows_to_run(run, rows)]


# ---------------------------------------------------------------------------------------------
def _sources(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path} does not exist: pass a wandb/ run folder, a .wandb file, or a CSV/JSON export")
    if list(path.glob("run-*.wandb")):
        return [path]
    # resolve(): wandb's latest-run is a link to one of the run folders
    runs = sorted({p.parent.resolve() for p in path.glob("*/run-*.wandb")})
    if runs:
        return runs
    for candidate in (path / "files" / "wandb-history.jsonl", path / "wandb-history.jsonl"):
        if candidate.is_file():
            return [candidate]
    raise ConfigError(f"{path} holds no W&B run: expected run-*.wandb, */run-*.wandb or wandb-history.jsonl")


def _read(source: Path) -> list[WandbRun]:
    if source.is_dir() or source.suffix == ".wandb":
        return [read_offline_run(source)]
    return read_history_export(source)


def _run_id(run: WandbRun) -> str:
    if run.id:
        return f"wandb_{slug(run.id)}"
    return stable_run_id("wandb", run.name or run.source.stem, run.identity)


def _external(run: WandbRun) -> dict:
    external = {"tracker": "wandb", "id": run.id, "project": run.project or None,
                "entity": run.entity or None, "source": str(run.source.resolve()), "format": run.format}
    if run.id and run.entity and run.project:
        external["url"] = f"https://wandb.ai/{run.entity}/{run.project}/runs/{run.id}"
    return {k: v for k, v in external.items() if v is not None}


_MEDIA_KINDS = {"image-file": "image", "table-file": "table", "histogram": "histogram"}


def _media_artifacts(store, run: WandbRun) -> list[dict]:
    """Artifact events for the run's media files, copied into the store by content."""
    from ..artifacts import store_file

    events = []
    for key, media_type, path, step in run.media:
        stored = store_file(store.location.artifact_dir, path, kind=_MEDIA_KINDS.get(media_type, "file"),
                            name=f"{key}{path.suffix}", reference=False)
        events.append(stored.as_event(int(step) if isinstance(step, (int, float)) else None,
                                      path.stat().st_mtime, {"key": key, "wandb_type": media_type}))
    return events


def import_wandb(path: str | Path, store=None, *, project: str | None = None, experiment: str | None = None,
                 variant: str | None = None, tags: Iterable[str] = ()) -> list[ImportedRun]:
    """Import the W&B run(s) at ``path`` into ``store`` (an open store, a folder, a URL, or None
    for the project's store). Runs already imported are left alone."""
    target = open_target_store(store)
    results = []
    for source in _sources(Path(path).expanduser()):
        for run in _read(source):
            run_id = _run_id(run)
            if already_imported(target, run_id):
                results.append(ImportedRun(run_id, str(run.source), imported=False))
                continue
            seed = run.config.get("seed")
            host = (run.provenance.get("machine") or {}).get("hostname")
            start = {
                "project": project or run.project, "experiment": experiment or run.group,
                "variant": variant or run.job_type, "name": run.name,
                "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                "tags": [*run.tags, *tags], "notes": run.notes, "config": run.config,
                "host": host, "machine": host, "started_at": run.started_at,
                "provenance": {**run.provenance, "external": _external(run)},
            }
            series = {key: points for key, points in run.series.items() if points.steps}
            written, points = write_imported_run(
                target, run_id=run_id, start=start, series=series, summary=run.summary,
                state=run.state, ended_at=run.ended_at, exit_reason=run.exit_reason,
                extra_events=[*run.alerts, *_media_artifacts(target, run)])
            results.append(ImportedRun(run_id, str(run.source), imported=written, points=points,
                                       skipped=dict(run.skipped)))
    return results
