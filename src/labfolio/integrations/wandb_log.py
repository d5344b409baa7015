"""Reading a W&B run's transaction log (``run-<id>.wandb``) into wandb's own record messages.

The log is LevelDB's log format behind a 7-byte file header (``:W&B``, a magic number, a
version): 32 KiB blocks of records, each with a CRC-32 of its type byte and payload, a length and
a type (whole, or the first, a middle or the last piece of a record split across blocks). The
payloads are ``wandb_internal_pb2.Record`` messages, decoded with wandb's own schema. Releases of
wandb that still ship their Python reader (``wandb.sdk.internal.datastore``) are read with it.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

__all__ = ["scan_run_file", "INSTALL_HINT"]

INSTALL_HINT = "reading W&B offline runs needs wandb: pip install 'labfolio[wandb]'"

# The transaction log is LevelDB's log format behind a 7-byte file header.
_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_RECORD_HEADER = struct.Struct("<IHB")  # crc32 of type byte + payload, length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _load_record_schema():
    try:
        from wandb.proto import wandb_internal_pb2
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc.name} is missing)") from None
    return wandb_internal_pb2


def _scan_with_wandb(path: Path) -> Iterator[bytes] | None:
    try:
        from wandb.sdk.internal import datastore  # wandb's Python reader, in releases that ship it
    except ImportError:
        return None

    def scan() -> Iterator[bytes]:
        store = datastore.DataStore()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            yield data

    return scan()


def _scan_log_format(path: Path, problems: list[str]) -> Iterator[bytes]:
    """Record payloads of a transaction log (LevelDB log format), checksums verified.

    A log whose writer was killed ends in a partial record: reading stops there, and the
    problem is noted, so everything written before it still comes in.
    """
    data = path.read_bytes()
    if len(data) < _FILE_HEADER.size or _FILE_HEADER.unpack_from(data)[0] != b":W&B":
        raise ConfigError(f"{path} is not a W&B run file (it lacks the ':W&B' header)")
    position, pending = _FILE_HEADER.size, None
    while position < len(data):
        room = _BLOCK - position % _BLOCK
        if room < _RECORD_HEADER.size:
            position += room  # the writer pads a block's last few bytes
            continue
        if position + _RECORD_HEADER.size > len(data):
            problems.append("a truncated record header at the end")
            return
        checksum, length, kind = _RECORD_HEADER.unpack_from(data, position)
        if checksum == 0 and length == 0 and kind == 0:
            return  # zero-filled space after the last record
        start = position + _RECORD_HEADER.size
        payload = data[start:start + length]
        if len(payload) < length:
            problems.append("a truncated record at the end")
            return
        if zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF != checksum:
            problems.append(f"a corrupt record at byte {position}; reading stopped there")
            return
        position = start + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = bytearray(payload)
        elif kind == _MIDDLE and pending is not None:
            pending += payload
        elif kind == _LAST and pending is not None:
            yield bytes(pending + payload)
            pending = None
    if pending is not None:
        # the file ends between the pieces of a record split across blocks: the writer was cut off
        problems.append("a truncated record at the end (a record split across blocks lacks its last piece)")


def scan_run_file(path: str | Path) -> Iterator:
    """The decoded ``wandb_internal_pb2.Record`` messages of a ``run-<id>.wandb`` file."""
    schema = _load_record_schema()
    path = Path(path)
    problems: list[str] = []
    payloads = _scan_with_wandb(path) or _scan_log_format(path, problems)
    for payload in payloads:
        record = schema.Record()
        record.ParseFromString(payload)
        yield record
    if problems:
        warnings.warn(f"{path}: {'; '.join(problems)}", RuntimeWarning, stacklevel=2)
