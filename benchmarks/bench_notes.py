"""How long `labfolio notes` takes on a large store, and that an unchanged store writes nothing.

    python benchmarks/bench_notes.py                      # 1,000 experiments, 10,000 runs
    python benchmarks/bench_notes.py --experiments 100    # smaller, quicker
    python benchmarks/bench_notes.py --keep /tmp/lf-bench # reuse the synthetic store between calls

Measures, on a synthetic SQLite store (every experiment: 2 variants x 5 seeds, a short series per
run, test/acc and test/loss summaries, a lineage, a few alerts and notes):

1. a first regeneration into an empty vault (no cached results, no fingerprints, no plots); the
   notes' worker process renders the experiments this one has not reached yet while it has no
   files to write (notebook/ahead.py), so a second core that is free makes this phase shorter;
2. a second regeneration with no change (target: < 5 s, and no file written);
3. a regeneration after one new run (only that experiment's notes and the logs are rewritten; the
   notes of every other experiment are kept by fingerprint without being rendered, and the logs
   reuse the other experiments' cached entries and rows);
4. plots: drawing the curves of a few experiments, then the same again (all kept by fingerprint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

T0 = 1_767_261_600.0  # 2026-01-01 10:00 UTC


def build_store(folder: Path, experiments: int, seeds: int) -> None:
    from labfolio.store import Batch, open_store

    store = open_store(folder, recover=False)
    if store.list_runs(limit=1):
        return
    rng = np.random.default_rng(0)
    steps = np.arange(20)
    started = time.perf_counter()
    for e in range(experiments):
        name = f"exp_{e:04d}"
        previous = f"exp_{e - 1:04d}" if e else None
        store.write_batch(Batch(events=[{"type": "experiment", "name": name, "previous": previous,
                                         "variants": ["baseline", "mhc"], "baseline": "baseline"}]))
        for variant_index, variant in enumerate(("baseline", "mhc")):
            for seed in range(seeds):
                run_id = f"{name}_{variant}_s{seed}"
                start = T0 + e * 3600 + variant_index * 600 + seed * 60
                config = {"model": {"name": "vit", "n_layer": 4, "streams": 4 if variant == "mhc" else 1},
                          "lr": 0.1 if e % 2 else 0.05, "epochs": 3, "data": "cifar10", "seed": seed}
                loss = 2.0 * np.exp(-steps / 8) + 0.05 * rng.random(steps.size) + 0.3
                lr = 0.1 * (1 - steps / steps.size)
                keys = ["train/loss"] * steps.size + ["lr"] * steps.size
                values = [*loss.tolist(), *lr.tolist()]
                events = [{"type": "start", "run_id": run_id, "experiment": name, "variant": variant, "seed": seed,
                           "config": config, "machine": "gpu-a", "started_at": start,
                           "provenance": {"git": {"short_sha": "a1b2c3d", "tags": []}}},
                          {"type": "summary", "values": {"test/acc": float(0.7 + 0.02 * variant_index
                                                                           + 0.01 * rng.random()),
                                                         "test/loss": float(0.9 - 0.01 * rng.random())}},
                          {"type": "finish", "time": start + 20}]
                if seed == 0 and e % 50 == 0:
                    events.append({"type": "alert", "kind": "grad_spike", "metric": "grad_norm", "step": 10,
                                   "severity": "info", "message": "grad norm 12x its median", "time": start + 10})
                store.write_batch(Batch(run_id=run_id, events=events, keys=keys,
                                        steps=[*steps.tolist(), *steps.tolist()], values=values,
                                        times=[start + s for s in (*steps.tolist(), *steps.tolist())],
                                        seqs=list(range(1, len(keys) + 1))))
        if e % 10 == 0:
            store.write_batch(Batch(events=[{"type": "note", "scope": "experiment", "owner": name,
                                             "field": "hypothesis", "value": f"streams help ({e})"}]))
    print(f"built {experiments} experiments, {experiments * 2 * seeds} runs in {time.perf_counter() - started:.1f} s")


def with_bulk_reads(store):
    """The store with the bulk reads the notebook asks for, when it does not have them yet.

    This is the code proposed for ``labfolio.store.sql.SQLStore`` (one query instead of one per
    run or per note owner); it lives here only so the benchmark can show both costs.
    """
    if all(hasattr(store, name) for name in ("alerts_for_runs", "note_fields_for_scope")):
        return store
    from sqlalchemy import select

    from labfolio.store import schema as t
    from labfolio.store.records import AlertRecord

    class BulkReads(type(store)):
        def alerts_for_runs(self, run_ids):
            wanted = set(run_ids)
            out: dict[str, list] = {}
            with self._read() as conn:
                query = (select(t.runs.c.run_id, t.alerts).join(t.runs, t.runs.c.pk == t.alerts.c.run_pk)
                         .order_by(t.alerts.c.id))
                for r in conn.execute(query):
                    if r.run_id in wanted:
                        out.setdefault(r.run_id, []).append(AlertRecord(
                            r.kind, r.metric, r.step, r.severity, r.message, r.value, r.created_at))
            return out

        def note_fields_for_scope(self, scope):
            out: dict[str, dict[str, str]] = {}
            with self._read() as conn:
                for r in conn.execute(select(t.note_fields).where(t.note_fields.c.scope == scope)):
                    out.setdefault(r.owner, {})[r.field] = r.value
            return out

    store.__class__ = BulkReads
    return store


@contextlib.contextmanager
def timing_file_writes():
    """Seconds this process spends on the notes' files while the block runs (a one-item list):
    writing them itself, or handing them to the writer's process and waiting for it at the end."""
    from labfolio.notebook.writer import NoteWriter

    spent = [0.0]
    originals = {name: getattr(NoteWriter, name) for name in ("add", "finish")}

    def timed(original):
        def method(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return method

    for name, original in originals.items():
        setattr(NoteWriter, name, timed(original))
    try:
        yield spent
    finally:
        for name, original in originals.items():
            setattr(NoteWriter, name, original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=1000, help="number of experiments (default 1000)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant; 2 variants (default 5)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the synthetic store in this folder")
    parser.add_argument("--plot-experiments", type=int, default=10, help="experiments whose plots are timed")
    parser.add_argument("--bulk-reads", action="store_true",
                        help="add the proposed one-query bulk reads to a store that lacks them")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labfolio-bench-notes-"))
    store_dir = args.keep or work / "store"
    os.environ.pop("LABFOLIO_UI_BASE_URL", None)
    try:
        build_store(store_dir, args.experiments, args.seeds)
        from labfolio.notebook import write_vault
        from labfolio.notebook.snapshot import read_snapshot
        from labfolio.store import Batch, open_store

        store = open_store(store_dir, recover=False)
        if args.bulk_reads:
            store = with_bulk_reads(store)
        started = time.perf_counter()
        snapshot = read_snapshot(store, root=work)
        read_s = time.perf_counter() - started
        runs = len(snapshot.runs)
        bulk = all(hasattr(store, name) for name in ("alerts_for_runs", "note_fields_for_scope"))
        print(f"store: {len(snapshot.experiments)} experiments, {runs} runs; reading the snapshot: {read_s:.2f} s "
              f"({'bulk reads' if bulk else 'per-run reads: the store has no alerts_for_runs/note_fields_for_scope'})")

        vault = work / "vault"
        with timing_file_writes() as writing:
            first = write_vault(store, vault, plots=False, root=work)
        print(f"1. first regeneration (cold, no cached results): {first.seconds:.2f} s, "
              f"{len(first.written)} notes written (of which {writing[0]:.2f} s in this process on the files: "
              "writing them, or handing them to the writer's process and waiting for it; the file system's "
              "part varies most from machine to machine)")
        second = write_vault(store, vault, plots=False, root=work)
        verdict = "PASS" if second.seconds < 5 and second.files_written == 0 else "FAIL"
        print(f"2. second regeneration, no change: {second.seconds:.2f} s, {second.files_written} files written "
              f"[{verdict}: < 5 s and 0 files]")

        run_id = f"exp_0500_mhc_extra{len(store.list_runs(experiment='exp_0500', with_summary=False))}"
        store.write_batch(Batch(run_id=run_id, events=[
            {"type": "start", "run_id": run_id, "experiment": "exp_0500", "variant": "mhc", "seed": 99,
             "config": {"lr": 0.1}, "started_at": T0 + 500 * 3600 + 3000},
            {"type": "summary", "values": {"test/acc": 0.73}}, {"type": "finish", "time": T0 + 500 * 3600 + 3100}]))
        third = write_vault(store, vault, plots=False, root=work)
        print(f"3. after one new run: {third.seconds:.2f} s, rewrote {sorted(third.written)}")

        small = work / "small"
        build_store(small, args.plot_experiments, args.seeds)
        small_store = open_store(small, recover=False)
        plots_vault = work / "plots-vault"
        drawn = write_vault(small_store, plots_vault, plots=True, root=work)
        kept = write_vault(small_store, plots_vault, plots=True, root=work)
        print(f"4. plots for {args.plot_experiments} experiments: drawn {len(drawn.plots_drawn)} in {drawn.seconds:.2f} s "
              f"({drawn.seconds / max(len(drawn.plots_drawn), 1):.3f} s per plot); again: {kept.plots_kept} kept, "
              f"{len(kept.plots_drawn)} drawn, {kept.seconds:.2f} s")
        return 0 if verdict == "PASS" else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
