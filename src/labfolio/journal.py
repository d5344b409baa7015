"""The per-run journal: the crash-safe, nearly free first stop of every logged value.

Why a journal: ``run.log()`` must cost a few microseconds in the training loop *and* every point
must survive ``kill -9`` right after ``log()`` returns. A memory-mapped file gives both: the caller
copies a compact record into a shared mapping (no system call, no lock on the store), and the
kernel's page cache owns those bytes the moment the copy ends, whether or not the process lives.
A background drainer later reads the same records back and writes them to the store in batches.

Layout: ``<journal_dir>/<run_id>/seg-<n>.lfj`` segments of ``SEGMENT_BYTES``, preallocated as
zeros, plus a ``lock`` file the writing process holds with ``flock`` for its lifetime (a free lock
means the writer is gone, so the journal can be recovered).

Record layout (little endian, every record padded to 8 bytes)::

    u32 length | u8 tag | payload

The length is stored *after* the payload, so a reader that sees a non-zero length knows the
whole record is there; a zero length marks the end of what was written. ``NEXT_SEGMENT`` as a
length says the writer moved on to the next segment file.

A position is ``segment << 32 | offset``: one integer that orders every record of a run and is
what the store remembers as "drained up to here".

Every segment after the first starts with the shape records of all shapes defined so far: drained
segments are deleted, and points refer to their keys by shape id, so this keeps a journal readable
from its oldest remaining segment (recovery after a crash, a copy of a live store).
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import JournalError

__all__ = [
    "JournalWriter",
    "JournalReader",
    "JournalRecords",
    "ShapeEncoder",
    "position",
    "split_position",
    "journal_is_orphaned",
    "list_journals",
    "copy_journal",
    "SEGMENT_BYTES",
]

SEGMENT_BYTES = 8 << 20
MAGIC = b"LFJ1"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHI")  # magic, format version, reserved, segment number
HEADER_BYTES = 16
LENGTH = struct.Struct("<I")
NEXT_SEGMENT = 0xFFFFFFFF

TAG_SHAPE = 1  # u32 shape id + JSON list of keys: the names behind every later POINTS record
TAG_POINTS = 2  # u32 shape id, i64 step, f64 unix time, f64 × len(keys)
TAG_EVENT = 3  # JSON object: run start, config and summary updates, artifacts, alerts, finish

_POINTS_PREFIX = "<IBIqd"  # length, tag, shape id, step, time


def position(segment: int, offset: int) -> int:
    return (segment << 32) | offset


def split_position(pos: int) -> tuple[int, int]:
    return pos >> 32, pos & 0xFFFFFFFF


def _padded(size: int) -> int:
    return (size + 7) & ~7


def _segment_path(folder: Path, segment: int) -> Path:
    return folder / f"seg-{segment:06d}.lfj"


def _segment_numbers(folder: Path) -> list[int]:
    numbers = []
    for path in folder.glob("seg-*.lfj"):
        try:
            numbers.append(int(path.stem[4:]))
        except ValueError:
            continue
    return sorted(numbers)


@dataclass
class ShapeEncoder:
    """A precompiled encoder for one set of metric keys, so ``log()`` packs with one call."""

    shape_id: int
    keys: tuple[str, ...]
    packer: struct.Struct
    size: int


class JournalWriter:
    """Appends records to a run's journal. Thread-safe; owned by one process at a time."""

    def __init__(self, folder: Path, *, header_event: dict | None = None, first_segment: int = 0):
        self.folder = Path(folder)
        # Segments that could not be put in a file (disk full, unwritable folder) live in
        # anonymous memory instead: same format, same drain path, but only while we live.
        self.memory_segments: dict[int, mmap.mmap] = {}
        self.warned_memory = False
        self._lock_file = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.folder / "lock", "a+b")
        except OSError as exc:
            self._warn_memory(exc)
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise JournalError(
                    f"the journal {self.folder} is in use by another live process; a run can be "
                    "written by one process at a time (is this run already running elsewhere?)"
                ) from None
        self._guard = threading.Lock()
        existing = _segment_numbers(self.folder) if self._lock_file is not None else []
        self._shape_ids = 0
        self._shape_payloads: dict[int, bytes] = {}  # repeated at the top of every new segment
        self._mm: mmap.mmap | None = None
        self._fd = -1
        # A resumed run starts a fresh segment after any undrained ones, so earlier records keep
        # their positions and the drainer picks them up in order.
        self._open_segment(max(existing[-1] + 1 if existing else 0, first_segment))
        self.closed = False
        if header_event is not None:
            self.append_event(header_event)

    # -- segments ---------------------------------------------------------------------------
    def _open_segment(self, segment: int) -> None:
        try:
            fd, mm = self._file_segment(segment)
        except OSError as exc:
            self._warn_memory(exc)
            fd, mm = -1, mmap.mmap(-1, SEGMENT_BYTES)
            self.memory_segments[segment] = mm
        HEADER.pack_into(mm, 0, MAGIC, FORMAT_VERSION, 0, segment)
        old_mm, old_fd = self._mm, self._fd
        self._mm, self._fd = mm, fd
        self.segment = segment
        self.offset = HEADER_BYTES
        if old_mm is not None and old_fd >= 0:  # memory segments stay until drained
            old_mm.close()
            os.close(old_fd)

    def _file_segment(self, segment: int) -> tuple[int, mmap.mmap]:
        if self._lock_file is None:
            raise OSError(f"no journal folder at {self.folder}")
        fd = os.open(_segment_path(self.folder, segment), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                # Reserve the blocks now: writing into a sparse mapping on a full disk would kill
                # the process with SIGBUS, which the tracker must never do to training.
                os.posix_fallocate(fd, 0, SEGMENT_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(fd, SEGMENT_BYTES)
            return fd, mmap.mmap(fd, SEGMENT_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            _segment_path(self.folder, segment).unlink(missing_ok=True)
            raise

    def _warn_memory(self, exc: OSError) -> None:
        if not self.warned_memory:
            self.warned_memory = True
            warnings.warn(
                f"labfolio cannot write the run journal under {self.folder} ({exc}); keeping new "
                "points in memory until they reach the store. They are not crash-safe until the "
                "disk has room again.", RuntimeWarning, stacklevel=4)

    @property
    def memory_bytes(self) -> int:
        """Bytes of records held only in memory (not yet known to be in the store)."""
        return len(self.memory_segments) * SEGMENT_BYTES

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` bytes, moving to a new segment when this one is full."""
        if self.offset + size + LENGTH.size > SEGMENT_BYTES:
            if size + HEADER_BYTES + LENGTH.size > SEGMENT_BYTES:
                raise JournalError(f"a record of {size} bytes does not fit in a journal segment")
            LENGTH.pack_into(self._mm, self.offset, NEXT_SEGMENT)
            self._open_segment(self.segment + 1)
            self._repeat_shapes(room_for=size)

    def _repeat_shapes(self, room_for: int) -> None:
        sizes = [_padded(LENGTH.size + 1 + len(p)) for p in self._shape_payloads.values()]
        if self.offset + sum(sizes) + room_for + LENGTH.size > SEGMENT_BYTES:
            # Thousands of key sets: the segment cannot hold them all. Only recovery from this
            # segment on loses out (it stops at the first point whose shape it has not seen).
            return
        for payload in self._shape_payloads.values():
            self._put(TAG_SHAPE, payload)

    @property
    def position(self) -> int:
        return position(self.segment, self.offset)

    # -- records ----------------------------------------------------------------------------
    def _put(self, tag: int, payload: bytes) -> None:
        """Write one record at the current offset; the caller holds the guard and made room."""
        size = _padded(LENGTH.size + 1 + len(payload))
        off = self.offset
        self._mm[off + 4] = tag
        self._mm[off + 5: off + 5 + len(payload)] = payload
        LENGTH.pack_into(self._mm, off, size)  # written last: the record now exists
        self.offset = off + size

    def _append_raw(self, tag: int, payload: bytes) -> None:
        with self._guard:
            self._reserve(_padded(LENGTH.size + 1 + len(payload)))
            self._put(tag, payload)

    def append_event(self, event: dict) -> None:
        self._append_raw(TAG_EVENT, json.dumps(event, separators=(",", ":"), default=str).encode())

    def define_shape(self, keys: tuple[str, ...]) -> ShapeEncoder:
        with self._guard:
            self._shape_ids += 1
            shape_id = self._shape_ids
            payload = struct.pack("<I", shape_id) + json.dumps(list(keys)).encode()
            self._reserve(_padded(LENGTH.size + 1 + len(payload)))
            self._put(TAG_SHAPE, payload)
            # Remembered after the write: a segment change during it repeats only older shapes.
            self._shape_payloads[shape_id] = payload
        fmt = f"{_POINTS_PREFIX}{len(keys)}d"
        size = _padded(struct.calcsize(fmt))
        return ShapeEncoder(shape_id, keys, struct.Struct(fmt), size)

    def append_points(self, enc: ShapeEncoder, step: int, when: float, values) -> None:
        """The hot path: one packed copy into the mapping, then the length that commits it."""
        with self._guard:
            off = self.offset
            if off + enc.size + 4 > SEGMENT_BYTES:
                self._reserve(enc.size)
                off = self.offset
            # The length field is packed as 0 here and set by the second, 4-byte write below,
            # so a reader never sees a length in front of a half-copied record.
            enc.packer.pack_into(self._mm, off, 0, TAG_POINTS, enc.shape_id, step, when, *values)
            LENGTH.pack_into(self._mm, off, enc.size)
            self.offset = off + enc.size

    def close(self, *, delete: bool = False) -> None:
        """Release the mapping and the lock; ``delete`` removes the journal (fully drained)."""
        if self.closed:
            return
        with self._guard:
            self.closed = True
            if self._mm is not None and self._fd >= 0:
                self._mm.close()
                os.close(self._fd)
            self._mm = None
            for mm in self.memory_segments.values():
                mm.close()
            self.memory_segments.clear()
        if self._lock_file is None:
            return
        if delete:
            remove_journal(self.folder)
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()


def remove_journal(folder: Path) -> None:
    for path in folder.glob("seg-*.lfj"):
        path.unlink(missing_ok=True)
    (folder / "lock").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


@dataclass
class JournalRecords:
    """What a reader decoded: events, and points as columns in journal order.

    Points carry a key *code* (an index into ``key_names``) rather than a string each, so a batch
    of a million points costs numpy arrays, not a million Python objects.
    """

    events: list[dict] = field(default_factory=list)
    event_positions: list[int] = field(default_factory=list)
    key_names: list[str] = field(default_factory=list)
    codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    steps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    times: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    seqs: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # record positions
    end: int = 0

    @property
    def point_count(self) -> int:
        return len(self.values)

    @property
    def keys(self) -> list[str]:
        names = self.key_names
        return [names[c] for c in self.codes.tolist()]

    def __bool__(self) -> bool:
        return bool(self.events) or self.point_count > 0


def _points_dtype(count: int, size: int) -> np.dtype:
    # Mirrors _POINTS_PREFIX + count doubles, padded to ``size``; lets numpy decode a run of
    # same-shaped records in one call instead of one struct.unpack per record.
    return np.dtype({"names": ["len", "tag", "shape", "step", "time", "vals"],
                     "formats": ["<u4", "u1", "<u4", "<i8", "<f8", ("<f8", (count,))],
                     "offsets": [0, 4, 5, 9, 17, 25], "itemsize": size})


class JournalReader:
    """Reads a run's journal from a position on. Works on live and orphaned journals alike.

    The reader keeps the shape table it has seen, so a drainer can call ``read`` repeatedly. When
    it starts past the beginning (recovery after a partial drain) it first replays the shape
    records it skipped, because points refer to shapes by id.
    """

    def __init__(self, folder: Path, memory_segments: dict[int, mmap.mmap] | None = None):
        self.folder = Path(folder)
        self._memory = memory_segments if memory_segments is not None else {}
        self._shapes: dict[int, tuple[tuple[str, ...], struct.Struct]] = {}
        self._maps: dict[int, mmap.mmap] = {}
        self._shapes_loaded_upto = position(0, 0)

    def _map(self, segment: int) -> mmap.mmap | None:
        mm = self._maps.get(segment) or self._memory.get(segment)
        if mm is not None:
            return mm
        path = _segment_path(self.folder, segment)
        try:
            with open(path, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            return None
        if not any(mm[:HEADER_BYTES]):
            # Created and sized but not yet stamped: the writer is between fallocate and the
            # header (or died there), so like a zero length it means "nothing written yet".
            mm.close()
            return None
        magic, version, _, number = HEADER.unpack_from(mm, 0)
        if magic != MAGIC or number != segment:
            mm.close()
            raise JournalError(f"{path} is not a labfolio journal segment (bad header)")
        if version > FORMAT_VERSION:
            mm.close()
            raise JournalError(f"{path} was written by a newer labfolio (journal v{version})")
        self._maps[segment] = mm
        return mm

    def _numbers(self) -> list[int]:
        return sorted({*_segment_numbers(self.folder), *self._memory})

    def first_position(self) -> int:
        numbers = self._numbers()
        return position(numbers[0], HEADER_BYTES) if numbers else position(0, HEADER_BYTES)

    def _iter_records(self, start: int, stop_segment: int | None = None) -> Iterator[tuple[int, int, memoryview | mmap.mmap, int, int]]:
        segment, offset = split_position(start)
        numbers = self._numbers()
        if numbers and segment < numbers[0]:
            segment, offset = numbers[0], HEADER_BYTES
        offset = max(offset, HEADER_BYTES)
        while True:
            mm = self._map(segment)
            if mm is None:
                return
            while offset + 4 <= len(mm):
                (size,) = LENGTH.unpack_from(mm, offset)
                if size == 0:
                    return
                if size == NEXT_SEGMENT:
                    break
                if size < 8 or offset + size > len(mm):
                    raise JournalError(f"corrupt record at segment {segment} offset {offset}")
                yield segment, offset, mm, size, mm[offset + 4]
                offset += size
            else:
                return
            if stop_segment is not None and segment >= stop_segment:
                return
            segment, offset = segment + 1, HEADER_BYTES
            # The writer may be about to create it; a missing next segment simply ends the read.

    def _load_shapes_before(self, start: int) -> None:
        if start <= self._shapes_loaded_upto:
            return
        for segment, offset, mm, size, tag in self._iter_records(self.first_position()):
            if position(segment, offset) >= start:
                break
            if tag == TAG_SHAPE:
                self._decode_shape(mm, offset, size)
        self._shapes_loaded_upto = start

    def _decode_shape(self, mm, offset: int, size: int) -> None:
        (shape_id,) = struct.unpack_from("<I", mm, offset + 5)
        raw = bytes(mm[offset + 9: offset + size]).rstrip(b"\0")
        keys = tuple(json.loads(raw))
        record_size = _padded(struct.calcsize(f"{_POINTS_PREFIX}{len(keys)}d"))
        self._shapes[shape_id] = (keys, _points_dtype(len(keys), record_size), record_size)

    def read(self, start: int | None = None, *, max_points: int = 1 << 62) -> JournalRecords:
        """Decode records from ``start`` (default: the beginning) to the end of what is written."""
        start = self.first_position() if start is None else start
        self._load_shapes_before(start)
        out = JournalRecords(end=start)
        code_of: dict[str, int] = {}
        parts: list[tuple] = []
        points = 0
        segment, offset = split_position(start)
        numbers = self._numbers()
        if numbers and segment < numbers[0]:
            segment, offset = numbers[0], HEADER_BYTES
        offset = max(offset, HEADER_BYTES)
        finished = False
        while not finished:
            mm = self._map(segment)
            if mm is None:
                break
            limit = len(mm)
            while True:
                if offset + 4 > limit:
                    finished = True
                    break
                (size,) = LENGTH.unpack_from(mm, offset)
                if size == 0:
                    finished = True
                    break
                if size == NEXT_SEGMENT:
                    segment, offset = segment + 1, HEADER_BYTES
                    break
                if size < 8 or offset + size > limit:
                    raise JournalError(f"corrupt record at segment {segment} offset {offset}")
                tag = mm[offset + 4]
                if tag == TAG_POINTS:
                    (shape_id,) = struct.unpack_from("<I", mm, offset + 5)
                    try:
                        names, dtype, record_size = self._shapes[shape_id]
                    except KeyError:
                        raise JournalError(f"points before their shape in {self.folder} at segment "
                                           f"{segment} offset {offset}") from None
                    if record_size != size:
                        raise JournalError(f"corrupt record at segment {segment} offset {offset}")
                    # Decode the run of same-shaped records starting here in one numpy call.
                    wanted = max(1, (max_points - points + len(names) - 1) // len(names))
                    count = min((limit - offset) // size, 65536, wanted)
                    block = np.frombuffer(mm, dtype=dtype, count=count, offset=offset)
                    same = (block["len"] == size) & (block["tag"] == TAG_POINTS) & (block["shape"] == shape_id)
                    taken = count if same.all() else int(np.argmin(same))
                    block = block[:taken]
                    codes = np.array([code_of.setdefault(k, len(code_of)) for k in names], dtype=np.int64)
                    n = len(names)
                    first_pos = position(segment, offset)
                    parts.append((
                        np.tile(codes, taken), np.repeat(block["step"], n),
                        np.array(block["vals"], dtype=np.float64).reshape(-1), np.repeat(block["time"], n),
                        np.repeat(first_pos + np.arange(taken, dtype=np.int64) * size, n),
                    ))
                    points += taken * n
                    offset += taken * size
                elif tag == TAG_SHAPE:
                    self._decode_shape(mm, offset, size)
                    offset += size
                elif tag == TAG_EVENT:
                    raw = bytes(mm[offset + 5: offset + size]).rstrip(b"\0")
                    out.events.append(json.loads(raw))
                    out.event_positions.append(position(segment, offset))
                    offset += size
                else:
                    raise JournalError(f"unknown record tag {tag} in {self.folder} at segment "
                                       f"{segment} offset {offset}")
                out.end = position(segment, offset)
                if points >= max_points:
                    finished = True
                    break
        if parts:
            out.codes, out.steps, out.values, out.times, out.seqs = (
                np.concatenate(column) for column in zip(*parts))
        out.key_names = list(code_of)
        self._shapes_loaded_upto = max(self._shapes_loaded_upto, out.end)
        return out

    def delete_segments_before(self, pos: int) -> None:
        """Drop segment files wholly before ``pos`` (already in the store)."""
        segment, _ = split_position(pos)
        for number in self._numbers():
            if number < segment:
                mm = self._maps.pop(number, None)
                if mm is not None:
                    mm.close()
                # The writer owns (and closes) memory segments; dropping our reference frees them.
                self._memory.pop(number, None)
                _segment_path(self.folder, number).unlink(missing_ok=True)

    def close(self) -> None:
        for mm in self._maps.values():
            mm.close()
        self._maps.clear()


def journal_is_orphaned(folder: Path) -> bool:
    """True when no live process holds the journal's lock (its writer finished or died)."""
    lock_path = Path(folder) / "lock"
    if not lock_path.exists():
        return True
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def list_journals(*folders: Path) -> list[Path]:
    """Every run journal under the given journal folders."""
    found = []
    for base in folders:
        base = Path(base)
        if base.is_dir():
            found.extend(sorted(p for p in base.iterdir() if p.is_dir() and any(p.glob("seg-*.lfj"))))
    return found


def _written_prefix(data: bytearray, segment: int) -> tuple[int | None, bool]:
    """(end of the records a reader would see, whether the segment moved on to the next one).

    ``None`` for a segment not yet stamped with its header. A bad header or a corrupt record
    keeps the whole segment, for the reader to report as it would on the original.
    """
    if len(data) < HEADER_BYTES or not any(data[:HEADER_BYTES]):
        return None, False
    magic, _, _, number = HEADER.unpack_from(data, 0)
    if magic != MAGIC or number != segment:
        return len(data), False
    offset = HEADER_BYTES
    while offset + LENGTH.size <= len(data):
        (size,) = LENGTH.unpack_from(data, offset)
        if size == 0:
            return offset, False
        if size == NEXT_SEGMENT:
            return offset + LENGTH.size, True
        if size < 8 or offset + size > len(data):
            return len(data), False
        offset += size
    return offset, False


def copy_journal(source: Path, target: Path) -> int:
    """Copy a journal that may still be written, as it was at one moment; returns segments copied.

    A copy is read front to back while the writer appends, so past a record that was not there
    yet when its bytes were read (a zero length), it can hold records the writer added a moment
    later. Everything from that first gap on is zeroed, and later segments are left out, so the
    copy is a prefix of the journal: records after a gap whose shape sits in the gap could not
    be decoded. Segments deleted meanwhile (drained into the store) are skipped.
    """
    source, target = Path(source), Path(target)
    numbers = _segment_numbers(source)
    copied = 0
    while numbers:
        number = numbers.pop(0)
        try:
            data = bytearray(_segment_path(source, number).read_bytes())
        except FileNotFoundError:
            continue
        end, moved_on = _written_prefix(data, number)
        if end is None:
            break
        data[end:] = bytes(len(data) - end)
        target.mkdir(parents=True, exist_ok=True)
        _segment_path(target, number).write_bytes(data)
        copied += 1
        if not moved_on:
            break
        numbers = [number + 1]  # follow the writer into the segment it moved on to, listed or not
    return copied
