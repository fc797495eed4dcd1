"""Map any failure during a job to the error type it records and whether another attempt may help."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from vidfactory.engines.base import EngineError
from vidfactory.media.errors import MediaError
from vidfactory.safety.frames import OutputScreeningError
from vidfactory.storage.local import StorageError

__all__ = ["Classified", "JobTimedOut", "classify"]


class JobTimedOut(EngineError):
    error_type = "timeout"


@dataclass(frozen=True)
class Classified:
    error_type: str
    transient: bool


def classify(exc: BaseException) -> Classified:
    if isinstance(exc, EngineError):
        return Classified(exc.error_type, exc.transient)
    if isinstance(exc, MediaError):
        return Classified(exc.error_type, False)
    if isinstance(exc, StorageError):
        return Classified(exc.error_type, True)
    if isinstance(exc, OutputScreeningError):
        # A clip that cannot be screened is never delivered; the classifier failing again is likely.
        return Classified("output_screening_error", False)
    if isinstance(exc, OperationalError):
        return Classified("database_error", True)
    return Classified("internal_error", False)
