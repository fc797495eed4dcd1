"""Compensation through the real worker, on SQLite and PostgreSQL. Each way a job really fails (the tiny
engine crashing, running out of memory twice, running past its time, failing its quality checks twice;
a hosted service staying down or refusing the request; a worker lost on the last attempt) is recorded
under one error type, which the video object and the `video.failed` webhook show as the same code, and
earns exactly the voucher the pinned price book's policy gives. Price books published before the
vocabulary keep their digest and their meaning."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from conftest import assert_ledger_clean, make_settings, new_tenant
from fake_hosted import FakeDashScope, api_key
from fixtures_models import tiny_model_dir  # noqa: F401  (fixture)
from vidfactory import failures
from vidfactory.api.app import create_app
from vidfactory.billing import pricebooks
from vidfactory.billing.pricebook import PriceBookBody, body_sha256
from vidfactory.db.models import Job, PriceBook, Transfer, WebhookEvent
from vidfactory.db.types import utcnow
from vidfactory.engines.registry import load_engine
from vidfactory.jobs import maintenance, queue
from vidfactory.jobs.worker import Worker
from vidfactory.safety.frames import OutputScreeningError
from vidfactory.settings import HostedConfig, ModelConfig

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1", "cache": "off"}
ratio = 0.5


@pytest.fixture
def app(tmp_path, database_url, models_dir):
    """`app(**settings)`: a client on its own app (no worker threads, no webhook sending)."""
    clients = []

    def make(**overrides):
        settings = make_settings(tmp_path, database_url, models_dir, webhooks_enabled=False,
                                 webhook_allowed_networks=["127.0.0.0/8"], **overrides)
        client = TestClient(create_app(settings, workers=0))
        clients.append(client.__enter__())
        return client, client.app.state.ctx

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def compensating_tenant(client, ctx):
    """A tenant under a book that compensates the default error types at half the quote, listening to
    `video.failed`."""
    published = client.post("/v1/admin/price_books", headers=admin, json={"compensation": {"ratio": str(ratio)}})
    assert published.status_code == 201, published.text
    assert published.json()["body"]["compensation"]["error_types"] == list(failures.compensated_by_default)
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    hook = client.post("/v1/webhook_endpoints", headers=tenant.headers,
                       json={"url": "http://127.0.0.1:9/hook", "event_types": ["video.failed"]})
    assert hook.status_code in (200, 201), hook.text
    return tenant


def submit(client, tenant, model: str | None = None) -> dict:
    created = client.post("/v1/videos", headers=tenant.headers,
                          json={"prompt": "a lantern on a lake", **small, **({"model": model} if model else {})})
    assert created.status_code == 200, created.text
    return created.json()


def assert_failed_and_compensated(client, ctx, tenant, video_id: str, error_type: str, compensated: bool):
    video = client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()
    assert (video["status"], video["billing"]["status"]) == ("failed", "voided")
    assert video["error"]["code"] == error_type
    with ctx.sessions() as session:
        assert session.get(Job, video_id).error_type == error_type
        [event] = session.scalars(select(WebhookEvent).where(WebhookEvent.tenant_id == tenant.id,
                                                             WebhookEvent.type == "video.failed")).all()
        grants = list(session.scalars(select(Transfer).where(Transfer.tenant_id == tenant.id,
                                                             Transfer.kind == "grant")))
    assert event.payload["data"]["error"]["code"] == error_type  # the webhook says what the API says
    vouchers = client.get("/v1/vouchers", headers=tenant.headers).json()
    if compensated:
        expected = -(-video["usage"]["total_tokens"] // 2)  # half the quote, rounded up
        assert [grant.amount for grant in grants] == [expected] and vouchers["available"] == expected
        assert video_id in grants[0].memo and error_type in grants[0].memo
    else:
        assert grants == [] and vouchers["available"] == 0
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == 10_000
    assert_ledger_clean(ctx.sessions)


class Fault:
    """The tiny engine, with `fault` installed on its pipeline: the failure happens inside diffusers."""

    def __init__(self, fault):
        self.fault = fault

    def __call__(self, config, models_dir):
        engine = load_engine(config, models_dir)
        self.fault(engine.pipeline)
        return engine


def raises(exc: Exception):
    def install(pipeline):
        def hook(module, args):
            raise exc
        pipeline.transformer.register_forward_pre_hook(hook)
    return install


def black_frames(pipeline):
    """The VAE decodes every latent to black: the clip fails its quality checks with every seed."""
    pipeline.vae.decoder.register_forward_hook(lambda module, args, output: torch.full_like(output, -1.0))


def run_worker(ctx, runs: int, engine_fault=None) -> Worker:
    loader = {} if engine_fault is None else {"engine_loader": Fault(engine_fault)}
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", **loader)
    for _ in range(runs):
        assert worker.run_once()
    assert not worker.run_once()
    return worker


@pytest.mark.parametrize(("fault", "runs", "error_type"), [
    (raises(RuntimeError("the attention produced NaNs")), 1, "engine_crash"),
    (raises(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")), 2, "oom"),
    (black_frames, 2, "qc_failed"),
], ids=["crash", "out-of-memory", "quality-checks"])
def test_a_tiny_engine_failure_earns_the_voucher_of_the_pinned_book(app, fault, runs, error_type):
    client, ctx = app(retry_backoff_s=0.0)
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    run_worker(ctx, runs, fault)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], error_type, compensated=True)


def test_a_generation_past_its_time_earns_the_voucher(app):
    client, ctx = app(job_timeout_s=0.0)
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    run_worker(ctx, 1)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "timeout", compensated=True)


def test_a_worker_lost_on_the_last_attempt_earns_the_voucher(app):
    client, ctx = app(attempts_max=1)
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    with ctx.sessions.begin() as session:  # a worker claims it and dies: its lease runs out
        claimed = queue.claim(session, worker_id="dead", models=["wan-tiny"], lease_s=0.001, now=utcnow())
        assert claimed.id == video["id"]
        lease_end = claimed.lease_expires_at
    while utcnow() <= lease_end:
        pass
    Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").maintain(force=True)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "worker_lost", compensated=True)


class Bug:
    """An engine whose code is wrong: its failure is vidfactory's own."""

    model_id = "wan-tiny"

    def generate(self, request, on_progress, is_cancelled):
        return {}["frames"]


def test_a_fault_of_vidfactory_itself_earns_the_voucher(app):
    client, ctx = app()
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda *_: Bug())
    assert worker.run_once()
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "internal_error", compensated=True)


def test_a_clip_the_classifier_cannot_screen_earns_the_voucher(app):
    client, ctx = app()
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)

    def unloadable():
        raise OutputScreeningError("cannot load the open_nsfw classifier: no such file")

    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", classifier_loader=unloadable)
    assert worker.run_once()
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "output_screening_error", compensated=True)


def test_a_clip_that_cannot_be_stored_earns_the_voucher(app):
    client, ctx = app(attempts_max=1)
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    (ctx.storage.root / "tenants").mkdir(parents=True, exist_ok=True)
    (ctx.storage.root / "tenants" / tenant.id).write_bytes(b"")  # a file where the tenant's directory must go
    run_worker(ctx, 1)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "storage_error", compensated=True)


def test_a_job_that_outlives_its_hold_earns_the_voucher(app):
    client, ctx = app(hold_timeout_s=1)
    tenant = compensating_tenant(client, ctx)
    video = submit(client, tenant)
    assert maintenance.sweep_expired_holds(ctx.sessions, utcnow() + timedelta(seconds=2)) == 1  # the worker's sweep
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "hold_expired", compensated=True)


@pytest.fixture
def dashscope():
    service = FakeDashScope()
    yield service
    service.close()


def hosted_app(app, dashscope, model_dir):
    hosted = HostedConfig(base_url=dashscope.base_url, api_key=api_key, remote_model="wan2.2-t2v-plus",
                          poll_interval_s=0.01, task_timeout_s=5.0, request_timeout_s=2.0, http_attempts_max=2,
                          http_backoff_s=0.0)
    model = ModelConfig(id="wan-hosted", engine="dashscope", path=str(model_dir), default_size="64x64",
                        default_seconds=1, fps=8, hosted=hosted)
    return app(models=[model], attempts_max=1)


def test_a_hosted_service_that_stays_down_earns_the_voucher(app, dashscope, tiny_model_dir):  # noqa: F811
    client, ctx = hosted_app(app, dashscope, tiny_model_dir)
    tenant = compensating_tenant(client, ctx)
    dashscope.fail_next(2, "/video", status=503)  # both HTTP tries of the only attempt
    video = submit(client, tenant, "wan-hosted")
    run_worker(ctx, 1)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "engine_unavailable", compensated=True)


def test_a_request_the_hosted_service_refuses_is_the_callers_and_earns_nothing(app, dashscope,
                                                                              tiny_model_dir):  # noqa: F811
    client, ctx = hosted_app(app, dashscope, tiny_model_dir)
    tenant = compensating_tenant(client, ctx)
    dashscope.fail_next(1, "/video", status=400, body={"code": "InvalidParameter", "message": "bad size"})
    video = submit(client, tenant, "wan-hosted")
    run_worker(ctx, 1)
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "invalid_input", compensated=False)


# --- books published before the vocabulary ---------------------------------------------------------------

# Stored bodies of books published before the vocabulary, with the digests they were published under.
legacy_default_book = {
    "amount_quantum": "0.001", "audio_output_tokens": 256, "cache_hit_charge_ratio": "0.2",
    "compensation": {"error_types": ["engine_error", "timeout", "out_of_memory", "worker_lost", "internal_error",
                                     "media_error", "storage_error", "database_error", "hold_expired"],
                     "expires_days": 30, "ratio": "0"},
    "currency": "CNY", "duration_buckets_s": [5, 10, 30], "method": "ratio", "prompt_tokens_max": 512,
    "ratio_k": {"1080p": {"10": 10, "30": 16, "5": 6}, "480p": {"10": 4, "30": 6, "5": 2},
                "720p": {"10": 5, "30": 8, "5": 3}},
    "resolution_tiers": [{"name": "480p", "short_side_max_px": 480}, {"name": "720p", "short_side_max_px": 720},
                         {"name": "1080p", "short_side_max_px": 8192}],
    "table_output_tokens": {"1080p": {"10": 1024, "30": 2048, "5": 512}, "480p": {"10": 256, "30": 512, "5": 128},
                            "720p": {"10": 512, "30": 1024, "5": 256}},
    "unit_price": "0.001",
}
legacy_crash_book = {**legacy_default_book, "compensation": {
    "error_types": ["engine_error", "out_of_memory"], "expires_days": 7, "ratio": "0.5"}}
legacy_digests = {"default": "d676b8437799106a05b230d2a151460bc7dcc9b9395fcd2b0c52ff22c5bda9a9",
                  "crash": "884b90c8bd22735b5ecaef409bb560cf6940e2be7757992bfe40916ef200b8bc"}


def test_books_published_before_the_vocabulary_keep_their_digests():
    assert body_sha256(PriceBookBody.model_validate(legacy_default_book)) == legacy_digests["default"]
    assert body_sha256(PriceBookBody.model_validate(legacy_crash_book)) == legacy_digests["crash"]


def test_a_legacy_book_naming_engine_error_compensates_an_engine_crash(app):
    client, ctx = app()
    with ctx.sessions.begin() as session:  # as it was published then: its stored body and digest
        version = len(pricebooks.list_versions(session)) + 1
        session.execute(insert(PriceBook).values(version=version, body=legacy_crash_book,
                                                 body_sha256=legacy_digests["crash"]))
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    client.post("/v1/webhook_endpoints", headers=tenant.headers,
                json={"url": "http://127.0.0.1:9/hook", "event_types": ["video.failed"]})
    assert client.put(f"/v1/admin/tenants/{tenant.id}/price_book", headers=admin,
                      json={"version": version}).status_code == 200
    video = submit(client, tenant)
    assert video["billing"]["price_book_version"] == version
    run_worker(ctx, 1, raises(RuntimeError("the attention produced NaNs")))
    assert_failed_and_compensated(client, ctx, tenant, video["id"], "engine_crash", compensated=True)


def test_a_new_book_names_known_error_types_only(app):
    client, ctx = app()
    unknown = client.post("/v1/admin/price_books", headers=admin,
                          json={"compensation": {"ratio": "0.5", "error_types": ["engine_crash", "gremlins"]}})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "compensation.error_types"
    assert "gremlins" in unknown.json()["error"]["message"]
    with ctx.sessions() as session:
        versions_before = len(pricebooks.list_versions(session))
    legacy = client.post("/v1/admin/price_books", headers=admin,
                         json={"compensation": {"ratio": "0.5", "error_types": ["out_of_memory", "oom", "timeout"]}})
    assert legacy.status_code == 201
    assert legacy.json()["body"]["compensation"]["error_types"] == ["oom", "timeout"]
    with ctx.sessions() as session:
        assert len(pricebooks.list_versions(session)) == versions_before + 1
