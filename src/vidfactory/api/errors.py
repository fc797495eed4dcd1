"""One error envelope for every failure: {"error": {"code", "message", "type", "param"}}."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidfactory.api.schemas import ErrorEnvelope
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.billing.tokens import TokenizerUnavailable
from vidfactory.engines.base import EngineError
from vidfactory.jobs.queue import StaleJob
from vidfactory.jobs.screening import ImageRejected, PromptRejected
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.jobs.submit import ActiveJobsLimit
from vidfactory.jobs.training import TrainingsLimit
from vidfactory.prompts.errors import PromptError
from vidfactory.idempotency import IdempotencyConflict, IdempotencyInProgress
from vidfactory.observability.redact import redact_paths
from vidfactory.styles.errors import StyleError
from vidfactory.tenancy import TenantSuspended

__all__ = ["ApiError", "checked_id", "error_responses", "install_error_handlers", "not_found", "validation_message"]

log = logging.getLogger(__name__)

# Declared on every route, so the OpenAPI document says what clients really get: FastAPI would otherwise
# document its own 422 HTTPValidationError, which this app never sends (validation errors are 400s here).
error_responses = {"4XX": {"model": ErrorEnvelope, "description": "The error envelope"},
                   "503": {"model": ErrorEnvelope,
                           "description": "A configured model cannot be loaded, the database is unreachable, or "
                                          "the shared rate limiter is unreachable and set to fail closed"}}

types_by_status = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "api_error",
}


database_retry_after_s = 1


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


# Every id this platform issues is a prefix and hex digits (video_…, tr_…, ten_…).
id_pattern = re.compile(r"[A-Za-z0-9_-]{1,64}")


def not_found(what: str, object_id: str, param: str = "id") -> ApiError:
    return ApiError(404, "not_found", f"no {what} with id {object_id!r}", param=param)


def checked_id(what: str, object_id: str, param: str = "id") -> None:
    """404 before any query for an id we could never have issued: it names nothing, and some characters
    in it (NUL) make PostgreSQL refuse the query itself (a 500 otherwise)."""
    if id_pattern.fullmatch(object_id) is None:
        raise not_found(what, object_id, param)


def envelope(status: int, code: str, message: str, param: str | None, headers: dict[str, str] | None = None):
    body = {"error": {"code": code, "message": message, "type": types_by_status.get(status, "api_error"),
                      "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_param(error: dict) -> str | None:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    return ".".join(loc) or None


def validation_message(error: dict) -> str:
    """Pydantic's message, except that a string's length limits speak of characters (pydantic says
    "items" for a string checked after a validator)."""
    context = error.get("ctx") or {}
    if error.get("type") == "too_long" and isinstance(error.get("input"), str):
        return f"must be at most {context.get('max_length')} characters, got {len(error['input'])}"
    if error.get("type") == "too_short" and isinstance(error.get("input"), str):
        return f"must be at least {context.get('min_length')} characters, got {len(error['input'])}"
    return str(error.get("msg", "invalid request"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return envelope(exc.status, exc.code, exc.message, exc.param, exc.headers)

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest):
        return envelope(400, exc.code, str(exc), exc.param)

    @app.exception_handler(StyleError)
    async def _style(_: Request, exc: StyleError):
        return envelope(exc.status, exc.code, str(exc), exc.param)

    @app.exception_handler(PromptError)
    async def _prompt(_: Request, exc: PromptError):
        return envelope(400, exc.code, str(exc), exc.param)

    @app.exception_handler(InsufficientBalance)
    async def _balance(_: Request, exc: InsufficientBalance):
        return envelope(402, "insufficient_balance", str(exc), None)

    @app.exception_handler(ActiveJobsLimit)
    async def _active_jobs(request: Request, exc: ActiveJobsLimit):
        retry_after = str(request.app.state.ctx.settings.active_jobs_retry_after_s)
        return envelope(429, "active_jobs_limit", str(exc), None, {"Retry-After": retry_after})

    @app.exception_handler(TrainingsLimit)
    async def _trainings(request: Request, exc: TrainingsLimit):
        if exc.limit == 0:
            return envelope(403, "plan_limit", str(exc), None)
        retry_after = str(request.app.state.ctx.settings.active_jobs_retry_after_s)
        return envelope(429, "trainings_limit", str(exc), None, {"Retry-After": retry_after})

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency(_: Request, exc: IdempotencyConflict):
        return envelope(409, "idempotency_conflict", str(exc), "Idempotency-Key")

    @app.exception_handler(TenantSuspended)
    async def _suspended(_: Request, exc: TenantSuspended):
        return envelope(403, "tenant_suspended", str(exc), None)

    @app.exception_handler(IdempotencyInProgress)
    async def _in_progress(_: Request, exc: IdempotencyInProgress):
        return envelope(409, "idempotency_in_progress", str(exc), "Idempotency-Key", {"Retry-After": "1"})

    @app.exception_handler(PromptRejected)
    async def _rejected(_: Request, exc: PromptRejected):
        # The category only: the matched terms would teach a caller how to get around the lexicon.
        return envelope(400, "content_policy", str(exc), "prompt")

    @app.exception_handler(ImageRejected)
    async def _image_rejected(_: Request, exc: ImageRejected):
        return envelope(400, "content_policy", str(exc), exc.param)

    @app.exception_handler(StaleJob)
    async def _stale(_: Request, exc: StaleJob):
        return envelope(409, "invalid_state", str(exc), None)

    @app.exception_handler(TokenizerUnavailable)
    @app.exception_handler(EngineError)
    async def _model_unavailable(_: Request, exc: Exception):
        # A misconfigured model (no weights, no tokenizer) is the operator's to fix, not the caller's: the
        # log has the whole message, the caller the same words without the server's paths.
        log.error("model unavailable: %s", exc)
        return envelope(503, "model_unavailable", redact_paths(str(exc)), "model")

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_unavailable(_: Request, exc: Exception):
        # A restart, failover or cut connection: the transaction rolled back, unless the connection dropped
        # during its commit; the Idempotency-Key makes the retry safe either way.
        return envelope(503, "database_unavailable", "the database is unreachable; retry the request (with the "
                        "same Idempotency-Key, one that did take effect is not repeated)", None,
                        {"Retry-After": str(database_retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        message = validation_message(first)
        param = _validation_param(first)
        return envelope(400, "invalid_value", f"{param}: {message}" if param else message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return envelope(exc.status_code, code, str(exc.detail), None)
