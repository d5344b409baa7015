"""Seed statistics computed ahead, in the writer's process, during a large cold write.

A write that has to compute the results of hundreds of experiments (the first write of a vault,
a new labfolio version) spends about a third of its time on seed statistics, one experiment at a
time as their notes are rendered, while the writer's process (see writer.py) mostly waits for the
next batch of files. ``ResultsAhead`` hands that process the experiments the renderer has not
reached yet, a chunk at a time from the last one backwards, and the renderer takes each result
from there when it reaches the experiment, or computes it itself when it got there first (so the
two meet somewhere in the middle, wherever the machine's load puts that).

The worker is a fork of this process, so it holds the same snapshot and computes exactly what
this process would (the same function of the same inputs); only the results travel back,
pickled. Without a forked worker nothing is handed over and every result is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from .results import experiment_results

__all__ = ["ResultsAhead", "CHUNK", "MIN_EXPERIMENTS"]

# Experiments per hand-over: a few tens of milliseconds of work, so a batch of notes queued behind
# one waits little, and a chunk the renderer overtakes wastes little.
CHUNK = 16
# Chunks in the worker at once: one running and one queued keeps it busy between the batches.
IN_FLIGHT = 2
# Below this many results to compute, the worker is not started for them (it is started at
# writer.PROCESS_THRESHOLD notes anyway, and then used).
MIN_EXPERIMENTS = 200

_context = None  # the rendering context the worker inherits when it is forked (see ResultsAhead)


def _results_in_worker(names: Sequence[str]) -> list[tuple[str, dict]]:
    ctx = _context
    found = []
    for name in names:
        exp = ctx.snapshot.by_name[name]
        found.append((name, experiment_results(exp, ctx.proposals, keyed=ctx.results_key(exp))))
    return found


class ResultsAhead:
    """The results of `experiments` (those with nothing cached, in the order the renderer asks for
    them), computed from the last one backwards by the worker of `writer`.

        ahead = ResultsAhead(ctx, writer, experiments)   # before the worker is forked
        ahead.top_up()                                   # now and then: keeps the worker busy
        ahead.take(exp)                                  # the result, or None: compute it here
    """

    def __init__(self, ctx, writer, experiments: Sequence) -> None:
        global _context
        _context = ctx  # set before the first hand-over forks the worker
        self._writer = writer
        self._index = {exp.name: index for index, exp in enumerate(experiments)}
        self._names = [exp.name for exp in experiments]
        self._next = len(self._names)  # chunks are taken below this index
        self._reached = -1  # the furthest index the renderer asked for
        self._chunk_of: dict[str, Future] = {}
        self._in_flight: list[Future] = []
        self._unpacked: dict[Future, dict[str, dict]] = {}  # a chunk -> its results by name

    def top_up(self) -> None:
        """Hand the worker chunks of experiments far enough ahead of the renderer."""
        if self._next == 0:
            return
        self._in_flight = [future for future in self._in_flight if not future.done()]
        if self._writer.busy:
            return  # the notes' files come first: results only fill the worker's idle time
        while len(self._in_flight) < IN_FLIGHT and self._next > 0:
            start = max(0, self._next - CHUNK)
            if start <= self._reached + IN_FLIGHT * CHUNK:
                self._next = 0  # the renderer is about to get there: it computes the rest
                return
            names = self._names[start:self._next]
            future = self._writer.submit(_results_in_worker, names)
            if future is None:
                self._next = 0
                return
            for name in names:
                self._chunk_of[name] = future
            self._in_flight.append(future)
            self._next = start

    def take(self, exp) -> dict | None:
        """`exp`'s result if the worker has computed it, else None (and it no longer will)."""
        index = self._index.get(exp.name)
        if index is None:
            return None
        self._reached = max(self._reached, index)
        future = self._chunk_of.pop(exp.name, None)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        unpacked = self._unpacked.get(future)
        if unpacked is None:
            unpacked = self._unpacked[future] = dict(future.result())
        return unpacked.pop(exp.name, None)

    def close(self) -> None:
        global _context
        _context = None
        self._next = 0
        self._chunk_of.clear()
        self._in_flight.clear()
        self._unpacked.clear()
