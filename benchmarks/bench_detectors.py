"""Detector quality and live-vigilance cost.

Prints, for the labelled synthetic set (``labfolio.analysis.synthetic``):

- recall per pathology and the false-positive rate on healthy curves, for each seed and pooled;

and, for ``LiveMonitor.feed`` (what the run's background writer calls):

- the cost per fed point for a typical run (losses, grad norm, lr, accuracies, mHC diagnostics,
  built-in rules), at several batch sizes;
- whether that cost grows with the length of the history.

    python benchmarks/bench_detectors.py                 # seed 0
    python benchmarks/bench_detectors.py --seeds 0 1 2 3 --misses
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from labfolio.analysis import LiveMonitor
from labfolio.analysis.synthetic import DetectorScore, format_score, labelled_curves, score_detectors

TYPICAL_CONFIG = {"optim": {"lr": 1e-3, "scheduler": "cosine", "warmup_steps": 500},
                  "train": {"total_steps": 200_000}, "model": {"d_model": 256}}


def pooled(scores: list[DetectorScore]) -> DetectorScore:
    """All seeds' curves counted together."""
    found: dict[str, int] = {}
    labelled: dict[str, int] = {}
    for score in scores:
        for kind, count in score.labelled.items():
            labelled[kind] = labelled.get(kind, 0) + count
            found[kind] = found.get(kind, 0) + score.found.get(kind, 0)
    return DetectorScore(found, labelled, sum(s.healthy for s in scores),
                         tuple(fa for s in scores for fa in s.false_alarms), tuple(m for s in scores for m in s.misses))


def typical_run(steps: int, eval_every: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A healthy run's keys: per-step training metrics and evaluations every `eval_every` steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=float)
    q = np.clip((t - 500) / (200_000 - 500), 0, 1)
    series = {
        "train/loss": (t, (0.5 + 3 * np.exp(-t / 20_000)) * (1 + 0.03 * rng.standard_normal(steps))),
        "grad_norm": (t, 2 * np.exp(0.2 * rng.standard_normal(steps))),
        "lr": (t, np.where(t < 500, 1e-3 * (t + 1) / 500, 1e-3 * 0.5 * (1 + np.cos(np.pi * q)))),
        "train/acc": (t, np.clip(0.9 - 0.8 * np.exp(-t / 20_000) + 0.03 * rng.standard_normal(steps), 0, 1)),
        "mhc/stream_similarity": (t, 0.1 + 0.02 * rng.standard_normal(steps)),
        "mhc/gate_value": (t, 0.5 + 0.05 * rng.standard_normal(steps)),
    }
    e = t[::eval_every]
    series["val/loss"] = (e, (0.6 + 3 * np.exp(-e / 25_000)) * (1 + 0.01 * rng.standard_normal(e.size)))
    series["val/acc"] = (e, np.clip(0.85 - 0.75 * np.exp(-e / 25_000) + 0.005 * rng.standard_normal(e.size), 0, 1))
    return series


def feed_cost(series: dict, batch: int) -> tuple[float, int]:
    """Seconds to feed every series in `batch`-step flushes, and the number of points fed."""
    monitor = LiveMonitor(TYPICAL_CONFIG)  # built-in rules on
    last = max(int(steps[-1]) for steps, _ in series.values()) + 1
    points = sum(values.size for _, values in series.values())
    cut = {key: np.searchsorted(steps, np.arange(0, last + batch, batch)) for key, (steps, _) in series.items()}
    began = time.perf_counter()
    for i in range(len(next(iter(cut.values()))) - 1):
        for key, (steps, values) in series.items():
            lo, hi = cut[key][i], cut[key][i + 1]
            if hi > lo:
                monitor.feed(key, steps[lo:hi], values[lo:hi])
    monitor.finish()
    return time.perf_counter() - began, points


def growth(points: int, batch: int = 100) -> list[tuple[int, float]]:
    """Cost per point of train/loss over successive slices of a long history."""
    rng = np.random.default_rng(1)
    monitor = LiveMonitor(TYPICAL_CONFIG)
    values = 1.0 + 0.05 * rng.standard_normal(points)
    slice_size = points // 5
    report = []
    for s in range(5):
        began = time.perf_counter()
        for start in range(s * slice_size, (s + 1) * slice_size, batch):
            monitor.feed("train/loss", np.arange(start, start + batch, dtype=float), values[start:start + batch])
        report.append(((s + 1) * slice_size, (time.perf_counter() - began) / slice_size))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the labelled set")
    parser.add_argument("--repeats", type=int, default=2, help="copies of each curve family per seed")
    parser.add_argument("--misses", action="store_true", help="list missed curves and false alarms")
    parser.add_argument("--steps", type=int, default=50_000, help="length of the typical run for feed cost")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")

    scores = []
    for seed in args.seeds:
        began = time.perf_counter()
        curves = labelled_curves(seed=seed, repeats=args.repeats)
        score = score_detectors(curves)
        scores.append(score)
        print(f"\n== labelled set, seed {seed}: {len(curves)} curves, scored in {time.perf_counter() - began:.1f}s")
        print(format_score(score))
        if args.misses:
            for name in score.misses:
                print("  missed:", name)
            for name, alerts in score.false_alarms:
                print("  false alarm:", name, "|", "; ".join(str(a) for a in alerts))
    if len(scores) > 1:
        print(f"\n== pooled over seeds {', '.join(map(str, args.seeds))}")
        print(format_score(pooled(scores)))

    print(f"\n== LiveMonitor.feed cost, typical run of {args.steps} steps (8 keys, built-in rules)")
    series = typical_run(args.steps, eval_every=250)
    for batch in (1, 10, 100, 1000):
        if batch == 1 and args.steps > 20_000:
            trimmed = {k: (s[s < 20_000], v[s < 20_000]) for k, (s, v) in series.items()}
            seconds, points = feed_cost(trimmed, batch)
        else:
            seconds, points = feed_cost(series, batch)
        print(f"  flush every {batch:>4} steps: {1e6 * seconds / points:6.2f} µs per point "
              f"({points} points in {seconds:.2f}s)")
    print("\n== cost per point as the history grows (train/loss, 100-point batches)")
    for seen, cost in growth(500_000):
        print(f"  up to {seen:>7} points: {1e6 * cost:5.2f} µs per point")


if __name__ == "__main__":
    main()
