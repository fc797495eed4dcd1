"""Signed, expiring links to stored objects: through the CDN when one is configured, else the storage's
own (an S3 presigned URL). None when neither exists: the API serves the bytes itself."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

from vidfactory.settings import Settings
from vidfactory.storage.base import Storage, check_key
from vidfactory.storage.cdn import aliyun_type_a, cloudfront_canned, load_rsa_key

__all__ = ["Links"]


class Links:
    def __init__(self, settings: Settings, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.storage, self.clock = settings, storage, clock
        self.ttl_s = settings.link_ttl_s
        self._cloudfront_key = None
        if settings.cdn_signing == "cloudfront":
            assert settings.cdn_private_key_file is not None  # the settings check it
            self._cloudfront_key = load_rsa_key(settings.cdn_private_key_file.read_bytes())

    def expires_at(self) -> int:
        return int(self.clock()) + self.ttl_s

    def url(self, key: str, *, content_type: str | None = None, filename: str | None = None) -> str | None:
        if not self.settings.cdn_base_url:
            return self.storage.signed_url(key, self.ttl_s, content_type=content_type, filename=filename)
        url = f"{self.settings.cdn_base_url}/{quote(check_key(key))}"
        match self.settings.cdn_signing:
            case "cloudfront":
                assert self._cloudfront_key is not None
                return cloudfront_canned(url, self.expires_at(), self.settings.cdn_key_id, self._cloudfront_key)
            case "aliyun-a":
                # The CDN adds its own validity period to the timestamp: sign with now.
                return aliyun_type_a(url, int(self.clock()), self.settings.cdn_auth_key.get_secret_value(),
                                     rand=uuid.uuid4().hex)
        return url  # a public CDN: the operator chose unsigned links
