"""The store's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are unix seconds as floats: portable across both databases and cheap to compare. Nested
things (config, provenance, tags) are JSON text, because they are read whole and their shape is
the user's, not ours.

Metric points ``(run, key, step, value, time)`` are the one high-volume data. They are stored
columnar, one row per (run, key, batch) holding that batch's steps, values and times as packed
arrays. A row per point caps SQLite at well under a million points a second from Python (each
row is a B-tree insert plus parameter binding) and makes every history read a million-row fetch;
chunks ingest tens of millions of points a second, read back straight into numpy, and keep NaN
as NaN (SQLite turns a NaN REAL into NULL). ``first_seq``, the journal position of the chunk's
first point, orders chunks and makes each one's identity reproducible from the journal.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["metadata", "experiments", "variants", "runs", "metric_keys", "metric_chunks", "metric_envelopes",
           "summaries",
           "artifacts", "alerts", "note_fields", "api_tokens", "MAX_KEY_LENGTH"]

MAX_KEY_LENGTH = 256

metadata = MetaData()

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(200), nullable=False, default=""),
    Column("name", String(300), nullable=False),
    Column("previous", String(300)),
    Column("tags", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("project", "name", name="uq_experiments_project_name"),
)

variants = Table(
    "variants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, nullable=False),
    Column("name", String(300), nullable=False),
    Column("is_baseline", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("experiment_id", "name", name="uq_variants_experiment_name"),
)

runs = Table(
    "runs",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(400), nullable=False, unique=True),
    Column("project", String(200), nullable=False, default=""),
    Column("experiment", String(300), nullable=False, default=""),
    Column("variant", String(300), nullable=False, default=""),
    Column("seed", BigInteger),
    Column("name", String(400)),
    Column("state", String(20), nullable=False),  # running | finished | failed | crashed | killed
    Column("status", String(30)),  # human override: valid | partially_invalid | invalid
    Column("status_reason", Text),
    Column("tags", Text, nullable=False, default="[]"),
    Column("notes", Text),
    Column("evaluates", String(400)),  # run_id whose checkpoint an evaluation-only run scores
    Column("config", Text, nullable=False, default="{}"),
    Column("config_history", Text, nullable=False, default="[]"),
    Column("provenance", Text, nullable=False, default="{}"),
    Column("host", String(300)),
    Column("machine", String(300)),
    Column("batch_size", BigInteger),
    Column("tokens_per_step", BigInteger),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("heartbeat_at", Float),
    Column("exit_reason", Text),
    Column("journal_pos", BigInteger, nullable=False, default=0),
    Column("first_step", BigInteger),
    Column("first_time", Float),
    Column("last_step", BigInteger),
    Column("last_time", Float),
    Column("point_count", BigInteger, nullable=False, default=0),
    Index("ix_runs_experiment_variant", "experiment", "variant"),
    Index("ix_runs_state", "state"),
)

metric_keys = Table(
    "metric_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(MAX_KEY_LENGTH), nullable=False, unique=True),
)

metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column("run_pk", Integer, nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("first_seq", BigInteger, nullable=False),  # journal position of the chunk's first point
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("steps", LargeBinary, nullable=False),  # int64 little endian, logging order
    Column("values", LargeBinary, nullable=False),  # float64, NaN and ±Inf kept as logged
    Column("times", LargeBinary, nullable=False),  # float64 unix seconds
    PrimaryKeyConstraint("run_pk", "key_id", "first_seq", name="pk_metric_chunks"),
)

# One row per metric_chunks row: the chunk's envelope (see envelope.py), what full-range charts
# read instead of every point. A table of its own, not a column: SQLite reaches a column stored
# after a large blob only by walking the blob's overflow pages.
metric_envelopes = Table(
    "metric_envelopes",
    metadata,
    Column("run_pk", Integer, nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("first_seq", BigInteger, nullable=False),  # the chunk's
    Column("first_step", BigInteger, nullable=False),  # the chunk's
    Column("last_step", BigInteger, nullable=False),  # the chunk's
    Column("points", Integer, nullable=False),  # points in the chunk
    Column("count", Integer, nullable=False),  # points in the envelope
    Column("steps", LargeBinary, nullable=False),  # same packing as metric_chunks
    Column("values", LargeBinary, nullable=False),
    Column("times", LargeBinary, nullable=False),
    PrimaryKeyConstraint("run_pk", "key_id", "first_seq", name="pk_metric_envelopes"),
)

summaries = Table(
    "summaries",
    metadata,
    Column("run_pk", Integer, nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("last", Float),
    Column("last_step", BigInteger),
    Column("min", Float),
    Column("max", Float),
    Column("count", BigInteger, nullable=False, default=0),
    Column("nonfinite", BigInteger, nullable=False, default=0),
    Column("override", Text),  # JSON of an explicit run.summary[key] = value
    PrimaryKeyConstraint("run_pk", "key_id", name="pk_summaries"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_pk", Integer, nullable=False, index=True),
    Column("name", String(500), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("sha256", String(64)),
    Column("size", BigInteger),
    Column("path", Text, nullable=False),  # relative to the artifact folder, or absolute for refs
    Column("is_reference", Boolean, nullable=False, default=False),
    Column("step", BigInteger),
    Column("created_at", Float, nullable=False),
    Column("meta", Text, nullable=False, default="{}"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_pk", Integer, nullable=False, index=True),
    Column("kind", String(100), nullable=False),
    Column("metric", String(MAX_KEY_LENGTH)),
    Column("step", BigInteger),
    Column("severity", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("value", Float),
    Column("created_at", Float, nullable=False),
)

note_fields = Table(
    "note_fields",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope", String(20), nullable=False),  # experiment | variant | run | project
    Column("owner", String(700), nullable=False),  # experiment name, "exp/variant", or run id
    Column("field", String(100), nullable=False),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("scope", "owner", "field", name="uq_note_fields"),
)

# Team-server tokens. Only a SHA-256 of each token is kept: tokens are long random strings, so a
# fast hash is enough, and a leaked database reveals no usable token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(20), nullable=False),  # the token's first characters, to tell tokens apart
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
