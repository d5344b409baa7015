"""Merging a run's small metric chunks: whole chunks in logging order, up to the target size."""

from __future__ import annotations

import numpy as np

from labfolio.store.compact import merged_chunks


def _chunk(key_id, first_seq, steps):
    steps = np.asarray(steps, dtype="<i8")
    return {"run_pk": 1, "key_id": key_id, "first_seq": first_seq, "first_step": int(steps.min()),
            "last_step": int(steps.max()), "count": len(steps), "steps": steps.tobytes(),
            "values": (steps * 0.5).astype("<f8").tobytes(), "times": (steps + 1000.0).astype("<f8").tobytes()}


def test_small_chunks_merge_in_logging_order_up_to_the_target_and_large_ones_stay():
    chunks = [_chunk(7, 30, [3]), _chunk(7, 10, [1]), _chunk(7, 20, [2]), _chunk(7, 40, [4, 5, 6]),
              _chunk(7, 50, list(range(7, 17))), _chunk(9, 11, [1]), _chunk(9, 21, [2])]
    merged, replaced = merged_chunks(chunks, target=6)
    by_key = {(m["key_id"], m["first_seq"]): m for m in merged}
    assert sorted(by_key) == [(7, 10), (9, 11)]
    first = by_key[(7, 10)]  # seqs 10, 20, 30, 40: 6 points; the 10-point chunk stays alone
    assert np.frombuffer(first["steps"], dtype="<i8").tolist() == [1, 2, 3, 4, 5, 6]
    assert np.frombuffer(first["values"], dtype="<f8").tolist() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert (first["first_step"], first["last_step"], first["count"]) == (1, 6, 6)
    assert sorted(replaced) == [(7, 10, 40, 4), (9, 11, 21, 2)]


def test_a_run_that_is_already_compact_merges_nothing():
    chunks = [_chunk(1, 0, list(range(100))), _chunk(1, 100, list(range(100, 200))), _chunk(2, 5, [0])]
    assert merged_chunks(chunks, target=150) == ([], [])
