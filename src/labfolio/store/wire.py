"""The team server's wire format for one ``Batch``: a JSON header plus packed numpy columns.

JSON for millions of floats would cost more than the store write itself; the columns travel as
the little-endian arrays the store keeps anyway. Layout::

    b"LFB1" | uint32 header length | header (UTF-8 JSON) | steps int64[n] | values float64[n]
           | times float64[n] | seqs int64[n] | codes int32[n]

The header holds run_id, events, key_names, journal_from, journal_to, heartbeat and n. A plain
JSON body (``application/json``, the same header with ``keys``, ``steps``, ``values``, ``times``
and ``seqs`` lists) is accepted too, for clients without numpy. A run's history comes back the
other way as JSON whose columns are base64 of the same little-endian arrays (`encode_history`).
"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np

from ..artifacts import blob_path, is_sha256, is_suffix
from ..errors import StoreError
from .batch import Batch
from .schema import MAX_KEY_LENGTH

__all__ = ["encode_batch", "decode_batch", "decode_json_batch", "encode_history", "decode_history",
           "BATCH_CONTENT_TYPE", "EVENT_TYPES", "BatchFormatError"]

BATCH_CONTENT_TYPE = "application/x-labfolio-batch"
_MAGIC = b"LFB1"
EVENT_TYPES = frozenset({"start", "config", "summary", "artifact", "alert", "finish", "experiment",
                         "note", "status", "state"})


class BatchFormatError(StoreError):
    """A request body that is not a well-formed batch (a client bug, never retried into success)."""


def encode_batch(batch: Batch) -> bytes:
    n = batch.point_count
    if batch.codes is not None:
        key_names = list(batch.key_names or [])
        codes = np.asarray(batch.codes, dtype=np.int32)
    else:
        key_names = list(dict.fromkeys(batch.keys))
        index = {k: i for i, k in enumerate(key_names)}
        codes = np.fromiter((index[k] for k in batch.keys), dtype=np.int32, count=len(batch.keys))
    header = {"v": 1, "run_id": batch.run_id, "events": batch.events, "key_names": key_names,
              "journal_from": batch.journal_from, "journal_to": batch.journal_to,
              "heartbeat": batch.heartbeat, "n": n}
    head = json.dumps(header, separators=(",", ":"), default=str, allow_nan=True).encode("utf-8")
    parts = [_MAGIC, struct.pack("<I", len(head)), head]
    if n:
        parts += [np.asarray(batch.steps, dtype="<i8").tobytes(), np.asarray(batch.values, dtype="<f8").tobytes(),
                  np.asarray(batch.times, dtype="<f8").tobytes(), np.asarray(batch.seqs, dtype="<i8").tobytes(),
                  codes.astype("<i4").tobytes()]
    return b"".join(parts)


def _check_artifact(event: dict) -> None:
    """A copied artifact's row must name its content address: the server serves files only from
    there, and never from a path a client chose."""
    if event.get("is_reference"):
        return
    sha, path = event.get("sha256"), event.get("path")
    if not isinstance(sha, str) or not isinstance(path, str) or not is_sha256(sha):
        raise BatchFormatError("a copied artifact needs sha256 (64 lowercase hex digits) and its path")
    suffix = path[len(sha) + 3:] if path.startswith(f"{sha[:2]}/{sha}") else None
    if suffix is None or not is_suffix(suffix) or path != blob_path(sha, suffix):
        raise BatchFormatError(f"a copied artifact's path must be its content address {sha[:2]}/{sha}<suffix>, "
                               f"not {path!r} (log files elsewhere with reference=True)")


def _check_header(header) -> None:
    if not isinstance(header, dict):
        raise BatchFormatError("a batch header must be a JSON object")
    run_id = header.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id or len(run_id) > 400):
        raise BatchFormatError("run_id must be a non-empty string of at most 400 characters, or null")
    events = header.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BatchFormatError("events must be a list of objects")
    for event in events:
        if event.get("type") not in EVENT_TYPES:
            raise BatchFormatError(f"unknown event type {event.get('type')!r}; known: {', '.join(sorted(EVENT_TYPES))}")
        if event["type"] == "artifact":
            _check_artifact(event)
    for name in ("journal_from", "journal_to"):
        value = header.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BatchFormatError(f"{name} must be a non-negative integer or null")
    heartbeat = header.get("heartbeat")
    if heartbeat is not None and (not isinstance(heartbeat, (int, float)) or isinstance(heartbeat, bool)):
        raise BatchFormatError("heartbeat must be a number or null")


def _check_keys(names) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_LENGTH for k in names):
        raise BatchFormatError(f"metric keys must be non-empty strings of at most {MAX_KEY_LENGTH} characters")
    return names


def _batch(header: dict, **columns) -> Batch:
    if columns.get("values") is not None and len(columns["values"]) and header.get("run_id") is None:
        raise BatchFormatError("points need a run_id")
    return Batch(run_id=header.get("run_id"), events=list(header.get("events") or []),
                 journal_from=header.get("journal_from"), journal_to=header.get("journal_to"),
                 heartbeat=header.get("heartbeat"), **columns)


def decode_batch(body: bytes) -> Batch:
    """The batch in a binary body; ``BatchFormatError`` saying what is wrong otherwise."""
    if len(body) < 8 or body[:4] != _MAGIC:
        raise BatchFormatError(f"not a labfolio batch (expected the {_MAGIC!r} magic of {BATCH_CONTENT_TYPE})")
    (head_len,) = struct.unpack_from("<I", body, 4)
    if 8 + head_len > len(body):
        raise BatchFormatError("truncated batch header")
    try:
        header = json.loads(body[8: 8 + head_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BatchFormatError(f"batch header is not JSON: {exc}") from None
    _check_header(header)
    n = header.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise BatchFormatError("n must be a non-negative integer")
    names = _check_keys(header.get("key_names") or [])
    offset = 8 + head_len
    if len(body) - offset != n * 36:
        raise BatchFormatError(f"batch says {n} points but carries {len(body) - offset} bytes of columns "
                               f"(expected {n * 36})")
    if n == 0:
        return _batch(header)
    steps = np.frombuffer(body, dtype="<i8", count=n, offset=offset)
    values = np.frombuffer(body, dtype="<f8", count=n, offset=offset + 8 * n)
    times = np.frombuffer(body, dtype="<f8", count=n, offset=offset + 16 * n)
    seqs = np.frombuffer(body, dtype="<i8", count=n, offset=offset + 24 * n)
    codes = np.frombuffer(body, dtype="<i4", count=n, offset=offset + 32 * n)
    if codes.min() < 0 or codes.max() >= len(names):
        raise BatchFormatError("a point's key code is outside key_names")
    return _batch(header, key_names=names, codes=codes.astype(np.int64), steps=steps, values=values,
                  times=times, seqs=seqs)


def decode_json_batch(header) -> Batch:
    """The batch in a JSON body (lists instead of packed columns)."""
    _check_header(header)
    keys = _check_keys(list(header.get("keys") or []))
    columns = {}
    for name, dtype in (("steps", np.int64), ("values", np.float64), ("times", np.float64), ("seqs", np.int64)):
        raw = header.get(name) or []
        if not isinstance(raw, list):
            raise BatchFormatError(f"{name} must be a list")
        try:
            columns[name] = np.asarray(raw, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise BatchFormatError(f"{name} must hold numbers only") from None
        if columns[name].ndim != 1:
            raise BatchFormatError(f"{name} must be a flat list")
    lengths = {len(keys), *(len(c) for c in columns.values())}
    if len(lengths) != 1:
        raise BatchFormatError("keys, steps, values, times and seqs must have the same length")
    if not keys:
        return _batch(header)
    return _batch(header, keys=keys, **columns)


# -- metric histories, read back over the server's API ------------------------------------------

_HISTORY_COLUMNS = (("steps", "<i8"), ("values", "<f8"), ("times", "<f8"))


def encode_history(history: dict) -> dict:
    """``{key: MetricHistory}`` as JSON-safe data: each column base64 of its little-endian bytes."""
    return {key: {name: base64.b64encode(np.ascontiguousarray(getattr(series, name), dtype=dtype).tobytes())
                  .decode("ascii") for name, dtype in _HISTORY_COLUMNS}
            for key, series in history.items()}


def decode_history(data: dict) -> dict:
    """The inverse of `encode_history`: ``{key: MetricHistory}`` with the stored values, bit for bit."""
    from .records import MetricHistory

    out = {}
    try:
        for key, columns in data.items():
            arrays = {name: np.frombuffer(base64.b64decode(columns[name]), dtype=dtype).astype(dtype.lstrip("<"))
                      for name, dtype in _HISTORY_COLUMNS}
            if not len(arrays["steps"]) == len(arrays["values"]) == len(arrays["times"]):
                raise ValueError("columns of different lengths")
            out[key] = MetricHistory(key, arrays["steps"], arrays["values"], arrays["times"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BatchFormatError(f"a history from the server is malformed ({exc}): is the server another "
                               "labfolio version?") from None
    return out
