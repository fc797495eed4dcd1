"""Any OpenAI-compatible video server (vLLM-Omni, SGLang Diffusion, another vidfactory) via `/v1/videos`.

1. POST {base_url}/videos {"model", "prompt", "seconds", "size"} -> a video object {"id", "status": "queued"};
   with a reference image, the same fields as multipart/form-data and the image as the file
   `input_reference` (a PNG at exactly the video's size, as OpenAI requires)
2. GET {base_url}/videos/{id} until status is completed or failed (through queued, in_progress;
   `progress` 0–100 is passed on); failed carries {"error": {"code", "message"}}.
3. GET {base_url}/videos/{id}/content -> the MP4 (with the API key: it is the same server).
A retried job retrieves its earlier attempt's video first and creates one only when that one cannot deliver.
Cancel: POST {base_url}/videos/{id}/cancel (vidfactory's extension); servers without it get
DELETE {base_url}/videos/{id}, OpenAI's way to discard a video.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from vidfactory.engines.base import (
    CancelCheck,
    GeneratedVideo,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
    RemoteTaskCallback,
)
from vidfactory.engines.hosted import (
    HostedClient,
    HostedError,
    HostedFailed,
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

__all__ = ["OpenAIVideoEngine"]

statuses = {"queued": "pending", "in_progress": "running", "completed": "succeeded", "failed": "failed",
            "cancelled": "cancelled"}
# Failure codes that are about the request (vidfactory's and OpenAI's words), not the server.
caller_codes = ("invalid", "moderation", "content_policy", "content_rejected", "prompt_rejected")


class OpenAIVideoEngine:
    def __init__(self, model_id: str, config: HostedConfig) -> None:
        self.model_id = model_id
        self.config = config
        self.client = HostedClient(config)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, is_cancelled: CancelCheck,
        on_remote_task: RemoteTaskCallback | None = None,
    ) -> GeneratedVideo:
        # 1. Check the request, and that nobody cancelled it before a remote job costs anything.
        check_request(request)
        on_progress(0, 100)
        if is_cancelled():
            raise GenerationCancelled("cancelled before the remote video was created")
        # 2. Resume an earlier attempt's video, or create one and report it before waiting on it.
        video_id = resumable_task(request, self._poll)
        if video_id is None:
            created = self._create(request)
            video_id = remote_id(created.get("id"), "openai-video create")
            record_task(video_id, on_remote_task, lambda: self._cancel(video_id))
        metadata: dict[str, Any] = {"engine": "openai-video", "remote_model": self.config.remote_model,
                                    "task_id": video_id, "resumed": video_id == request.resume_task_id}
        try:
            # 3. Poll until it ends; 4. download and decode the clip.
            task = wait_for_task(lambda: self._poll(video_id), lambda: self._cancel(video_id), self.config,
                                 on_progress, is_cancelled, metadata)
            return self._finish(video_id, task, metadata)
        except HostedError as exc:
            exc.metadata = {**metadata, **exc.metadata}
            raise

    def _create(self, request: GenerationRequest) -> dict[str, Any]:
        if request.image is None:
            return self.client.request_json("POST", "/videos", "openai-video create",
                                            json=self._body(request))
        form = {name: str(value) for name, value in self._body(request).items()}
        reference = ("reference.png", _png_at(request.image, request.width, request.height), "image/png")
        return self.client.request_json("POST", "/videos", "openai-video create", form=form,
                                        files={"input_reference": reference})

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.remote_model, "prompt": request.prompt,
                                "seconds": str(clip_seconds(request)), "size": f"{request.width}x{request.height}"}
        if self.config.send_extensions:
            body["seed"] = request.seed
            if request.negative_prompt:
                body["negative_prompt"] = request.negative_prompt
        return body

    def _poll(self, video_id: str) -> RemoteTask:
        body = self.client.request_json("GET", f"/videos/{video_id}", "openai-video poll")
        raw = str(body.get("status", ""))
        if raw not in statuses:
            raise HostedFailed(f"openai-video {video_id} has an unknown status {raw!r}")
        progress = body.get("progress")
        return RemoteTask(status=statuses[raw], body=body,
                          progress=progress if isinstance(progress, int) else None)

    def _cancel(self, video_id: str) -> None:
        try:
            self.client.request_json("POST", f"/videos/{video_id}/cancel", "openai-video cancel")
        except HostedFailed:  # 404: no cancel extension on this server
            self.client.request_json("DELETE", f"/videos/{video_id}", "openai-video delete")

    def _finish(self, video_id: str, task: RemoteTask, metadata: dict[str, Any]) -> GeneratedVideo:
        if task.status == "cancelled":
            raise HostedFailed(f"openai-video {video_id} was cancelled on the server's side")
        if task.status == "failed":
            error = task.body.get("error") if isinstance(task.body.get("error"), dict) else {}
            code, message = str(error.get("code", "")), str(error.get("message", ""))
            kind = HostedRejected if code.startswith(caller_codes) else HostedFailed
            raise kind(f"openai-video {video_id} failed: {code}: {message}"[:500])
        for key in ("seconds", "size", "usage"):
            if key in task.body:
                metadata[key] = task.body[key]
        data = self.client.request_bytes(f"/videos/{video_id}/content", "openai-video download",
                                         authenticated=True)
        return decode_clip(data, "openai-video content", metadata)


def _png_at(image: np.ndarray, width: int, height: int) -> bytes:
    """The first frame as a PNG of exactly the video's size (the worker cropped it to the aspect ratio)."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, (image.dtype, image.shape)
    out = io.BytesIO()
    Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS).save(out, format="PNG")
    return out.getvalue()
