"""``labfolio snapshot``: a copy of a store, taken while it may be written, is whole and consistent."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import labfolio
from labfolio import drain
from labfolio.cli import app
from labfolio.errors import ConfigError, StoreError
from labfolio.journal import JournalWriter
from labfolio.settings import resolve_store
from labfolio.snapshot import snapshot_store
from labfolio.store import open_store

runner = CliRunner()

WRITER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import labfolio
    store, ready, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    run = labfolio.init(experiment="live", variant="v", seed=0, store=store, vigilance=False)
    step = 0
    while not stop.exists() and step < 2_000_000:
        for _ in range(2_000):
            run.log({"loss": 1.0 / (step + 1), "acc": step * 1e-6}, step=step)
            step += 1
        if step == 20_000:
            ready.write_text(run.id)
        time.sleep(0.01)  # let the drainer write batches while the snapshot copies
    run.finish()
    print(run.id, step, flush=True)
""")


def _log_runs(store: Path) -> list[str]:
    ids = []
    for variant, seed in (("base", 0), ("mhc", 1)):
        run = labfolio.init(experiment="exp", variant=variant, seed=seed, store=str(store), vigilance=False,
                            config={"lr": 0.1, "variant": variant})
        for step in range(500):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 500}, step=step)
        plot = store.parent / f"{variant}.txt"
        plot.write_text(f"curve of {variant}")
        run.log_artifact(plot)
        run.finish(quiet=True)
        ids.append(run.id)
    return ids


def _same_store(source, copy, run_ids):
    assert sorted(r.run_id for r in copy.list_runs()) == sorted(r.run_id for r in source.list_runs())
    for run_id in run_ids:
        a, b = source.get_run(run_id), copy.get_run(run_id)
        assert (b.state, b.config, b.point_count, b.summary_values()) == (a.state, a.config, a.point_count,
                                                                            a.summary_values())
        ha, hb = source.history(run_id), copy.history(run_id)
        assert ha.keys() == hb.keys()
        for key in ha:
            assert hb[key].steps.tolist() == ha[key].steps.tolist()
            assert hb[key].values.tolist() == ha[key].values.tolist()
        arts_a, arts_b = source.artifacts(run_id), copy.artifacts(run_id)
        assert [(x.name, x.sha256) for x in arts_b] == [(x.name, x.sha256) for x in arts_a]
        for art in arts_b:
            assert str(art.path).startswith(str(copy.location.home))
            assert Path(art.path).read_bytes() == Path(next(x.path for x in arts_a if x.name == art.name)).read_bytes()


def _integrity(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def test_a_snapshot_opens_with_the_same_runs_histories_and_artifacts(tmp_path):
    store = tmp_path / "src"
    run_ids = _log_runs(store)
    report = snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    artifact_files = sum(1 for path in (store / "artifacts").rglob("*") if path.is_file())
    assert (report.runs, report.running, report.journals, report.artifacts) == (2, [], 0, artifact_files)
    assert sorted(os.listdir(tmp_path / "copy")) == ["artifacts", "labfolio.db"]
    _same_store(open_store(str(store)), open_store(str(tmp_path / "copy")), run_ids)


def _store_with_a_checkpoint(store: Path) -> tuple[list[str], Path]:
    """Two logged runs, the first with a checkpoint as a killed resumable run leaves it."""
    run_ids = _log_runs(store)
    checkpoints = resolve_store(str(store)).checkpoint_dir
    checkpoints.mkdir()
    (checkpoints / f"{run_ids[0]}.pt").write_bytes(b"model, optimizer and random states")
    return run_ids, checkpoints


def test_checkpoints_of_resumable_runs_are_copied_and_half_written_ones_are_not(tmp_path):
    store = tmp_path / "src"
    run_ids, checkpoints = _store_with_a_checkpoint(store)
    (checkpoints / f".{run_ids[1]}.pt.123.partial").write_bytes(b"half")
    snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    copied = resolve_store(str(tmp_path / "copy")).checkpoint_dir
    assert sorted(p.name for p in copied.iterdir()) == [f"{run_ids[0]}.pt"]
    assert (copied / f"{run_ids[0]}.pt").read_bytes() == b"model, optimizer and random states"


def test_a_shared_checkpoint_folder_gives_the_snapshot_only_its_own_runs_checkpoints(tmp_path, monkeypatch):
    store = tmp_path / "src"
    run_ids = _log_runs(store)
    shared = tmp_path / "nfs"
    shared.mkdir()
    monkeypatch.setenv("LABFOLIO_CHECKPOINT_DIR", str(shared))
    (shared / f"{run_ids[1]}.pt").write_bytes(b"ours")
    (shared / "another_store_run.pt").write_bytes(b"someone else's")
    snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy" / "checkpoints").iterdir()) == [f"{run_ids[1]}.pt"]


def test_a_snapshot_without_checkpoints_leaves_them_in_the_store_and_says_so(tmp_path):
    store = tmp_path / "src"
    run_ids, checkpoints = _store_with_a_checkpoint(store)
    result = runner.invoke(app, ["snapshot", str(tmp_path / "copy"), "--store", str(store), "--no-checkpoints"])
    assert result.exit_code == 0, result.output
    assert "1 checkpoint(s) left out: a killed run resumed from this copy starts over" in result.output
    assert not resolve_store(str(tmp_path / "copy")).checkpoint_dir.exists()
    assert (checkpoints / f"{run_ids[0]}.pt").read_bytes() == b"model, optimizer and random states"
    _same_store(open_store(str(store)), open_store(str(tmp_path / "copy")), run_ids)


def test_a_compacted_snapshot_holds_the_same_points_in_fewer_rows_in_one_file(tmp_path):
    store = tmp_path / "src"
    run_ids = _log_runs(store)  # finished, so already compact
    run = labfolio.init(experiment="exp", variant="live", seed=0, store=str(store), vigilance=False)
    source = open_store(str(store))
    for step in range(300):  # written batch by batch, as a live run's drainer leaves them
        run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.flush()

    def chunk_rows(db):
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM metric_chunks").fetchone()[0]

    report = snapshot_store(resolve_store(str(store)), tmp_path / "copy", compact=True)
    assert report.chunks_merged > 200 and report.running == [run.id]
    assert chunk_rows(tmp_path / "copy" / "labfolio.db") < chunk_rows(store / "labfolio.db") - 200
    assert sorted(os.listdir(tmp_path / "copy")) == ["artifacts", "journal", "labfolio.db"]
    assert _integrity(tmp_path / "copy" / "labfolio.db") == [("ok",)]
    copy = open_store(str(tmp_path / "copy"))
    _same_store(source, copy, run_ids)
    live, copied = source.history(run.id)["loss"], copy.history(run.id)["loss"]  # the copy marks it crashed
    assert copied.steps.tolist() == live.steps.tolist() == list(range(300))
    assert copied.values.tolist() == live.values.tolist()
    run.finish(quiet=True)


def test_the_copied_database_is_one_self_contained_file(tmp_path):
    store = tmp_path / "src"
    _log_runs(store)
    writer = open_store(str(store))  # keep a connection open, so the source has a live WAL
    writer.list_runs()
    snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    assert not any(name.endswith(("-wal", "-shm", "-journal")) for name in os.listdir(tmp_path / "copy"))
    with sqlite3.connect(f"{(tmp_path / 'copy' / 'labfolio.db').as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    writer.close()


def test_a_snapshot_taken_while_a_process_logs_is_consistent_and_harms_nothing(tmp_path):
    store = tmp_path / "src"
    open_store(str(store)).close()
    script, ready, stop = tmp_path / "writer.py", tmp_path / "ready", tmp_path / "stop"
    script.write_text(WRITER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(ready), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.05)
        copies = []
        for i in range(3):  # several, so at least one lands in the middle of a drain
            report = snapshot_store(resolve_store(str(store)), tmp_path / f"copy{i}")
            copies.append(report)
            time.sleep(0.2)
    finally:
        stop.write_text("stop")
        out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "cannot write" not in err and "locked" not in err.lower(), err
    run_id, last = out.split()
    source = open_store(str(store))
    assert source.get_run(run_id).state == "finished"
    assert source.get_run(run_id).point_count == 2 * int(last)
    assert _integrity(store / "labfolio.db") == [("ok",)]
    for i, report in enumerate(copies):
        assert report.running == [run_id] or report.runs == 0
        assert _integrity(tmp_path / f"copy{i}" / "labfolio.db") == [("ok",)]
        copy = open_store(str(tmp_path / f"copy{i}"))  # drains the copied journal
        record = copy.get_run(run_id)
        assert record.state == "crashed"  # the copy's run ends where the snapshot was taken
        steps = copy.history(run_id)["loss"].steps.tolist()
        assert len(steps) >= 20_000
        assert steps == list(range(len(steps)))  # a prefix of what was logged: no gap, no repeat
        assert record.point_count == 2 * len(steps)


def test_a_run_whose_points_are_only_in_its_journal_appears_in_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(drain, "DRAIN_INTERVAL_S", 3600.0)  # the drainer sleeps: nothing reaches the db
    store = tmp_path / "src"
    open_store(str(store)).close()
    run = labfolio.init(experiment="j", variant="v", seed=0, store=str(store), vigilance=False)
    for step in range(300):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    assert open_store(str(store), recover=False).list_runs() == []
    report = snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    assert (report.runs, report.journals) == (0, 1)
    assert not (tmp_path / "copy" / "journal" / run.id / "lock").exists()
    copy = open_store(str(tmp_path / "copy"))
    assert copy.history(run.id)["loss"].steps.tolist() == list(range(300))
    assert copy.get_run(run.id).state == "crashed"
    assert not (tmp_path / "copy" / "journal" / run.id).exists()  # drained, as recovery does
    run.finish(quiet=True)
    assert open_store(str(store)).get_run(run.id).point_count == 300  # the source run is untouched


def test_a_torn_journal_tail_in_the_copy_is_left_out(tmp_path):
    store = tmp_path / "src"
    open_store(str(store)).close()
    folder = resolve_store(str(store)).journal_dir / "torn_run"
    writer = JournalWriter(folder, header_event={"type": "start", "run_id": "torn_run", "experiment": "t",
                                                 "variant": "v", "seed": 0, "started_at": time.time()})
    enc = writer.define_shape(("loss",))
    for step in range(50):
        writer.append_points(enc, step, time.time(), (float(step),))
    off = writer.offset  # a record copied in but never given its length, then one past it
    enc.packer.pack_into(writer._mm, off, 0, 2, enc.shape_id, 50, 0.0, 50.0)
    enc.packer.pack_into(writer._mm, off + enc.size, enc.size, 2, enc.shape_id, 51, 0.0, 51.0)
    (folder / "seg-000001.lfj").write_bytes(bytes(4096))  # a next segment not yet stamped
    writer.close()
    snapshot_store(resolve_store(str(store)), tmp_path / "copy")
    assert sorted(os.listdir(tmp_path / "copy" / "journal" / "torn_run")) == ["seg-000000.lfj"]
    copy = open_store(str(tmp_path / "copy"))
    assert copy.history("torn_run")["loss"].steps.tolist() == list(range(50))


def test_the_archive_extracts_to_a_store_that_opens_and_leaves_no_temporary_file(tmp_path):
    store = tmp_path / "src"
    run_ids = _log_runs(store)
    (store / "runner" / "exp").mkdir(parents=True)
    (store / "runner" / "exp" / "base_s0.log").write_text("epoch 1\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report = snapshot_store(resolve_store(str(store)), out_dir / "gpu-store.tar.xz")
    assert os.listdir(out_dir) == ["gpu-store.tar.xz"]
    assert report.size_bytes == (out_dir / "gpu-store.tar.xz").stat().st_size
    with tarfile.open(out_dir / "gpu-store.tar.xz") as tar:
        names = tar.getnames()
        assert all(name == "gpu-store" or name.startswith("gpu-store/") for name in names)
        assert not any(name.endswith(("-wal", "-shm", "migrate-lock", "/lock")) for name in names)
        tar.extractall(tmp_path / "extracted", filter="data")
    extracted = tmp_path / "extracted" / "gpu-store"
    assert (extracted / "runner" / "exp" / "base_s0.log").read_text() == "epoch 1\n"
    _same_store(open_store(str(store)), open_store(str(extracted)), run_ids)


def test_a_failed_snapshot_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    store = tmp_path / "src"
    _log_runs(store)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    import labfolio.snapshot as snapshot_module

    def broken(*args, **kwargs):
        raise StoreError("the copied database failed its integrity check (page 3)")

    monkeypatch.setattr(snapshot_module, "_check_database", broken)
    for name in ("copy", "copy.tar.gz"):
        with pytest.raises(StoreError, match="integrity check"):
            snapshot_store(resolve_store(str(store)), out_dir / name)
    assert os.listdir(out_dir) == []


def test_an_existing_non_empty_folder_is_refused_and_left_untouched(tmp_path):
    store = tmp_path / "src"
    _log_runs(store)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        snapshot_store(resolve_store(str(store)), out)
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not any(".partial-" in name for name in os.listdir(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    snapshot_store(resolve_store(str(store)), empty)  # an empty folder is fine
    assert (empty / "labfolio.db").is_file()


def test_a_snapshot_inside_the_store_folder_is_refused(tmp_path):
    store = tmp_path / "src"
    _log_runs(store)
    with pytest.raises(ConfigError, match="inside the store folder"):
        snapshot_store(resolve_store(str(store)), store / "snap")


def test_stores_that_are_not_sqlite_folders_get_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="PostgreSQL store: labfolio snapshot copies SQLite stores; "
                                          "for PostgreSQL use pg_dump"):
        snapshot_store(resolve_store("postgresql://me@db.example/lab"), tmp_path / "x")
    with pytest.raises(ConfigError, match="team server"):
        snapshot_store(resolve_store("http://lab.example:8765"), tmp_path / "x")
    with pytest.raises(StoreError, match="the folder does not exist"):
        snapshot_store(resolve_store(str(tmp_path / "missing")), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_the_snapshot_command_prints_what_it_copied(tmp_path):
    store = tmp_path / "src"
    _log_runs(store)
    result = runner.invoke(app, ["snapshot", str(tmp_path / "copy.tar.gz"), "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Snapshot of sqlite:///{store / 'labfolio.db'} written to {tmp_path / 'copy.tar.gz'}"
    artifact_files = sum(1 for path in (store / "artifacts").rglob("*") if path.is_file())
    assert lines[1].startswith(f"2 run(s), 0 journal(s), {artifact_files} artifact file(s): ")
    assert lines[1].endswith(" s") and " kB in " in lines[1]
    assert len(lines) == 2


def test_the_snapshot_command_shows_the_pg_dump_hint_as_one_line(tmp_path):
    result = runner.invoke(app, ["snapshot", str(tmp_path / "x"), "--store", "postgresql://me@db/lab"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: postgresql+psycopg://me@db/lab is a PostgreSQL store: labfolio snapshot copies SQLite stores; "
        "for PostgreSQL use pg_dump (e.g. pg_dump -Fc DBNAME > store.dump)"]
