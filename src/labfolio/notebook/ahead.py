"""Experiments rendered ahead, in the writer's process, during a large cold write.

A write that renders hundreds of experiments from scratch (the first write of a vault, a new
labfolio version) renders them one at a time, while the writer's process (see writer.py) mostly
waits for the next batch of files. ``ExperimentsAhead`` hands that process the experiments the
renderer has not reached yet, a chunk at a time from the last one backwards. For each it computes
what the renderer would: its fingerprint, its results (seed statistics, a third of the work), the
text of its notes, and its pieces of the two logs. The renderer takes them when it reaches the
experiment, or does the work itself when it got there first, so the two meet somewhere in the
middle, wherever the machine's load puts that.

The worker is a fork of this process, so it holds the same snapshot and computes exactly what
this process would (the same functions of the same inputs); only the results and texts travel
back, pickled. Without a forked worker nothing is handed over and everything is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

__all__ = ["ExperimentsAhead", "CHUNK", "MIN_EXPERIMENTS"]

# Experiments per hand-over: tens of milliseconds of work, so a batch of notes queued behind one
# waits little, and a chunk the renderer overtakes wastes little.
CHUNK = 8
# Chunks in the worker at once: one running and one queued keeps it busy between the batches.
IN_FLIGHT = 2
# Below this many experiments to render from scratch, none is handed over and the worker is not
# started for them: such a write is short anyway, and starting a process (a fork of this one)
# would be a fair part of it.
MIN_EXPERIMENTS = 200

_context = None  # the rendering context the worker inherits when it is forked (see ExperimentsAhead)


def _render_in_worker(names: Sequence[str]) -> list[tuple[str, dict]]:
    from . import experiment_log, master_log
    from .render import experiment_notes

    ctx = _context
    ctx.ahead = None  # the worker's copy of the context computes everything itself
    done = []
    for name in names:
        exp = ctx.snapshot.by_name[name]
        done.append((name, {
            "fingerprint": ctx.fingerprint(exp),
            "results_key": ctx.results_key(exp),
            "results": ctx.results(exp),
            "notes": {relpath: render() for relpath, *_, render in experiment_notes(ctx, exp)},
            "fragments": {**experiment_log.experiment_fragments(ctx, exp),
                          **master_log.experiment_fragments(ctx, exp)},
        }))
    return done


class ExperimentsAhead:
    """The work of `experiments` (those to render from scratch, in the renderer's order), done
    from the last one backwards by the worker of `writer`.

        ahead = ExperimentsAhead(ctx, writer, experiments)  # before the worker is forked
        ahead.top_up()                                      # now and then: keeps the worker busy
        ahead.take(exp)  # {"fingerprint", "results_key", "results", "notes": {relpath: text},
                         # "fragments": {part: value}}, or None: the renderer does it itself
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
        self._unpacked: dict[Future, dict[str, dict]] = {}  # a chunk -> its work by experiment

    def top_up(self) -> None:
        """Hand the worker chunks of experiments far enough ahead of the renderer."""
        if self._next == 0:
            return
        self._in_flight = [future for future in self._in_flight if not future.done()]
        if self._writer.busy:
            return  # the notes' files come first: this work only fills the worker's idle time
        while len(self._in_flight) < IN_FLIGHT and self._next > 0:
            start = max(0, self._next - CHUNK)
            if start <= self._reached + IN_FLIGHT * CHUNK:
                self._next = 0  # the renderer is about to get there: it does the rest
                return
            names = self._names[start:self._next]
            future = self._writer.submit(_render_in_worker, names)
            if future is None:
                self._next = 0
                return
            for name in names:
                self._chunk_of[name] = future
            self._in_flight.append(future)
            self._next = start

    def take(self, exp) -> dict | None:
        """`exp`'s work if the worker has done it, else None (and it no longer will)."""
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
