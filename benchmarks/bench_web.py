"""Dashboard and team-server performance: the runs page at 10,000 runs, the compare overlay of
100 runs x 100k steps, and HTTP ingestion from one client on loopback.

Server times are measured in-process through FastAPI's TestClient (request in, response bytes
out, no network), median of several calls after one warm-up; the first (cold) call is printed too.
An overlay "first load" empties the downsampled-series cache before every call, so it reads and
downsamples everything, once reading every point and once reading chunk envelopes (what the route
does); "cached" calls are served from that cache (finished runs do not change).
Ingestion goes over a real loopback socket to `labfolio server` in its own process.

    python benchmarks/bench_web.py                  # all three, SQLite
    python benchmarks/bench_web.py --only ingest    # one of: runs, overlay, ingest
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labfolio.store import Batch, open_store


def _timed(fn, repeat: int) -> tuple[float, float]:
    """(cold seconds, median warm seconds)."""
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm)


def _client(store):
    from fastapi.testclient import TestClient

    from labfolio.web.app import create_app

    return TestClient(create_app(store))


def bench_runs_page(folder: Path, n_runs: int = 10_000) -> None:
    store = open_store(folder / "runs")
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for lo in range(0, n_runs, 1000):
        events = []
        for i in range(lo, min(n_runs, lo + 1000)):
            rid = f"exp{i % 50:02d}_v{i % 4}_s{i}"
            events.append({"type": "start", "run_id": rid, "project": "bench", "experiment": f"exp{i % 50:02d}",
                           "variant": f"v{i % 4}", "seed": i, "state": "finished", "machine": f"gpu-{i % 8}",
                           "config": {"lr": float(10 ** rng.uniform(-4, -2)), "model": {"width": int(2 ** (6 + i % 4)),
                                      "depth": 4 + i % 8}, "optim": "adamw", "tags": ["a", "b"]},
                           "started_at": 1.7e9 + i})
            events.append({"type": "summary", "run_id": rid, "values": {
                "test/acc": float(rng.uniform(0.5, 0.9)), "train/loss": float(rng.uniform(0.1, 2.0)),
                "test/loss": float(rng.uniform(0.1, 2.0)), "steps_per_s": float(rng.uniform(5, 50))}})
        store.write_batch(Batch(events=events))
    print(f"seeded {n_runs} runs in {time.perf_counter() - t0:.1f} s")
    client = _client(store)
    cases = {
        "first page, newest first (HTML)": ("/runs", {}),
        "first page, newest first (JSON twin)": ("/runs.json", {}),
        "sorted by summary test/acc": ("/runs", {"sort": "-summary.test/acc"}),
        "sorted by config model.width": ("/runs", {"sort": "config.model.width"}),
        "filter config.lr>=0.001 and summary.test/acc>0.8": ("/runs", {"f": ["config.lr>=0.001",
                                                                                "summary.test/acc>0.8"]}),
        "search 'gpu-3', page 20": ("/runs", {"q": "gpu-3", "page": 20}),
    }
    for label, (url, params) in cases.items():
        def call():
            response = client.get(url, params=params, headers={"accept": "text/html"})
            assert response.status_code == 200, response.text[:300]
        cold, warm = _timed(call, 5)
        print(f"runs page at {n_runs} runs, {label:<50} cold {cold * 1000:7.1f} ms   warm {warm * 1000:7.1f} ms")
    store.close()


def bench_overlay(folder: Path, n_runs: int = 100, n_steps: int = 100_000) -> None:
    store = open_store(folder / "overlay")
    t0 = time.perf_counter()
    steps = np.arange(n_steps, dtype=np.int64)
    rng = np.random.default_rng(1)
    run_ids = []
    for r in range(n_runs):
        rid = f"overlay_{r:03d}"
        run_ids.append(rid)
        store.write_batch(Batch(run_id=rid, events=[{"type": "start", "run_id": rid, "experiment": "overlay",
                                                     "variant": f"v{r % 5}", "seed": r}], journal_from=0, journal_to=0))
        values = 2.0 * np.exp(-steps / 20_000) + rng.normal(0, 0.02, n_steps)
        # Drainer-sized batches (the SDK writes at most 250k points per transaction).
        for lo in range(0, n_steps, 25_000):
            hi = min(n_steps, lo + 25_000)
            store.write_batch(Batch(run_id=rid, keys=["train/loss"] * (hi - lo), steps=steps[lo:hi],
                                    values=values[lo:hi], times=1.7e9 + steps[lo:hi] * 0.1, seqs=steps[lo:hi],
                                    journal_from=lo, journal_to=hi))
    print(f"seeded {n_runs} runs x {n_steps} steps in {time.perf_counter() - t0:.1f} s")
    import functools

    from labfolio.web import routes_data, series

    client = _client(store)
    query = [("run", rid) for rid in run_ids] + [("key", "train/loss"), ("points", "2000")]
    b64 = [("encoding", "b64")]  # what the pages ask for
    every_point = functools.partial(series.series_payload, envelopes=False)
    for label, extra in (("full range, x=step", b64), ("zoomed to 10% of the steps", b64 + [("xmin", "40000"),
                                                                                             ("xmax", "50000")]),
                         ("full range, x=time", b64 + [("x", "time")]),
                         ("full range, x=step, JSON lists", [])):
        def call():
            response = client.get("/data/series", params=query + extra)
            assert response.status_code == 200
            assert len(response.json()["series"]) == n_runs

        def uncached():
            series._CACHE._items.clear()  # a first load: nothing downsampled yet
            call()

        figures = {}
        # The same route twice: reading every point of every chunk (how it read before chunk
        # envelopes, and still does for zooms narrower than a block per bucket), then as served.
        for read, payload in (("every point", every_point), ("envelopes", series.series_payload)):
            routes_data.series_payload = payload
            figures[read] = (_timed(uncached, 3)[1], _timed(call, 3)[1])
        routes_data.series_payload = series.series_payload
        (raw_first, raw_cached), (env_first, env_cached) = figures["every point"], figures["envelopes"]
        print(f"overlay {n_runs} runs x {n_steps} steps, {label:<32} first load: every point {raw_first * 1000:7.1f} ms"
              f"  envelopes {env_first * 1000:7.1f} ms   cached {env_cached * 1000:7.1f} ms")
    store.close()


def bench_ingest(folder: Path, total_points: int = 2_000_000) -> None:
    import socket

    from labfolio.settings import resolve_store
    from labfolio.store.http import HTTPStore
    from labfolio.store.tokens import create_token

    server_dir = folder / "server"
    token, _ = create_token(open_store(server_dir), "bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    labfolio_cli = str(Path(sys.executable).with_name("labfolio"))
    server = subprocess.Popen([labfolio_cli, "server", "--store", str(server_dir), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                client = HTTPStore(resolve_store(url), token=token)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        for batch_points in (10_000, 100_000, 250_000):
            rid = f"ingest_{batch_points}"
            client.write_batch(Batch(run_id=rid, events=[{"type": "start", "run_id": rid, "experiment": "ingest"}],
                                     journal_from=0, journal_to=0))
            keys = ["loss", "acc", "lr", "grad_norm"]
            per_key = batch_points // len(keys)
            t0 = time.perf_counter()
            sent = 0
            pos = 0
            while sent < total_points:
                steps = np.repeat(np.arange(pos // len(keys), pos // len(keys) + per_key), len(keys))
                n = len(steps)
                client.write_batch(Batch(run_id=rid, key_names=keys, codes=np.tile(np.arange(len(keys)), per_key),
                                         steps=steps, values=np.random.random(n), times=np.full(n, time.time()),
                                         seqs=np.arange(pos, pos + n), journal_from=pos, journal_to=pos + n))
                pos += n
                sent += n
            elapsed = time.perf_counter() - t0
            print(f"HTTP ingestion, one client on loopback, {batch_points:>7}-point batches: "
                  f"{sent / elapsed / 1e6:5.2f} M points/s ({sent} points in {elapsed:.2f} s)")
        # The SDK end to end: run.log in a loop, the drainer POSTs the journal, until flushed.
        env = {**os.environ, "LABFOLIO_SERVER": url, "LABFOLIO_TOKEN": token, "LABFOLIO_DIR": str(folder / "client")}
        code = ("import time, labfolio\n"
                "run = labfolio.init(experiment='sdk', variant='v', seed=0)\n"
                "t0 = time.perf_counter()\n"
                "for i in range(250_000):\n"
                "    run.log({'loss': 1.0, 'acc': 0.5, 'lr': 0.1, 'gn': 1.0}, step=i)\n"
                "assert run.flush(timeout=120)\n"
                "dt = time.perf_counter() - t0\n"
                "run.finish()\n"
                "print(f'{1e6 / dt / 1e6:5.2f} M points/s (1000000 points in {dt:.2f} s)')\n")
        local_env = {k: v for k, v in env.items() if k not in ("LABFOLIO_SERVER", "LABFOLIO_TOKEN")}
        local_env["LABFOLIO_DIR"] = str(folder / "local")
        for label, run_env in (("SDK through the server (log loop + drain + flush)", env),
                               ("SDK into local SQLite, same loop (for scale)", local_env)):
            out = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True,
                                 timeout=300)
            print(f"{label}: {out.stdout.strip() or out.stderr.strip()[-500:]}")
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["runs", "overlay", "ingest"], help="Run one benchmark.")
    parser.add_argument("--runs", type=int, default=10_000, help="Runs for the runs-page benchmark.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labfolio-bench-web-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "runs"):
            bench_runs_page(folder, args.runs)
        if args.only in (None, "overlay"):
            bench_overlay(folder)
        if args.only in (None, "ingest"):
            bench_ingest(folder)


if __name__ == "__main__":
    main()
