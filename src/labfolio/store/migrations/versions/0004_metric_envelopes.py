"""Metric chunk envelopes, so full-range charts read ~1/15 of the points (see store/envelope.py).

Existing chunks get their envelopes here, page by page in primary-key order, so an old store is
as fast to chart as a new one the moment it is opened.

Revision ID: 0004_metric_envelopes
Revises: 0003_api_tokens
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_metric_envelopes"
down_revision = "0003_api_tokens"
branch_labels = None
depends_on = None

_PAGE = 256  # chunks per read: a page of 25k-point chunks is ~150 MB of blobs at most


def upgrade() -> None:
    from labfolio.store.envelope import envelope_rows

    envelopes = op.create_table(
        "metric_envelopes",
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("steps", sa.LargeBinary, nullable=False),
        sa.Column("values", sa.LargeBinary, nullable=False),
        sa.Column("times", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("run_pk", "key_id", "first_seq", name="pk_metric_envelopes"),
    )
    chunks = sa.table("metric_chunks", *(sa.column(c) for c in (
        "run_pk", "key_id", "first_seq", "first_step", "last_step", "steps", "values", "times")))
    conn = op.get_bind()
    after = None
    while True:
        query = (sa.select(chunks).order_by(chunks.c.run_pk, chunks.c.key_id, chunks.c.first_seq)
                 .limit(_PAGE))
        if after is not None:
            query = query.where(sa.tuple_(chunks.c.run_pk, chunks.c.key_id, chunks.c.first_seq) > sa.tuple_(*after))
        page = [dict(r._mapping) for r in conn.execute(query)]
        if not page:
            break
        conn.execute(sa.insert(envelopes), envelope_rows(page))
        last = page[-1]
        after = (last["run_pk"], last["key_id"], last["first_seq"])


def downgrade() -> None:
    op.drop_table("metric_envelopes")
