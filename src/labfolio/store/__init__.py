"""The store: one interface over SQLite (embedded default) and PostgreSQL.

``open_store()`` opens (and if needed creates or migrates) a store and recovers what dead
processes left in their journals, so every read sees every point that was ever logged.
"""

from __future__ import annotations

import os

from ..settings import StoreLocation, resolve_store
from .batch import Batch, BatchResult
from .records import AlertRecord, ArtifactRecord, MetricHistory, RunRecord, SummaryEntry
from .sql import RUN_STATES, SQLStore

__all__ = ["open_store", "Store", "Batch", "BatchResult", "RunRecord", "SummaryEntry",
           "MetricHistory", "AlertRecord", "ArtifactRecord", "RUN_STATES"]

Store = SQLStore


def open_store(store: str | os.PathLike | StoreLocation | None = None, *, recover: bool = True) -> SQLStore:
    """Open the store at ``store`` (a folder, a ``.db`` file or a database URL; default: the
    project's ``.labfolio/``; a team server's http:// URL gives an ``HTTPStore``). With
    ``recover``, journals of processes that died are drained into it first and their runs marked
    crashed."""
    location = store if isinstance(store, StoreLocation) else resolve_store(store)
    if location.is_http:
        from .http import HTTPStore

        opened = HTTPStore(location)
    else:
        opened = SQLStore(location)
    if recover:
        from ..drain import sync_journals

        sync_journals(opened, location, include_offline=False)
    return opened
