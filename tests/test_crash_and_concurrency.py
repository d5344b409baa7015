"""Crash safety (kill -9 right after log) and many processes logging at once, on both databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from labfolio.store import open_store

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import labfolio
    run = labfolio.init(experiment="kill", variant="v", seed=0, store=sys.argv[1])
    for step in range(10_000):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    print(run.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")

WORKER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import labfolio
    store, go_file, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = labfolio.init(experiment="many", variant=f"w{index}", seed=index, store=store)
    while not os.path.exists(go_file):
        time.sleep(0.01)
    for step in range(2_000):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 2000, "lr": 0.1}, step=step)
        if step % 500 == 0:
            time.sleep(0.05)  # interleave with the other writers' drains
    run.finish()
    print(run.id, flush=True)
""")


def test_every_point_survives_kill_9_and_the_run_reads_as_crashed(store_url, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), store_url], capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.strip()
    store = open_store(store_url)  # opening recovers the orphaned journal
    record = store.get_run(run_id)
    assert record.state == "crashed"
    assert record.point_count == 10_000
    history = store.history(run_id)["loss"]
    assert history.steps.tolist() == list(range(10_000))
    assert history.values[-1] == pytest.approx(1 / 10_000)


def test_sixteen_processes_log_at_once_without_lock_errors_or_loss(store_url, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    go_file = tmp_path / "go"
    open_store(store_url).close()  # create the schema once, as a real project would have
    procs = [subprocess.Popen([sys.executable, str(script), store_url, str(go_file), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for i in range(16)]
    time.sleep(2.0)
    go_file.write_text("go")
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower(), err
        assert "cannot write" not in err, err
    store = open_store(store_url)
    runs = store.list_runs(experiment="many")
    assert len(runs) == 16
    assert all(r.state == "finished" for r in runs)
    assert sorted(r.point_count for r in runs) == [6_000] * 16
