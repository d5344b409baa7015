"""Content-addressed artifact files under the store's ``artifacts/`` folder.

Files are stored once per content (``ab/abcdef….ext``), so logging the same plot or source file
from many runs costs no extra space. Big files such as checkpoints can be logged as references:
their path, size and hash are recorded and the file stays where it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["StoredArtifact", "store_file", "store_bytes", "guess_kind", "COPY_LIMIT_BYTES"]

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
