"""Each metric chunk's envelope: the few real points that a full-range chart cannot do without.

A chart of 100 runs x 100k steps draws about 2,000 points per run, so its buckets are ~100 points
wide, yet reading it from the raw chunks moves every point (160 MB for steps and values) out of
the database and through the downsampler. The envelope of a chunk keeps, for every block of
``BLOCK`` consecutive points in logging order, the block's smallest and largest finite value and
its first non-finite one, plus the chunk's first and last point. Those are real logged points,
stored in the same packed layout as the chunk itself (``metric_envelopes``), about 1/15 of its
size. Every block's min and max reach the downsampler, so a chart bucket at least a block wide
gets exactly the min and max the raw points would give it: spikes survive, a NaN still shows as a
gap, and the curve still starts and ends at the first and last logged values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "envelope_indices", "envelope_rows"]

# Points per block. A chart bucket at least this wide loses nothing by reading envelopes; 32 keeps
# envelopes ~1/15 of the raw bytes and, at 2,000 points a chart, applies from 32k points a run.
BLOCK = 32


def envelope_indices(values: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Sorted indices (logging order) of the points that make up the envelope of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n <= 4:
        return np.arange(n, dtype=np.int64)
    rows = -(-n // block)
    pad = rows * block - n
    finite = np.isfinite(values)
    lo = np.where(finite, values, np.inf)
    hi = np.where(finite, values, -np.inf)
    nonfinite = ~finite
    if pad:  # padding never wins a min, a max or a first-non-finite
        lo = np.concatenate([lo, np.full(pad, np.inf)])
        hi = np.concatenate([hi, np.full(pad, -np.inf)])
        nonfinite = np.concatenate([nonfinite, np.zeros(pad, dtype=bool)])
    base = np.arange(rows, dtype=np.int64) * block
    # argmin/argmax give the first index attaining it; a block with no finite value gives its
    # first point, which is then non-finite and keeps the gap.
    mins = base + np.argmin(lo.reshape(rows, block), axis=1)
    maxs = base + np.argmax(hi.reshape(rows, block), axis=1)
    nf = nonfinite.reshape(rows, block)
    has_nf = nf.any(axis=1)
    first_nf = (base + np.argmax(nf, axis=1))[has_nf]
    picked = np.concatenate([[0, n - 1], mins, maxs, first_nf])
    return np.unique(np.minimum(picked, n - 1))


def envelope_rows(chunks: list[dict]) -> list[dict]:
    """``metric_envelopes`` rows for ``metric_chunks`` rows (dicts with the packed columns)."""
    out = []
    for chunk in chunks:
        steps = np.frombuffer(chunk["steps"], dtype="<i8")
        values = np.frombuffer(chunk["values"], dtype="<f8")
        times = np.frombuffer(chunk["times"], dtype="<f8")
        keep = envelope_indices(values)
        out.append({"run_pk": chunk["run_pk"], "key_id": chunk["key_id"], "first_seq": chunk["first_seq"],
                    "first_step": chunk["first_step"], "last_step": chunk["last_step"],
                    "points": len(values), "count": len(keep), "steps": steps[keep].tobytes(),
                    "values": values[keep].tobytes(), "times": times[keep].tobytes()})
    return out
