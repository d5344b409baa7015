"""The notes' writer: in a second process it writes exactly what this process writes, and an
error there reaches the caller with the note's path."""

from __future__ import annotations

import os

import pytest

from labfolio.notebook import write_vault, writer
from labfolio.notebook.writer import NoteWriter

from .conftest import read_vault

@pytest.fixture(autouse=True)
def single_threaded(monkeypatch):
    """These tests are about the worker, which starts only in a single-threaded process; a test
    session may have threads left by earlier tests, so the count is pinned here."""
    monkeypatch.setattr(writer.threading, "active_count", lambda: 1)


def _dying_worker(items):
    os._exit(1)  # the worker process dies mid-write, as under the OOM killer


NOTES = {f"experiments/e{i}/{name}": f"# {i} {name}\nnon-ascii é ✓\n" * (i + 1)
         for i in range(7) for name in ("experiment.md", "variants/a.md")}


def _write(folder, threshold):
    with NoteWriter(threshold=threshold, batch=3) as notes:
        for relpath, text in NOTES.items():
            path = folder / relpath
            notes.add(relpath, path, text, None if not path.exists() else os.stat(path))
        results = notes.finish()
        return results, notes.used_process


def test_process_writer_writes_what_this_process_writes(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    results_here, used_here = _write(here, threshold=10_000)
    results_there, used_there = _write(there, threshold=2)
    assert not used_here and used_there
    assert results_here == results_there == [(relpath, True) for relpath in NOTES]
    assert read_vault(here) == read_vault(there) == {k: v.encode() for k, v in NOTES.items()}
    # the same again: nothing rewritten, in either
    assert _write(here, threshold=10_000)[0] == _write(there, threshold=2)[0] == [(r, False) for r in NOTES]


def test_process_writer_error_names_the_note(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "e3").write_text("a file where a folder should be")
    with pytest.raises(OSError) as caught, NoteWriter(threshold=2, batch=3) as notes:
        for relpath, text in NOTES.items():
            notes.add(relpath, tmp_path / relpath, text, None)
        assert notes.used_process
        notes.finish()
    assert any(str(tmp_path / "experiments/e3/experiment.md") in note for note in caught.value.__notes__)
    # nothing half-written: every note there is whole, and no temporary file is left
    for path in tmp_path.rglob("*"):
        assert ".tmp-" not in path.name
        if path.is_file() and path.suffix == ".md":
            assert path.read_text() == NOTES[path.relative_to(tmp_path).as_posix()]


def test_vault_written_through_the_process_is_the_same(study_store, tmp_path, monkeypatch):
    in_process = write_vault(study_store, tmp_path / "a", plots=False, root=tmp_path)
    monkeypatch.setattr(writer, "PROCESS_THRESHOLD", 1)
    monkeypatch.setattr(writer, "BATCH", 2)
    used = []
    finish = NoteWriter.finish

    def recording_finish(self):
        used.append(self.used_process)
        return finish(self)

    monkeypatch.setattr(NoteWriter, "finish", recording_finish)
    through_process = write_vault(study_store, tmp_path / "b", plots=False, root=tmp_path)
    assert used == [True]
    assert through_process.written == in_process.written and through_process.unchanged == in_process.unchanged
    assert read_vault(tmp_path / "a") == read_vault(tmp_path / "b")


def test_a_process_with_other_threads_writes_its_notes_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(writer.threading, "active_count", lambda: 3)
    results, used = _write(tmp_path, threshold=2)
    assert not used  # forking would copy the other threads' held locks into the child
    assert results == [(relpath, True) for relpath in NOTES]
    assert read_vault(tmp_path) == {k: v.encode() for k, v in NOTES.items()}


def test_the_batches_of_a_worker_that_died_are_written_here(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_write_in_worker", _dying_worker)
    with NoteWriter(threshold=2, batch=3) as notes:
        for relpath, text in NOTES.items():
            notes.add(relpath, tmp_path / relpath, text, None)
        assert notes.used_process
        results = notes.finish()
    assert results == [(relpath, True) for relpath in NOTES]
    assert read_vault(tmp_path) == {k: v.encode() for k, v in NOTES.items()}
