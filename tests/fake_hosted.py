"""Local fake video services (real HTTP on 127.0.0.1, in a thread) that follow the documented protocols:
Alibaba Cloud Model Studio's Wan video synthesis (DashScope async tasks) and OpenAI's /v1/videos.

Scriptable failures: `fail_next` answers the next N requests on a path with a status (and Retry-After),
`hang_next` stalls them; `outcome` decides how the next task ends (succeeded, failed, cancelled, or never).
Every request is recorded in `requests` (method, path, headers, body: the JSON, or a multipart form's
fields as a dict, files as bytes); `tasks_created` counts the tasks the service would bill for;
`add_task` plants one in a given state (an earlier attempt's).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from vidfactory.media.encode import encode_mp4

__all__ = ["FakeDashScope", "FakeOpenAIVideo", "clip_bytes"]

api_key = "sk-test-secret-0123456789"


def clip_bytes(frames: int = 5, side: int = 64, fps: int = 8) -> bytes:
    # A mid-grey diagonal ramp drifting a pixel a frame: what a real clip looks like to the quality checks
    # (not black, no flicker, not frozen), so a hosted clip is delivered rather than regenerated.
    y, x = np.mgrid[0:side, 0:side]
    ramp = np.stack([np.stack([64 + (x + y + 2 * index) % 128] * 3, axis=-1) for index in range(frames)])
    return encode_mp4(ramp.astype(np.uint8), fps)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    path_part: str
    status: int = 503
    retry_after: str | None = None
    hang_s: float = 0.0
    body: dict[str, Any] = field(default_factory=lambda: {"code": "ServiceUnavailable", "message": "try later"})


@dataclass
class Task:
    id: str
    prompt: str
    outcome: str  # succeeded | failed | cancelled | never
    polls_to_finish: int
    status: str = "pending"
    polls: int = 0
    failure_code: str = "InternalError"
    extend: bool = False  # dashscope prompt_extend: the service rewrites the prompt


def _form(content_type: str, raw: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        fields[part.get_param("name", header="content-disposition")] = (
            payload if part.get_filename() else payload.decode())
    return fields


class _FakeService:
    """The HTTP plumbing; subclasses answer the protocol."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.tasks: dict[str, Task] = {}
        self.tasks_created = 0
        self.outcome = "succeeded"
        self.failure_code = "InternalError"
        self.polls_to_finish = 2
        self.clip = clip_bytes()
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                service._handle(self, "GET")

            def do_POST(self) -> None:
                service._handle(self, "POST")

            def do_DELETE(self) -> None:
                service._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int, path_part: str, status: int = 503, retry_after: str | None = None,
                  body: dict[str, Any] | None = None) -> None:
        for _ in range(count):
            fault = Fault(path_part, status, retry_after)
            if body is not None:
                fault.body = body
            self.faults.append(fault)

    def hang_next(self, count: int, path_part: str, seconds: float) -> None:
        self.faults.extend(Fault(path_part, hang_s=seconds) for _ in range(count))

    def calls(self, method: str, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            body: Any = _form(content_type, raw)
        else:
            body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append(Recorded(method, handler.path, dict(handler.headers), body))
            fault = next((f for f in self.faults if f.path_part in handler.path), None)
            if fault is not None:
                self.faults.remove(fault)
        if fault is not None and fault.hang_s:
            time.sleep(fault.hang_s)
            return self._reply(handler, 504, {"code": "GatewayTimeout", "message": "late"})
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return self._reply(handler, fault.status, fault.body, headers)
        if handler.path.startswith("/files/"):
            return self._reply_bytes(handler, self.clip)
        with self.lock:
            status, answer = self.answer(method, handler.path, handler.headers, body)
        if isinstance(answer, bytes):
            return self._reply_bytes(handler, answer)
        return self._reply(handler, status, answer)

    def answer(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def add_task(self, status: str, prompt: str = "an earlier attempt") -> Task:
        with self.lock:
            task = self._new_task(prompt)
        task.status = status
        return task

    def _new_task(self, prompt: str) -> Task:
        task = Task(id=uuid.uuid4().hex, prompt=prompt, outcome=self.outcome, polls_to_finish=self.polls_to_finish,
                    failure_code=self.failure_code)
        self.tasks[task.id] = task
        self.tasks_created += 1
        return task

    @staticmethod
    def _advance(task: Task) -> None:
        if task.status in ("succeeded", "failed", "cancelled"):
            return
        task.polls += 1
        if task.outcome == "never" or task.polls < task.polls_to_finish:
            task.status = "running" if task.polls > 1 else "pending"
            return
        task.status = task.outcome

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
               ) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a hang test)
            return

    @staticmethod
    def _reply_bytes(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


class FakeDashScope(_FakeService):
    """DashScope: create (async only), poll /api/v1/tasks/{id}, cancel while PENDING, files elsewhere."""

    base = "/api/v1"
    task_path = "/api/v1/tasks/"  # polling and cancelling: the paths after creation
    statuses = {"pending": "PENDING", "running": "RUNNING", "succeeded": "SUCCEEDED", "failed": "FAILED",
                "cancelled": "CANCELED"}

    @property
    def base_url(self) -> str:
        return self.url + self.base

    def answer(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {api_key}":
            return 401, {"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": "r"}
        if method == "POST" and path == f"{self.base}/services/aigc/video-generation/video-synthesis":
            return self._create(headers, body)
        parts = path.removeprefix(f"{self.base}/tasks/").split("/")
        task = self.tasks.get(parts[0]) if path.startswith(f"{self.base}/tasks/") else None
        if task is None:
            return 404, {"code": "NotFound", "message": path}
        if method == "GET" and len(parts) == 1:
            self._advance(task)
            return 200, self._task_body(task)
        if method == "POST" and parts[1:] == ["cancel"]:
            if task.status != "pending":
                return 400, {"code": "UnsupportedOperation", "message": "only PENDING tasks can be canceled"}
            task.status = "cancelled"
            return 200, {"request_id": uuid.uuid4().hex}
        return 404, {"code": "NotFound", "message": path}

    def _create(self, headers: Any, body: Any) -> tuple[int, Any]:
        if headers.get("X-DashScope-Async") != "enable":
            return 403, {"code": "AccessDenied", "message": "current user api does not support synchronous calls"}
        prompt = (body or {}).get("input", {}).get("prompt")
        size = str((body or {}).get("parameters", {}).get("size", ""))
        if not prompt or "*" not in size or not body.get("model"):
            return 400, {"code": "InvalidParameter", "message": "prompt, model and size WIDTH*HEIGHT required"}
        task = self._new_task(prompt)
        task.extend = bool(body["parameters"].get("prompt_extend"))
        return 200, {"output": {"task_status": "PENDING", "task_id": task.id}, "request_id": uuid.uuid4().hex}

    def _task_body(self, task: Task) -> dict[str, Any]:
        output: dict[str, Any] = {"task_id": task.id, "task_status": self.statuses[task.status],
                                  "submit_time": "2026-12-02 08:00:00.000"}
        body: dict[str, Any] = {"request_id": uuid.uuid4().hex, "output": output}
        if task.status == "succeeded":
            actual = task.prompt + (", cinematic lighting" if task.extend else "")
            output.update(video_url=f"{self.url}/files/{task.id}.mp4?Expires=1&Signature=x",
                          orig_prompt=task.prompt, actual_prompt=actual, end_time="2026-12-02 08:01:00.000")
            body["usage"] = {"video_duration": 5, "video_ratio": "832*480", "video_count": 1}
        if task.status == "failed":
            output.update(code=task.failure_code, message="the task failed")
        return body


class FakeOpenAIVideo(_FakeService):
    """OpenAI /v1/videos: create, retrieve (progress), content, and vidfactory's cancel extension."""

    task_path = "/v1/videos/"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def answer(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {api_key}":
            return 401, {"error": {"code": "invalid_api_key", "message": "Incorrect API key provided"}}
        if method == "POST" and path == "/v1/videos":
            if not (body or {}).get("prompt") or "x" not in str(body.get("size", "")):
                return 400, {"error": {"code": "invalid_value", "message": "prompt and size required"}}
            if "input_reference" in body:
                width, height = Image.open(io.BytesIO(body["input_reference"])).size
                if f"{width}x{height}" != body["size"]:  # as OpenAI: the image must match the video's size
                    return 400, {"error": {"code": "invalid_value",
                                           "message": "input_reference must match the requested size"}}
            task = self._new_task(body["prompt"])
            return 200, self._video(task, body)
        parts = path.removeprefix("/v1/videos/").split("/")
        task = self.tasks.get(parts[0]) if path.startswith("/v1/videos/") else None
        if task is None:
            return 404, {"error": {"code": "not_found", "message": path}}
        if method == "GET" and len(parts) == 1:
            self._advance(task)
            return 200, self._video(task, {})
        if method == "GET" and parts[1:] == ["content"]:
            if task.status != "succeeded":
                return 404, {"error": {"code": "not_found", "message": "not ready"}}
            return 200, self.clip
        if method == "POST" and parts[1:] == ["cancel"]:
            task.status = "cancelled"
            return 200, self._video(task, {})
        return 404, {"error": {"code": "not_found", "message": path}}

    def _video(self, task: Task, body: dict[str, Any]) -> dict[str, Any]:
        statuses = {"pending": "queued", "running": "in_progress", "succeeded": "completed", "failed": "failed",
                    "cancelled": "cancelled"}
        progress = 100 if task.status == "succeeded" else min(99, 30 * task.polls)
        video: dict[str, Any] = {"id": task.id, "object": "video", "status": statuses[task.status],
                                 "progress": progress, "model": body.get("model", "remote"),
                                 "seconds": body.get("seconds", "1"), "size": body.get("size", "64x64")}
        if task.status == "failed":
            video["error"] = {"code": task.failure_code, "message": "the video failed"}
        return video
