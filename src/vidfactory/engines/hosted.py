"""What every hosted video engine shares: HTTP with retries, error classification, the task poll loop.

A hosted engine turns a GenerationRequest into a remote task, polls it, downloads the finished MP4 and
decodes it to frames, so its clip goes through the same output pipeline (QC, labels, watermark,
encoding) as one generated on a local GPU.

Errors (all `EngineError`s, so the worker classifies them like any engine's):
- `HostedUnavailable` (429, 5xx, unreachable) and `HostedTimeout` (a request or the task took too long)
  are transient: retried here per request with backoff (a server's Retry-After wins), then by the queue.
- `HostedRejected` (a 4xx about the request, a task refused for its content or parameters) is the
  caller's: `invalid_input`, final.
- `HostedFailed` (a FAILED task, bad credentials, a malformed answer) is the engine's: `engine_crash`,
  final. Both final kinds void the job's hold. `HostedGone` is the HostedFailed of a task the service no
  longer knows (404, expired).

Resuming: a task's id is reported (on_remote_task) as soon as it is created, so a later attempt of the same
job (after a transient failure, a lost lease, a crashed worker) polls that task again rather than paying
for a second one, unless it failed, was cancelled or is gone.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from vidfactory.engines.base import (
    CancelCheck,
    EngineError,
    GeneratedVideo,
    GenerationAbandoned,
    GenerationCancelled,
    GenerationRequest,
    InvalidInput,
    ProgressCallback,
    RemoteTaskCallback,
)
from vidfactory.media.encode import decode_mp4
from vidfactory.failures import ErrorType
from vidfactory.media.errors import MediaError
from vidfactory.settings import HostedConfig
from vidfactory.tls import verifying_context

__all__ = [
    "HostedClient",
    "HostedError",
    "HostedFailed",
    "HostedGone",
    "HostedRejected",
    "HostedTimeout",
    "HostedUnavailable",
    "RemoteTask",
    "check_request",
    "remote_id",
    "clip_seconds",
    "decode_clip",
    "record_task",
    "resumable_task",
    "wait_for_task",
]

log = logging.getLogger(__name__)

remote_message_chars_max = 500
decoded_frames_max = 2000  # a 30 s clip at 60 fps is 1,800
remote_id_pattern = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")  # it goes into URL paths
transient_statuses = frozenset({408, 425, 429})  # and every 5xx
credential_statuses = frozenset({401, 403})


class HostedError(EngineError):
    """A hosted engine's failure; `metadata` (remote task id, request id...) is recorded on the job."""

    error_type = ErrorType.engine_crash

    def __init__(self, message: str, *, metadata: dict[str, Any] | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.metadata = dict(metadata or {})
        self.retry_after_s = retry_after_s


class HostedUnavailable(HostedError):
    error_type = ErrorType.engine_unavailable
    transient = True


class HostedTimeout(HostedError):
    error_type = ErrorType.timeout
    transient = True


class HostedRejected(HostedError, InvalidInput):
    error_type = ErrorType.invalid_input
    transient = False


class HostedFailed(HostedError):
    error_type = ErrorType.engine_crash
    transient = False


class HostedGone(HostedFailed):
    """The service does not know the task (404) or it expired."""


def _retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _remote_message(response: httpx.Response) -> str:
    """The service's own words: DashScope says {"code", "message"}, OpenAI {"error": {"code", "message"}}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:remote_message_chars_max]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("code", "message") if body.get(key)]
        if parts:
            return ": ".join(parts)[:remote_message_chars_max]
    return response.text[:remote_message_chars_max]


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    status = response.status_code
    message = f"{what}: HTTP {status}: {_remote_message(response)}"
    if status in transient_statuses or status >= 500:
        raise HostedUnavailable(message, retry_after_s=_retry_after_s(response))
    if status in credential_statuses:
        raise HostedFailed(f"{message} (check the model's hosted api_key)")
    if status == 404:
        raise HostedGone(message)
    raise HostedRejected(message)


class HostedClient:
    """One HTTP connection pool per engine, the API key sent only to the configured base URL."""

    def __init__(self, config: HostedConfig) -> None:
        api_key = config.resolved_api_key()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.config = config
        self._http = httpx.Client(base_url=config.base_url, headers=headers, timeout=config.request_timeout_s,
                                  follow_redirects=False, verify=verifying_context(trust_env=True))
        # Downloads go to other hosts (signed storage URLs): a separate client without the key.
        self._downloads = httpx.Client(timeout=config.request_timeout_s, follow_redirects=True,
                                       verify=verifying_context(trust_env=True))

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    def request_json(self, method: str, path: str, what: str, *, json: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None, form: dict[str, str] | None = None,
                     files: dict[str, tuple[str, bytes, str]] | None = None) -> dict[str, Any]:
        """Sends `json`, or `form` fields and `files` as multipart/form-data (name: (filename, bytes,
        content type)); answers the JSON object the service returned."""
        assert json is None or (form is None and files is None), "a JSON body or a form, not both"

        def attempt() -> dict[str, Any]:
            response = self._send(self._http, method, path, what, json=json, headers=headers, data=form,
                                  files=files)
            _raise_for_status(response, what)
            try:
                body = response.json()
            except ValueError as exc:
                raise HostedFailed(f"{what}: the answer is not JSON: {response.text[:200]!r}") from exc
            if not isinstance(body, dict):
                raise HostedFailed(f"{what}: expected a JSON object, got {type(body).__name__}")
            return body

        return self._retrying(attempt)

    def request_bytes(self, path_or_url: str, what: str, *, authenticated: bool) -> bytes:
        """GET a file, refusing more than download_bytes_max; `authenticated` sends the API key (only ever
        to the configured base URL: a relative path)."""
        client = self._http if authenticated else self._downloads
        assert not authenticated or not path_or_url.startswith(("http://", "https://")), \
            "the API key goes to the configured base URL only"

        def attempt() -> bytes:
            try:
                with client.stream("GET", path_or_url) as response:
                    if not response.is_success:
                        response.read()
                        _raise_for_status(response, what)
                    return self._read_limited(response, what)
            except httpx.TimeoutException as exc:
                raise HostedTimeout(f"{what}: no answer within {self.config.request_timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                raise HostedUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

        return self._retrying(attempt)

    def _read_limited(self, response: httpx.Response, what: str) -> bytes:
        limit = self.config.download_bytes_max
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise HostedFailed(f"{what}: the file is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _send(self, client: httpx.Client, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise HostedTimeout(f"{what}: no answer within {self.config.request_timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            raise HostedUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        config = self.config
        backoff = wait_exponential(multiplier=config.http_backoff_s, max=config.http_backoff_max_s)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, HostedError) and error.retry_after_s is not None:
                return min(error.retry_after_s, config.retry_after_max_s)
            return backoff(state)

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("hosted call failed (attempt %d of %d), retrying in %.1f s: %s", state.attempt_number,
                        config.http_attempts_max, state.upcoming_sleep, error)

        retrying = Retrying(stop=stop_after_attempt(config.http_attempts_max), wait=wait,
                            retry=retry_if_exception(lambda exc: isinstance(exc, EngineError) and exc.transient),
                            before_sleep=log_retry, reraise=True)
        return retrying(attempt)


@dataclass(frozen=True)
class RemoteTask:
    """One poll's view of a remote task, in this module's words."""

    status: str  # pending | running | succeeded | failed | cancelled
    body: dict[str, Any] = field(default_factory=dict)
    progress: int | None = None  # 0–100 when the service reports it

    def __post_init__(self) -> None:
        assert self.status in ("pending", "running", "succeeded", "failed", "cancelled"), self.status


def wait_for_task(poll: Callable[[], RemoteTask], cancel: Callable[[], None], config: HostedConfig,
                  on_progress: ProgressCallback, is_cancelled: CancelCheck, metadata: dict[str, Any]
                  ) -> RemoteTask:
    """Poll until the task ends. Cancelled, timed out, or stopped by the caller (an exception from
    is_cancelled, e.g. the job's own deadline): the remote task is cancelled too, where the service allows;
    abandoned (another worker owns the job now) it is left running for that worker to resume."""
    deadline = time.monotonic() + config.task_timeout_s
    while True:
        task = poll()
        if task.progress is not None:
            on_progress(min(max(task.progress, 0), 100), 100)
        if task.status in ("succeeded", "failed", "cancelled"):
            return task
        try:
            stop = is_cancelled()
        except GenerationAbandoned:
            raise
        except BaseException:
            _cancel_quietly(cancel)
            raise
        if stop:
            _cancel_quietly(cancel)
            raise GenerationCancelled("cancelled while the remote task was running")
        if time.monotonic() > deadline:
            _cancel_quietly(cancel)
            raise HostedTimeout(f"the remote task did not finish within {config.task_timeout_s:g} s",
                                metadata=metadata)
        time.sleep(config.poll_interval_s)


def resumable_task(request: GenerationRequest, poll: Callable[[str], RemoteTask]) -> str | None:
    """The earlier attempt's task while it can still deliver (pending, running, succeeded), else None: a
    failed, cancelled, expired or unknown one needs a new task. A transient error polling it is raised (the
    job is retried and asks again) rather than paying for a task that may be unnecessary."""
    if request.resume_task_id is None:
        return None
    task_id = remote_id(request.resume_task_id, "the earlier attempt's task")
    try:
        task = poll(task_id)
    except HostedGone as exc:
        log.warning("remote task %s of an earlier attempt is gone, creating another: %s", task_id, exc)
        return None
    if task.status in ("failed", "cancelled"):
        log.warning("remote task %s of an earlier attempt %s, creating another", task_id, task.status)
        return None
    log.info("resuming remote task %s (%s) of an earlier attempt", task_id, task.status)
    return task_id


def record_task(task_id: str, on_remote_task: RemoteTaskCallback | None, cancel: Callable[[], None]) -> None:
    """Report a task just created before waiting for it. A caller that cannot record it (its lease is
    gone) gets its exception back; the task is cancelled, as nobody would ever collect it."""
    if on_remote_task is None:
        return
    try:
        on_remote_task(task_id)
    except BaseException:
        _cancel_quietly(cancel)
        raise


def _cancel_quietly(cancel: Callable[[], None]) -> None:
    # The job ends either way; a remote that refuses the cancel (e.g. a task already running) costs
    # the remote's compute, not correctness, so it is logged and the job's own outcome stands.
    try:
        cancel()
    except HostedError as exc:
        log.warning("could not cancel the remote task: %s", exc)


def remote_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not remote_id_pattern.match(value) or ".." in value:
        raise HostedFailed(f"{what} answered without a usable id: {str(value)[:100]!r}")
    return value


def check_request(request: GenerationRequest) -> None:
    if not request.prompt.strip():
        raise InvalidInput("prompt must not be empty")
    if request.width < 1 or request.height < 1:
        raise InvalidInput(f"size must be positive, got {request.width}x{request.height}")
    if request.num_frames < 1 or request.fps < 1:
        raise InvalidInput(f"num_frames and fps must be >= 1, got {request.num_frames} and {request.fps}")


def clip_seconds(request: GenerationRequest) -> int:
    """The whole seconds the job asked for: its frames are 4k+1 around seconds × fps."""
    return max(1, round((request.num_frames - 1) / request.fps))


def decode_clip(data: bytes, what: str, metadata: dict[str, Any]) -> GeneratedVideo:
    try:
        decoded = decode_mp4(data, frames_max=decoded_frames_max)
    except MediaError as exc:
        raise HostedFailed(f"{what}: {exc}", metadata=metadata) from exc
    fps = max(1, round(decoded.fps))
    assert decoded.frames.dtype == np.uint8 and decoded.frames.ndim == 4
    return GeneratedVideo(frames=decoded.frames, fps=fps, metadata=metadata)
