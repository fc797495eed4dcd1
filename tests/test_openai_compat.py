"""What clients written for OpenAI's video API rely on: request ids, status codes, headers, pagination,
models and sizes, preview formats; through the official `openai` SDK where it has a call for it."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.observability.requests import request_log

from conftest import make_settings, new_tenant

small = {"size": "64x64", "seconds": "1"}


def request_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == request_log.name]


def test_every_response_carries_a_request_id_and_one_json_log_line(client, ctx, caplog):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    caplog.set_level(logging.INFO, logger=request_log.name)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a fox", **small})
    missing = client.get("/v1/videos/video_missing", headers=tenant.headers)
    unauthenticated = client.get("/v1/videos")
    no_route = client.get("/v1/nowhere")
    responses = [created, missing, unauthenticated, no_route]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(i.startswith("req_") for i in ids) and len(set(ids)) == len(ids)
    lines = request_lines(caplog)
    assert [(line["request_id"], line["status"]) for line in lines] == [
        (i, r.status_code) for i, r in zip(ids, responses)]
    assert [line["tenant"] for line in lines] == [tenant.id, tenant.id, None, None]
    # The route's template, so that ids do not split the aggregate; the method and a duration.
    assert [line["route"] for line in lines] == ["/v1/videos", "/v1/videos/{video_id}", "/v1/videos",
                                                 "/v1/nowhere"]
    assert lines[0]["method"] == "POST" and all(line["duration_ms"] >= 0 for line in lines)
    assert tenant.key not in caplog.text


def test_a_callers_request_id_is_echoed_and_a_malformed_one_replaced(client, ctx):
    tenant = new_tenant(ctx.sessions)
    sent = "3f1c2a9e-6b7d-4e0f-9a1b-2c3d4e5f6a7b"
    echoed = client.get("/v1/balance", headers={**tenant.headers, "X-Request-Id": sent})
    assert echoed.headers["x-request-id"] == sent
    for bad in ("has spaces in it", "x" * 129, 'quote"d'):
        replaced = client.get("/v1/balance", headers={**tenant.headers, "X-Request-Id": bad})
        assert replaced.status_code == 200 and replaced.headers["x-request-id"].startswith("req_")


def test_an_unexpected_failure_answers_the_envelope_with_its_request_id(tmp_path, database_url, models_dir,
                                                                         caplog):
    app = create_app(make_settings(tmp_path, database_url, models_dir), workers=0)

    @app.get("/v1/broken")
    def broken() -> None:
        raise RuntimeError("a bug")

    caplog.set_level(logging.INFO, logger=request_log.name)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/broken", headers={"X-Request-Id": "trace-42"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-42"
    assert response.json()["error"]["code"] == "internal_error" and "a bug" not in response.text
    assert [(line["request_id"], line["status"]) for line in request_lines(caplog)] == [("trace-42", 500)]
