"""Content hashes of every stored file: SHA-256 (what verify trusts) and MD5 (what S3 ETags and older
tooling compare)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["FileHashes", "file_hashes"]


@dataclass(frozen=True)
class FileHashes:
    sha256: str  # 64 hex digits
    md5: str  # 32 hex digits

    def as_dict(self) -> dict[str, str]:
        return {"sha256": self.sha256, "md5": self.md5}


def file_hashes(data: bytes) -> FileHashes:
    return FileHashes(hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest())
