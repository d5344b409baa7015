"""The runs table as one SQL query: filter, sort and paginate in the database, not in Python.

At 10,000 runs, loading every record (config and provenance JSON, summaries) to sort in Python
costs seconds; the database sorts an indexed column or a JSON path in milliseconds and only the
rows of the visible page are turned into records. Any config key (``config.optim.lr``) and any
summary metric (``summary.test/acc``) can be sorted and filtered on, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from sqlalchemy import ARRAY, Float, String, Text, and_, case, cast, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import array as pg_array

from ..errors import ConfigError
from ..store import schema as t

__all__ = ["RunsQuery", "query_runs", "parse_filter", "facets", "MAX_PER_PAGE"]

MAX_PER_PAGE = 500
_FILTER_RE = re.compile(r"^\s*([^<>=!~]+?)\s*(>=|<=|!=|=|>|<|~)\s*(.*?)\s*$")
_PLAIN_COLUMNS = {"run_id", "experiment", "variant", "seed", "state", "status", "machine", "host", "project",
                  "name", "created_at", "started_at", "ended_at", "last_step", "point_count", "heartbeat_at"}
_SORT_ALIASES = {"created": "created_at", "started": "started_at", "ended": "ended_at", "steps": "last_step",
                 "points": "point_count", "run": "run_id", "id": "run_id"}


@dataclass
class RunsQuery:
    experiment: str | None = None
    variant: str | None = None
    state: str | None = None
    status: str | None = None
    tag: str | None = None
    q: str | None = None  # search box: run id, name, experiment, variant, machine, tags
    sort: str = "-created_at"  # a column, config.<path> or summary.<key>; '-' for descending
    filters: list[str] = field(default_factory=list)  # 'config.lr>=0.001', 'summary.test/acc>0.7'
    page: int = 1
    per_page: int = 50
    columns: list[str] = field(default_factory=list)  # extra columns: config.<path> / summary.<key>


def parse_filter(text: str) -> tuple[str, str, object]:
    """('config.lr', '>=', 0.001) from 'config.lr>=0.001'; numbers become floats."""
    match = _FILTER_RE.match(text or "")
    if not match:
        raise ConfigError(f"cannot read the filter {text!r}: write FIELD OP VALUE, e.g. config.lr>=0.001 or "
                          "summary.test/acc>0.7 (OP is one of = != > >= < <= ~)")
    name, op, raw = match.groups()
    value: object = raw
    if op != "~":
        try:
            value = float(raw)
        except ValueError:
            value = raw.strip("'\"")
    return name, op, value


def _json_path_sqlite(path: list[str]) -> str:
    return "$" + "".join('."' + part.replace('"', '\\"') + '"' for part in path)


class _Expressions:
    """Dialect-specific SQL for JSON config paths and summary values."""

    def __init__(self, dialect: str, key_ids: dict[str, int]):
        self.dialect = dialect
        self.key_ids = key_ids

    def config(self, dotted: str):
        path = [p for p in dotted.split(".") if p]
        if not path:
            raise ConfigError("config. needs a key, e.g. config.lr or config.optim.lr")
        if self.dialect == "sqlite":
            json_path = _json_path_sqlite(path)
            value = func.json_extract(t.runs.c.config, json_path)
            kind = func.json_type(t.runs.c.config, json_path)
            numeric = case((kind.in_(("integer", "real")), value))
            # SQLite hands JSON true/false back as 1/0; spell them as PostgreSQL's #>> does.
            text = case((kind == "true", "true"), (kind == "false", "false"), else_=cast(value, String))
            return numeric, text
        doc = cast(t.runs.c.config, JSONB)
        array = cast(pg_array([literal(p, Text) for p in path]), ARRAY(Text))  # a text[] path for #> and #>>
        as_text = doc.op("#>>", return_type=Text)(array)
        numeric = case((func.jsonb_typeof(doc.op("#>", return_type=JSONB)(array)) == "number", cast(as_text, Float)))
        return numeric, as_text

    def summary(self, key: str):
        key_id = self.key_ids.get(key)
        if key_id is None:
            return literal(None, Float), literal(None, String)
        s = t.summaries
        if self.dialect == "sqlite":
            override_num = case((and_(func.json_valid(s.c.override),
                                      func.json_type(s.c.override).in_(("integer", "real"))),
                                 func.json_extract(s.c.override, "$")))
        else:
            override_num = case((s.c.override.op("~")(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"),
                                 cast(s.c.override, Float)))
        value = func.coalesce(override_num, s.c.last)
        numeric = (select(value).where(s.c.run_pk == t.runs.c.pk, s.c.key_id == key_id)
                   .correlate(t.runs).scalar_subquery())
        text = (select(func.coalesce(s.c.override, cast(s.c.last, String)))
                .where(s.c.run_pk == t.runs.c.pk, s.c.key_id == key_id).correlate(t.runs).scalar_subquery())
        return numeric, text

    def field(self, name: str):
        name = _SORT_ALIASES.get(name, name)
        if name.startswith("config."):
            return self.config(name[len("config."):])
        if name.startswith("summary."):
            return self.summary(name[len("summary."):])
        if name in _PLAIN_COLUMNS:
            column = t.runs.c[name]
            return column, cast(column, String)
        raise ConfigError(f"unknown runs-table field {name!r}: use one of {', '.join(sorted(_PLAIN_COLUMNS))}, "
                          "config.<key> or summary.<metric>")


def _condition(expr: _Expressions, text: str):
    name, op, value = parse_filter(text)
    numeric, as_text = expr.field(name)
    if op == "~":
        return as_text.like(f"%{value}%")
    target = numeric if isinstance(value, float) else as_text
    if isinstance(value, float) and name in _PLAIN_COLUMNS and name in ("state", "status", "experiment", "variant"):
        target, value = as_text, str(value)
    ops = {"=": target.__eq__, "!=": target.__ne__, ">": target.__gt__, ">=": target.__ge__,
           "<": target.__lt__, "<=": target.__le__}
    return ops[op](value)


def _metric_key_ids(conn, names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    return {r.key: r.id for r in conn.execute(
        select(t.metric_keys.c.key, t.metric_keys.c.id).where(t.metric_keys.c.key.in_(sorted(names))))}


def _loads(text, default):
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else repr(value)
    return value


def query_runs(store, query: RunsQuery) -> dict:
    """One page of the runs table as JSON-ready data (the runs page's JSON twin)."""
    per_page = max(1, min(MAX_PER_PAGE, int(query.per_page)))
    page = max(1, int(query.page))
    fields = [f for f in [query.sort.lstrip("-+"), *[parse_filter(f)[0] for f in query.filters], *query.columns] if f]
    wanted_keys = {f[len("summary."):] for f in fields if f.startswith("summary.")}
    r = t.runs
    with store.engine.connect() as conn:
        expr = _Expressions(store.dialect, _metric_key_ids(conn, wanted_keys))
        conditions = []
        for column, value in (("experiment", query.experiment), ("variant", query.variant),
                              ("state", query.state), ("status", query.status)):
            if value:
                conditions.append(r.c[column].is_(None) if value == "none" and column == "status"
                                  else r.c[column] == value)
        if query.tag:
            conditions.append(r.c.tags.like(f"%{json.dumps(query.tag)}%"))
        if query.q:
            like = f"%{query.q}%"
            conditions.append(or_(r.c.run_id.like(like), r.c.name.like(like), r.c.experiment.like(like),
                                  r.c.variant.like(like), r.c.machine.like(like), r.c.tags.like(like)))
        conditions += [_condition(expr, f) for f in query.filters]
        descending = query.sort.startswith("-")
        sort_numeric, sort_text = expr.field(query.sort.lstrip("-+") or "created_at")
        name = _SORT_ALIASES.get(query.sort.lstrip("-+"), query.sort.lstrip("-+"))
        sort_expr = sort_numeric if name.startswith(("config.", "summary.")) or name in (
            "seed", "created_at", "started_at", "ended_at", "last_step", "point_count", "heartbeat_at") else sort_text
        if name.startswith("config."):
            # Numbers first by value, then the rest by text, so a mixed column still sorts sensibly.
            order = [sort_numeric.desc() if descending else sort_numeric.asc(),
                     sort_text.desc() if descending else sort_text.asc()]
        else:
            order = [sort_expr.desc() if descending else sort_expr.asc()]
        # NULLs last in both directions, as a researcher expects runs without the metric at the end.
        order = [sort_text.is_(None).asc(), *order, r.c.pk.desc()]
        where = and_(*conditions) if conditions else None
        count_q = select(func.count()).select_from(r)
        rows_q = select(r.c.pk, r.c.run_id, r.c.project, r.c.experiment, r.c.variant, r.c.seed, r.c.name,
                        r.c.state, r.c.status, r.c.status_reason, r.c.tags, r.c.machine, r.c.host, r.c.config,
                        r.c.created_at, r.c.started_at, r.c.ended_at, r.c.heartbeat_at, r.c.last_step,
                        r.c.point_count, r.c.evaluates)
        if where is not None:
            count_q, rows_q = count_q.where(where), rows_q.where(where)
        total = conn.execute(count_q).scalar() or 0
        rows = conn.execute(rows_q.order_by(*order).limit(per_page).offset((page - 1) * per_page)).all()
        summaries: dict[int, dict[str, object]] = {}
        if rows:
            s = t.summaries
            for sr in conn.execute(select(s.c.run_pk, t.metric_keys.c.key, s.c.last, s.c.override)
                                   .join(t.metric_keys, t.metric_keys.c.id == s.c.key_id)
                                   .where(s.c.run_pk.in_([row.pk for row in rows]))):
                override = _loads(sr.override, None)
                summaries.setdefault(sr.run_pk, {})[sr.key] = override if override is not None else sr.last
    key_counts: dict[str, int] = {}
    for values in summaries.values():
        for key in values:
            key_counts[key] = key_counts.get(key, 0) + 1
    metric_columns = [c[len("summary."):] for c in query.columns if c.startswith("summary.")]
    if not metric_columns:
        # The metrics most runs on this page have, results (test/, val/ ...) before training
        # bookkeeping such as lr or epoch, sort key first: the table a researcher wants.
        from ..notebook.results import is_result_metric

        metric_columns = sorted(key_counts, key=lambda k: (not is_result_metric(k), -key_counts[k], k))[:6]
        if name.startswith("summary.") and name[len("summary."):] not in metric_columns:
            metric_columns.insert(0, name[len("summary."):])
    config_columns = [c[len("config."):] for c in query.columns if c.startswith("config.")]
    if name.startswith("config.") and name[len("config."):] not in config_columns:
        config_columns.insert(0, name[len("config."):])
    proposed = _proposed_statuses(store, rows)
    out_rows = []
    for row in rows:
        config = _loads(row.config, {})
        values = summaries.get(row.pk, {})
        out_rows.append({
            "run_id": row.run_id, "project": row.project, "experiment": row.experiment, "variant": row.variant,
            "seed": row.seed, "name": row.name, "state": row.state, "status": row.status,
            "status_reason": row.status_reason, "proposed_status": proposed.get(row.run_id, (None, None))[0],
            "proposed_reason": proposed.get(row.run_id, (None, None))[1],
            "tags": _loads(row.tags, []), "machine": row.machine or row.host,
            "host": row.host, "created_at": row.created_at, "started_at": row.started_at, "ended_at": row.ended_at,
            "heartbeat_at": row.heartbeat_at, "last_step": row.last_step, "point_count": row.point_count,
            "evaluates": row.evaluates,
            "config": {c: _lookup(config, c) for c in config_columns},
            "summary": {k: _finite(values.get(k)) for k in metric_columns},
        })
    pages = max(1, -(-total // per_page))
    return {"total": total, "page": page, "per_page": per_page, "pages": pages, "sort": query.sort,
            "metric_columns": metric_columns, "config_columns": config_columns, "runs": out_rows,
            "query": {"experiment": query.experiment, "variant": query.variant, "state": query.state,
                      "status": query.status, "tag": query.tag, "q": query.q, "filters": list(query.filters),
                      "columns": list(query.columns)}}


def _proposed_statuses(store, rows) -> dict[str, tuple[str, str | None]]:
    """The status each run's alerts propose (as the notebook shows it), for runs no human judged."""
    from ..analysis import propose_status
    from ..notebook.results import as_analysis_alerts

    unjudged = [row for row in rows if row.status is None]
    if not unjudged:
        return {}
    alerts = store.alerts_for_runs([row.run_id for row in unjudged])
    out = {}
    for row in unjudged:
        proposal = propose_status(row.state, as_analysis_alerts(alerts.get(row.run_id, [])))
        out[row.run_id] = (proposal.status.value, proposal.reason)
    return out


def facets(store) -> dict:
    """Values for the filter menus: experiments, variants, states, statuses and metric keys."""
    r = t.runs
    with store.engine.connect() as conn:
        experiments = [x for x in conn.execute(select(r.c.experiment).distinct().order_by(r.c.experiment)).scalars()]
        variants = [x for x in conn.execute(select(r.c.variant).distinct().order_by(r.c.variant)).scalars()]
        states = [x for x in conn.execute(select(r.c.state).distinct().order_by(r.c.state)).scalars()]
        keys = [x for x in conn.execute(select(t.metric_keys.c.key).order_by(t.metric_keys.c.key).limit(500)).scalars()]
    return {"experiments": experiments, "variants": variants, "states": states,
            "statuses": ["valid", "partially_invalid", "invalid", "none"], "metrics": keys}
