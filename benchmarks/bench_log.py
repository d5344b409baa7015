"""How much ``run.log()`` costs, end to end and in the caller's thread, and how fast stores ingest.

Everything is measured side by side in one process, with ``list.append`` of the same dict as the
floor, because this machine is noisy: compare ratios, not absolute numbers.

    python benchmarks/bench_log.py                 # SQLite; add --postgres to start a local server
    python benchmarks/bench_log.py --postgres-url postgresql+psycopg://user@host/db
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import labfolio
from labfolio.store import Batch, open_store

CHUNK = 1_000  # calls per timed chunk; the median over chunks is the per-call figure


def per_call_median_ns(fn, n_calls: int) -> float:
    """Median over chunks of the mean cost per call, in nanoseconds."""
    per_call = []
    clock = time.perf_counter_ns
    for chunk_start in range(0, n_calls, CHUNK):
        t0 = clock()
        for step in range(chunk_start, chunk_start + CHUNK):
            fn(step)
        per_call.append((clock() - t0) / CHUNK)
    return statistics.median(per_call)


def bench_caller_thread(n_calls: int, store: str, vigilance: bool = True) -> dict:
    payload = {"train/loss": 0.5, "lr": 1e-3, "grad_norm": 1.25}
    floor_list: list = []
    floor = per_call_median_ns(lambda step: floor_list.append(payload), n_calls)
    run = labfolio.init(experiment="bench", variant="log", store=store, vigilance=vigilance)
    gc.disable()
    try:
        log_cost = per_call_median_ns(lambda step: run.log(payload, step=step), n_calls)
    finally:
        gc.enable()
    t0 = time.perf_counter()
    run.finish(quiet=True)
    drain_tail = time.perf_counter() - t0
    return {"append_ns": floor, "log_ns": log_cost, "finish_s": drain_tail, "run_id": run.id}


def bench_end_to_end(n_calls: int, store: str, vigilance: bool = True) -> dict:
    """Wall time for n logs plus the drain of all of them into the store, per logged dict.

    With ``vigilance`` the drainer also feeds every point to the live rules and detectors; the
    values vary like a real loss curve so the detectors do their real work."""
    rng = np.random.default_rng(0)
    losses = (2.0 * np.exp(-np.arange(n_calls) / (n_calls / 5)) + 0.05 * rng.random(n_calls)).tolist()
    norms = (1.0 + 0.2 * rng.random(n_calls)).tolist()
    run = labfolio.init(experiment="bench", variant="e2e", store=store, vigilance=vigilance)
    t0 = time.perf_counter()
    for step in range(n_calls):
        run.log({"train/loss": losses[step], "lr": 1e-3, "grad_norm": norms[step]}, step=step)
    run.finish(quiet=True)
    elapsed = time.perf_counter() - t0
    record = open_store(store).get_run(run.id)
    assert record.point_count == 3 * n_calls, record.point_count
    return {"us_per_dict": elapsed / n_calls * 1e6, "points": record.point_count}


def bench_ingest(store_url: str, total_points: int, batch_points: int) -> float:
    """Sustained points/s through the store's one write path (write_batch), big batches."""
    store = open_store(store_url)
    run_id = f"ingest_{time.time_ns()}"
    store.write_batch(Batch(run_id=run_id, events=[{"type": "start", "run_id": run_id, "experiment": "bench"}]))
    keys_cycle = ["train/loss", "lr", "grad_norm"]
    seq = 1
    t0 = time.perf_counter()
    for start in range(0, total_points, batch_points):
        n = min(batch_points, total_points - start)
        steps = [(start + i) // 3 for i in range(n)]
        keys = [keys_cycle[(start + i) % 3] for i in range(n)]
        seqs = list(range(seq, seq + n))
        seq += n
        store.write_batch(Batch(run_id=run_id, keys=keys, steps=steps, values=np.random.rand(n).tolist(),
                                times=[1.0] * n, seqs=seqs))
    elapsed = time.perf_counter() - t0
    assert store.get_run(run_id).point_count == total_points
    store.close()
    return total_points / elapsed


def bench_tensor_scalars(n_calls: int, store: str) -> dict | None:
    try:
        import torch
    except ModuleNotFoundError:
        return None
    run = labfolio.init(experiment="bench", variant="tensor", store=store)
    value = torch.tensor(0.5)
    cost = per_call_median_ns(lambda step: run.log({"train/loss": value, "lr": 1e-3, "grad_norm": value},
                                                    step=step), n_calls // 4)
    run.finish(quiet=True)
    return {"log_ns": cost}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="log() calls to time")
    parser.add_argument("--ingest-points", type=int, default=2_000_000, help="points for the ingest test")
    parser.add_argument("--batch-points", type=int, default=100_000, help="points per write_batch")
    parser.add_argument("--postgres", action="store_true", help="also measure a local PostgreSQL server")
    parser.add_argument("--postgres-url", default=None, help="measure this PostgreSQL database")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="labfolio-bench-"))
    sqlite_store = str(workdir / "sqlite")

    caller = bench_caller_thread(args.calls, sqlite_store)
    unwatched = bench_caller_thread(args.calls, sqlite_store, vigilance=False)
    print(f"caller thread, 3-scalar dict (median of {CHUNK}-call chunks, {args.calls:,} calls):")
    print(f"  list.append floor        {caller['append_ns'] / 1000:7.3f} µs")
    print(f"  run.log()                {caller['log_ns'] / 1000:7.3f} µs   "
          f"({caller['log_ns'] / caller['append_ns']:.0f}× the floor; target ≤ 3 µs)")
    print(f"  run.log(), live checks off {unwatched['log_ns'] / 1000:5.3f} µs   "
          f"(live checks add {(caller['log_ns'] - unwatched['log_ns']) / 1000:+.3f} µs in the caller's thread)")
    tensors = bench_tensor_scalars(args.calls, sqlite_store)
    if tensors:
        print(f"  run.log() with 0-d CPU torch tensors  {tensors['log_ns'] / 1000:7.3f} µs")
    e2e = bench_end_to_end(args.calls, sqlite_store)
    e2e_off = bench_end_to_end(args.calls, sqlite_store, vigilance=False)
    print(f"end to end incl. drain into SQLite: {e2e['us_per_dict']:.3f} µs per dict "
          f"({e2e['points']:,} points stored; target ≤ 8 µs)")
    print(f"  same with live checks off:        {e2e_off['us_per_dict']:.3f} µs per dict "
          f"(live rules + detectors cost {e2e['us_per_dict'] - e2e_off['us_per_dict']:+.3f} µs per dict, "
          "in the background writer)")
    rate = bench_ingest(sqlite_store, args.ingest_points, args.batch_points)
    print(f"sustained ingestion, SQLite:     {rate / 1e6:.2f} M points/s (target ≥ 1 M/s)")

    pg_url, server = args.postgres_url, None
    if args.postgres and pg_url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pg_server import PostgresServer

        server = PostgresServer().start()
        pg_url = server.create_database()
    if pg_url:
        try:
            rate = bench_ingest(pg_url, args.ingest_points // 2, args.batch_points)
            print(f"sustained ingestion, PostgreSQL: {rate / 1e3:.0f} k points/s (target ≥ 300 k/s)")
            e2e_pg = bench_end_to_end(args.calls // 2, pg_url)
            print(f"end to end incl. drain into PostgreSQL: {e2e_pg['us_per_dict']:.3f} µs per dict")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
