"""The one small interface every storage implements, its exception tree and the key layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from vidfactory.failures import ErrorType

__all__ = ["ObjectMissing", "Storage", "StorageError", "StoredObject", "check_key", "tenant_key"]

key_pattern = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*$")


class StorageError(OSError):
    error_type = ErrorType.storage_error


class ObjectMissing(StorageError, FileNotFoundError):
    """No object under the key (never stored, or deleted since)."""


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the storage's root or prefix, as passed to `put`
    size_bytes: int
    modified_at: datetime  # timezone-aware UTC


class Storage(Protocol):
    """Writes are atomic for readers: an object is absent or whole, never partial. Keys are relative
    (`tenants/<tenant_id>/...`); every method raises StorageError, ObjectMissing for an absent key."""

    location: str  # where the objects live, for operators' messages (a directory or s3://bucket/prefix)

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/octet-stream") -> None:
        """Store bytes or a readable stream (copied in chunks, never whole in memory)."""

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; the caller closes it."""

    def read(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None:
        """Gone afterwards; deleting an absent key is not an error."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix` (a string prefix, as S3 has it), by key."""

    def signed_url(self, key: str, expires_s: int, *, content_type: str | None = None,
                   filename: str | None = None) -> str | None:
        """A URL anyone may GET the object from until it expires, or None when this storage has no such
        URLs (then the API serves the bytes itself)."""


def check_key(key: str) -> str:
    if not key_pattern.match(key) or ".." in key:
        raise StorageError(f"invalid storage key {key!r}")
    return key


def tenant_key(tenant_id: str, *parts: str) -> str:
    """Every object a tenant owns lives under tenants/<tenant_id>/: listed, swept and deleted by prefix."""
    return check_key("/".join(("tenants", tenant_id, *parts)))
