"""Alibaba Cloud Model Studio (DashScope) Wan text-to-video, through its asynchronous task protocol.

1. POST {base_url}/services/aigc/video-generation/video-synthesis with `X-DashScope-Async: enable`
   -> {"output": {"task_id", "task_status": "PENDING"}, "request_id"}
2. GET {base_url}/tasks/{task_id} until task_status is SUCCEEDED, FAILED, CANCELED (or UNKNOWN: expired)
   through PENDING and RUNNING; SUCCEEDED carries output.video_url, orig_prompt, actual_prompt and usage.
   A retried job polls its earlier attempt's task first and creates one only when that task cannot deliver.
3. GET video_url (a signed storage URL on another host: no API key is sent there).
Cancel: POST {base_url}/tasks/{task_id}/cancel, which the service honours while the task is PENDING.
"""

from __future__ import annotations

from typing import Any

from vidfactory.engines.base import (
    CancelCheck,
    GeneratedVideo,
    GenerationCancelled,
    GenerationRequest,
    InvalidInput,
    ProgressCallback,
    RemoteTaskCallback,
)
from vidfactory.engines.hosted import (
    HostedClient,
    HostedError,
    HostedFailed,
    HostedGone,
    HostedRejected,
    RemoteTask,
    check_request,
    remote_id,
    clip_seconds,
    decode_clip,
    record_task,
    resumable_task,
    wait_for_task,
)
from vidfactory.settings import HostedConfig

__all__ = ["DashScopeEngine"]

create_path = "/services/aigc/video-generation/video-synthesis"
statuses = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
            "CANCELED": "cancelled"}
# Task failure codes that are about the request itself (parameters, content moderation), not the service.
caller_codes = ("InvalidParameter", "DataInspectionFailed", "IPInfringementSuspect", "InvalidFile")
seed_max = 2**31 - 1


class DashScopeEngine:
    def __init__(self, model_id: str, config: HostedConfig) -> None:
        self.model_id = model_id
        self.config = config
        self.client = HostedClient(config)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck,
        on_remote_task: RemoteTaskCallback | None = None,
    ) -> GeneratedVideo:
        # 1. Check the request, and that nobody cancelled it before a remote task costs anything.
        check_request(request)
        if request.image is not None:
            # DashScope's image-to-video is other models at another URL: never drop the image silently.
            raise InvalidInput(f"{self.model_id}: this DashScope text-to-video model takes no reference "
                               "image")
        on_progress(0, 100)
        if is_cancelled():
            raise GenerationCancelled("cancelled before the remote task was created")
        # 2. Resume an earlier attempt's task, or create one and report it before waiting on it.
        task_id, request_id = resumable_task(request, self._poll), None
        if task_id is None:
            created = self.client.request_json("POST", create_path, "dashscope create task",
                                               json=self._body(request),
                                               headers={"X-DashScope-Async": "enable"})
            task_id = remote_id(_output(created).get("task_id"), "dashscope create task")
            request_id = created.get("request_id")
            record_task(task_id, on_remote_task, lambda: self._cancel(task_id))
        metadata: dict[str, Any] = {"engine": "dashscope", "remote_model": self.config.remote_model,
                                    "task_id": task_id, "request_id": request_id,
                                    "resumed": task_id == request.resume_task_id}
        try:
            # 3. Poll until it ends; 4. download and decode the clip.
            task = wait_for_task(lambda: self._poll(task_id), lambda: self._cancel(task_id), self.config,
                                 on_progress, is_cancelled, metadata)
            return self._finish(task, metadata)
        except HostedError as exc:
            exc.metadata = {**metadata, **exc.metadata}
            raise

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        task_input: dict[str, Any] = {"prompt": request.prompt}
        if request.negative_prompt:
            task_input["negative_prompt"] = request.negative_prompt
        return {
            "model": self.config.remote_model,
            "input": task_input,
            "parameters": {
                "size": f"{request.width}*{request.height}",
                "duration": clip_seconds(request),
                "seed": request.seed % (seed_max + 1),
                "prompt_extend": self.config.prompt_extend,
                "watermark": False,  # the output pipeline adds the platform's own labels
            },
        }

    def _poll(self, task_id: str) -> RemoteTask:
        body = self.client.request_json("GET", f"/tasks/{task_id}", "dashscope poll task")
        raw = str(_output(body).get("task_status", ""))
        if raw == "UNKNOWN":  # the service's word for a task past its 24 h retention, or never created
            raise HostedGone(f"dashscope task {task_id} is UNKNOWN (expired or unknown)")
        if raw not in statuses:
            raise HostedFailed(f"dashscope task {task_id} has an unexpected status {raw or 'missing'!r}")
        return RemoteTask(status=statuses[raw], body=body)

    def _cancel(self, task_id: str) -> None:
        self.client.request_json("POST", f"/tasks/{task_id}/cancel", "dashscope cancel task")

    def _finish(self, task: RemoteTask, metadata: dict[str, Any]) -> GeneratedVideo:
        output = _output(task.body)
        if task.status == "cancelled":
            raise HostedFailed("the dashscope task was cancelled on the service's side")
        if task.status == "failed":
            code, message = str(output.get("code", "")), str(output.get("message", ""))
            error = HostedRejected if code.startswith(caller_codes) else HostedFailed
            raise error(f"dashscope task failed: {code}: {message}"[:500])
        video_url = output.get("video_url")
        if not isinstance(video_url, str) or not video_url.startswith(("http://", "https://")):
            raise HostedFailed("the dashscope task succeeded without a video_url")
        metadata.update({
            "orig_prompt": output.get("orig_prompt"), "actual_prompt": output.get("actual_prompt"),
            "usage": task.body.get("usage"), "submit_time": output.get("submit_time"),
            "end_time": output.get("end_time")})
        data = self.client.request_bytes(video_url, "dashscope download video", authenticated=False)
        return decode_clip(data, "dashscope video", metadata)


def _output(body: dict[str, Any]) -> dict[str, Any]:
    output = body.get("output")
    return output if isinstance(output, dict) else {}
