"""Alerts raised on runs, and human note fields that round-trip with the notebook.

Revision ID: 0002_alerts_and_notes
Revises: 0001_initial
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_alerts_and_notes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(256)),
        sa.Column("step", sa.BigInteger),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_alerts_run_pk", "alerts", ["run_pk"])
    op.create_table(
        "note_fields",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(700), nullable=False),
        sa.Column("field", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("scope", "owner", "field", name="uq_note_fields"),
    )


def downgrade() -> None:
    op.drop_table("note_fields")
    op.drop_table("alerts")
