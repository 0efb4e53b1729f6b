"""Where artifact bytes live. The database records size and sha256; the store keeps bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredObject:
    path: str
    size_bytes: int
    sha256: str


class ArtifactStore(Protocol):
    async def put(self, path: str, data: bytes) -> StoredObject:
        """Store bytes at a relative path, atomically (a reader never sees half a file)."""

    async def get(self, path: str) -> bytes:
        """The stored bytes; FileNotFoundError when absent."""

    async def stat(self, path: str) -> StoredObject | None:
        """Size and sha256 of what is stored now, or None."""


def _checked(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"artifact path must be relative and inside the store: {path!r}")
    return rel


class LocalArtifactStore:
    """Files under the data directory; blocking file I/O runs in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _full(self, path: str) -> Path:
        return self.root.joinpath(*_checked(path).parts)

    async def put(self, path: str, data: bytes) -> StoredObject:
        full = self._full(path)
        await asyncio.to_thread(_atomic_write, full, data)
        return StoredObject(path, len(data), hashlib.sha256(data).hexdigest())

    async def get(self, path: str) -> bytes:
        return await asyncio.to_thread(self._full(path).read_bytes)

    async def stat(self, path: str) -> StoredObject | None:
        full = self._full(path)
        try:
            digest, size = await asyncio.to_thread(_hash_file, full)
        except FileNotFoundError:
            return None
        return StoredObject(path, size, digest)


def _atomic_write(full: Path, data: bytes) -> None:
    full.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, full)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hash_file(full: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with full.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
