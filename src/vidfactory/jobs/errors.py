"""Map any failure during a job to the error type it records (vidfactory.failures) and whether another
attempt may help. Out of memory is retried once at once, with the next memory mode (the worker's rule)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from vidfactory.engines.base import EngineError, GenerationAbandoned
from vidfactory.failures import ErrorType
from vidfactory.media.errors import MediaError
from vidfactory.safety.frames import OutputScreeningError
from vidfactory.storage import StorageError

__all__ = ["Classified", "JobTimedOut", "LeaseExpired", "WorkerStopping", "classify"]


class JobTimedOut(EngineError):
    error_type = ErrorType.timeout


class LeaseExpired(GenerationAbandoned):
    """The database stayed unreachable until the job's lease ran out: this worker may no longer record
    anything for the attempt. Raised through the engine like any abandonment (a hosted task is left running
    for the next attempt to resume)."""


class WorkerStopping(GenerationAbandoned):
    """The worker was told to stop and the job outran the grace period: it goes back to the queue."""


@dataclass(frozen=True)
class Classified:
    error_type: ErrorType
    transient: bool


def classify(exc: BaseException) -> Classified:
    # Raised outside the engine's own mapping. Only a process that imported torch can meet one; the API
    # imports this module and must not load torch (seconds of CPU) for it.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return Classified(ErrorType.oom, True)
    if isinstance(exc, EngineError):
        return Classified(exc.error_type, exc.transient)
    if isinstance(exc, MediaError):
        return Classified(exc.error_type, False)
    if isinstance(exc, StorageError):
        return Classified(exc.error_type, True)
    if isinstance(exc, OutputScreeningError):
        # A clip that cannot be screened is never delivered; the classifier failing again is likely.
        return Classified(ErrorType.output_screening_error, False)
    if isinstance(exc, OperationalError):
        return Classified(ErrorType.database_error, True)
    return Classified(ErrorType.internal_error, False)
