"""Hosted engines against local fake services that follow the documented protocols: DashScope's async
Wan video synthesis and OpenAI's /v1/videos. Success, retries (429 + Retry-After, 5xx), final failures
(FAILED tasks, 4xx), hangs, cancellation on both sides, and the API key kept secret."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fake_hosted import FakeDashScope, FakeOpenAIVideo, api_key
from vidfactory.engines.base import GenerationCancelled, GenerationRequest, InvalidInput
from vidfactory.engines.dashscope import DashScopeEngine
from vidfactory.engines.hosted import HostedFailed, HostedRejected, HostedTimeout, HostedUnavailable
from vidfactory.engines.openai_video import OpenAIVideoEngine
from vidfactory.jobs.errors import classify
from vidfactory.settings import HostedConfig, ModelConfig

request = GenerationRequest(prompt="a lantern on a lake", negative_prompt="blur", width=64, height=64,
                            num_frames=9, fps=8, num_inference_steps=4, guidance_scale=5.0, seed=7)


def config(service, **overrides) -> HostedConfig:
    values = dict(base_url=service.base_url, api_key=api_key, remote_model="wan2.2-t2v-plus",
                  poll_interval_s=0.01, task_timeout_s=5.0, request_timeout_s=2.0, http_attempts_max=3,
                  http_backoff_s=0.01, http_backoff_max_s=0.05)
    values.update(overrides)
    return HostedConfig(**values)


@pytest.fixture
def dashscope():
    service = FakeDashScope()
    yield service
    service.close()


@pytest.fixture
def openai_server():
    service = FakeOpenAIVideo()
    yield service
    service.close()


def never(): return False


def run(engine, is_cancelled=never):
    progress = []
    video = engine.generate(request, lambda done, total: progress.append((done, total)), is_cancelled)
    return video, progress


# DashScope


def test_dashscope_task_protocol_end_to_end(dashscope):
    engine = DashScopeEngine("wan-hosted", config(dashscope, prompt_extend=True))
    video, progress = run(engine)
    assert video.frames.shape == (5, 64, 64, 3) and video.frames.dtype.name == "uint8" and video.fps == 8
    create = dashscope.calls("POST", "/video-synthesis")[0]
    assert create.headers["X-DashScope-Async"] == "enable"
    assert create.headers["Authorization"] == f"Bearer {api_key}"
    assert create.body == {"model": "wan2.2-t2v-plus",
                           "input": {"prompt": "a lantern on a lake", "negative_prompt": "blur"},
                           "parameters": {"size": "64*64", "duration": 1, "seed": 7, "prompt_extend": True,
                                          "watermark": False}}
    task_id = video.metadata["task_id"]
    assert len(dashscope.calls("GET", f"/api/v1/tasks/{task_id}")) == 2  # PENDING, then SUCCEEDED
    assert video.metadata["actual_prompt"] == "a lantern on a lake, cinematic lighting"
    assert video.metadata["orig_prompt"] == "a lantern on a lake"
    assert video.metadata["usage"] == {"video_duration": 5, "video_ratio": "832*480", "video_count": 1}
    assert video.metadata["engine"] == "dashscope" and video.metadata["request_id"]
    # The signed storage URL is on another host: the API key never goes there.
    download = dashscope.calls("GET", "/files/")[0]
    assert "Authorization" not in download.headers
    assert progress[0] == (0, 100)


def test_dashscope_429_honours_retry_after_then_succeeds(dashscope):
    dashscope.fail_next(1, "/video-synthesis", status=429, retry_after="1",
                        body={"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"})
    engine = DashScopeEngine("wan-hosted", config(dashscope))
    started = time.monotonic()
    video, _ = run(engine)
    assert time.monotonic() - started >= 1.0  # waited what the server asked, not the 0.01 s backoff
    assert len(dashscope.calls("POST", "/video-synthesis")) == 2
    assert video.frames.shape[0] == 5


def test_dashscope_5xx_retries_with_backoff_then_gives_up_as_transient(dashscope):
    dashscope.fail_next(2, "/tasks/", status=500)
    video, _ = run(DashScopeEngine("wan-hosted", config(dashscope)))  # two 500s on polls, then fine
    assert video.frames.shape[0] == 5
    dashscope.fail_next(3, "/video-synthesis", status=503)
    with pytest.raises(HostedUnavailable) as caught:
        run(DashScopeEngine("wan-hosted", config(dashscope)))
    assert classify(caught.value).transient and classify(caught.value).error_type == "engine_unavailable"
    assert "503" in str(caught.value) and "ServiceUnavailable" in str(caught.value)


def test_dashscope_failed_task_is_final_engine_crash_with_its_task_id(dashscope):
    dashscope.outcome = "failed"
    with pytest.raises(HostedFailed) as caught:
        run(DashScopeEngine("wan-hosted", config(dashscope)))
    verdict = classify(caught.value)
    assert (verdict.error_type, verdict.transient) == ("engine_crash", False)
    assert caught.value.metadata["task_id"] in dashscope.tasks
    assert "InternalError" in str(caught.value)


def test_dashscope_task_refused_for_its_content_is_invalid_input(dashscope):
    dashscope.outcome, dashscope.failure_code = "failed", "DataInspectionFailed"
    with pytest.raises(HostedRejected) as caught:
        run(DashScopeEngine("wan-hosted", config(dashscope)))
    assert (classify(caught.value).error_type, classify(caught.value).transient) == ("invalid_input", False)


def test_dashscope_4xx_is_final_and_not_retried(dashscope):
    dashscope.fail_next(1, "/video-synthesis", status=400,
                        body={"code": "InvalidParameter", "message": "size must be one of 1280*720, ..."})
    with pytest.raises(HostedRejected, match="InvalidParameter"):
        run(DashScopeEngine("wan-hosted", config(dashscope)))
    assert len(dashscope.calls("POST", "/video-synthesis")) == 1


def test_dashscope_wrong_key_is_an_engine_failure_and_the_key_is_never_shown(dashscope, caplog):
    caplog.set_level(logging.DEBUG)
    engine = DashScopeEngine("wan-hosted", config(dashscope, api_key="sk-wrong-key-987"))
    with pytest.raises(HostedFailed) as caught:
        run(engine)
    assert "InvalidApiKey" in str(caught.value) and "api_key" in str(caught.value)
    assert classify(caught.value).error_type == "engine_crash"
    model = ModelConfig(id="m", engine="dashscope", path="/x", hosted=config(dashscope))
    for text in (str(caught.value), caplog.text, repr(model), str(model.model_dump())):
        assert "sk-wrong-key-987" not in text and api_key not in text


def test_dashscope_hung_request_times_out_and_is_retried(dashscope):
    # The requests it answers must beat the timeout too: 1 s leaves a busy machine room; a hang is far past it.
    dashscope.hang_next(1, "/video-synthesis", seconds=5.0)
    video, _ = run(DashScopeEngine("wan-hosted", config(dashscope, request_timeout_s=1.0)))
    assert video.frames.shape[0] == 5 and len(dashscope.calls("POST", "/video-synthesis")) == 2
    dashscope.hang_next(2, "/video-synthesis", seconds=5.0)
    with pytest.raises(HostedTimeout) as caught:
        run(DashScopeEngine("wan-hosted", config(dashscope, request_timeout_s=1.0, http_attempts_max=2)))
    assert (classify(caught.value).error_type, classify(caught.value).transient) == ("timeout", True)


def test_dashscope_task_that_never_ends_times_out_and_is_cancelled(dashscope):
    dashscope.outcome = "never"
    with pytest.raises(HostedTimeout, match="did not finish"):
        run(DashScopeEngine("wan-hosted", config(dashscope, task_timeout_s=0.2)))
    assert len(dashscope.calls("POST", "/cancel")) == 1


def test_dashscope_cancelling_the_job_cancels_the_pending_task(dashscope):
    dashscope.outcome = "never"
    polls = []

    def cancel_after_two_polls():
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(GenerationCancelled):
        run(DashScopeEngine("wan-hosted", config(dashscope)), cancel_after_two_polls)
    [task] = dashscope.tasks.values()
    assert task.status == "cancelled" and len(dashscope.calls("POST", f"/tasks/{task.id}/cancel")) == 1


def test_dashscope_a_job_cancelled_before_it_starts_creates_no_task(dashscope):
    with pytest.raises(GenerationCancelled):
        run(DashScopeEngine("wan-hosted", config(dashscope)), lambda: True)
    assert dashscope.requests == []


def test_dashscope_task_cancelled_on_the_service_side_fails_the_job(dashscope):
    dashscope.outcome = "cancelled"
    with pytest.raises(HostedFailed, match="cancelled on the service"):
        run(DashScopeEngine("wan-hosted", config(dashscope)))


def test_a_job_deadline_raised_while_polling_cancels_the_remote_task(dashscope):
    dashscope.outcome = "never"
    polls = []

    def deadline_after_one_poll():
        polls.append(1)
        if len(polls) > 1:
            raise TimeoutError("job deadline")
        return False

    with pytest.raises(TimeoutError):
        run(DashScopeEngine("wan-hosted", config(dashscope)), deadline_after_one_poll)
    assert len(dashscope.calls("POST", "/cancel")) == 1


# OpenAI-compatible /v1/videos


def test_openai_video_protocol_end_to_end(openai_server):
    engine = OpenAIVideoEngine("remote-wan", config(openai_server))
    video, progress = run(engine)
    assert video.frames.shape == (5, 64, 64, 3) and video.fps == 8
    create = openai_server.calls("POST", "/v1/videos")[0]
    assert create.body == {"model": "wan2.2-t2v-plus", "prompt": "a lantern on a lake", "seconds": "1",
                           "size": "64x64", "seed": 7, "negative_prompt": "blur"}
    content = openai_server.calls("GET", "/content")[0]
    assert content.headers["Authorization"] == f"Bearer {api_key}"  # same server: the key goes along
    assert video.metadata["task_id"] in openai_server.tasks and video.metadata["engine"] == "openai-video"
    assert (30, 100) in progress  # the server's own progress is passed on


def test_openai_video_sends_a_reference_image_as_the_sdk_does(openai_server):
    image = np.zeros((32, 32, 3), np.uint8)  # cropped to the video's 1:1 by the worker, still smaller
    image[:16] = (255, 0, 0)  # red over blue
    image[16:] = (0, 0, 255)
    engine = OpenAIVideoEngine("remote-wan", config(openai_server))
    video = engine.generate(replace(request, image=image), lambda done, total: None, never)
    assert video.frames.shape == (5, 64, 64, 3)
    create = openai_server.calls("POST", "/v1/videos")[0]
    assert create.headers["Content-Type"].startswith("multipart/form-data")
    sent = Image.open(io.BytesIO(create.body.pop("input_reference")))
    assert (sent.format, sent.size) == ("PNG", (64, 64))  # at the video's size, as OpenAI requires
    assert sent.getpixel((32, 8)) == (255, 0, 0) and sent.getpixel((32, 56)) == (0, 0, 255)
    assert create.body == {"model": "wan2.2-t2v-plus", "prompt": "a lantern on a lake", "seconds": "1",
                           "size": "64x64", "seed": "7", "negative_prompt": "blur"}


def test_dashscope_refuses_a_reference_image(dashscope):
    engine = DashScopeEngine("wan-hosted", config(dashscope))
    with pytest.raises(InvalidInput, match="takes no reference image"):
        engine.generate(replace(request, image=np.zeros((64, 64, 3), np.uint8)), lambda done, total: None,
                        never)
    assert dashscope.requests == []


def test_openai_video_without_extensions_sends_only_openai_fields(openai_server):
    run(OpenAIVideoEngine("remote", config(openai_server, send_extensions=False)))
    assert set(openai_server.calls("POST", "/v1/videos")[0].body) == {"model", "prompt", "seconds", "size"}


def test_openai_video_failures_classified(openai_server):
    openai_server.outcome = "failed"
    with pytest.raises(HostedFailed):
        run(OpenAIVideoEngine("remote", config(openai_server)))
    openai_server.failure_code = "moderation_blocked"
    with pytest.raises(HostedRejected):
        run(OpenAIVideoEngine("remote", config(openai_server)))
    openai_server.fail_next(1, "/v1/videos", status=502)
    openai_server.outcome = "succeeded"
    video, _ = run(OpenAIVideoEngine("remote", config(openai_server)))
    assert video.frames.shape[0] == 5


def test_openai_video_cancel_uses_the_cancel_route(openai_server):
    openai_server.outcome = "never"
    with pytest.raises(GenerationCancelled):
        run(OpenAIVideoEngine("remote", config(openai_server)), iter([False, True]).__next__)
    [task] = openai_server.tasks.values()
    assert task.status == "cancelled" and len(openai_server.calls("POST", "/cancel")) == 1


def test_hosted_models_need_their_settings():
    with pytest.raises(ValueError, match="hosted"):
        ModelConfig(id="m", engine="dashscope", path="/tok")
    with pytest.raises(ValueError, match="hosted"):
        ModelConfig(id="m", engine="wan", path="/w", hosted=HostedConfig(base_url="http://x", remote_model="r"))


def test_the_api_key_can_come_from_another_variable(monkeypatch, dashscope):
    monkeypatch.setenv("TEST_DASHSCOPE_KEY", api_key)
    video, _ = run(DashScopeEngine("wan-hosted", config(dashscope, api_key="", api_key_env="TEST_DASHSCOPE_KEY")))
    assert video.frames.shape[0] == 5


# Resuming an earlier attempt's task


@pytest.mark.parametrize("kind", ["dashscope", "openai-video"])
def test_a_running_task_is_resumed_and_a_task_nobody_can_record_is_cancelled(kind):
    service = FakeDashScope() if kind == "dashscope" else FakeOpenAIVideo()
    engine_type = DashScopeEngine if kind == "dashscope" else OpenAIVideoEngine
    try:
        engine = engine_type("wan-hosted", config(service))
        earlier = service.add_task("running")
        video = engine.generate(replace(request, resume_task_id=earlier.id), lambda *_: None, never,
                                on_remote_task=lambda task_id: pytest.fail("no task may be created"))
        assert (video.metadata["task_id"], video.metadata["resumed"]) == (earlier.id, True)
        assert service.tasks_created == 1

        def stale(task_id):
            raise RuntimeError(f"the lease is gone; {task_id} cannot be recorded")

        with pytest.raises(RuntimeError, match="lease is gone"):
            engine.generate(request, lambda *_: None, never, on_remote_task=stale)
        [created] = [task for task in service.tasks.values() if task.id != earlier.id]
        assert created.status == "cancelled" and service.tasks_created == 2
    finally:
        service.close()
