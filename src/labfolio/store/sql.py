"""The SQL store: SQLite (WAL, embedded default) and PostgreSQL behind one class.

Every write goes through ``write_batch``. Reads are plain queries returning records.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from sqlalchemy import create_engine, delete, event, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import RunNotFoundError, StoreError, StoreUnavailableError
from ..settings import StoreLocation
from . import schema as t
from .batch import Batch, BatchResult, finite_json
from .compact import merged_chunks
from .envelope import envelope_rows
from .migrate import ensure_schema
from .records import AlertRecord, ArtifactRecord, MetricHistory, RunRecord, SummaryEntry

__all__ = ["SQLStore", "RUN_STATES"]

RUN_STATES = ("running", "finished", "failed", "crashed", "killed")
_ENDED_STATES = frozenset(RUN_STATES) - {"running"}


def _ends_run(batch: Batch) -> bool:
    """Whether the batch finishes its run or moves it to an ended state."""
    return any(ev.get("type") == "finish" or (ev.get("type") == "state" and ev.get("state") in _ENDED_STATES)
               for ev in batch.events)
_BUSY_TIMEOUT_MS = 60_000


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(f"cannot create the store folder for {database}: {exc}") from exc
        engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # We issue BEGIN ourselves (below): pysqlite's implicit transactions would start
            # writers as DEFERRED, and two deferred writers upgrading their locks at once fail
            # with "database is locked" no matter how long the busy timeout is.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            mode = "IMMEDIATE" if conn.get_execution_options().get("labfolio_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"the PostgreSQL driver is not installed ({exc.name}): pip install 'labfolio[postgres]'"
        ) from exc


def _loads(text: str | None, default):
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# The C scanner behind json.loads, called directly: a listing of 10,000 runs decodes ~40,000
# small documents, and json.loads's Python layers (two whitespace regexes, three frames) cost
# more than the parsing. Anything it does not take whole goes to _loads, so results are the same.
_scan_json = json.JSONDecoder().scan_once


def _loads_fast(text: str, default):
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return _loads(text, default)
    return value if end == len(text) else _loads(text, default)


def _loads_list(text: str | None) -> list:
    # Most runs have no tags and no config history: skip the decoder for the empty literal.
    return [] if not text or text == "[]" else _loads_fast(text, [])


def _loads_dict(text: str | None) -> dict:
    return {} if not text or text == "{}" else _loads_fast(text, {})


# RunRecord's fields that are columns of the same name, in the record's order (summary and
# config_history follow them), so records are built positionally from a row.
_RUN_COLUMNS = ("run_id", "project", "experiment", "variant", "seed", "name", "state", "status", "status_reason",
                "tags", "notes", "evaluates", "config", "provenance", "host", "machine", "batch_size",
                "tokens_per_step", "created_at", "started_at", "ended_at", "heartbeat_at", "exit_reason",
                "first_step", "last_step", "first_time", "last_time", "point_count")
assert _RUN_COLUMNS + ("summary", "config_history") == tuple(f.name for f in fields(RunRecord)), \
    "RunRecord's fields changed: update _RUN_COLUMNS to match"
_TAGS, _CONFIG, _PROVENANCE = (_RUN_COLUMNS.index(name) for name in ("tags", "config", "provenance"))


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=True)


def _float_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class SQLStore:
    """A labfolio store on SQLite or PostgreSQL."""

    def __init__(self, location: StoreLocation):
        self.location = location
        self.engine = _make_engine(location.url)
        self.dialect = self.engine.dialect.name
        try:
            self.revision_before_open = ensure_schema(self.engine, where=location.describe())
        except OperationalError as exc:
            raise StoreUnavailableError(f"cannot open the store at {location.describe()}: {exc.orig}") from exc
        self._key_ids: dict[str, int] = {}
        self._key_names: dict[int, str] = {}

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SQLStore({self.location.describe()!r})"

    # ------------------------------------------------------------------ the one write path
    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(labfolio_write=True) as conn:
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise StoreUnavailableError(f"cannot write to the store at {self.location.describe()}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"write to the store at {self.location.describe()} failed: {exc}") from exc

    def write_batch(self, batch: Batch) -> BatchResult:
        """Apply one batch in one transaction. The only way data enters the store.

        A batch that ends its run (it finishes, or it marks the run crashed, killed or failed, as
        ``labfolio sync`` does for a run whose process died) then merges the run's small metric
        chunks (`compact_points`), in a transaction of its own: a failure there leaves the points
        as they were and the end recorded."""
        result = self._apply_batch(batch)
        if result.applied and batch.run_id is not None and _ends_run(batch):
            try:
                self.compact_points(batch.run_id)
            except StoreError as exc:
                warnings.warn(f"labfolio: could not merge the metric chunks of {batch.run_id} (its points are "
                              f"kept as they were): {exc}", RuntimeWarning, stacklevel=2)
        return result

    def compact_points(self, run_id: str) -> int:
        """Merge a run's small metric chunks into chunks of up to ``compact.TARGET_POINTS`` points,
        with their envelopes (see ``store/compact.py``); returns how many rows were merged away.
        Every read returns the same points afterwards."""
        with self._writing() as conn:
            run_pk = self._run_pk(conn, run_id)
            if run_pk is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.location.describe()}")
            # only keys with several chunks can merge: a run written in one batch reads no points
            keys = [row[0] for row in conn.execute(
                select(t.metric_chunks.c.key_id).where(t.metric_chunks.c.run_pk == run_pk)
                .group_by(t.metric_chunks.c.key_id).having(func.count() > 1))]
            if not keys:
                return 0
            chunks = [dict(row) for row in conn.execute(
                select(t.metric_chunks).where(t.metric_chunks.c.run_pk == run_pk,
                                              t.metric_chunks.c.key_id.in_(keys))).mappings()]
            merged, replaced = merged_chunks(chunks)
            if not merged:
                return 0
            for table in (t.metric_chunks, t.metric_envelopes):
                for key_id, low, high, _rows in replaced:
                    conn.execute(delete(table).where(table.c.run_pk == run_pk, table.c.key_id == key_id,
                                                     table.c.first_seq >= low, table.c.first_seq <= high))
            conn.execute(insert(t.metric_chunks), merged)
            conn.execute(insert(t.metric_envelopes), envelope_rows(merged))
            return sum(rows for *_range, rows in replaced) - len(merged)

    def _apply_batch(self, batch: Batch) -> BatchResult:
        now = time.time()
        with self._writing() as conn:
            run_row = None
            if batch.run_id is not None:
                run_row = conn.execute(
                    select(t.runs.c.pk, t.runs.c.journal_pos, t.runs.c.state)
                    .where(t.runs.c.run_id == batch.run_id)
                ).first()
                if (run_row is not None and batch.journal_from is not None
                        and run_row.journal_pos != batch.journal_from):
                    return BatchResult(False, 0, run_row.journal_pos)
            for ev in batch.events:
                self._apply_event(conn, ev, batch.run_id, now)
            if batch.run_id is None:
                return BatchResult(True, 0, None)
            run_pk = self._run_pk(conn, batch.run_id)
            if run_pk is None:
                # Points whose start event never reached us (e.g. a journal whose first segment
                # was lost): keep them under a placeholder run rather than drop them.
                self._apply_event(conn, {"type": "start", "run_id": batch.run_id, "state": "crashed",
                                         "exit_reason": "run metadata missing from the journal"},
                                  batch.run_id, now)
                run_pk = self._run_pk(conn, batch.run_id)
            changes: dict = {}
            if batch.point_count:
                changes.update(self._insert_points(conn, run_pk, batch))
            if batch.journal_to is not None:
                changes["journal_pos"] = batch.journal_to
            if batch.heartbeat is not None:
                changes["heartbeat_at"] = batch.heartbeat
                if run_row is not None and run_row.state == "crashed":
                    changes["state"] = "running"  # a live writer came back after a stall
            if changes:
                conn.execute(update(t.runs).where(t.runs.c.pk == run_pk).values(**changes))
            return BatchResult(True, batch.point_count, batch.journal_to)

    # -- events ---------------------------------------------------------------------------------
    def _apply_event(self, conn: Connection, ev: dict, run_id: str | None, now: float) -> None:
        kind = ev.get("type")
        handler = getattr(self, f"_event_{kind}", None)
        if handler is None:
            raise StoreError(f"unknown batch event type {kind!r}")
        handler(conn, ev, ev.get("run_id") or run_id, now)

    def _experiment_id(self, conn: Connection, project: str, name: str, now: float,
                       previous: str | None = None, tags: list | None = None) -> int:
        lookup = (select(t.experiments.c.id, t.experiments.c.previous, t.experiments.c.tags)
                  .where(t.experiments.c.project == project, t.experiments.c.name == name))
        row = conn.execute(lookup).first()
        if row is None:
            # Another process may create it at the same moment: insert-or-ignore, then read back.
            self._insert_ignore(conn, t.experiments, dict(
                project=project, name=name, previous=previous, tags=_dumps(tags or []),
                created_at=now, updated_at=now))
            return conn.execute(lookup).first().id
        changes = {}
        if previous and previous != row.previous:
            changes["previous"] = previous
        if tags:
            merged = list(dict.fromkeys([*_loads(row.tags, []), *tags]))
            if merged != _loads(row.tags, []):
                changes["tags"] = _dumps(merged)
        if changes:
            conn.execute(update(t.experiments).where(t.experiments.c.id == row.id)
                         .values(updated_at=now, **changes))
        return row.id

    def _ensure_variant(self, conn: Connection, experiment_id: int, name: str, now: float,
                        baseline: bool | None = None) -> None:
        row = conn.execute(select(t.variants.c.id, t.variants.c.is_baseline).where(
            t.variants.c.experiment_id == experiment_id, t.variants.c.name == name)).first()
        if row is None:
            first = conn.execute(select(func.count()).select_from(t.variants)
                                 .where(t.variants.c.experiment_id == experiment_id)).scalar() == 0
            self._insert_ignore(conn, t.variants, dict(
                experiment_id=experiment_id, name=name,
                is_baseline=bool(first if baseline is None else baseline), created_at=now))
        elif baseline is not None and bool(row.is_baseline) != baseline:
            if baseline:
                conn.execute(update(t.variants).where(t.variants.c.experiment_id == experiment_id)
                             .values(is_baseline=False))
            conn.execute(update(t.variants).where(t.variants.c.id == row.id).values(is_baseline=baseline))

    def _set_note(self, conn: Connection, scope: str, owner: str, field: str, value: str,
                  now: float, *, only_if_empty: bool = False) -> None:
        row = conn.execute(select(t.note_fields.c.id, t.note_fields.c.value).where(
            t.note_fields.c.scope == scope, t.note_fields.c.owner == owner,
            t.note_fields.c.field == field)).first()
        if row is None:
            self._insert_ignore(conn, t.note_fields, dict(scope=scope, owner=owner, field=field,
                                                          value=value, updated_at=now))
        elif not (only_if_empty and row.value.strip()) and row.value != value:
            conn.execute(update(t.note_fields).where(t.note_fields.c.id == row.id)
                         .values(value=value, updated_at=now))

    def _event_start(self, conn, ev, run_id, now):
        project, experiment, variant = ev.get("project") or "", ev.get("experiment") or "", ev.get("variant") or ""
        if experiment:
            exp_id = self._experiment_id(conn, project, experiment, now, ev.get("previous"), ev.get("tags"))
            if variant:
                self._ensure_variant(conn, exp_id, variant, now)
            if ev.get("hypothesis"):
                # A hypothesis typed in the notebook or the web page wins over the script's.
                self._set_note(conn, "experiment", experiment, "hypothesis", ev["hypothesis"], now,
                               only_if_empty=True)
        existing = self._run_pk(conn, run_id)
        started = ev.get("started_at", now)
        if existing is not None:
            conn.execute(update(t.runs).where(t.runs.c.pk == existing).values(
                state=ev.get("state", "running"), ended_at=None, exit_reason=None, heartbeat_at=started))
            return
        conn.execute(insert(t.runs).values(
            run_id=run_id, project=project, experiment=experiment, variant=variant,
            seed=ev.get("seed"), name=ev.get("name"), state=ev.get("state", "running"),
            tags=_dumps(ev.get("tags") or []), notes=ev.get("notes"), evaluates=ev.get("evaluates"),
            config=_dumps(finite_json(ev.get("config") or {})), config_history="[]",
            provenance=_dumps(ev.get("provenance") or {}), host=ev.get("host"),
            machine=ev.get("machine"), batch_size=ev.get("batch_size"),
            tokens_per_step=ev.get("tokens_per_step"), created_at=now, started_at=started,
            heartbeat_at=started, exit_reason=ev.get("exit_reason"), journal_pos=0, point_count=0))

    def _event_config(self, conn, ev, run_id, now):
        row = conn.execute(select(t.runs.c.pk, t.runs.c.config, t.runs.c.config_history)
                           .where(t.runs.c.run_id == run_id)).first()
        if row is None:
            raise StoreError(f"config update for unknown run {run_id!r}")
        changes = finite_json(ev.get("update") or {})  # imports reach here without the SDK's cleaning
        config = _loads(row.config, {})
        config.update(changes)
        history = _loads(row.config_history, [])
        history.append({"time": ev.get("time", now), "update": changes})
        conn.execute(update(t.runs).where(t.runs.c.pk == row.pk)
                     .values(config=_dumps(config), config_history=_dumps(history)))

    def _event_summary(self, conn, ev, run_id, now):
        run_pk = self._require_run_pk(conn, run_id)
        values = ev.get("values") or {}
        ids = self._key_ids_for(conn, list(values))
        existing = {r.key_id for r in conn.execute(select(t.summaries.c.key_id).where(
            t.summaries.c.run_pk == run_pk, t.summaries.c.key_id.in_(list(ids.values()))))}
        for key, value in values.items():
            kid = ids[key]
            if kid in existing:
                conn.execute(update(t.summaries).where(t.summaries.c.run_pk == run_pk,
                                                       t.summaries.c.key_id == kid)
                             .values(override=_dumps(value)))
            else:
                conn.execute(insert(t.summaries).values(run_pk=run_pk, key_id=kid, count=0,
                                                        nonfinite=0, override=_dumps(value)))

    def _event_artifact(self, conn, ev, run_id, now):
        conn.execute(insert(t.artifacts).values(
            run_pk=self._require_run_pk(conn, run_id), name=ev["name"], kind=ev.get("kind", "file"),
            sha256=ev.get("sha256"), size=ev.get("size"), path=ev["path"],
            is_reference=bool(ev.get("is_reference")), step=ev.get("step"),
            created_at=ev.get("time", now), meta=_dumps(ev.get("meta") or {})))

    def _event_alert(self, conn, ev, run_id, now):
        conn.execute(insert(t.alerts).values(
            run_pk=self._require_run_pk(conn, run_id), kind=ev["kind"], metric=ev.get("metric"),
            step=ev.get("step"), severity=ev.get("severity", "warning"), message=ev["message"],
            value=_float_or_none(ev.get("value")), created_at=ev.get("time", now)))

    def _event_finish(self, conn, ev, run_id, now):
        conn.execute(update(t.runs).where(t.runs.c.run_id == run_id).values(
            state=ev.get("state", "finished"), ended_at=ev.get("time", now),
            exit_reason=ev.get("exit_reason")))

    def _event_experiment(self, conn, ev, run_id, now):
        exp_id = self._experiment_id(conn, ev.get("project") or "", ev["name"], now,
                                     ev.get("previous"), ev.get("tags"))
        for variant in ev.get("variants") or []:
            self._ensure_variant(conn, exp_id, variant, now)
        if ev.get("baseline"):
            self._ensure_variant(conn, exp_id, ev["baseline"], now, baseline=True)

    def _event_note(self, conn, ev, run_id, now):
        self._set_note(conn, ev["scope"], ev["owner"], ev["field"], str(ev["value"]), now)

    def _event_status(self, conn, ev, run_id, now):
        status = ev.get("status")
        if status not in (None, "valid", "partially_invalid", "invalid"):
            raise StoreError(f"unknown run status {status!r}: use valid, partially_invalid or invalid")
        self._require_run_pk(conn, run_id)
        conn.execute(update(t.runs).where(t.runs.c.run_id == run_id)
                     .values(status=status, status_reason=ev.get("reason")))

    def _event_state(self, conn, ev, run_id, now):
        """Set a run's lifecycle state (used by recovery to mark a dead writer's run crashed)."""
        conn.execute(update(t.runs).where(t.runs.c.run_id == run_id, t.runs.c.state == "running")
                     .values(state=ev["state"], exit_reason=ev.get("exit_reason"),
                             ended_at=ev.get("time", now)))

    # -- points ---------------------------------------------------------------------------------
    def _insert_ignore(self, conn: Connection, table, rows) -> None:
        """INSERT that skips rows clashing with a unique key (a concurrent writer got there first)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        conn.execute(dialect_insert(table).on_conflict_do_nothing(), rows)

    def _run_pk(self, conn: Connection, run_id: str) -> int | None:
        return conn.execute(select(t.runs.c.pk).where(t.runs.c.run_id == run_id)).scalar()

    def _require_run_pk(self, conn: Connection, run_id: str) -> int:
        pk = self._run_pk(conn, run_id)
        if pk is None:
            raise StoreError(f"event for unknown run {run_id!r}")
        return pk

    def _key_ids_for(self, conn: Connection, keys: Iterable[str]) -> dict[str, int]:
        wanted = set(keys)
        missing = [k for k in wanted if k not in self._key_ids]
        if missing:
            known = {r.key: r.id for r in conn.execute(
                select(t.metric_keys.c.key, t.metric_keys.c.id).where(t.metric_keys.c.key.in_(missing)))}
            new = [k for k in missing if k not in known]
            if new:
                self._insert_ignore(conn, t.metric_keys, [{"key": k} for k in new])
                known.update({r.key: r.id for r in conn.execute(
                    select(t.metric_keys.c.key, t.metric_keys.c.id).where(t.metric_keys.c.key.in_(new)))})
            self._key_ids.update(known)
            self._key_names.update({v: k for k, v in known.items()})
        return {k: self._key_ids[k] for k in wanted}

    def _insert_points(self, conn: Connection, run_pk: int, batch: Batch) -> dict:
        """Write the batch's points as one columnar chunk per key; returns run-row changes."""
        if batch.codes is not None:
            names = list(batch.key_names or [])
            ids = self._key_ids_for(conn, names)
            kid = np.asarray([ids[k] for k in names], dtype=np.int64)[np.asarray(batch.codes, dtype=np.int64)]
        else:
            ids = self._key_ids_for(conn, set(batch.keys))
            kid = np.fromiter((ids[k] for k in batch.keys), dtype=np.int64, count=len(batch.keys))
        seqs = np.asarray(batch.seqs, dtype=np.int64)
        order = np.lexsort((seqs, kid))  # by key, then logging order
        kid, seqs = kid[order], seqs[order]
        steps = np.asarray(batch.steps, dtype=np.int64)[order]
        values = np.asarray(batch.values, dtype=np.float64)[order]
        times = np.asarray(batch.times, dtype=np.float64)[order]
        starts = np.flatnonzero(np.r_[True, kid[1:] != kid[:-1]])
        ends = np.r_[starts[1:], len(kid)]
        chunks = []
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            chunk_steps = steps[lo:hi]
            chunks.append({
                "run_pk": run_pk, "key_id": int(kid[lo]), "first_seq": int(seqs[lo]),
                "first_step": int(chunk_steps.min()), "last_step": int(chunk_steps.max()),
                "count": hi - lo, "steps": chunk_steps.tobytes(), "values": values[lo:hi].tobytes(),
                "times": times[lo:hi].tobytes(),
            })
        conn.execute(insert(t.metric_chunks), chunks)
        conn.execute(insert(t.metric_envelopes), envelope_rows(chunks))  # what full-range charts read
        self._merge_summaries(conn, run_pk, kid, steps, values, starts, ends)
        return self._point_span_changes(conn, run_pk, batch.point_count, steps, times)

    def _merge_summaries(self, conn: Connection, run_pk: int, kid: np.ndarray, steps: np.ndarray,
                         values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        finite = np.isfinite(values)
        masked = np.where(finite, values, np.nan)
        with np.errstate(all="ignore"):
            mins = np.fmin.reduceat(masked, starts)
            maxs = np.fmax.reduceat(masked, starts)
        nonfinite = np.add.reduceat((~finite).astype(np.int64), starts)
        group_ids = kid[starts].tolist()
        old = {r.key_id: r for r in conn.execute(select(t.summaries).where(
            t.summaries.c.run_pk == run_pk, t.summaries.c.key_id.in_(group_ids)))}
        rows = []
        for i, key_id in enumerate(group_ids):
            prev = old.get(key_id)
            lo, hi = _float_or_none(mins[i]), _float_or_none(maxs[i])
            if prev is not None:
                lo = lo if prev.min is None else (prev.min if lo is None else min(lo, prev.min))
                hi = hi if prev.max is None else (prev.max if hi is None else max(hi, prev.max))
            rows.append({
                "run_pk": run_pk, "key_id": key_id, "last": float(values[ends[i] - 1]),
                "last_step": int(steps[ends[i] - 1]), "min": lo, "max": hi,
                "count": int(ends[i] - starts[i]) + (prev.count if prev else 0),
                "nonfinite": int(nonfinite[i]) + (prev.nonfinite if prev else 0),
                "override": prev.override if prev else None,
            })
        if old:
            conn.execute(delete(t.summaries).where(t.summaries.c.run_pk == run_pk,
                                                   t.summaries.c.key_id.in_(list(old))))
        conn.execute(insert(t.summaries), rows)

    def _point_span_changes(self, conn: Connection, run_pk: int, count: int, steps: np.ndarray,
                            times: np.ndarray) -> dict:
        row = conn.execute(select(t.runs.c.first_step, t.runs.c.last_step, t.runs.c.point_count)
                           .where(t.runs.c.pk == run_pk)).first()
        batch_last = int(steps.max())
        changes = {"point_count": row.point_count + count,
                   "last_step": batch_last if row.last_step is None else max(row.last_step, batch_last),
                   "last_time": float(times.max())}
        if row.first_step is None:
            changes["first_step"] = int(steps.min())
            changes["first_time"] = float(times.min())
        return changes

    # ------------------------------------------------------------------ reads
    def _read(self):
        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise StoreUnavailableError(f"cannot read the store at {self.location.describe()}: {exc.orig}") from exc

    def list_runs(self, *, experiment: str | None = None, variant: str | None = None,
                  state: str | None = None, tag: str | None = None, project: str | None = None,
                  search: str | None = None, limit: int | None = None, offset: int = 0,
                  with_summary: bool = True) -> list[RunRecord]:
        """Runs, newest first, filtered by the given fields (all optional)."""
        columns = t.runs.c
        query = (select(columns.pk, *[columns[name] for name in _RUN_COLUMNS], columns.config_history)
                 .order_by(columns.created_at.desc(), columns.pk.desc()))
        for column, value in (("experiment", experiment), ("variant", variant), ("state", state),
                              ("project", project)):
            if value is not None:
                query = query.where(columns[column] == value)
        if tag is not None:
            query = query.where(columns.tags.like(f'%{json.dumps(tag)}%'))
        if search:
            like = f"%{search}%"
            query = query.where(or_(columns.run_id.like(like), columns.name.like(like),
                                    columns.experiment.like(like), columns.variant.like(like)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        everything = limit is None and not search and all(
            value is None for value in (experiment, variant, state, tag, project))
        with self._read() as conn:
            rows = conn.execute(query).all()
            summaries = {}
            if with_summary:
                # every run's summaries in one query when every run is listed
                summaries = self._summaries(conn, None if everything else [r[0] for r in rows])
        records = [self._record(r, summaries.get(r[0], {})) for r in rows]
        if tag is not None:  # the LIKE above narrows; this makes it exact
            records = [r for r in records if tag in r.tags]
        return records

    def get_run(self, run_id: str) -> RunRecord:
        columns = t.runs.c
        query = select(columns.pk, *[columns[name] for name in _RUN_COLUMNS], columns.config_history)
        with self._read() as conn:
            row = conn.execute(query.where(columns.run_id == run_id)).first()
            if row is None:
                matches = conn.execute(select(columns.run_id).where(
                    columns.run_id.like(f"{run_id}%")).limit(3)).scalars().all()
                if len(matches) == 1:
                    row = conn.execute(query.where(columns.run_id == matches[0])).first()
                else:
                    hint = f" (did you mean {', '.join(matches)}?)" if matches else \
                        " (list runs with `labfolio runs`)"
                    raise RunNotFoundError(f"no run {run_id!r} in {self.location.describe()}{hint}")
            summaries = self._summaries(conn, [row[0]])
        return self._record(row, summaries.get(row[0], {}))

    def _summaries(self, conn: Connection, run_pks: list[int] | None) -> dict[int, dict[str, SummaryEntry]]:
        """Summary entries per run pk, of the given runs (of every run when `run_pks` is None)."""
        out: dict[int, dict[str, SummaryEntry]] = {}
        cols = t.summaries.c
        query = (select(cols.run_pk, t.metric_keys.c.key, cols.last, cols.last_step, cols.min, cols.max, cols.count,
                        cols.nonfinite, cols.override)
                 .join(t.metric_keys, t.metric_keys.c.id == cols.key_id))
        if run_pks is None:
            queries = [query]
        else:
            queries = [query.where(cols.run_pk.in_(run_pks[start: start + 500]))
                       for start in range(0, len(run_pks), 500)]
        for chunk_query in queries:
            # Plain tuples, positionally and fetched all at once: a listing of 10,000 runs reads
            # ~40,000 of these rows, and named access, keyword construction and a fetch per row
            # were most of its cost.
            for run_pk, key, last, last_step, low, high, count, nonfinite, override in conn.execute(chunk_query).all():
                entries = out.get(run_pk)
                if entries is None:
                    entries = out[run_pk] = {}
                if last is None and count:
                    last = math.nan  # SQLite stores a logged NaN as NULL: a row with points but no last value
                entries[key] = SummaryEntry(key, last, last_step, low, high, count, nonfinite,
                                            _loads_fast(override, None) if override else None)
        return out

    @staticmethod
    def _record(row, summary: dict[str, SummaryEntry]) -> RunRecord:
        """A RunRecord from a row of (pk, *_RUN_COLUMNS, config_history): built positionally, since
        a listing of 10,000 runs built each of its 30 fields by name at ~1 µs a field."""
        values = list(row[1:-1])
        values[_TAGS] = _loads_list(values[_TAGS])
        values[_CONFIG] = _loads_dict(values[_CONFIG])
        values[_PROVENANCE] = _loads_dict(values[_PROVENANCE])
        return RunRecord(*values, dict(sorted(summary.items())), _loads_list(row[-1]))

    def run_journal_position(self, run_id: str) -> int | None:
        with self._read() as conn:
            return conn.execute(select(t.runs.c.journal_pos).where(t.runs.c.run_id == run_id)).scalar()

    def history(self, run_id: str, keys: Iterable[str] | None = None) -> dict[str, MetricHistory]:
        """A run's metric series as numpy arrays, in step order (logging order within a step)."""
        with self._read() as conn:
            run_pk = conn.execute(select(t.runs.c.pk).where(t.runs.c.run_id == run_id)).scalar()
            if run_pk is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self.location.describe()}")
            query = (select(t.metric_keys.c.key, t.metric_chunks.c.steps, t.metric_chunks.c["values"],
                            t.metric_chunks.c.times)
                     .join(t.metric_keys, t.metric_keys.c.id == t.metric_chunks.c.key_id)
                     .where(t.metric_chunks.c.run_pk == run_pk)
                     .order_by(t.metric_chunks.c.key_id, t.metric_chunks.c.first_seq))
            if keys is not None:
                query = query.where(t.metric_keys.c.key.in_(list(keys)))
            parts: dict[str, list] = {}
            for key, steps, values, times in conn.execute(query):
                parts.setdefault(key, []).append((steps, values, times))
        out: dict[str, MetricHistory] = {}
        for key, chunks in sorted(parts.items()):
            steps = np.concatenate([np.frombuffer(c[0], dtype="<i8") for c in chunks])
            values = np.concatenate([np.frombuffer(c[1], dtype="<f8") for c in chunks])
            times = np.concatenate([np.frombuffer(c[2], dtype="<f8") for c in chunks])
            order = np.argsort(steps, kind="stable")
            out[key] = MetricHistory(key, steps[order], values[order], times[order])
        return out

    def alerts(self, run_id: str) -> list[AlertRecord]:
        with self._read() as conn:
            query = (select(t.alerts).join(t.runs, t.runs.c.pk == t.alerts.c.run_pk)
                     .where(t.runs.c.run_id == run_id).order_by(t.alerts.c.id))
            return [AlertRecord(r.kind, r.metric, r.step, r.severity, r.message, r.value, r.created_at)
                    for r in conn.execute(query)]

    def artifacts(self, run_id: str) -> list[ArtifactRecord]:
        base = self.location.artifact_dir
        with self._read() as conn:
            query = (select(t.artifacts).join(t.runs, t.runs.c.pk == t.artifacts.c.run_pk)
                     .where(t.runs.c.run_id == run_id).order_by(t.artifacts.c.id))
            return [ArtifactRecord(r.name, r.kind, r.sha256, r.size,
                                   r.path if r.is_reference else str(base / r.path),
                                   bool(r.is_reference), r.step, r.created_at, _loads(r.meta, {}))
                    for r in conn.execute(query)]

    # Bulk reads: a notebook over 10,000 runs must not pay one query per run.
    def _pks_for(self, conn: Connection, run_ids: list[str]) -> dict[int, str]:
        found: dict[int, str] = {}
        if len(run_ids) > 500:
            # a notebook asks for every run: one scan of the pairs beats a query per 500 ids
            wanted = set(run_ids)
            return {pk: run_id for pk, run_id in conn.execute(select(t.runs.c.pk, t.runs.c.run_id)).all()
                    if run_id in wanted}
        for start in range(0, len(run_ids), 500):  # stay far below the bound-parameter limits
            chunk = run_ids[start:start + 500]
            found.update({r.pk: r.run_id for r in conn.execute(
                select(t.runs.c.pk, t.runs.c.run_id).where(t.runs.c.run_id.in_(chunk)))})
        return found

    def _rows_by_run(self, table, run_ids: Iterable[str] | None, make) -> dict[str, list]:
        """``make(row)`` for every row of `table`, grouped by run id, in insertion order."""
        out: dict[str, list] = {}
        with self._read() as conn:
            if run_ids is None:
                names = dict(conn.execute(select(t.runs.c.pk, t.runs.c.run_id)).all())
            else:
                names = self._pks_for(conn, list(run_ids))
            if not names:
                return out
            query = select(table).order_by(table.c.id)
            if run_ids is not None and len(names) <= 500:
                query = query.where(table.c.run_pk.in_(list(names)))
            for row in conn.execute(query):
                run_id = names.get(row.run_pk)
                if run_id is not None:
                    out.setdefault(run_id, []).append(make(row))
        return out

    def alerts_for_runs(self, run_ids: Iterable[str] | None = None) -> dict[str, list[AlertRecord]]:
        """Alerts of many runs (all runs when ``run_ids`` is None), in the order they were raised."""
        return self._rows_by_run(t.alerts, run_ids, lambda r: AlertRecord(
            r.kind, r.metric, r.step, r.severity, r.message, r.value, r.created_at))

    def artifacts_for_runs(self, run_ids: Iterable[str] | None = None) -> dict[str, list[ArtifactRecord]]:
        """Artifacts of many runs (all runs when ``run_ids`` is None), oldest first."""
        base = self.location.artifact_dir
        return self._rows_by_run(t.artifacts, run_ids, lambda r: ArtifactRecord(
            r.name, r.kind, r.sha256, r.size, r.path if r.is_reference else str(base / r.path),
            bool(r.is_reference), r.step, r.created_at, _loads(r.meta, {})))

    def note_fields_for_scope(self, scope: str) -> dict[str, dict[str, str]]:
        """Every owner's note fields in one scope: {owner: {field: value}}."""
        out: dict[str, dict[str, str]] = {}
        with self._read() as conn:
            for r in conn.execute(select(t.note_fields).where(t.note_fields.c.scope == scope)):
                out.setdefault(r.owner, {})[r.field] = r.value
        return out

    def note_fields(self, scope: str, owner: str) -> dict[str, str]:
        with self._read() as conn:
            return {r.field: r.value for r in conn.execute(select(t.note_fields).where(
                t.note_fields.c.scope == scope, t.note_fields.c.owner == owner))}

    def experiments(self, project: str | None = None) -> list[dict]:
        with self._read() as conn:
            query = select(t.experiments).order_by(t.experiments.c.created_at)
            if project is not None:
                query = query.where(t.experiments.c.project == project)
            exps = conn.execute(query).all()
            variants = conn.execute(select(t.variants).order_by(t.variants.c.id)).all()
        by_exp: dict[int, list] = {}
        for v in variants:
            by_exp.setdefault(v.experiment_id, []).append(v)
        return [{"project": e.project, "name": e.name, "previous": e.previous,
                 "tags": _loads(e.tags, []), "created_at": e.created_at,
                 "variants": [v.name for v in by_exp.get(e.id, [])],
                 "baseline": next((v.name for v in by_exp.get(e.id, []) if v.is_baseline), None)}
                for e in exps]

    def stale_running_runs(self, older_than_s: float) -> list[str]:
        """Runs still marked running whose heartbeat stopped more than ``older_than_s`` ago."""
        cutoff = time.time() - older_than_s
        with self._read() as conn:
            return list(conn.execute(select(t.runs.c.run_id).where(
                t.runs.c.state == "running", t.runs.c.heartbeat_at < cutoff)).scalars())

    # ------------------------------------------------------------------ DataFrames (labfolio.export)
    def runs_frame(self, run_ids=None, *, backend: str = "pandas", **filters):
        """One row per run with ``config.*`` and ``summary.*`` columns; see ``export.runs_frame``."""
        from ..export import runs_frame

        return runs_frame(self, run_ids, backend=backend, **filters)

    def history_frame(self, run_id: str, keys=None, *, wide: bool = False, backend: str = "pandas"):
        """A run's points as a pandas or polars DataFrame; see ``export.history_frame``."""
        from ..export import history_frame

        return history_frame(self, run_id, keys, wide=wide, backend=backend)

