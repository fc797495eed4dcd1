"""Property-based fuzzing of the HTTP API with schemathesis, against the app's own OpenAPI document.

Every operation is fuzzed with valid (positive) and invalid (negative) requests, on SQLite and on
PostgreSQL (which refuses some text SQLite stores, NUL above all); the bodies of POST /v1/videos and
/v1/quotes both as JSON and as multipart; routes with an id in the path sometimes with a real one.
Whatever arrives: never a 5xx, every status and body as the schema declares, every 4xx the error
envelope; afterwards the ledger verifies and the tenant holds exactly the tokens of the jobs it created
and did not cancel (nothing for a rejected request). Deterministic (a fixed seed for each database, no
example database), so CI sends the same requests on every run, and the two databases different ones.
Inputs that once answered 500 and that random generation seldom draws are pinned in
test_inputs_that_once_failed.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from vidfactory.api.app import create_app
from vidfactory.billing import ledger
from vidfactory.db.models import Job, Transfer
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.settings import Settings

from conftest import TenantHandle, assert_ledger_clean, fresh_database, make_settings, new_tenant

admin_token = "test-admin-token"
credit_tokens = 50_000  # enough for dozens of jobs, few enough that a long run meets 402
# Per operation, media type, mode and database. The two databases draw from different seeds, so each
# operation meets 2 x examples different requests (one seed for both sent the same requests twice).
examples = 15
checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
# A tenant's event stream ends only at its lifetime (a video's when the video finishes; no worker runs here):
# a case reads its status, headers and first event, or what came before the stream closed, and checks those.
# The read deadline only catches a stream that never answers; a loaded machine can take seconds to.
stream_events_max = 1
stream_lifetime_s = 0.5
stream_read_s = 30.0


def _negatable(operation: dict) -> bool:
    """Whether an invalid request exists: a body, or a query/header parameter (a plain string path
    parameter has no invalid value, and schemathesis would find nothing to generate)."""
    return "requestBody" in operation or any(p["in"] != "path" for p in operation.get("parameters", []))


# The API's document does not depend on the settings (test_the_document_does_not_depend_on_the_settings):
# built once here (no lifespan: nothing is opened) and handed to each fuzzed app, which would otherwise spend a
# quarter of a second building it again. Nothing changes it: FastAPI serves it as it is.
document = create_app(Settings(data_dir="unused")).openapi()


def _targets() -> list[tuple[str, str, str | None, GenerationMode]]:
    """(method, path, body media type, mode) for every operation: one per media type where a body has
    several; negative mode where there is anything to negate."""
    targets = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            media_types = list(operation.get("requestBody", {}).get("content", {}))
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _negatable(operation) else [])
            for media_type in media_types if len(media_types) > 1 else [None]:
                targets += [(method.upper(), path, media_type, mode) for mode in modes]
    return targets


targets = _targets()


def target_id(method: str, path: str, media_type: str | None, mode: GenerationMode) -> str:
    return f"{mode.value} {method} {path}" + (f" {media_type}" if media_type else "")


def fuzz_settings(directory: Path, database_url: str, models_dir: Path) -> Settings:
    return make_settings(directory, database_url, models_dir, rate_limit_enabled=False, webhooks_enabled=False,
                         webhook_allowed_networks=["127.0.0.0/8"], events_stream_max_s=stream_lifetime_s)


def test_the_document_does_not_depend_on_the_settings(tmp_path, models_dir):
    served = create_app(fuzz_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", models_dir)).openapi()
    assert served == document


class FuzzedApi:
    """An app (API only: no workers, so jobs stay queued and keep their holds) on a database of its own, with
    the schema schemathesis fuzzes it by. Loading the schema through the app starts its lifespan, which
    schemathesis keeps running until `asgi.shutdown_lifespans` (a later call starts it again)."""

    def __init__(self, directory: Path, database_url: str, models_dir: Path) -> None:
        settings = fuzz_settings(directory, database_url, models_dir)
        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)
        self.app = create_app(settings, workers=0)
        self.app.openapi_schema = document
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app)
        # Every call sends its credential itself (below), so a case "without" it is not invalid input: the
        # document's security scheme (for Swagger's Authorize button) is left out of what is fuzzed.
        self.schema.raw_schema.pop("security", None)
        self.schema.config.max_stream_events = stream_events_max

    def tenant_with_ids(self) -> tuple[TenantHandle, dict[str, str]]:
        """A new tenant with a balance, and one queued video, template, batch and webhook endpoint of theirs
        for the routes that take ids."""
        tenant = new_tenant(self.sessions, tokens=credit_tokens, plan="pro")
        auth = {"Authorization": f"Bearer {tenant.key}"}
        with asgi.get_client(self.app) as client:
            video = client.post("/v1/videos", headers=auth,
                                json={"prompt": "a seed video", "size": "64x64", "seconds": "1"})
            endpoint = client.post("/v1/webhook_endpoints", headers=auth, json={"url": "http://127.0.0.1:9/hook"})
            template = client.post("/v1/templates", headers=auth,
                                   json={"name": "fuzz", "body": "a {{ thing }}", "size": "64x64", "seconds": 1})
            batch = client.post("/v1/batches", headers=auth,
                                json={"template": "fuzz", "variables": {"thing": ["fox", "owl"]}})
        assert (video.status_code, template.status_code, batch.status_code) == (200, 201, 202), batch.text
        assert endpoint.status_code == 201, endpoint.text
        return tenant, {"video_id": video.json()["id"], "tenant_id": tenant.id, "name": "fuzz", "plan_id": "pro",
                        "batch_id": batch.json()["id"], "endpoint_id": endpoint.json()["id"]}

    def close(self) -> None:
        asgi.shutdown_lifespans()
        self.engine.dispose()


@pytest.fixture(scope="module")
def tenant_apis(tmp_path_factory, sqlite_template, postgres_databases, models_dir):
    """One API per database for every tenant-scoped operation, each fuzzed as a tenant of its own: what one
    tenant does reaches no other, so they share the app (and the seconds each new app spends building its
    routes). An operator's writes change what every tenant sees: each gets an API of its own. An operator's
    reads change nothing, and share the tenants' API."""
    with ExitStack() as stack:
        apis: dict[str, FuzzedApi] = {}

        def api_for(kind: str) -> FuzzedApi:
            if kind not in apis:
                directory = tmp_path_factory.mktemp(f"fuzz-{kind}")
                url = stack.enter_context(fresh_database(kind, directory, sqlite_template, postgres_databases))
                apis[kind] = FuzzedApi(directory, url, models_dir)
                stack.callback(apis[kind].close)
            return apis[kind]

        yield api_for


@pytest.fixture
def fuzz_target(request, tenant_apis, tmp_path, sqlite_template, postgres_databases, models_dir):
    params = request.node.callspec.params
    path, kind = params["path"], params["database"]
    if not path.startswith("/v1/admin") or params["method"] == "GET":
        api = tenant_apis(kind)
        tenant, real_ids = api.tenant_with_ids()
        yield api.schema, api.sessions, tenant, real_ids
        return
    with fresh_database(kind, tmp_path, sqlite_template, postgres_databases) as url:
        api = FuzzedApi(tmp_path, url, models_dir)
        try:
            tenant, real_ids = api.tenant_with_ids()
            yield api.schema, api.sessions, tenant, real_ids
        finally:
            api.close()


def cases(operation, mode: GenerationMode, media_type: str | None, real_ids: dict[str, str]):
    strategy = operation.as_strategy(generation_mode=mode)
    if media_type is not None:
        # as_strategy draws the body's media type itself: keep the draws of the one under test.
        strategy = strategy.filter(lambda case: case.media_type == media_type)
    names = {p.name for p in operation.path_parameters}
    if names and names <= real_ids.keys():
        # Random ids only ever reach the 404 branch; a real one reaches cancel, delete, content, credit.
        real = operation.as_strategy(generation_mode=mode, path_parameters={n: real_ids[n] for n in names})
        strategy = st.one_of(strategy, real)
    return strategy


def streams(operation) -> bool:
    """Whether the operation answers with an event stream."""
    responses = operation.definition.raw.get("responses", {}).values()
    return any("text/event-stream" in response.get("content", {}) for response in responses)


def assert_error_envelope(response) -> None:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "type", "param"}, error
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"], error
    assert error["param"] is None or isinstance(error["param"], str), error


def assert_charged_only_for_jobs(sessions, tenant_id: str) -> None:
    """Credits and vouchers in; one hold (one or two legs: vouchers first) per job; a void per leg of each
    cancelled job; nothing else, whatever was rejected."""
    with sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.tenant_id == tenant_id)))
        transfers = list(session.scalars(select(Transfer).where(Transfer.tenant_id == tenant_id)))
        current = ledger.balance(session, tenant_id)
        vouchers = ledger.voucher_balance(session, tenant_id)
    statuses = Counter(job.status for job in jobs)
    assert set(statuses) <= {"queued", "cancelled"}, statuses  # no worker ran
    kinds = Counter(t.kind for t in transfers)
    legs = sum(len(job.hold_leg_ids) for job in jobs)
    voided = sum(len(job.hold_leg_ids) for job in jobs if job.status == "cancelled")
    assert kinds == Counter(credit=kinds["credit"], grant=kinds["grant"], hold=legs, void=voided), kinds
    credited = sum(t.amount for t in transfers if t.kind == "credit")
    granted = sum(t.amount for t in transfers if t.kind == "grant")
    held = sum(job.total_tokens for job in jobs if job.status == "queued")
    assert (current.posted, vouchers.posted) == (credited, granted)
    assert current.pending + vouchers.pending == held
    assert current.available + vouchers.available == credited + granted - held


@pytest.mark.parametrize(("method", "path", "media_type", "mode"), targets,
                         ids=[target_id(*t) for t in targets])
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_fuzz(fuzz_target, database, method, path, media_type, mode):
    schema, sessions, tenant, real_ids = fuzz_target
    operation = schema[path][method]
    token = admin_token if path.startswith("/v1/admin") else tenant.key
    operation_checks = checks + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    transport = {"timeout": stream_read_s} if streams(operation) else {}

    @seed(zlib.crc32(database.encode()))
    @hypothesis_settings(max_examples=examples, database=None, deadline=None,
                         phases=[Phase.explicit, Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(case=cases(operation, mode, media_type, real_ids))
    def fuzz(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                          checks=operation_checks, **transport)
        if 400 <= response.status_code < 500:
            assert_error_envelope(response)

    fuzz()
    assert_ledger_clean(sessions)
    assert_charged_only_for_jobs(sessions, tenant.id)


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG", optimize=True)
    return out.getvalue()


# Inputs that once answered 500 and that random generation reaches rarely or never: NUL in ids and stored
# text (PostgreSQL refuses it), nesting deeper than the JSON parser recurses, non-ASCII digits, repeats.
nul = "a\x00b"
png = _png(32, 32)
png_base64 = base64.b64encode(png).decode()
bomb_base64 = base64.b64encode(_png(5000, 5000)).decode()  # 25 million pixels in a few kB
deep = "[" * 100_000
invalid = "invalid_value"
credits = "/v1/admin/tenants/{tenant}/credits"
as_json = {"Content-Type": "application/json"}
edge_cases = [
    ("GET", "/v1/videos/a%00b", {}, 404, "not_found"),
    ("GET", "/v1/videos?after=a%00b", {}, 404, "not_found"),
    ("GET", "/v1/ledger?after=a%00b", {}, 404, "not_found"),
    ("POST", "/v1/videos/a%00b/cancel", {}, 404, "not_found"),
    ("DELETE", "/v1/videos/a%00b", {}, 404, "not_found"),
    ("GET", "/v1/videos/a%00b/content", {}, 404, "not_found"),
    ("POST", "/v1/admin/tenants/a%00b/keys", {}, 404, "not_found"),
    ("POST", "/v1/admin/tenants/a%00b/credits", {"json": {"tokens": 5}}, 404, "not_found"),
    ("POST", "/v1/admin/tenants", {"json": {"name": nul}}, 400, invalid),
    ("POST", "/v1/admin/tenants", {"json": {"name": "acme", "plan": nul}}, 400, invalid),
    ("POST", "/v1/admin/tenants", {"json": {"name": "acme", "plan": "gold"}}, 400, invalid),
    ("POST", credits, {"json": {"tokens": 5, "memo": nul}}, 400, invalid),
    ("POST", credits, {"json": {"tokens": "5"}}, 400, invalid),
    ("POST", "/v1/videos", {"headers": {"Idempotency-Key": nul}, "json": {"prompt": "x"}}, 400, invalid),
    ("POST", "/v1/videos", {"content": deep, "headers": as_json}, 400, "invalid_json"),
    ("POST", "/v1/quotes", {"data": {"prompt": "x", "metadata": deep}}, 400, invalid),
    ("POST", "/v1/quotes", {"files": {"seed": (None, "\u00b2")}, "data": {"prompt": "x"}}, 400, invalid),
    ("POST", "/v1/quotes", {"files": {"prompt": (None, "x")}, "data": {"prompt": "y"}}, 400,
     "duplicate_parameter"),
    ("POST", "/v1/quotes", {"json": {"prompt": "x", "seed": True}}, 400, invalid),
    ("POST", "/v1/quotes", {"json": {"prompt": "x", "seed": "7"}}, 400, invalid),
    ("GET", "/v1/ledger?limit=1000", {}, 200, None),
    ("GET", "/v1/webhook_endpoints/a%00b", {}, 404, "not_found"),
    ("GET", "/v1/webhook_deliveries?video_id=a%00b", {}, 404, "not_found"),
    ("POST", "/v1/webhook_endpoints", {"json": {"url": f"http://8.8.8.8/{nul}"}}, 400, "webhook_url_refused"),
    ("POST", "/v1/webhook_endpoints", {"json": {"url": "http://8.8.8.8/", "description": nul}}, 400, invalid),
    ("POST", "/v1/webhook_endpoints", {"json": {"url": "http://[::ffff:169.254.169.254]/"}}, 400,
     "webhook_url_refused"),
    ("POST", "/v1/videos", {"json": {"prompt": "x", "webhook_url": "http://169.254.169.254/"}}, 400,
     "webhook_url_refused"),
    ("GET", "/v1/templates/a%00b", {}, 404, "not_found"),
    ("DELETE", "/v1/templates/a%00b", {}, 404, "not_found"),
    ("GET", "/v1/batches/a%00b", {}, 404, "not_found"),
    ("GET", "/v1/batches/a%00b/archive", {}, 404, "not_found"),
    ("POST", "/v1/videos/a%00b/regenerate", {"json": {}}, 404, "not_found"),
    ("POST", "/v1/videos/a%00b/feedback", {"json": {"rating": "up"}}, 404, "not_found"),
    ("GET", "/v1/admin/preferences.jsonl?after=a%00b", {}, 404, "not_found"),
    ("POST", "/v1/templates", {"json": {"name": "t", "body": "{{ " + "(" * 1300 + "x" + ")" * 1300 + " }}"}},
     400, "template_error"),
    ("POST", "/v1/templates", {"json": {"name": "t", "body": "{{ x * 99999999 }}"}}, 400, "template_error"),
    ("POST", "/v1/videos", {"json": {"template": "product_intro", "variables": {"product": nul}}}, 400, invalid),
    ("POST", "/v1/quotes", {"data": {"template": "product_intro", "variables": deep}}, 400, invalid),
    ("POST", "/v1/quotes", {"data": {"prompt": "x", "enhance_prompt": "yes"}}, 400, invalid),
    ("POST", "/v1/batches", {"json": {"template": "product_intro", "variables": {"product": ["a"] * 101}}}, 400,
     invalid),
    ("GET", "/v1/admin/tenants/a%00b/lexicon", {}, 404, "not_found"),
    ("POST", "/v1/admin/tenants/{tenant}/lexicon", {"json": {"term": nul, "category": "x", "action": "block"}},
     400, invalid),
    ("POST", "/v1/admin/tenants/{tenant}/lexicon", {"json": {"term": "...", "category": "x", "action": "block"}},
     400, invalid),
    ("DELETE", "/v1/admin/tenants/{tenant}/lexicon?term=a%00b", {}, 400, invalid),
    ("PUT", "/v1/admin/tenants/a%00b/brand", {"json": {"text": "Acme"}}, 404, "not_found"),
    ("PUT", "/v1/admin/tenants/{tenant}/brand", {"json": {"text": nul}}, 400, invalid),
    ("PUT", "/v1/admin/tenants/{tenant}/brand", {"json": {"logo_png_base64": "aGVsbG8="}}, 400, invalid),
    ("POST", "/v1/videos", {"json": {"prompt": "c0caine"}}, 400, "content_policy"),
    # Reference images (image-to-video): the fuzzed app's wan-tiny takes none, and bad files say why.
    ("POST", "/v1/videos", {"data": {"prompt": "x"}, "files": {"input_reference": ("a.png", png, "image/png")}},
     400, "unsupported_parameter"),
    ("POST", "/v1/quotes", {"json": {"prompt": "x", "input_reference": f"data:image/png;base64,{png_base64}"}},
     400, "unsupported_parameter"),
    ("POST", "/v1/videos", {"data": {"prompt": "x"}, "files": {"input_reference": ("a.png", b"", "image/png")}},
     400, "invalid_image"),
    ("POST", "/v1/videos", {"data": {"prompt": "x"}, "files": [("input_reference", ("a.png", png, "image/png")),
                                                               ("input_reference", ("b.png", png, "image/png"))]},
     400, "invalid_form"),
    ("POST", "/v1/videos", {"json": {"prompt": "x", "input_reference": f"data:image/png;base64,{bomb_base64}"}},
     400, "invalid_image"),
    ("POST", "/v1/videos", {"json": {"prompt": "x", "input_reference": "data:image/png;base64," + nul}}, 400,
     invalid),
    ("POST", "/v1/videos", {"json": {"prompt": "x", "input_reference": {"url": deep}}}, 400, invalid),
    ("POST", "/v1/quotes", {"data": {"prompt": "x", "input_reference": "file:///etc/passwd"}}, 400, invalid),
    ("GET", "/v1/admin/plans/a%00b", {}, 404, "not_found"),
    ("PATCH", "/v1/admin/plans/a%00b", {"json": {"priority": 1}}, 404, "not_found"),
    ("PATCH", "/v1/admin/plans/pro", {"json": {"priority": True}}, 400, invalid),
    ("POST", "/v1/admin/plans", {"json": {"id": nul}}, 400, invalid),
    ("POST", "/v1/admin/tenants/{tenant}/suspend", {"json": {"reason": "\r"}}, 400, invalid),
    ("GET", "/v1/events", {"headers": {"Last-Event-ID": "9" * 19}}, 400, "invalid_last_event_id"),
    ("GET", "/v1/events?after=9223372036854775808", {}, 400, "invalid_last_event_id"),
    # JSON's 0, "true" and "5" are no boolean or number: refused as the schema says, not coerced.
    ("PATCH", "/v1/webhook_endpoints/we_none", {"json": {"enabled": 0}}, 400, invalid),
    ("POST", "/v1/templates", {"json": {"name": "t", "body": "x", "pre_generate": "true"}}, 400, invalid),
    ("POST", "/v1/templates", {"json": {"name": "t", "body": "x", "style_scale": "1"}}, 400, invalid),
    ("PUT", "/v1/admin/tenants/{tenant}/brand", {"json": {"text": "Acme", "opacity": "0.5"}}, 400, invalid),
    ("POST", "/v1/styles/train", {"json": {"name": "s", "model": "wan-tiny", "video_ids": ["v"], "steps": "5"}},
     400, invalid),
    ("POST", "/v1/styles/train", {"json": {"name": "s", "model": "wan-tiny", "video_ids": ["v"], "rank": True}},
     400, invalid),
    ("POST", "/v1/styles/train", {"data": {"name": "s", "model": "wan-tiny", "video_ids": "v", "rank": "four"}},
     400, invalid),
    ("POST", "/v1/videos", {"json": {"prompt": "x", "styles": [{"style": "s", "scale": "1"}]}}, 400, invalid),
    ("POST", "/v1/admin/price_books", {"json": {"audio_output_tokens": True}}, 400, invalid),
    ("POST", "/v1/admin/price_books", {"json": {"duration_buckets_s": [5, "10", 30]}}, 400, invalid),
]


@pytest.fixture
def client(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, rate_limit_enabled=False)
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


def test_inputs_that_once_failed(client):
    sessions = client.app.state.ctx.sessions
    tenant = new_tenant(sessions, tokens=credit_tokens)
    for method, path, kwargs, status, code in edge_cases:
        token = admin_token if path.startswith("/v1/admin") else tenant.key
        headers = {"Authorization": f"Bearer {token}", **kwargs.get("headers", {})}
        response = client.request(method, path.format(tenant=tenant.id), **{**kwargs, "headers": headers})
        assert response.status_code == status, (method, path, response.text)
        if code is not None:
            assert_error_envelope(response)
            assert response.json()["error"]["code"] == code, (method, path, response.text)
    assert_ledger_clean(sessions)
    assert_charged_only_for_jobs(sessions, tenant.id)
