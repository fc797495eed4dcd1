"""The TLS context of the outbound HTTP clients (webhook delivery, hosted engines), built once a process."""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["verifying_context"]


@functools.cache
def verifying_context(trust_env: bool) -> ssl.SSLContext:
    """What httpx builds for `verify=True`: certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR when
    `trust_env`. Reading the bundle takes tens of milliseconds, which every new client paid again (one per
    webhook round, two per hosted engine). A context is safe to share between clients and threads."""
    return httpx.create_ssl_context(trust_env=trust_env)
