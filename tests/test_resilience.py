"""The tracker never kills training: full disks, dead stores, GPU tensors, stale runs, resumes."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

import labfolio
from labfolio.drain import sync_journals
from labfolio.errors import RunNotFoundError
from labfolio.journal import JournalReader, JournalWriter
from labfolio.settings import resolve_store
from labfolio.store import Batch, open_store


def test_a_journal_that_cannot_reach_disk_keeps_records_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="keeping new points in memory"):
        writer = JournalWriter(blocker / "run")
    enc = writer.define_shape(("loss",))
    for step in range(100):
        writer.append_points(enc, step, 1.0, (float(step),))
    records = JournalReader(blocker / "run", writer.memory_segments).read()
    assert records.values.tolist() == [float(s) for s in range(100)]
    writer.close()


def test_a_run_whose_journal_disk_is_unusable_still_reaches_the_store(tmp_path, monkeypatch):
    import labfolio.run as run_module

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(run_module, "fallback_journal_dir", lambda: blocker / "fallback")
    store_dir = tmp_path / "store"
    open_store(str(store_dir)).close()  # the database itself is fine
    monkeypatch.setattr(run_module.StoreLocation, "journal_dir", property(lambda self: blocker / "journal"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with labfolio.init(store=str(store_dir)) as run:
            for step in range(500):
                run.log({"loss": 1.0 / (step + 1)}, step=step)
    assert open_store(str(store_dir)).get_run(run.id).point_count == 500


class FakeCudaScalar:
    """Stands in for a 0-d CUDA tensor: reading it is what would wait for the GPU."""

    class device:
        type = "cuda"

    def __init__(self, value: float):
        self.value = value
        self.read_in: list[str] = []

    def detach(self):
        return self

    def clone(self):
        return self

    def numel(self):
        return 1

    def reshape(self, shape):
        return self

    def __float__(self):
        self.read_in.append(threading.current_thread().name)
        return self.value


def test_device_tensors_are_read_in_the_background_never_in_the_caller():
    scalar = FakeCudaScalar(0.25)
    with labfolio.init() as run:
        run.log({"loss": scalar, "lr": 0.1}, step=7)
        assert scalar.read_in == []  # log() returned without touching the value
        run.flush()
    assert scalar.read_in and all(name.startswith("labfolio-drain") for name in scalar.read_in)
    history = open_store().history(run.id)
    assert history["loss"].values.tolist() == [0.25] and history["loss"].steps.tolist() == [7]


def test_postgres_down_keeps_logging_and_sync_pushes_later(postgres_server, monkeypatch):
    import labfolio.run as run_module

    monkeypatch.setattr(run_module, "FINAL_DRAIN_TIMEOUT_S", 1.0)
    real_url = postgres_server.create_database()
    down_url = real_url.replace(f":{postgres_server.port}/", ":1/")  # nothing listens on port 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = labfolio.init(store=down_url, experiment="outage")
        for step in range(300):
            run.log({"loss": float(step)}, step=step)
        run.finish(quiet=True)
    assert len([w for w in caught if "cannot write run" in str(w.message)]) == 1
    report = sync_journals(open_store(real_url, recover=False), resolve_store(real_url))
    assert report.drained_runs == [run.id] and report.points == 300
    assert open_store(real_url).get_run(run.id).state == "finished"


def test_runs_whose_heartbeat_stopped_are_marked_crashed(monkeypatch):
    import labfolio.drain as drain

    store = open_store()
    store.write_batch(Batch(run_id="ghost", events=[{"type": "start", "run_id": "ghost",
                                                     "started_at": time.time() - 3600}]))
    monkeypatch.setattr(drain, "STALE_AFTER_S", 60.0)
    record = open_store().get_run("ghost")
    assert record.state == "crashed" and "no heartbeat" in record.exit_reason


def test_resume_continues_the_same_run_after_its_last_step():
    first = labfolio.init(experiment="long", config={"lr": 0.1})
    for step in range(10):
        first.log({"loss": float(step)}, step=step)
    first.finish("killed")
    again = labfolio.init(experiment="long", run_id=first.id, resume=True)
    again.log({"loss": 100.0})
    again.finish()
    record = open_store().get_run(first.id)
    assert record.state == "finished" and record.config == {"lr": 0.1}
    assert open_store().history(first.id)["loss"].steps.tolist() == list(range(11))


def test_system_metrics_are_sampled_into_the_run():
    with labfolio.init(system_metrics=0.05) as run:
        # waits for the samples rather than a fixed time: on a loaded machine the sampler's first
        # reads (psutil, the GPU probe) can take longer than several intervals
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                sampled = open_store().history(run.id).get("sys/cpu_percent")
            except RunNotFoundError:  # the writer has not created the run in the store yet
                continue
            if sampled is not None and len(sampled.values) >= 2:
                break
    history = open_store().history(run.id)
    assert "sys/cpu_percent" in history and len(history["sys/cpu_percent"].values) >= 2
    assert history["sys/ram_used_gb"].values[0] > 0
