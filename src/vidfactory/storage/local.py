"""Local directory storage (the embedded default). Writes are atomic: temp file, fsync, rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from vidfactory.storage.base import ObjectMissing, StorageError, StoredObject, check_key

__all__ = ["LocalStorage", "StorageError"]

temp_prefix = ".tmp-"  # a write in flight; never listed


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/octet-stream") -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix)
        except OSError as exc:  # its directory cannot be made (a file in the way, a full or read-only disk)
            raise StorageError(f"could not store {key}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                if isinstance(data, bytes):
                    handle.write(data)
                else:
                    shutil.copyfileobj(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"could not store {key}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is not stored") from exc
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc}") from exc

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is not stored") from exc

    def list(self, prefix: str) -> Iterator[StoredObject]:
        if ".." in prefix:
            raise StorageError(f"invalid storage prefix {prefix!r}")
        # Walk only the deepest directory the prefix names; the rest of the prefix filters names.
        folder = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not folder.is_dir():
            return
        found = []
        for directory, _, names in os.walk(folder):
            for name in names:
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if name.startswith(temp_prefix) or not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted while listing
                    continue
                found.append(StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        yield from sorted(found, key=lambda item: item.key)

    def signed_url(self, key: str, expires_s: int, *, content_type: str | None = None,
                   filename: str | None = None) -> str | None:
        return None  # a directory has no URLs: the API streams its files
