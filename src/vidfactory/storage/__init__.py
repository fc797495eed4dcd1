"""Where clips, previews and reference images live: a local directory (the embedded default) or any
S3-compatible bucket (`storage_url = s3://bucket/prefix`), behind one small interface."""

from __future__ import annotations

from vidfactory.settings import Settings
from vidfactory.storage.base import ObjectMissing, Storage, StorageError, StoredObject, check_key, tenant_key

__all__ = ["ObjectMissing", "Storage", "StorageError", "StoredObject", "check_key", "make_storage", "tenant_key"]


def make_storage(settings: Settings) -> Storage:
    if settings.storage_url:
        from vidfactory.storage.s3 import S3Storage  # boto3 is imported only where a bucket is used

        return S3Storage.from_settings(settings)
    from vidfactory.storage.local import LocalStorage

    return LocalStorage(settings.resolved_storage_dir)
