"""Writing the notes of one vault write, in a second process when there are many.

A cold write of a large store creates thousands of files and folders. That is kernel time the
rendering thread cannot overlap with a thread of its own (both would need the GIL around every
system call), so past ``PROCESS_THRESHOLD`` notes the files go to one worker process, in batches,
while this process renders the next experiments on the other core. A small write (a few notes, as
after one new run) never pays for starting the process. Between batches the worker can run other
work (``submit``): a large cold write has it render experiments ahead of this process (ahead.py).

Each file is still written by ``write_if_changed`` (temporary file, then rename), so an error or a
killed worker leaves no half-written note; an error is raised in the caller with the note's path,
and the batches of a worker that could not start or died are written here instead. A process
with other threads never forks a worker (see ``_start_pool``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .state import write_if_changed

__all__ = ["NoteWriter", "PROCESS_THRESHOLD", "BATCH"]

# Below this many notes to write, starting a process (~10-50 ms with fork, more with spawn) would
# cost more than the file creation it takes off this core.
PROCESS_THRESHOLD = 300
# Notes per hand-over: large enough that the executor's per-task cost is small (a future, a pickle
# and a pipe write, done by the executor's threads, which take the GIL from the renderer: ~4 ms a
# hand-over on a 10,000-run write), small enough that the last batch, written after rendering, is
# short.
BATCH = 200

# (path, data, the stat the caller took of the path or None)
Item = tuple[str, "bytes | str", "os.stat_result | None"]

_worker_folders: set[str] = set()  # the folders the worker made during this write


def _reset_worker() -> None:
    _worker_folders.clear()


def _write_all(items: list[Item], folders: set[str]) -> list[bool]:
    """Whether each item was written (False: the file already held exactly that)."""
    written = []
    for path, data, info in items:
        try:
            written.append(write_if_changed(path, data, info=info, folders=folders))
        except Exception as error:
            # the errno's own filename may be a folder or the temporary file: name the note
            error.add_note(f"labfolio: while writing {path}")
            raise
    return written


def _write_in_worker(items: list[Item]) -> list[bool]:
    return _write_all(items, _worker_folders)


def _context():
    # fork starts the worker without importing anything again; elsewhere (macOS, Windows) fork is
    # unsafe or missing, and the platform's default start method is used
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _start_pool() -> ProcessPoolExecutor | None:
    """The worker, or None where one must not be started: then every note is written here."""
    if sys.platform.startswith("linux") and threading.active_count() > 1:
        # a fork copies other threads' held locks into a child that has no thread to release
        # them (a dashboard's server threads, a run's background writer): write in-process
        return None
    try:
        return ProcessPoolExecutor(max_workers=1, mp_context=_context(), initializer=_reset_worker)
    except (OSError, ValueError, NotImplementedError):
        return None  # no processes here (a sandbox, a platform without them): write in-process


class NoteWriter:
    """Collects the notes to write and writes them, in this process or in one worker.

        with NoteWriter() as writer:
            writer.add(relpath, path, content, info)   # as notes are rendered
            results = writer.finish()                  # [(relpath, written)] in the order added

    Leaving the block without ``finish`` (an error while rendering) waits for the batches already
    handed over and drops the rest."""

    def __init__(self, threshold: int | None = None, batch: int | None = None) -> None:
        self.threshold = PROCESS_THRESHOLD if threshold is None else threshold
        self.batch = BATCH if batch is None else batch
        self.used_process = False
        self._pending: list[Item] = []
        self._pending_relpaths: list[str] = []
        self._handed: list[tuple[list[str], list[Item], Future | None]] = []
        self._pool: ProcessPoolExecutor | None = None
        self._in_process_only = False  # set when the worker cannot be started or has died

    def __enter__(self) -> NoteWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, relpath: str, path: str | os.PathLike, data: bytes | str, info: os.stat_result | None) -> None:
        self._pending.append((os.fspath(path), data, info))
        self._pending_relpaths.append(relpath)
        if self._pool is None and not self._in_process_only and len(self._pending) >= self.threshold:
            self._pool = _start_pool()
            self._in_process_only = self._pool is None
            self.used_process = self._pool is not None
        if self._pool is not None and len(self._pending) >= self.batch:
            self._hand_over()

    def start_worker(self) -> bool:
        """Start the worker now instead of at the threshold, for a write known to be large
        (see ``submit``); whether there is one."""
        if self._pool is None and not self._in_process_only:
            self._pool = _start_pool()
            self._in_process_only = self._pool is None
            self.used_process = self._pool is not None
        return self._pool is not None

    @property
    def forks(self) -> bool:
        """Whether a worker is a fork of this process (it then has this process's data)."""
        return _context().get_start_method() == "fork"

    @property
    def busy(self) -> bool:
        """Whether the worker has batches of notes it has not written yet (it takes its work in
        the order handed over, so the last batch tells)."""
        if not self._handed:
            return False
        future = self._handed[-1][2]
        return future is not None and not future.done()

    def submit(self, function, *args) -> Future | None:
        """function(*args) in the worker, in turn with the batches of notes; None without a
        worker. A failure is the future's: the caller does the work itself then."""
        if self._pool is None:
            return None
        try:
            return self._pool.submit(function, *args)
        except (BrokenProcessPool, OSError, RuntimeError):
            return None

    def _hand_over(self) -> None:
        if self._pending:
            try:
                future = self._pool.submit(_write_in_worker, self._pending)
            except (BrokenProcessPool, OSError, RuntimeError):
                future = None  # the worker could not start or died: finish() writes these here
            self._handed.append((self._pending_relpaths, self._pending, future))
            self._pending, self._pending_relpaths = [], []

    def finish(self) -> list[tuple[str, bool]]:
        """Every note added, written: (relpath, whether it was written). Raises the first error."""
        if self._pool is None:
            written = _write_all(self._pending, set())
            results = list(zip(self._pending_relpaths, written))
            self._pending, self._pending_relpaths = [], []
            return results
        self._hand_over()
        results = []
        local_folders: set[str] = set()
        try:
            for relpaths, items, future in self._handed:
                try:
                    written = future.result() if future is not None else None
                except BrokenProcessPool:
                    written = None  # killed worker: files are whole or absent, so writing again is safe
                if written is None:
                    written = _write_all(items, local_folders)
                results += zip(relpaths, written)
        finally:
            self.close()
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending, self._pending_relpaths, self._handed = [], [], []
