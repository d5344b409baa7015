"""What labfolio last wrote into a vault: ``<vault>/.labfolio/state.json``.

For each note it wrote: the hash of the whole file, and the hash of every human section as it was
written. Reading a note back, a section whose text differs from what was written is a human edit
and goes to the store; one that is unchanged is left alone, so a newer value in the store (typed
in the dashboard, or imported) is never overwritten by a stale file. A file whose hash is
unchanged is not even parsed. Plot fingerprints live here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["VaultState", "STATE_DIR", "text_hash", "field_key", "split_field_key", "write_if_changed", "file_info"]

STATE_DIR = ".labfolio"
_STATE_FILE = "state.json"
_VERSION = 1


def text_hash(text: str) -> str:
    if not text:  # most human fields are empty: tens of thousands of them per vault
        return _EMPTY_HASH
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_EMPTY_HASH = hashlib.sha1(b"").hexdigest()


def field_key(scope: str, owner: str, name: str) -> str:
    """'experiment|gated_003|hypothesis' (owner may itself contain '|')."""
    return f"{scope}|{owner}|{name}"


def split_field_key(key: str) -> tuple[str, str, str]:
    scope, rest = key.split("|", 1)
    owner, name = rest.rsplit("|", 1)
    return scope, owner, name


_UNKNOWN = object()  # write_if_changed's `info` when the caller has not looked at the file yet
# os.open's flags for a new temporary file: binary on Windows, not inherited by child processes
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def file_info(path: str | os.PathLike) -> os.stat_result | None:
    """The stat of `path` (following links), None when there is nothing there."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def write_if_changed(path: str | os.PathLike, data: bytes | str, *, info: os.stat_result | None | object = _UNKNOWN,
                     folders: set[str] | None = None) -> bool:
    """Write `data` to `path` atomically unless the file already holds exactly that.

    A vault is thousands of small files, so each costs as few system calls as it can: `info` is
    the file's ``file_info`` when the caller already has it (one stat for both), the file is read
    only when its size matches, `folders` remembers the folders already made during one write of
    the vault, and the bytes go through a temporary file (os.open, write, close, rename)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    name = os.fspath(path)
    if info is _UNKNOWN:
        info = file_info(name)
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == len(payload):
        try:
            with open(name, "rb") as existing:
                if existing.read() == payload:
                    return False
        except OSError:
            pass
    folder, base = os.path.split(name)
    if folder and (folders is None or folder not in folders):
        os.makedirs(folder, exist_ok=True)
        if folders is not None:
            folders.add(folder)
    temporary = os.path.join(folder, f".{base}.tmp-{os.getpid()}")
    handle = os.open(temporary, _CREATE_FLAGS, 0o666)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(handle, view):]
        finally:
            os.close(handle)
        os.replace(temporary, name)
    except BaseException:
        # a full disk or a refused rename must not leave a stray temporary file in the vault
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return True


@dataclass
class VaultState:
    """The state file's content."""

    # relpath -> {"sha": ..., "fields": {key: sha}}, plus for experiment and variant notes "fp" (the
    # fingerprint of their inputs) and "written" (the hash of what was written from them)
    files: dict[str, dict] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # experiment folder -> experiment name
    variants: dict[str, list[str]] = field(default_factory=dict)  # "folder/stem" -> [experiment, variant]
    plots: dict[str, str] = field(default_factory=dict)  # plot relpath -> fingerprint
    _as_loaded: dict | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, vault: Path) -> VaultState:
        path = vault / STATE_DIR / _STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, ValueError):
            return cls()
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return cls()
        state = cls(files=dict(data.get("files") or {}), folders=dict(data.get("folders") or {}),
                    variants=dict(data.get("variants") or {}), plots=dict(data.get("plots") or {}))
        # A second, untouched copy (the entries above are mutated in place by sync and render), so
        # an unchanged state is recognised without encoding thousands of entries again.
        state._as_loaded = json.loads(text)
        return state

    def _content(self) -> dict:
        return {"version": _VERSION, "files": self.files, "folders": self.folders, "variants": self.variants,
                "plots": self.plots}

    def save(self, vault: Path) -> bool:
        path = vault / STATE_DIR / _STATE_FILE
        content = self._content()
        if content == self._as_loaded and path.is_file():
            return False
        return write_if_changed(path, _dump(content))

    def field_hash(self, relpath: str, key: str) -> str | None:
        return (self.files.get(relpath) or {}).get("fields", {}).get(key)


def _dump(content: dict) -> str:
    """JSON with one line per entry of each table (one line per note), so a vault kept in git shows
    which notes changed; each line is encoded by the C encoder, which indent= would bypass."""
    lines = ["{"]
    keys = sorted(content)
    for index, key in enumerate(keys):
        value = content[key]
        comma = "," if index < len(keys) - 1 else ""
        if isinstance(value, dict) and value:
            lines.append(f"{json.dumps(key)}: {{")
            names = sorted(value)
            lines += [f"{json.dumps(name, ensure_ascii=False)}: "
                      f"{json.dumps(value[name], sort_keys=True, ensure_ascii=False)}"
                      + ("," if i < len(names) - 1 else "") for i, name in enumerate(names)]
            lines.append("}" + comma)
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"
