"""Why a job failed: the one vocabulary of error types.

The worker records these on a failed job; the API shows them as the video's `error.code`, the
`video.failed` webhook carries the same code, and a price book's compensation policy lists them. A leaf
module (no imports from the package), so that engines, media, storage, billing and jobs all name the same
values.

Price books published before this vocabulary existed named two types differently; they are read through
`legacy_names` (published books never change, so their old names keep meaning what they meant).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorType", "caller_caused", "compensated_by_default", "failure_object", "failure_types",
           "legacy_names", "read", "recognised"]


class ErrorType(StrEnum):
    engine_crash = "engine_crash"  # the model raised, or a hosted service reported the task failed
    engine_unavailable = "engine_unavailable"  # a hosted service stayed unreachable or overloaded
    oom = "oom"  # out of device memory, again after the retry in a more frugal memory mode
    timeout = "timeout"  # generation ran past job_timeout_s, or a hosted task past its deadline
    qc_failed = "qc_failed"  # the clip failed its quality checks with two seeds
    output_screening_error = "output_screening_error"  # the output classifier could not screen the clip
    media_error = "media_error"  # labelling, watermarking or encoding failed
    storage_error = "storage_error"  # the clip or the reference image could not be written or read
    database_error = "database_error"  # the database was unreachable on the last attempt
    worker_lost = "worker_lost"  # the worker stopped heartbeating on the last attempt
    hold_expired = "hold_expired"  # the job outlived its hold (hold_timeout_s) before it finished
    internal_error = "internal_error"  # a fault of vidfactory itself
    invalid_input = "invalid_input"  # the caller's: the engine or hosted service refused the request
    content_rejected = "content_rejected"  # the caller's: an administrator rejected it on review
    review_expired = "review_expired"  # held for review, undecided at the plan's deadline, refunded
    cancelled = "cancelled"  # never a failure: raised inside an engine to stop; the job ends `cancelled`


# What a failed job may record (`cancelled` only stops an engine).
failure_types = frozenset(t.value for t in ErrorType if t != ErrorType.cancelled)

# The caller caused these: they say nothing about the platform and earn no voucher.
caller_caused = (ErrorType.invalid_input, ErrorType.content_rejected)

# What a price book's compensation policy covers when it does not list types: every failure of the
# platform's making.
compensated_by_default = tuple(t for t in ErrorType if t in failure_types and t not in caller_caused)

# Names in price books published before this vocabulary, and what they meant.
legacy_names = {"engine_error": ErrorType.engine_crash, "out_of_memory": ErrorType.oom}


def read(name: str) -> str:
    """The vocabulary's name for a recorded or published one (legacy names mapped); an unknown name is
    returned as it is, so it matches nothing."""
    return legacy_names.get(name, name)


def recognised(name: str) -> ErrorType:
    """The error type a new price book may name (a legacy name is accepted as what it meant)."""
    value = read(name)
    if value not in failure_types:
        raise ValueError(f"unknown error type {name!r}; error types: {', '.join(sorted(failure_types))}")
    return ErrorType(value)


def failure_object(error_type: str | None, message: str | None) -> dict[str, str]:
    """A failed video's `error`, as the API and the webhooks show it."""
    return {"code": read(error_type or ErrorType.internal_error), "message": message or ""}
