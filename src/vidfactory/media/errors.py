"""The one error the media package raises, so the worker can record and classify it."""

from __future__ import annotations

from vidfactory.failures import ErrorType

__all__ = ["MediaError"]


class MediaError(Exception):
    """Frames or a file the media functions cannot process: bad shape or dtype, or an encoder failure."""

    error_type = ErrorType.media_error
    transient = False
