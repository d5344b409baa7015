"""A consistent copy of a SQLite store that may be in use: what ``labfolio snapshot`` runs.

Why not ``cp -r`` or ``tar``: in WAL mode SQLite keeps recent commits in ``labfolio.db-wal`` and
checkpoints them into ``labfolio.db`` while runs write, so a file copy catches the two files at
different moments and can be a malformed database (index pages from one moment, table pages from
another). SQLite's online backup API instead copies the database as of one read transaction,
while writers carry on; the source is opened read-only, so the snapshot never writes to it.

The order of the copy matters, because a live run's drainer moves points from its journal into
the database and then deletes the drained journal segments:

1. ``journal/`` first. A point is then in the copied journal, in the copied database, or in both
   (recovery reads a journal from the position the database remembers, so none is written
   twice), never in neither.
2. the database, then its ``PRAGMA integrity_check``. (Opening it read-only may still create the
   empty ``-wal``/``-shm`` files beside a database no one has open, as any SQLite reader does.)
3. ``artifacts/`` and ``runner/`` last. An artifact file is in place before its journal event is
   written, so every artifact the copied database names is already there when they are copied.

What a snapshot holds: ``labfolio.db`` (one self-contained file, whatever the source file was
called), ``journal/``, ``artifacts/``, ``runner/`` and ``checkpoints/`` (resumable runs' state, unless
left out). Lock files, the WAL and its index, and any
other files in the store's folder are left out. A run still being written appears in the copy as it
was at the snapshot; the first ``open_store`` of the copy drains its journal and marks it crashed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import tarfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import ConfigError, JournalError, StoreError
from .journal import JournalReader, copy_journal, list_journals
from .settings import SQLITE_FILENAME, StoreLocation

__all__ = ["snapshot_store", "SnapshotReport", "ARCHIVE_MODES", "format_bytes"]

# OUT's suffix → tarfile's write mode. Any other OUT is a folder.
ARCHIVE_MODES = {".tar.xz": "w:xz", ".tar.gz": "w:gz", ".tar": "w"}
# Compression effort: on a store's database xz -3 is 5× faster than tarfile's default -6 for 10%
# more bytes, and gzip -6 6× faster than tarfile's -9 for 3% more; a snapshot is taken to be moved.
_COMPRESSION = {".tar.xz": {"preset": 3}, ".tar.gz": {"compresslevel": 6}, ".tar": {}}
_CHECK_BATCH_POINTS = 250_000  # journal points decoded at a time while checking a copy
_BUSY_TIMEOUT_S = 60.0  # the backup waits this long for a writer that holds an exclusive lock


@dataclass
class SnapshotReport:
    source: str  # the store, as messages name it
    out: Path
    runs: int
    running: list[str]  # runs still being written when the database was copied
    journals: int  # run journals copied (points not yet in the database)
    artifacts: int  # artifact files copied
    size_bytes: int  # size of what was written: the archive, or the folder's files
    seconds: float
    warnings: list[str] = field(default_factory=list)
    checkpoints_left_out: int = 0  # checkpoint files not copied (snapshot_store(checkpoints=False))
    chunks_merged: int = 0  # metric chunk rows merged away (snapshot_store(compact=True))


def _source_database(location: StoreLocation) -> Path:
    if location.is_http:
        raise ConfigError(f"{location.describe()} is a team server: labfolio snapshot copies SQLite stores; "
                          "run it on the server's machine against the store it serves")
    if not location.is_sqlite:
        raise ConfigError(f"{location.describe()} is a PostgreSQL store: labfolio snapshot copies SQLite stores; "
                          "for PostgreSQL use pg_dump (e.g. pg_dump -Fc DBNAME > store.dump)")
    database = location.sqlite_database
    if not database or database == ":memory:":
        raise ConfigError(f"{location.describe()} is an in-memory database: there is nothing on disk to copy")
    path = Path(database)
    if not location.home.is_dir():
        raise StoreError(f"no store at {location.home}: the folder does not exist (pass --store with the "
                         "store's folder or .db file)")
    if not path.is_file():
        raise StoreError(f"{location.home} holds no {path.name}: it is not a labfolio store (pass --store with "
                         "the store's folder or .db file)")
    return path


def _archive_suffix(out: Path) -> str | None:
    name = out.name.lower()
    for suffix in ARCHIVE_MODES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _check_out(out: Path, home: Path, suffix: str | None) -> None:
    resolved = out.resolve()
    if resolved == home or home in resolved.parents:
        raise ConfigError(f"{out} is inside the store folder {home}: write the snapshot somewhere else")
    if suffix is not None:
        if out.exists() or out.is_symlink():
            raise ConfigError(f"{out} already exists: remove it first or choose another name")
    elif out.is_dir():
        if any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not empty: choose a new folder (or an archive name "
                              "ending in .tar.xz, .tar.gz or .tar), or empty it first")
    elif out.exists() or out.is_symlink():
        raise ConfigError(f"{out} exists and is not a folder: choose a new folder name, or an archive name "
                          "ending in .tar.xz, .tar.gz or .tar")


def _partial_name(out: Path) -> Path:
    # Next to OUT, so the final rename stays on one filesystem; hidden, and named after OUT so a
    # leftover from a killed snapshot says what it was.
    return out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"


def _walk(folder: Path) -> Iterator[tuple[Path, str, bool]]:
    """(path, path relative to ``folder``, is a folder) in a stable order, folders first."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        base = Path(root)
        if base != folder:
            yield base, base.relative_to(folder).as_posix(), True
        for name in sorted(files):
            if name.startswith(".incoming-") or name.endswith(".partial"):
                continue  # an artifact or a checkpoint still being written under a temporary name
            yield base / name, (base / name).relative_to(folder).as_posix(), False


def _copy_journals(source: Path, target: Path) -> int:
    """Copy every run journal as it is now; returns how many runs had one."""
    return sum(copy_journal(folder, target / folder.name) > 0 for folder in list_journals(source))


def _backup_database(source: Path, target: Path) -> None:
    try:
        with closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=_BUSY_TIMEOUT_S)) as src, \
                closing(sqlite3.connect(target)) as dst:
            # One step (pages=-1): a backup in steps restarts whenever another process writes
            # between them, and so may never finish under a busy training run.
            src.backup(dst)
            # Rollback-journal mode: the copy is one file that any SQLite opens, even read-only;
            # labfolio switches it back to WAL when it opens the copy to write.
            dst.execute("PRAGMA journal_mode=DELETE").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"could not copy the database {source}: {exc}") from exc


def _check_database(copy: Path, source: Path) -> tuple[int, list[str]]:
    """``PRAGMA integrity_check`` on the copy; returns (runs, ids of runs still running)."""
    with closing(sqlite3.connect(copy)) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise StoreError(f"the copied database failed its integrity check ({'; '.join(problems[:3])}); "
                             f"no snapshot was written. The source may itself be damaged: check it with "
                             f"sqlite3 {source} 'PRAGMA integrity_check'")
        try:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            running = [row[0] for row in conn.execute(
                "SELECT run_id FROM runs WHERE state = 'running' ORDER BY run_id")]
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{source} is not a labfolio store ({exc})") from exc
    return runs, running


def _checkpoints_of(database: Path, checkpoint_dir: Path) -> list[Path]:
    """The checkpoint files (``<run id>.pt``) of the runs in `database`."""
    with closing(sqlite3.connect(database)) as conn:
        run_ids = [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
    return [path for path in (checkpoint_dir / f"{run_id}.pt" for run_id in run_ids) if path.is_file()]


def _check_journals(journal_dir: Path, database: Path) -> list[str]:
    """Read each copied journal from where the copied database stops, as recovery will."""
    warnings = []
    with closing(sqlite3.connect(database)) as conn:
        for folder in list_journals(journal_dir):
            row = conn.execute("SELECT journal_pos FROM runs WHERE run_id = ?", (folder.name,)).fetchone()
            reader = JournalReader(folder)
            try:
                pos = (row[0] if row else 0) or reader.first_position()
                while True:
                    records = reader.read(pos, max_points=_CHECK_BATCH_POINTS)
                    if records.end == pos:
                        break
                    pos = records.end
            except JournalError as exc:
                warnings.append(f"the journal of run {folder.name} is unreadable past the copied database "
                                f"({exc}); the copy has that run's points up to the database's")
            finally:
                reader.close()
    return warnings


def _copy_folder(source: Path, target: Path) -> int:
    """Copy ``source`` into ``target``; returns the files copied. Files that vanish are skipped."""
    files = 0
    for path, relative, is_dir in _walk(source):
        destination = target / relative
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, destination)
        except FileNotFoundError:
            continue
        files += 1
    return files


def _write_archive(stage: Path, artifact_dir: Path, archive: Path, out: Path, suffix: str) -> int:
    """Tar the staged files, then the artifacts straight from the store (they never change once
    written, so they need no staging). Returns the artifact files added."""
    added = 0
    top = out.name[:-len(suffix)]
    # name= is only what gzip records as the original file name; the bytes go to the partial file.
    with open(archive, "xb") as raw, tarfile.open(name=out, fileobj=raw, mode=ARCHIVE_MODES[suffix],
                                                     **_COMPRESSION[suffix]) as tar:
        tar.add(stage, arcname=top)
        if artifact_dir.is_dir():
            tar.add(artifact_dir, arcname=f"{top}/artifacts", recursive=False)
            for path, relative, is_dir in _walk(artifact_dir):
                try:
                    tar.add(path, arcname=f"{top}/artifacts/{relative}", recursive=False)
                except FileNotFoundError:
                    continue
                added += not is_dir
    return added


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path, _, is_dir in _walk(folder) if not is_dir)


def _compact_copy(stage: Path) -> int:
    """Merge every run's small metric chunks in the copied database, then shrink the file; returns
    the rows merged away. The copy's reads return the same points (see ``store/compact.py``)."""
    from .store import open_store

    store = open_store(str(stage), recover=False)  # the copy's journals are replayed when it is opened for use
    try:
        merged = sum(store.compact_points(run.run_id) for run in store.list_runs(with_summary=False))
    finally:
        store.close()
    database = stage / SQLITE_FILENAME
    try:
        with closing(sqlite3.connect(database)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()  # one self-contained file again
            conn.execute("VACUUM")
    except sqlite3.Error as exc:
        raise StoreError(f"could not shrink the copied database {database}: {exc}") from exc
    for leftover in ("-wal", "-shm"):
        Path(f"{database}{leftover}").unlink(missing_ok=True)
    return merged


def snapshot_store(location: StoreLocation, out: str | os.PathLike,
                   progress: Callable[[str], None] | None = None, checkpoints: bool = True,
                   compact: bool = False) -> SnapshotReport:
    """Copy the SQLite store at ``location`` to ``out``, consistently, while it may be in use.

    ``out`` ending in ``.tar.xz``, ``.tar.gz`` or ``.tar`` is one archive whose top folder is
    ``out``'s name without the suffix; anything else is a new (or empty) folder. Nothing appears
    under ``out`` until the copy is complete and its database has passed ``integrity_check``.
    ``progress(message)`` hears what is being copied. ``checkpoints=False`` leaves ``checkpoints/``
    out: a resumable run's checkpoint is its model and optimizer state, often far larger than
    everything else, and a copy made to read results (the notebook) does not need it.
    ``compact=True`` merges the copy's small metric chunks (a live run leaves one per key and
    drain) and shrinks its file: the same points, often several times smaller.
    """
    started = time.monotonic()
    say = progress or (lambda message: None)
    out = Path(out).expanduser()
    source = _source_database(location)
    home = location.home.resolve()
    suffix = _archive_suffix(out)
    _check_out(out, home, suffix)
    stage = _partial_name(out)
    archive = _partial_name(out) if suffix is not None else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
        say("Copying journals…")
        journals = _copy_journals(location.journal_dir, stage / "journal")
        say(f"Copying the database ({format_bytes(source.stat().st_size)})…")
        _backup_database(source, stage / SQLITE_FILENAME)
        say("Checking the copied database…")
        runs, running = _check_database(stage / SQLITE_FILENAME, source)
        warnings = _check_journals(stage / "journal", stage / SQLITE_FILENAME)
        merged = 0
        if compact:
            say("Merging small metric chunks…")
            merged = _compact_copy(stage)
        say("Copying runner logs and checkpoints…" if checkpoints else "Copying runner logs…")
        if (location.home / "runner").is_dir():
            _copy_folder(location.home / "runner", stage / "runner")
        left_out = 0
        if location.checkpoint_dir.is_dir():  # what killed runs need to resume (renamed into place whole)
            # only this store's runs' checkpoints: a shared LABFOLIO_CHECKPOINT_DIR holds other stores' too
            ours = _checkpoints_of(stage / SQLITE_FILENAME, location.checkpoint_dir)
            if not checkpoints:
                left_out = len(ours)
            elif ours:
                (stage / "checkpoints").mkdir()
                for path in ours:
                    with contextlib.suppress(FileNotFoundError):  # resumed and finished meanwhile
                        shutil.copy2(path, stage / "checkpoints" / path.name)
        if archive is None:
            say("Copying artifacts…")
            artifacts = _copy_folder(location.artifact_dir, stage / "artifacts") \
                if location.artifact_dir.is_dir() else 0
            size = _folder_bytes(stage)
            os.replace(stage, out)  # also onto an empty folder: POSIX rename replaces one
        else:
            say(f"Writing {out.name}…")
            artifacts = _write_archive(stage, location.artifact_dir, archive, out, suffix)
            os.replace(archive, out)
            size = out.stat().st_size
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if archive is not None:
            archive.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"could not write the snapshot {out}: {exc}") from exc
        raise
    return SnapshotReport(source=location.describe(), out=out, runs=runs, running=running, journals=journals,
                          artifacts=artifacts, size_bytes=size, seconds=time.monotonic() - started,
                          warnings=warnings, checkpoints_left_out=left_out, chunks_merged=merged)


def format_bytes(size: float) -> str:
    """A size for people: 18.2 MB."""
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("kB", "MB"):
        size /= 1000
        if size < 999.95:  # what would print as 1000.0 is the next unit's 1.0
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"
