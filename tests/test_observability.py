"""Operations: liveness, readiness (the database, its migrations), Prometheus metrics and request ids."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from billing_support import small, work
from conftest import make_settings, new_tenant
from faultproxy import FaultProxy
from vidfactory.api.app import create_app
from vidfactory.db.types import utcnow
from vidfactory.jobs import breaker, workers


def test_readyz_answers_503_naming_the_database_while_migrations_are_behind(sqlite_url, tmp_path, models_dir):
    settings = make_settings(tmp_path, sqlite_url, models_dir)
    with TestClient(create_app(settings, workers=0)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        engine = create_engine(sqlite_url)
        with engine.begin() as connection:  # a database an older release migrated
            connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        engine.dispose()
        behind = client.get("/readyz")
        assert behind.status_code == 503
        error = behind.json()["error"]
        assert (error["code"], error["param"]) == ("not_ready", "database")
        assert behind.json()["checks"] == {"database": "fail", "redis": "ok", "storage": "ok"}
        assert str(tmp_path) not in behind.text  # where things live is for the log, not for the caller
        assert client.get("/healthz").status_code == 200


def test_readyz_fails_and_healthz_stays_up_while_the_database_is_unreachable(postgres_url, tmp_path, models_dir):
    target = make_url(postgres_url)
    with FaultProxy(("127.0.0.1", target.port or 5432)) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(tmp_path, proxied, models_dir)
        with TestClient(create_app(settings, workers=0)) as client:
            assert client.get("/readyz").status_code == 200
            proxy.blip()
            gone = client.get("/readyz")
            assert gone.status_code == 503
            assert gone.json()["error"]["param"] == "database"
            alive = client.get("/healthz")
            assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
            proxy.restore()
            assert client.get("/readyz").status_code == 200


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus-client's own parser: {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def total(samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    return sum(value for (sample, series), value in samples.items()
               if sample == name and set(labels.items()) <= set(series))


def test_metrics_add_up_after_a_few_tiny_jobs(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    before = scrape(client)
    videos = [client.post("/v1/videos", headers=tenant.headers,
                          json={"prompt": f"a red fox number {n}", **small}).json() for n in range(2)]
    assert client.post(f"/v1/videos/{videos[1]['id']}/cancel", headers=tenant.headers).status_code == 200
    queued = scrape(client)
    assert total(queued, "vidfactory_queue_jobs", model="wan-tiny", state="queued") == 1
    assert queued[("vidfactory_queue_oldest_age_seconds", (("model", "wan-tiny"),))] >= 0
    assert total(queued, "vidfactory_holds_outstanding") == 1
    assert total(queued, "vidfactory_holds_outstanding_tokens") == sum(v["billing"]["held"]
                                                                       for v in videos[:1])
    created = (total(queued, "vidfactory_http_requests_total", route="/v1/videos", method="POST", status="200")
               - total(before, "vidfactory_http_requests_total", route="/v1/videos", method="POST", status="200"))
    assert created == 2
    assert (total(queued, "vidfactory_cache_lookups_total") - total(before, "vidfactory_cache_lookups_total")) == 2
    committed = (total(queued, "vidfactory_admission_batch_size_sum")
                 - total(before, "vidfactory_admission_batch_size_sum"))
    assert committed == 2  # one after the other: each alone in its batch
    assert total(queued, "vidfactory_http_request_duration_seconds_count", route="/v1/videos/{video_id}/cancel") >= 1

    work(ctx, 1)
    with ctx.sessions.begin() as session:  # a GPU worker's heartbeat, as torch.cuda.mem_get_info reports it
        workers.register(session, "gpu-1", workers.DeviceReport("NVIDIA H100", 80 * 2**30, 60 * 2**30),
                         ["wan-tiny"], utcnow())
        breaker.record_failure(session, "hosted-x", "HTTP 500", now=utcnow(),
                               policy=breaker.BreakerPolicy(failures_max=1, cooldown_s=60, probe_s=60))
    done = scrape(client)
    assert total(done, "vidfactory_queue_jobs") == 0
    assert done[("vidfactory_queue_oldest_age_seconds", (("model", "wan-tiny"),))] == 0
    finished = {status: total(done, "vidfactory_jobs_finished_total", model="wan-tiny", status=status)
                for status in ("completed", "failed", "cancelled")}
    assert finished == {"completed": 1, "failed": 0, "cancelled": 1}
    assert (total(done, "vidfactory_holds_outstanding"), total(done, "vidfactory_holds_outstanding_tokens")) == (0, 0)
    for phase in ("wait", "denoise", "decode", "postprocess", "upload"):
        assert total(done, "vidfactory_job_phase_duration_seconds_count", phase=phase, model="wan-tiny") == 1, phase
        assert total(done, "vidfactory_job_phase_duration_seconds_bucket", phase=phase, le="+Inf") == 1
        assert total(done, "vidfactory_job_phase_duration_seconds_sum", phase=phase) > 0
    assert total(done, "vidfactory_job_phase_duration_seconds_count", phase="model_load") == 1
    assert done[("vidfactory_worker_gpu_memory_bytes",
                 (("device", "NVIDIA H100"), ("kind", "used"), ("worker", "gpu-1")))] == 20 * 2**30
    assert done[("vidfactory_worker_gpu_memory_bytes",
                 (("device", "NVIDIA H100"), ("kind", "total"), ("worker", "gpu-1")))] == 80 * 2**30
    assert total(done, "vidfactory_worker_gpu_memory_bytes", worker="test-worker") == 0  # a CPU has no GPU memory
    assert done[("vidfactory_worker_heartbeat_age_seconds", (("worker", "test-worker"),))] >= 0
    assert done[("vidfactory_breaker_open", (("breaker", "hosted-x"),))] == 1
    assert done[("vidfactory_webhook_delivery_failures_total", ())] == 0
    assert not any(name == "vidfactory_ledger_verify_ok" for name, _ in done)  # no verify has run yet


def test_request_metrics_label_routes_by_template_and_unmatched_paths_as_one(client):
    before = scrape(client)
    for path in ("/nothing/here/1", "/nothing/here/2"):
        assert client.get(path).status_code == 404
    assert client.get("/v1/videos/video_abc", headers={"Authorization": "Bearer nope"}).status_code == 401
    after = scrape(client)
    grew = {series for series, value in after.items() if value != before.get(series)}
    routes = {dict(labels).get("route") for name, labels in grew if name == "vidfactory_http_requests_total"}
    assert routes >= {"(unmatched)", "/v1/videos/{video_id}"}
    assert not any("nothing" in str(labels) or "video_abc" in str(labels) for _, labels in after)


def test_request_ids_are_echoed_and_minted(client):
    assert client.get("/healthz", headers={"X-Request-Id": "lb-7f3a"}).headers["x-request-id"] == "lb-7f3a"
    minted = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"}).headers["x-request-id"]
    assert minted.startswith("req_")


def test_api_processes_sharing_a_multiprocess_directory_each_scrape_every_processes_counts(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR, as several API processes on one host (gunicorn/uvicorn workers) run: what
    each process counted is in every process's scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    count = ("from vidfactory.observability.metrics import http_requests, cache_lookups\n"
             "http_requests.labels(route='/v1/models', method='GET', status='200').inc({n})\n"
             "cache_lookups.labels(result='hit').inc()\n")
    scrape_text = "import sys; from vidfactory.observability.metrics import render; sys.stdout.write(render().decode())"
    for n in (3, 2):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True, timeout=60)
    text = subprocess.run([sys.executable, "-c", scrape_text], env=env, check=True, timeout=60, capture_output=True,
                          text=True).stdout
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert total(samples, "vidfactory_http_requests_total", route="/v1/models", status="200") == 5
    assert total(samples, "vidfactory_cache_lookups_total", result="hit") == 2
