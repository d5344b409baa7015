"""Merging a run's small metric chunks into large ones, once the run has finished writing.

Every drained batch becomes one chunk per key, and a live run is drained a few times a second, so
a run that logs each key every few steps leaves chunks of one or two points: the reference
study's store held 174,000 points in 173,000 chunks, each row paying its key, its three packed
columns and its index entry, and its envelope (``envelope.py``) keeping every point, so the
"1/15 of the bytes" that full-range charts rely on never happened. Merging consecutive chunks of
a key up to `TARGET_POINTS` points gives one row where there were thousands, and envelopes that
are small again.

Chunks are merged whole, never split: a chunk's ``first_seq`` is all that is known of its
points' logging order, so a merged chunk takes its first part's. Points keep their order, so
every read returns exactly what it returned before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["TARGET_POINTS", "merged_chunks"]

# Points per merged chunk: large enough that a row's overhead vanishes and an envelope (one block
# of 32 points in, about 2 out) shrinks it 16x; small enough that a chart of a step range reads
# little more than the range.
TARGET_POINTS = 4096


def _groups(chunks: Sequence[dict], target: int) -> list[list[dict]]:
    groups: list[list[dict]] = []
    size = 0
    for chunk in chunks:
        if groups and size + chunk["count"] <= target:
            groups[-1].append(chunk)
            size += chunk["count"]
        else:
            groups.append([chunk])
            size = chunk["count"]
    return groups


def merged_chunks(
    chunks: Iterable[dict], target: int = TARGET_POINTS
) -> tuple[list[dict], list[tuple[int, int, int, int]]]:
    """Merge one run's chunks (dicts of ``metric_chunks`` columns) key by key.

    Returns the merged chunks and, for each, the rows it replaces as (key_id, first first_seq,
    last first_seq, rows): a key's chunks are merged in ``first_seq`` order, so each merged chunk
    replaces one contiguous range of them. Only chunks that actually merge appear, so a run that
    is already compact costs no write.
    """
    by_key: dict[int, list[dict]] = {}
    for chunk in chunks:
        by_key.setdefault(chunk["key_id"], []).append(chunk)
    merged: list[dict] = []
    replaced: list[tuple[int, int, int, int]] = []
    for key_chunks in by_key.values():
        key_chunks.sort(key=lambda chunk: chunk["first_seq"])
        groups = _groups(key_chunks, target)
        if len(groups) == len(key_chunks):
            continue  # nothing to merge for this key
        for group in groups:
            if len(group) == 1:
                continue  # a chunk that merges with nothing stays as it is
            replaced.append((group[0]["key_id"], group[0]["first_seq"], group[-1]["first_seq"], len(group)))
            merged.append({
                "run_pk": group[0]["run_pk"], "key_id": group[0]["key_id"], "first_seq": group[0]["first_seq"],
                "first_step": min(chunk["first_step"] for chunk in group),
                "last_step": max(chunk["last_step"] for chunk in group),
                "count": sum(chunk["count"] for chunk in group),
                "steps": b"".join(chunk["steps"] for chunk in group),
                "values": b"".join(chunk["values"] for chunk in group),
                "times": b"".join(chunk["times"] for chunk in group),
            })
    return merged, replaced
