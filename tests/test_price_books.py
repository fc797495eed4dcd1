"""Price-book administration on SQLite and PostgreSQL: publish a validated version (nothing changes on a
refusal), list versions, pin a tenant's contract; jobs and pinned tenants keep their version; a published
version never changes."""

from sqlalchemy import func, select, update

from vidfactory.billing.verify import verify
from vidfactory.db.types import utcnow
from vidfactory.db.models import PriceBook

from billing_support import admin, finish_without_media, small
from conftest import assert_ledger_clean, new_tenant


def versions(client) -> int:
    with client.app.state.ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(PriceBook))


def test_publish_validates_and_refusals_change_nothing(client):
    bad_bodies = [
        {"method": "auction"},
        {"duration_buckets_s": [10, 5]},
        {"resolution_tiers": [{"name": "480p", "short_side_max_px": 480}]},  # tables name tiers it lacks
        {"ratio_k": {"480p": {"5": -1, "10": 4, "30": 6}, "720p": {"5": 3, "10": 5, "30": 8},
                     "1080p": {"5": 6, "10": 10, "30": 16}}},
        {"cache_hit_charge_ratio": "1.5"},
        {"compensation": {"ratio": "-0.1"}},
        {"unit_price": "0"},
        {"currency": "yen"},
        {"surprise": 1},
    ]
    for body in bad_bodies:
        refused = client.post("/v1/admin/price_books", headers=admin, json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert set(refused.json()) == {"error"}
    assert client.post("/v1/admin/price_books", json={}).status_code == 401
    assert versions(client) == 1
    published = client.post("/v1/admin/price_books", headers=admin, json={"unit_price": "0.002"})
    assert published.status_code == 201
    assert published.json()["version"] == 2 and published.json()["in_force"] is True
    assert published.json()["body"]["unit_price"] == "0.002"


def test_jobs_and_pinned_tenants_keep_their_version(client):
    ctx = client.app.state.ctx
    pinned, follower = new_tenant(ctx.sessions, tokens=100_000), new_tenant(ctx.sessions, tokens=100_000)
    before = client.post("/v1/videos", headers=follower.headers, json={"prompt": "a harbour", **small}).json()
    assert client.put(f"/v1/admin/tenants/{pinned.id}/price_book", headers=admin, json={"version": 1}).json() == {
        "object": "price_book_pin", "tenant_id": pinned.id, "version": 1, "in_force": 1}
    table = client.post("/v1/admin/price_books", headers=admin, json={"method": "table"})
    assert table.status_code == 201 and table.json()["version"] == 2

    quote_pinned = client.post("/v1/quotes", headers=pinned.headers, json={"prompt": "a harbour", **small}).json()
    quote_new = client.post("/v1/quotes", headers=follower.headers, json={"prompt": "a harbour", **small}).json()
    assert (quote_pinned["price_book_version"], quote_pinned["method"]) == (1, "ratio")
    assert (quote_new["price_book_version"], quote_new["method"]) == (2, "table")
    assert quote_new["output_tokens"] == 128  # table: 480p, ≤ 5 s
    after = client.post("/v1/videos", headers=pinned.headers, json={"prompt": "a harbour", **small}).json()
    assert after["billing"]["price_book_version"] == 1
    # The job queued under v1 settles under v1 after v2 is published.
    finish_without_media(ctx.sessions, before["id"])
    done = client.get(f"/v1/videos/{before['id']}", headers=follower.headers).json()
    assert done["billing"]["price_book_version"] == 1 and done["billing"]["settled"] == before["usage"]["total_tokens"]

    listed = client.get("/v1/price_books", headers=pinned.headers).json()["data"]
    assert [(b["version"], b["in_force"]) for b in listed] == [(1, True), (2, False)]
    listed = client.get("/v1/price_books", headers=follower.headers).json()["data"]
    assert [(b["version"], b["in_force"]) for b in listed] == [(1, False), (2, True)]
    unpinned = client.put(f"/v1/admin/tenants/{pinned.id}/price_book", headers=admin, json={"version": None})
    assert unpinned.json()["in_force"] == 2
    assert client.put(f"/v1/admin/tenants/{pinned.id}/price_book", headers=admin,
                      json={"version": 99}).status_code == 400
    assert client.put("/v1/admin/tenants/ten_nobody/price_book", headers=admin, json={"version": 1}).status_code == 404
    assert_ledger_clean(ctx.sessions)


def test_published_versions_are_immutable(client):
    ctx = client.app.state.ctx
    first = client.get("/v1/price_books", headers=new_tenant(ctx.sessions).headers).json()["data"][0]
    client.post("/v1/admin/price_books", headers=admin, json={"method": "table"})
    tenant = new_tenant(ctx.sessions)
    now = client.get("/v1/price_books", headers=tenant.headers).json()["data"][0]
    assert {**now, "in_force": True} == first and now["in_force"] is False  # v2 is in force now
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)("/v1/admin/price_books/1", headers=admin).status_code in (404, 405)
    with ctx.sessions.begin() as s:  # a change behind the API's back is found
        s.execute(update(PriceBook).where(PriceBook.version == 1).values(body={**first["body"], "method": "table"}))
    with ctx.sessions() as s:
        assert "price book v1 changed after it was published" in verify(s)


default_k = {"480p": {"5": 2, "10": 4, "30": 6}, "720p": {"5": 3, "10": 5, "30": 8},
             "1080p": {"5": 6, "10": 10, "30": 16}}
tiny_k = {tier: {bucket: k * 3 for bucket, k in row.items()} for tier, row in default_k.items()}


def test_models_quotes_and_statements_name_the_tenants_book_and_the_models_price_in_it(client):
    ctx = client.app.state.ctx
    pinned, follower = new_tenant(ctx.sessions, tokens=100_000), new_tenant(ctx.sessions, tokens=100_000)
    client.put(f"/v1/admin/tenants/{pinned.id}/price_book", headers=admin, json={"version": 1})
    per_model = client.post("/v1/admin/price_books", headers=admin, json={"models": {"wan-tiny": {"ratio_k": tiny_k}}})
    assert per_model.status_code == 201 and per_model.json()["version"] == 2

    def models_price(tenant):
        model = next(m for m in client.get("/v1/models", headers=tenant.headers).json()["data"]
                     if m["id"] == "wan-tiny")
        return model["price_book"]["version"], model["price"]

    version, pinned_price = models_price(pinned)  # its contract's book, not the newest
    assert (version, pinned_price["price_book_version"], pinned_price["source"]) == (1, 1, "book")
    assert pinned_price["ratio_k"] == default_k
    version, follower_price = models_price(follower)
    assert (version, follower_price["price_book_version"], follower_price["source"]) == (2, 2, "model")
    assert follower_price["ratio_k"] == tiny_k

    quotes = {}
    for tenant in (pinned, follower):
        quotes[tenant.id] = client.post("/v1/quotes", headers=tenant.headers,
                                        json={"prompt": "a harbour", **small}).json()
        assert quotes[tenant.id]["price"] == models_price(tenant)[1]
    pinned_quote, follower_quote = quotes[pinned.id], quotes[follower.id]
    assert pinned_quote["input_tokens"] == follower_quote["input_tokens"]
    assert follower_quote["output_tokens"] == 3 * pinned_quote["output_tokens"]  # 480p, ≤ 5 s: k 6 against 2

    for tenant in (pinned, follower):
        video = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a harbour", **small}).json()
        assert video["usage"]["total_tokens"] == quotes[tenant.id]["total_tokens"]
        finish_without_media(ctx.sessions, video["id"])
        month = utcnow().strftime("%Y-%m")
        [line] = client.get(f"/v1/statements/{month}", headers=tenant.headers).json()["charges"]["lines"]
        assert line["price"] == quotes[tenant.id]["price"] and line["tokens"] == video["usage"]["total_tokens"]
        as_csv = client.get(f"/v1/statements/{month}?format=csv", headers=tenant.headers).text
        assert f"charges,jobs,wan-tiny,{line['price_book_version']},{line['price']['source']}," in as_csv
    assert_ledger_clean(ctx.sessions)


def test_a_models_price_must_cover_every_tier_and_bucket(client):
    partial = {"480p": {"5": 2, "10": 4, "30": 6}}
    refused = client.post("/v1/admin/price_books", headers=admin, json={"models": {"wan-tiny": {"ratio_k": partial}}})
    assert refused.status_code == 400 and "models.wan-tiny.ratio_k" in refused.json()["error"]["message"]
    assert versions(client) == 1
