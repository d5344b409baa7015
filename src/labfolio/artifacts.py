"""Content-addressed artifact files under the store's ``artifacts/`` folder.

Files are stored once per content (``ab/abcdef….ext``), so logging the same plot or source file
from many runs costs no extra space. Big files such as checkpoints can be logged as references:
their path, size and hash are recorded and the file stays where it is.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["StoredArtifact", "store_file", "store_bytes", "guess_kind", "COPY_LIMIT_BYTES", "blob_path",
           "contained_file", "IncomingBlob", "is_sha256", "is_suffix", "BlobMismatchError", "BlobTooLargeError"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp"}
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".npz", ".h5"}
# Above this size a file is recorded as a reference unless the caller insists on a copy.
COPY_LIMIT_BYTES = int(os.environ.get("LABFOLIO_ARTIFACT_COPY_LIMIT", 256 << 20))


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    kind: str
    sha256: str
    size: int
    path: str  # relative to the artifact folder when copied, absolute when a reference
    is_reference: bool

    def as_event(self, step: int | None, when: float, meta: dict | None = None) -> dict:
        return {"type": "artifact", "name": self.name, "kind": self.kind, "sha256": self.sha256,
                "size": self.size, "path": self.path, "is_reference": self.is_reference,
                "step": step, "time": when, "meta": meta or {}}


def guess_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    return "file"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _place(artifact_dir: Path, sha: str, suffix: str, write) -> str:
    relative = Path(sha[:2]) / f"{sha}{suffix}"
    target = artifact_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write under a temporary name and rename, so a reader never sees half a file and two
        # runs storing the same content at once cannot clash.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return relative.as_posix()


def store_file(artifact_dir: Path, path: str | os.PathLike, *, kind: str | None = None,
               name: str | None = None, reference: bool | None = None) -> StoredArtifact:
    """Record ``path`` as an artifact: copied by content, or (``reference=True``) left in place."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise ConfigError(f"cannot log artifact {source}: no such file (pass the path to an existing file)")
    size = source.stat().st_size
    kind = kind or guess_kind(source)
    name = name or source.name
    sha = _sha256_file(source)
    as_reference = reference if reference is not None else size > COPY_LIMIT_BYTES
    if as_reference:
        return StoredArtifact(name, kind, sha, size, str(source.resolve()), True)

    def copy(fh):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)

    relative = _place(Path(artifact_dir), sha, source.suffix.lower(), copy)
    return StoredArtifact(name, kind, sha, size, relative, False)


def store_bytes(artifact_dir: Path, data: bytes, *, name: str, kind: str) -> StoredArtifact:
    """Record in-memory bytes (a git diff, a package list) as a content-addressed artifact."""
    sha = hashlib.sha256(data).hexdigest()
    relative = _place(Path(artifact_dir), sha, Path(name).suffix.lower(), lambda fh: fh.write(data))
    return StoredArtifact(name, kind, sha, len(data), relative, False)


# -- blobs received from other machines (the team server) ------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"(\.[^/\\\x00]{1,32})?")  # what Path(name).suffix gives, minus separators


class BlobMismatchError(ConfigError):
    """Bytes whose SHA-256 is not the one they were sent under."""


class BlobTooLargeError(ConfigError):
    """More bytes than the receiver accepts for one artifact."""


def is_sha256(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


def is_suffix(text: str) -> bool:
    return bool(_SUFFIX.fullmatch(text))


def blob_path(sha: str, suffix: str) -> str:
    """The relative path a copied artifact with this content and suffix has in every store."""
    if not is_sha256(sha) or not is_suffix(suffix):
        raise ConfigError(f"not a content address: sha256 {sha!r} (64 lowercase hex digits) with suffix "
                          f"{suffix!r} (a dot and up to 32 characters, no path separators)")
    return (Path(sha[:2]) / f"{sha}{suffix}").as_posix()


def contained_file(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (symlinks resolved), else None."""
    try:
        base = Path(root).resolve()
        candidate = (base / relative).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if base not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None


class IncomingBlob:
    """Bytes arriving for a content address: written under a temporary name while hashed, put in
    place only if they hash to ``sha`` and stay within ``max_bytes``. Use as a context manager;
    ``commit()`` returns (relative path, newly stored). Content already there is left alone, so
    an upload can be retried any number of times."""

    def __init__(self, artifact_dir: Path, sha: str, suffix: str, max_bytes: int):
        self.relative = blob_path(sha, suffix)
        self.sha, self.max_bytes = sha, max_bytes
        self.target = Path(artifact_dir) / self.relative
        self.size = 0
        self._digest = hashlib.sha256()
        self._fh = None
        self._tmp: str | None = None

    def __enter__(self) -> "IncomingBlob":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.target.parent, prefix=".incoming-")
        self._fh = os.fdopen(fd, "wb")
        return self

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise BlobTooLargeError(f"artifact over the server's {self.max_bytes}-byte limit; log files this "
                                    "big with reference=True (path and hash only)")
        self._digest.update(chunk)
        self._fh.write(chunk)

    def commit(self) -> tuple[str, bool]:
        self._fh.close()
        got = self._digest.hexdigest()
        if got != self.sha:
            raise BlobMismatchError(f"the uploaded bytes hash to {got}, not {self.sha}: the file changed or was "
                                    "damaged on the way; upload it again")
        if self.target.exists():
            return self.relative, False
        os.replace(self._tmp, self.target)
        return self.relative, True

    def __exit__(self, *exc) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
