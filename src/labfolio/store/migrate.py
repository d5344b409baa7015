"""Versioned schema migrations, applied when a store is opened.

Alembic does the work; labfolio drives it in-process with an open connection, under a lock so that
many processes opening a fresh store at once create it exactly once.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

from ..errors import SchemaTooNewError, StoreError

__all__ = ["HEAD_REVISION", "KNOWN_REVISIONS", "current_revision", "ensure_schema"]

KNOWN_REVISIONS = ("0001_initial", "0002_alerts_and_notes", "0003_api_tokens", "0004_metric_envelopes")
HEAD_REVISION = KNOWN_REVISIONS[-1]
_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_ID = 0x6C6162666F6C  # "labfol": an arbitrary, fixed advisory-lock key


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _migration_lock(engine: Engine):
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_ID})
                conn.commit()


def _check_known(revision: str | None, where: str) -> None:
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise SchemaTooNewError(
            f"the store at {where} has schema revision {revision!r}, which this labfolio does not "
            f"know (newest known: {HEAD_REVISION!r}); it was written by a newer labfolio: upgrade "
            "with `pip install -U labfolio`"
        )


def ensure_schema(engine: Engine, *, where: str, target: str = HEAD_REVISION) -> str | None:
    """Bring the store up to ``target``; returns the revision found before (None for a new store)."""
    found = current_revision(engine)
    _check_known(found, where)
    if found == target:
        return found
    with _migration_lock(engine):
        found = current_revision(engine)  # another process may have migrated while we waited
        _check_known(found, where)
        if found != target:
            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            try:
                with engine.begin() as conn:
                    config.attributes["connection"] = conn
                    command.upgrade(config, target)
            except Exception as exc:  # surface as a store error with the place named
                raise StoreError(f"could not migrate the store at {where} to {target}: {exc}") from exc
    return found
