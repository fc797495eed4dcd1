"""Standard Webhooks signatures (https://www.standardwebhooks.com): pure functions, no I/O.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature HMAC-SHA256 with the
base64-decoded part of a `whsec_` secret, sent as `v1,<base64>`. Several signatures are separated by
spaces, which is how a rotation overlaps: the old and the new secret both sign until the old expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["InvalidSecret", "new_secret", "sign", "signature_header", "webhook_headers"]

secret_prefix = "whsec_"
secret_bytes = 32  # Standard Webhooks asks for 24 to 64 bytes


class InvalidSecret(ValueError):
    """Not a `whsec_` secret with base64 content."""


def new_secret() -> str:
    return secret_prefix + base64.b64encode(secrets.token_bytes(secret_bytes)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(secret_prefix):
        raise InvalidSecret("webhook secrets start with whsec_")
    try:
        return base64.b64decode(secret.removeprefix(secret_prefix), validate=True)
    except ValueError as exc:
        raise InvalidSecret("a webhook secret's content is base64") from exc


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    assert timestamp > 0 and message_id
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_in_force: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    assert secrets_in_force, "at least one secret signs"
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_in_force)


def webhook_headers(secrets_in_force: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets_in_force, message_id, timestamp, body),
            "content-type": "application/json"}
