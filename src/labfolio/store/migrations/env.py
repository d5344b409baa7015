"""Alembic environment for labfolio's store.

labfolio runs migrations itself when a store is opened (see ``labfolio.store.migrate``), handing
Alembic an open connection; there is no alembic.ini to find.
"""

from alembic import context

from labfolio.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable through the alembic CLI
    raise RuntimeError("labfolio migrations run through labfolio.store.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
