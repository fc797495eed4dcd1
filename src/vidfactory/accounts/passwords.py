"""Argon2id password hashes (argon2-cffi), with the cost the settings name."""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from vidfactory.settings import Settings

__all__ = ["PasswordHasher", "generated_password"]


class PasswordHasher:
    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1,
                                             type=argon2.Type.ID)

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(settings.password_hash_time_cost, settings.password_hash_memory_kib)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def dummy_verify(self, password: str) -> None:
        """Spend what a real check costs, so an unknown email answers as slowly as a wrong password."""
        self.verify(self._dummy, password)

    @property
    def _dummy(self) -> str:
        if not hasattr(self, "_dummy_hash"):
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash


def generated_password() -> str:
    """A password for a new or reset account, shown once (about 120 bits)."""
    return secrets.token_urlsafe(15)
