"""Is a vault what ``labfolio notes`` would write now? A read-only comparison with a fresh render.

A published notebook (a vault committed next to a paper or a repo) claims that every number in it
comes from a store. `check_vault` renders the store into a temporary folder, without reading the
vault's edits back and without touching the vault or the store, and compares the two trees file
by file (the vault's ``.labfolio/`` cache aside). A note that differs is either stale (the store
gained runs), edited by hand where labfolio writes (it would be overwritten), or holds human
edits not yet read back into the store (``labfolio notes`` would read them first): the diff says
which.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .state import STATE_DIR

__all__ = ["VaultCheck", "check_vault"]

_DIFFS_SHOWN = 3  # notes whose diff the report prints; the rest are only named
_DIFF_LINES = 40  # lines of one note's diff


@dataclass
class VaultCheck:
    """What `check_vault` found."""

    vault: Path
    matched: int = 0  # files identical to the fresh render
    differing: list[str] = field(default_factory=list)  # vault-relative paths, in both but not equal
    missing: list[str] = field(default_factory=list)  # a fresh render writes them; the vault lacks them
    extra: list[str] = field(default_factory=list)  # in the vault only (files of your own are fine)
    diffs: dict[str, str] = field(default_factory=dict)  # a unified diff of the first differing notes

    @property
    def ok(self) -> bool:
        return not self.differing and not self.missing

    def format(self) -> str:
        if self.ok:
            text = f"{self.vault} matches a fresh render of the store ({self.matched} files)."
            if self.extra:
                text += f" {len(self.extra)} file(s) of the vault are not labfolio's: " + ", ".join(self.extra[:5])
                text += " ..." if len(self.extra) > 5 else ""
            return text
        lines = [f"{self.vault} differs from a fresh render of the store: {len(self.differing)} file(s) differ, "
                 f"{len(self.missing)} missing, {self.matched} identical."]
        lines += [f"  differs: {path}" for path in self.differing]
        lines += [f"  missing: {path}" for path in self.missing]
        for path, diff in self.diffs.items():
            lines += ["", diff.rstrip("\n")]
        lines += ["", "`labfolio notes` rewrites the generated sections and reads human edits back into the store "
                      "first; run it, then check again."]
        return "\n".join(lines)


def _tree(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not (Path(directory) == folder and d == STATE_DIR))
        for name in names:
            path = Path(directory) / name
            files[path.relative_to(folder).as_posix()] = path
    return files


def _note_diff(relpath: str, vault_file: Path, fresh_file: Path) -> str | None:
    if not relpath.endswith(".md"):
        return None
    try:
        vault_text = vault_file.read_text(encoding="utf-8").splitlines(keepends=True)
        fresh_text = fresh_file.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None
    diff = list(difflib.unified_diff(vault_text, fresh_text, f"vault/{relpath}", f"fresh render/{relpath}", n=1))
    if len(diff) > _DIFF_LINES:
        diff = diff[:_DIFF_LINES] + [f"... {len(diff) - _DIFF_LINES} more diff lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff)


def check_vault(store, vault: str | os.PathLike, *, base_url: str | None = None,
                root: str | os.PathLike | None = None) -> VaultCheck:
    """Compare `vault` with a fresh render of `store` (plots included); neither is changed."""
    from .render import write_vault

    vault = Path(vault)
    report = VaultCheck(vault=vault)
    if not vault.is_dir():
        from ..errors import ConfigError

        raise ConfigError(f"no vault at {vault}: give the notebook's folder with --out "
                          "(labfolio notes writes one there)")
    with tempfile.TemporaryDirectory(prefix="labfolio-check-") as scratch:
        fresh = Path(scratch) / vault.name
        write_vault(store, fresh, sync=False, plots=True, base_url=base_url, root=root)
        fresh_files, vault_files = _tree(fresh), _tree(vault)
        for relpath in sorted(fresh_files):
            if relpath not in vault_files:
                report.missing.append(relpath)
            elif fresh_files[relpath].read_bytes() == vault_files[relpath].read_bytes():
                report.matched += 1
            else:
                report.differing.append(relpath)
                if len(report.diffs) < _DIFFS_SHOWN:
                    diff = _note_diff(relpath, vault_files[relpath], fresh_files[relpath])
                    if diff:
                        report.diffs[relpath] = diff
        report.extra = sorted(set(vault_files) - set(fresh_files))
    return report
