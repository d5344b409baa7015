"""The lab notebook: an Obsidian vault written from the store, human edits read back, old notebooks imported.

    from labfolio.notebook import write_vault, sync_vault, import_notes

    report = write_vault(store)                  # notebook/ at the project root; syncs edits first
    sync_vault(store, "notebook")                # only read human edits back into the store
    imported = import_notes(store, "old-notes/") # hand-written notebooks in the four shapes

See NOTEBOOK_FORMAT.md for the four shapes: the chronological experiment log, one note per
experiment, the master experiment log and the hyperparameter-study page.
"""

from __future__ import annotations

from .importer import ImportReport, import_notes
from .render import VaultReport, default_vault_dir, write_vault
from .sync import SyncReport, sync_vault

__all__ = ["write_vault", "sync_vault", "import_notes", "VaultReport", "SyncReport", "ImportReport",
           "default_vault_dir"]
