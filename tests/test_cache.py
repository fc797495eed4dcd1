"""The result cache on SQLite and PostgreSQL: an exact hit completes at submission with the stored clip
and is charged exactly the price book's cache rate (hold, post 20%, release the rest); `similar` hits and
misses on a bilingual set; `off` always generates; another tenant's clip is never served."""

import hashlib
import json
from dataclasses import asdict, replace

import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.cache import index as cache_index
from vidfactory.cache.keys import CacheSpec, fingerprint, jaccard, normalise, shape_key, shingles

from billing_support import admin, finish_without_media, job_row, small, transfers_of_job, work
from conftest import assert_ledger_clean, make_settings, new_tenant


def create(client, tenant, prompt, **extra):
    response = client.post("/v1/videos", headers=tenant.headers, json={"prompt": prompt, **small, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_exact_hit_is_served_at_submit_and_charged_twenty_percent(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "a red fox running through snow")
    work(ctx)
    original = client.get(f"/v1/videos/{first['id']}/content", headers=tenant.headers)
    assert original.status_code == 200
    before = client.get("/v1/balance", headers=tenant.headers).json()["available"]

    hit = create(client, tenant, "a red fox running through snow")
    assert hit["status"] == "completed" and hit["progress"] == 100
    assert hit["cache_hit"] == {"video_id": first["id"], "score": 1.0}
    total = hit["usage"]["total_tokens"]
    charge = (total * 2 + 5) // 10  # 20% of the quote, rounded half up to whole tokens
    assert total == first["usage"]["total_tokens"] and charge > 0
    assert hit["billing"] == {"price_book_version": 1, "held": total, "settled": charge,
                              "released": total - charge, "status": "settled"}
    legs = transfers_of_job(ctx.sessions, hit["id"])
    assert [(t.kind, t.amount) for t in legs] == [("hold", total), ("post", charge)]
    assert legs[1].pending_id == legs[0].id  # the post resolves the hold: the remainder is released
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == before - charge
    served = client.get(f"/v1/videos/{hit['id']}/content", headers=tenant.headers)
    assert served.content == original.content
    assert served.headers["X-Content-SHA256"] == original.headers["X-Content-SHA256"]
    # Deleting the hit keeps the source's files; the source still downloads.
    assert client.delete(f"/v1/videos/{hit['id']}", headers=tenant.headers).status_code == 200
    assert client.get(f"/v1/videos/{first['id']}/content", headers=tenant.headers).content == original.content
    assert_ledger_clean(ctx.sessions)


def test_cache_rate_comes_from_the_pinned_price_book_and_rounds_half_up(client, ctx):
    published = client.post("/v1/admin/price_books", headers=admin, json={"cache_hit_charge_ratio": "0.33"})
    assert published.status_code == 201, published.text
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "tide pools at noon")
    finish_without_media(ctx.sessions, first["id"])
    hit = create(client, tenant, "tide pools at noon")
    total = hit["usage"]["total_tokens"]
    expected = int(total * 33 / 100 + 0.5)
    assert hit["billing"]["price_book_version"] == 2 and hit["billing"]["settled"] == expected
    assert_ledger_clean(ctx.sessions)


def test_off_other_shapes_and_other_tenants_never_hit(client, ctx):
    tenant, other = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "a lighthouse in fog")
    finish_without_media(ctx.sessions, first["id"])
    assert create(client, tenant, "a lighthouse in fog", cache="off")["status"] == "queued"
    assert create(client, tenant, "a lighthouse in fog", size="80x64")["status"] == "queued"
    assert create(client, tenant, "a lighthouse in fog", seed=7)["status"] == "queued"
    assert create(client, tenant, "a lighthouse in fog", negative_prompt="blur")["status"] == "queued"
    assert create(client, other, "a lighthouse in fog")["status"] == "queued"  # not shared by default
    assert create(client, tenant, "a lighthouse in fog")["status"] == "completed"
    assert_ledger_clean(ctx.sessions)


def test_an_explicit_seed_hits_only_the_same_seed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    seeded = create(client, tenant, "koi in a pond", seed=42)
    finish_without_media(ctx.sessions, seeded["id"])
    assert create(client, tenant, "koi in a pond", seed=42)["cache_hit"]["video_id"] == seeded["id"]
    assert create(client, tenant, "koi in a pond", seed=43)["status"] == "queued"
    assert create(client, tenant, "koi in a pond")["status"] == "queued"


bilingual_cached = ["a red fox running through snow", "一只红色的狐狸在雪地里奔跑",
                    "城市夜景 neon lights in Shanghai"]
bilingual_hits = [  # (prompt, the cached prompt it must find)
    ("a red fox running through the snow", "a red fox running through snow"),
    ("A red fox, running through snow!", "a red fox running through snow"),
    ("一只红狐狸在雪地里奔跑", "一只红色的狐狸在雪地里奔跑"),
    ("一只红色的狐狸在雪地里奔跑。", "一只红色的狐狸在雪地里奔跑"),
    ("城市夜景 neon lights in shanghai at night", "城市夜景 neon lights in Shanghai"),
]
bilingual_misses = ["a blue whale swimming in the ocean", "a red fox sleeping in a den", "一头蓝鲸在海洋里游泳",
                    "一只红色的狐狸在窝里睡觉", "乡村清晨 misty fields in Yunnan"]


def test_similar_hits_and_misses_on_a_bilingual_set(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=1_000_000)
    source_of = {}
    for prompt in bilingual_cached:
        video = create(client, tenant, prompt)
        finish_without_media(ctx.sessions, video["id"])
        source_of[prompt] = video["id"]
    for prompt, cached in bilingual_hits:
        exact_only = create(client, tenant, prompt, cache="exact")
        assert exact_only["status"] == "queued", prompt  # not identical: exact never matches it
        hit = create(client, tenant, prompt, cache="similar")
        assert hit["status"] == "completed", prompt
        expected = jaccard(shingles(normalise(prompt)), shingles(normalise(cached)))
        assert hit["cache_hit"] == {"video_id": source_of[cached], "score": round(expected, 4)}, prompt
        assert ctx.settings.cache_similarity_min <= hit["cache_hit"]["score"] <= 1.0
    for prompt in bilingual_misses:
        assert create(client, tenant, prompt, cache="similar")["status"] == "queued", prompt
    assert_ledger_clean(ctx.sessions)


def test_a_deleted_source_is_not_served(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "paper lanterns")
    finish_without_media(ctx.sessions, first["id"])
    assert client.delete(f"/v1/videos/{first['id']}", headers=tenant.headers).status_code == 200
    assert create(client, tenant, "paper lanterns")["status"] == "queued"


def test_a_shared_cache_serves_across_tenants(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, cache_shared=True)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant, other = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
        first = create(client, tenant, "a shared sunrise")
        finish_without_media(ctx.sessions, first["id"])
        hit = create(client, other, "a shared sunrise")
        assert hit["cache_hit"]["video_id"] == first["id"]
        assert job_row(ctx.sessions, hit["id"]).tenant_id == other.id
        assert_ledger_clean(ctx.sessions)


def test_lookup_modes_are_checked():
    with pytest.raises(AssertionError):
        cache_index.lookup(None, tenant_id="t", mode="fuzzy", fingerprint="f", shape_key="s", prompt="p",
                           similarity_min=0.5, candidates_max=10)


def test_a_reference_image_is_part_of_the_key_and_text_keys_stay_as_they_were():
    spec = CacheSpec(model="wan-tiny", width=64, height=64, num_frames=9, fps=8, steps=4, guidance_scale=5.0,
                     negative_prompt="", seed=None)
    # The key every clip was indexed under before reference images existed: still the same.
    before = hashlib.sha256(json.dumps({"v": 1, **{k: v for k, v in asdict(spec).items()
                                                   if k != "reference_sha256"}}, sort_keys=True).encode())
    assert shape_key(spec) == before.hexdigest()
    lake, forest = (replace(spec, reference_sha256=c * 64) for c in "ab")
    assert len({shape_key(spec), shape_key(lake), shape_key(forest)}) == 3
    assert len({fingerprint(spec, "a fox"), fingerprint(lake, "a fox"), fingerprint(forest, "a fox")}) == 3
