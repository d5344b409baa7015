"""The lab notebook: an Obsidian vault written from the store, human edits read back, old notebooks imported.

    from labfolio.notebook import write_vault, sync_vault, import_notes

    report = write_vault(store)                  # notebook/ at the project root; syncs edits first
    sync_vault(store, "notebook")                # only read human edits back into the store
    imported = import_notes(store, "old-notes/") # hand-written notebooks in the four shapes
    check_vault(store, "notebook").ok            # is the vault what a fresh render writes?

See NOTEBOOK_FORMAT.md for the four shapes: the chronological experiment log, one note per
experiment, the master experiment log and the hyperparameter-study page.
"""

from __future__ import annotations

from .check import VaultCheck, check_vault
from .importer import ImportReport, import_notes
from .render import VaultReport, default_vault_dir, write_vault
from .sync import SyncReport, sync_vault

__all__ = ["write_vault", "sync_vault", "import_notes", "check_vault", "VaultReport", "SyncReport", "ImportReport",
           "VaultCheck", "default_vault_dir"]
