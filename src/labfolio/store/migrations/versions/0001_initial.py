"""Runs, experiments, variants, metric points (columnar chunks), summaries and artifacts.

Revision ID: 0001_initial
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("previous", sa.String(300)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("project", "name", name="uq_experiments_project_name"),
    )
    op.create_table(
        "variants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("is_baseline", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("experiment_id", "name", name="uq_variants_experiment_name"),
    )
    op.create_table(
        "runs",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(400), nullable=False, unique=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("experiment", sa.String(300), nullable=False),
        sa.Column("variant", sa.String(300), nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("name", sa.String(400)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status", sa.String(30)),
        sa.Column("status_reason", sa.Text),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("notes", sa.Text),
        sa.Column("evaluates", sa.String(400)),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("config_history", sa.Text, nullable=False),
        sa.Column("provenance", sa.Text, nullable=False),
        sa.Column("host", sa.String(300)),
        sa.Column("machine", sa.String(300)),
        sa.Column("batch_size", sa.BigInteger),
        sa.Column("tokens_per_step", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("exit_reason", sa.Text),
        sa.Column("journal_pos", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger),
        sa.Column("first_time", sa.Float),
        sa.Column("last_step", sa.BigInteger),
        sa.Column("last_time", sa.Float),
        sa.Column("point_count", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_runs_experiment_variant", "runs", ["experiment", "variant"])
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_table(
        "metric_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(256), nullable=False, unique=True),
    )
    op.create_table(
        "metric_chunks",
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("steps", sa.LargeBinary, nullable=False),
        sa.Column("values", sa.LargeBinary, nullable=False),
        sa.Column("times", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("run_pk", "key_id", "first_seq", name="pk_metric_chunks"),
    )
    op.create_table(
        "summaries",
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("last", sa.Float),
        sa.Column("last_step", sa.BigInteger),
        sa.Column("min", sa.Float),
        sa.Column("max", sa.Float),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("nonfinite", sa.BigInteger, nullable=False),
        sa.Column("override", sa.Text),
        sa.PrimaryKeyConstraint("run_pk", "key_id", name="pk_summaries"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("is_reference", sa.Boolean, nullable=False),
        sa.Column("step", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
    )
    op.create_index("ix_artifacts_run_pk", "artifacts", ["run_pk"])


def downgrade() -> None:
    for table in ("artifacts", "summaries", "metric_chunks", "metric_keys", "runs", "variants", "experiments"):
        op.drop_table(table)
