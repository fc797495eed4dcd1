"""Any S3-compatible bucket (AWS S3, Alibaba OSS in S3 mode, MinIO, Ceph) through boto3.

Endpoint, region and credentials come from the standard AWS variables and chain (AWS_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, instance roles, ...) unless the storage settings override
them. A PUT, and a multipart upload at its completion, make the object appear whole or not at all.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vidfactory.settings import Settings
from vidfactory.storage.base import ObjectMissing, StorageError, StoredObject, check_key

__all__ = ["S3Storage", "parse_storage_url"]

missing_codes = {"NoSuchKey", "404", "NotFound"}


def parse_storage_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix → (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"storage URL {url!r} is not s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


@contextmanager
def _mapped(action: str, key: str) -> Iterator[None]:
    """boto3 and botocore failures as the one storage exception tree (the cause kept)."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in missing_codes:
            raise ObjectMissing(f"{key} is not stored") from exc
        raise StorageError(f"could not {action} {key}: {code or exc}") from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(f"could not {action} {key}: {exc}") from exc


class _Stream:
    """An object's body read in chunks; read failures mid-way are storage errors too."""

    def __init__(self, key: str, body) -> None:
        self.key, self.body = key, body

    def read(self, size: int = -1) -> bytes:
        with _mapped("read", self.key):
            return self.body.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class S3Storage:
    def __init__(self, client, bucket: str, prefix: str = "", *, chunk_bytes: int = 8 * 1024 * 1024) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Multipart above one chunk; memory is bounded by chunk × concurrency whatever the clip's size.
        self.transfer = TransferConfig(multipart_threshold=chunk_bytes, multipart_chunksize=chunk_bytes,
                                       max_concurrency=4)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        bucket, prefix = parse_storage_url(settings.storage_url)
        secret = settings.storage_secret_access_key.get_secret_value()
        # Empty settings leave each value to boto3's own chain (environment, profile, instance role).
        client = boto3.session.Session().client(
            "s3", endpoint_url=settings.storage_endpoint_url or None, region_name=settings.storage_region or None,
            aws_access_key_id=settings.storage_access_key_id or None, aws_secret_access_key=secret or None,
            config=Config(signature_version="s3v4", s3={"addressing_style": settings.storage_addressing_style},
                          retries={"mode": "standard", "max_attempts": 3},
                          connect_timeout=settings.storage_timeout_s, read_timeout=settings.storage_timeout_s))
        return cls(client, bucket, prefix, chunk_bytes=settings.storage_multipart_chunk_bytes)

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str = "application/octet-stream") -> None:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data  # shares the bytes, no copy
        with _mapped("store", key):
            self.client.upload_fileobj(stream, self.bucket, self.object_key(key),
                                       ExtraArgs={"ContentType": content_type}, Config=self.transfer)

    def open(self, key: str) -> BinaryIO:
        with _mapped("read", key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        return _Stream(key, answer["Body"])  # type: ignore[return-value]

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def delete(self, key: str) -> None:
        with _mapped("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectMissing:
            return False
        return True

    def size(self, key: str) -> int:
        with _mapped("look up", key):
            return int(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))["ContentLength"])

    def list(self, prefix: str) -> Iterator[StoredObject]:
        if ".." in prefix:
            raise StorageError(f"invalid storage prefix {prefix!r}")
        root = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix)
        with _mapped("list", prefix or "/"):
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"][len(root):], int(item["Size"]), item["LastModified"])

    def signed_url(self, key: str, expires_s: int, *, content_type: str | None = None,
                   filename: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if content_type is not None:
            params["ResponseContentType"] = content_type
        if filename is not None:
            params["ResponseContentDisposition"] = f'inline; filename="{filename}"'
        with _mapped("sign a link to", key):
            return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
