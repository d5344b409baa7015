"""Moving journals into the store: the live background drainer, recovery and ``labfolio sync``.

One function, ``drain_step``, turns "records after the store's position" into one batch. The
live drainer calls it every fraction of a second; recovery and sync call it until the journal is
empty. Because the store applies a batch only when its remembered position still matches, a
journal drained twice (say by a live run and a concurrent ``sync``) is still written once.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import LabfolioError
from .journal import JournalReader, list_journals, remove_journal
from .settings import StoreLocation, fallback_journal_dir
from .store.batch import Batch

__all__ = ["drain_step", "BackgroundDrainer", "SyncReport", "sync_journals", "DRAIN_INTERVAL_S"]

DRAIN_INTERVAL_S = 0.25  # how stale the store may be behind the journal while training
HEARTBEAT_EVERY_S = 15.0  # an idle run still proves it is alive this often
MAX_BATCH_POINTS = 250_000
STALE_AFTER_S = float(os.environ.get("LABFOLIO_STALE_AFTER", 15 * 60))


def _start_of(reader: JournalReader, pos: int | None) -> int:
    return reader.first_position() if not pos else pos


def drain_step(store, reader: JournalReader, run_id: str, pos: int | None, *,
               heartbeat: float | None = None, extra_events: list[dict] | None = None,
               inspect: Callable | None = None) -> tuple[int, int, bool]:
    """Write the next batch of ``run_id``'s journal from ``pos``.

    Returns ``(points_written, new_position, more_left)``. ``inspect(records)`` sees the decoded
    records before they are written (live alerts use it) and may return extra events.
    """
    start = _start_of(reader, pos)
    records = reader.read(start, max_points=MAX_BATCH_POINTS)
    events = list(records.events)
    if inspect is not None and records:
        inspected = inspect(records) or []
        if extra_events is not None:
            # The caller re-queues `extra_events` when the write fails; inspection reports each
            # alert once, so its events must ride along with them or a failed write loses them.
            extra_events.extend(inspected)
        else:
            events.extend(inspected)
    if extra_events:
        events.extend(extra_events)
    if not events and not records.point_count and heartbeat is None:
        return 0, start, False
    batch = Batch(run_id=run_id, events=events, key_names=records.key_names, codes=records.codes,
                  steps=records.steps, values=records.values, times=records.times, seqs=records.seqs,
                  journal_from=pos or 0, journal_to=records.end, heartbeat=heartbeat)
    result = store.write_batch(batch)
    if not result.applied:
        # Someone else drained past us; continue from where the store says we are.
        return 0, result.journal_pos or 0, True
    reader.delete_segments_before(records.end)
    return result.points, records.end, records.point_count >= MAX_BATCH_POINTS


class BackgroundDrainer(threading.Thread):
    """The run's background writer: journal → store, every ``DRAIN_INTERVAL_S``.

    Store failures never reach the training loop: the first one prints one warning that says
    where the data is safe and how to push it later; the drainer keeps retrying with backoff.
    """

    def __init__(self, run_id: str, folder: Path, open_store: Callable[[], object] | None,
                 inspect: Callable | None = None, before_read: Callable[[], None] | None = None,
                 memory_segments: dict | None = None):
        super().__init__(name=f"labfolio-drain-{run_id}", daemon=True)
        self.run_id = run_id
        self.reader = JournalReader(folder, memory_segments)
        self._open_store = open_store  # None: offline mode, records are inspected but not written
        self._inspect = inspect
        self._before_read = before_read
        self._store = None
        self._pos: int | None = None
        self._offline_pos: int | None = None
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending_events: list[dict] = []
        self._cycle_done = threading.Condition()
        self._cycles_started = 0
        self._cycles_completed = 0
        self._last_cycle_ok = True
        self.failures = 0
        self.last_error: str | None = None
        self.warned = False
        self.points_written = 0
        self._last_heartbeat = 0.0

    # -- public -------------------------------------------------------------------------------
    def add_events(self, events: list[dict]) -> None:
        """Events that must reach the store but were not journaled (none in the hot path)."""
        with self._lock:
            self._pending_events.extend(events)

    def flush(self, timeout: float = 30.0) -> bool:
        """Drain everything written so far; True when the store has it all.

        While the thread runs, the work happens there (so reading GPU values never happens in
        the caller's thread); once it has stopped, here."""
        if self.is_alive():
            with self._cycle_done:
                ticket = self._cycles_started + 1
                self._wake.set()
                ok = self._cycle_done.wait_for(
                    lambda: self._cycles_completed >= ticket or not self.is_alive(), timeout)
                return ok and self._last_cycle_ok
        deadline = time.monotonic() + timeout
        while True:
            done = self._cycle(force_heartbeat=False)
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the thread and drain the rest. True when nothing is left in the journal."""
        self._stop_event.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5.0)
        if self.failures:
            # The store has been failing: one more try, not a long wait at the end of training.
            timeout = min(timeout, 2.0)
        return self.flush(timeout)

    def close(self) -> None:
        self.reader.close()
        if self._store is not None:
            self._store.close()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        backoff = DRAIN_INTERVAL_S
        while not self._stop_event.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            if self._stop_event.is_set():
                break
            with self._cycle_done:
                self._cycles_started += 1
            ok = self._cycle(force_heartbeat=True)
            with self._cycle_done:
                self._cycles_completed += 1
                self._last_cycle_ok = ok
                self._cycle_done.notify_all()
            backoff = DRAIN_INTERVAL_S if ok else min(30.0, max(1.0, backoff * 2))
        with self._cycle_done:
            self._cycle_done.notify_all()

    def _cycle(self, force_heartbeat: bool) -> bool:
        """One pass; serialised so the thread and ``flush`` from finish() never interleave."""
        with self._lock:
            try:
                if self._before_read is not None:
                    self._before_read()
                if self._open_store is None:
                    return self._inspect_offline()
                if self._store is None:
                    self._store = self._open_store()
                    self._pos = self._store.run_journal_position(self.run_id)
                now = time.time()
                heartbeat = now if force_heartbeat and now - self._last_heartbeat >= HEARTBEAT_EVERY_S else None
                while True:
                    events, self._pending_events = self._pending_events, []
                    try:
                        written, self._pos, more = drain_step(
                            self._store, self.reader, self.run_id, self._pos, heartbeat=heartbeat,
                            extra_events=events, inspect=self._inspect)
                    except BaseException:
                        self._pending_events = events + self._pending_events
                        raise
                    if heartbeat is not None:
                        self._last_heartbeat = heartbeat
                        heartbeat = None
                    self.points_written += written
                    if not more:
                        break
                if self.failures:
                    self._report_recovery()
                return True
            except Exception as exc:  # the training loop must never see a store failure
                self._record_failure(exc)
                return False

    def _inspect_offline(self) -> bool:
        start = _start_of(self.reader, self._offline_pos)
        records = self.reader.read(start, max_points=MAX_BATCH_POINTS)
        if records and self._inspect is not None:
            self._inspect(records)
        self._offline_pos = records.end
        return True

    def _report_recovery(self) -> None:
        print(f"labfolio: the store is reachable again; run {self.run_id} caught up "
              f"after {self.failures} failed attempt(s).", file=sys.stderr)
        self.failures = 0

    def _record_failure(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._store is not None and not isinstance(exc, LabfolioError):
            # An unexpected error may have left the connection unusable: reopen next time.
            try:
                self._store.close()
            finally:
                self._store = None
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"labfolio cannot write run {self.run_id} to the store ({self.last_error}). "
                f"Training continues: every point is safe in the journal at {self.reader.folder}. "
                "labfolio keeps retrying; if it still fails at the end, run `labfolio sync` once "
                "the store is back.",
                RuntimeWarning, stacklevel=2,
            )

    @property
    def remaining_position(self) -> int | None:
        return self._pos


@dataclass
class SyncReport:
    drained_runs: list[str]
    points: int
    crashed: list[str]
    skipped_live: list[str]
    failed: dict[str, str]


def _journal_store_url(reader: JournalReader) -> tuple[str | None, str | None, str]:
    """(store URL, run id, mode) from the journal's start event, if its first segment remains."""
    try:
        records = reader.read(reader.first_position(), max_points=1)
    except LabfolioError:
        return None, None, "online"
    for ev in records.events:
        if ev.get("type") == "start":
            return ev.get("store"), ev.get("run_id"), ev.get("mode", "online")
    return None, None, "online"


def sync_journals(store, location: StoreLocation, *, include_offline: bool = True,
                  only_run: str | None = None, progress: Callable[[str, int], None] | None = None,
                  mark_stale: bool = True) -> SyncReport:
    """Drain every orphaned journal that belongs to ``store``; mark dead runs crashed."""
    report = SyncReport([], 0, [], [], {})
    folders = [location.journal_dir]
    fallback = fallback_journal_dir()
    if fallback != location.journal_dir:
        folders.append(fallback)
    for folder in list_journals(*folders):
        run_id_from_dir = folder.name
        if only_run is not None and run_id_from_dir != only_run:
            continue
        lock_path = folder / "lock"
        with open(lock_path, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.skipped_live.append(run_id_from_dir)
                continue
            reader = JournalReader(folder)
            try:
                url, run_id, mode = _journal_store_url(reader)
                run_id = run_id or run_id_from_dir
                pos = store.run_journal_position(run_id)
                belongs = (folder.parent == location.journal_dir or url == location.url
                           or pos is not None)
                if not belongs or (mode == "offline" and not include_offline):
                    continue
                more = True
                while more:
                    written, pos, more = drain_step(store, reader, run_id, pos)
                    report.points += written
                    if progress is not None and written:
                        progress(run_id, written)
                if store.get_run(run_id).state == "running":
                    store.write_batch(Batch(run_id=run_id, events=[{
                        "type": "state", "state": "crashed",
                        "exit_reason": "the process ended without finishing the run (no heartbeat)",
                    }]))
                    report.crashed.append(run_id)
                report.drained_runs.append(run_id)
            except (LabfolioError, OSError) as exc:
                report.failed[run_id_from_dir] = str(exc)
                continue
            finally:
                reader.close()
            remove_journal(folder)
    if mark_stale and only_run is None:
        for run_id in store.stale_running_runs(STALE_AFTER_S):
            store.write_batch(Batch(run_id=run_id, events=[{
                "type": "state", "state": "crashed",
                "exit_reason": f"no heartbeat for more than {STALE_AFTER_S:.0f} s"}]))
            report.crashed.append(run_id)
    return report
