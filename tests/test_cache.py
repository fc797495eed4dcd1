"""The result cache on SQLite and PostgreSQL: an exact hit is queued at submission and a worker delivers
the source's clip re-labelled as the hit's own (its watermark, AIGC tag and C2PA manifest name the hit;
the seed is the source's), charged exactly the price book's cache rate (hold, post 20%, release the
rest); `similar` hits and misses on a bilingual set; `off` always generates; another tenant's clip is never served."""

import hashlib
import io
import json
from dataclasses import asdict, replace

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidfactory.api.app import create_app
from vidfactory.cache import index as cache_index
from vidfactory.cache.keys import CacheSpec, fingerprint, jaccard, normalise, shape_key, shingles
from vidfactory.jobs.worker import Worker
from vidfactory.media.encode import encode_mp4
from vidfactory.media.provenance import read_aigc, read_c2pa
from vidfactory.media.watermark import extract_watermark_from_video

from billing_support import admin, finish_without_media, job_row, small, transfers_of_job, work
from conftest import assert_ledger_clean, make_settings, new_tenant


def create(client, tenant, prompt, **extra):
    response = client.post("/v1/videos", headers=tenant.headers, json={"prompt": prompt, **small, **extra})
    assert response.status_code == 202, response.text
    return response.json()


def served_from(video: dict) -> str | None:
    """The clip a submission was served from (a hit is queued to be re-labelled), or None for a miss."""
    return None if video["cache_hit"] is None else video["cache_hit"]["video_id"]


def files_of(ctx, video: dict) -> list[str]:
    folder = ctx.storage.root / job_row(ctx.sessions, video["id"]).tenant_id / video["id"]
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def refuse_engines(config, models_dir):
    raise AssertionError(f"a cache hit loaded the engine for {config.id}")


def test_an_exact_hit_is_its_own_video_with_the_sources_frames_at_twenty_percent(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "a red fox running through snow", size="128x128")
    work(ctx)
    original = client.get(f"/v1/videos/{first['id']}/content", headers=tenant.headers)
    source = client.get(f"/v1/videos/{first['id']}", headers=tenant.headers).json()
    before = client.get("/v1/balance", headers=tenant.headers).json()["available"]

    # 1. The request only queues it: no file is made, nothing is posted yet; it reports the source's seed.
    hit = create(client, tenant, "a red fox running through snow", size="128x128")
    assert (hit["status"], hit["cache_hit"]) == ("queued", {"video_id": first["id"], "score": 1.0})
    assert hit["seed"] == source["seed"] and files_of(ctx, hit) == []
    total = hit["usage"]["total_tokens"]
    assert total == first["usage"]["total_tokens"] and hit["billing"]["status"] == "held"
    # 2. A worker re-labels the source's clip as this video's own, without an engine.
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=refuse_engines).run_once()
    done = client.get(f"/v1/videos/{hit['id']}", headers=tenant.headers).json()
    assert (done["status"], done["seed"], done["cache_hit"]["video_id"]) == ("completed", source["seed"], first["id"])
    charge = (total * 2 + 5) // 10  # 20% of the quote, rounded half up to whole tokens
    assert charge > 0 and done["billing"] == {"price_book_version": 1, "held": total, "settled": charge,
                                              "released": total - charge, "status": "settled"}
    legs = transfers_of_job(ctx.sessions, hit["id"])
    assert [(t.kind, t.amount) for t in legs] == [("hold", total), ("post", charge)]
    assert legs[1].pending_id == legs[0].id  # the post resolves the hold: the remainder is released
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == before - charge
    # 3. Its file names it, not the source: watermark, AIGC tag and C2PA manifest; verify says so.
    served = client.get(f"/v1/videos/{hit['id']}/content", headers=tenant.headers).content
    watermark_id = job_row(ctx.sessions, hit["id"]).watermark_id
    assert watermark_id not in (None, job_row(ctx.sessions, first["id"]).watermark_id)
    label = read_aigc(served)
    assert (label.produce_id, label.reserved_code1) == (hit["id"], watermark_id)
    finding = read_c2pa(served, "video/mp4", anchors_pem=ctx.provenance.anchors_pem)
    assert (finding.state, finding.produce_id) == ("trusted", hit["id"])
    reading = extract_watermark_from_video(served, step=ctx.settings.watermark_step)
    assert reading is not None and f"{reading.payload:08x}" == watermark_id
    report = client.post("/v1/verify", headers=tenant.headers, files={"file": ("hit.mp4", served, "video/mp4")}).json()
    assert (report["video_id"], report["altered"]) == (hit["id"], False)
    copy = reencode(served)  # without its bytes or manifest, the pixels alone still name the hit
    assert client.post("/v1/verify", headers=tenant.headers,
                       files={"file": ("copy.mp4", copy, "video/mp4")}).json()["video_id"] == hit["id"]
    # 4. ... and it shows what the source shows: frame for frame far closer to it than to its own frames
    #    shifted by one (re-encoding noise costs a few levels; another picture of noise, tens).
    hit_frames, source_frames = frames_of(served).astype(int), frames_of(original.content).astype(int)
    same = np.abs(hit_frames - source_frames).mean()
    assert same < np.abs(hit_frames - np.roll(source_frames, 1, axis=0)).mean() / 4, same
    # Deleting the hit leaves the source; the source still downloads.
    assert client.delete(f"/v1/videos/{hit['id']}", headers=tenant.headers).status_code == 200
    assert client.get(f"/v1/videos/{first['id']}/content", headers=tenant.headers).content == original.content
    assert_ledger_clean(ctx.sessions)


def frames_of(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def reencode(mp4: bytes) -> bytes:
    return encode_mp4(frames_of(mp4), 8, crf=23)


def test_a_hit_whose_source_is_deleted_before_it_is_served_is_generated_at_the_full_price(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "paper boats on a canal")
    work(ctx)
    hit = create(client, tenant, "paper boats on a canal")
    assert served_from(hit) == first["id"]
    assert client.delete(f"/v1/videos/{first['id']}", headers=tenant.headers).status_code == 200
    work(ctx, 2)  # the first attempt finds the source gone and gives the job back; the second generates
    done = client.get(f"/v1/videos/{hit['id']}", headers=tenant.headers).json()
    assert (done["status"], done["cache_hit"], done["billing"]["settled"]) == (
        "completed", None, done["usage"]["total_tokens"])
    assert job_row(ctx.sessions, hit["id"]).attempts == 1
    mp4 = client.get(f"/v1/videos/{hit['id']}/content", headers=tenant.headers).content
    assert read_aigc(mp4).produce_id == hit["id"]
    assert_ledger_clean(ctx.sessions)


def test_a_queued_hit_cancels_with_a_full_refund(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "rain on a tin roof")
    finish_without_media(ctx.sessions, first["id"])
    before = client.get("/v1/balance", headers=tenant.headers).json()["available"]
    hit = create(client, tenant, "rain on a tin roof")
    cancelled = client.post(f"/v1/videos/{hit['id']}/cancel", headers=tenant.headers).json()
    assert (cancelled["status"], cancelled["billing"]["status"]) == ("cancelled", "voided")
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == before
    assert_ledger_clean(ctx.sessions)


def test_cache_rate_comes_from_the_pinned_price_book_and_rounds_half_up(client, ctx):
    published = client.post("/v1/admin/price_books", headers=admin, json={"cache_hit_charge_ratio": "0.33"})
    assert published.status_code == 201, published.text
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "tide pools at noon")
    finish_without_media(ctx.sessions, first["id"])
    hit = create(client, tenant, "tide pools at noon")
    finish_without_media(ctx.sessions, hit["id"])
    hit = client.get(f"/v1/videos/{hit['id']}", headers=tenant.headers).json()
    total = hit["usage"]["total_tokens"]
    expected = int(total * 33 / 100 + 0.5)
    assert hit["billing"]["price_book_version"] == 2 and hit["billing"]["settled"] == expected
    assert_ledger_clean(ctx.sessions)


def test_off_other_shapes_and_other_tenants_never_hit(client, ctx):
    tenant, other = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "a lighthouse in fog")
    finish_without_media(ctx.sessions, first["id"])
    assert served_from(create(client, tenant, "a lighthouse in fog", cache="off")) is None
    assert served_from(create(client, tenant, "a lighthouse in fog", size="80x64")) is None
    assert served_from(create(client, tenant, "a lighthouse in fog", seed=7)) is None
    assert served_from(create(client, tenant, "a lighthouse in fog", negative_prompt="blur")) is None
    assert served_from(create(client, other, "a lighthouse in fog")) is None  # not shared by default
    assert served_from(create(client, tenant, "a lighthouse in fog")) == first["id"]
    assert_ledger_clean(ctx.sessions)


def test_an_explicit_seed_hits_only_the_same_seed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    seeded = create(client, tenant, "koi in a pond", seed=42)
    finish_without_media(ctx.sessions, seeded["id"])
    assert served_from(create(client, tenant, "koi in a pond", seed=42)) == seeded["id"]
    assert served_from(create(client, tenant, "koi in a pond", seed=43)) is None
    assert served_from(create(client, tenant, "koi in a pond")) is None


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
        assert served_from(exact_only) is None, prompt  # not identical: exact never matches it
        hit = create(client, tenant, prompt, cache="similar")
        expected = jaccard(shingles(normalise(prompt)), shingles(normalise(cached)))
        assert hit["cache_hit"] == {"video_id": source_of[cached], "score": round(expected, 4)}, prompt
        assert ctx.settings.cache_similarity_min <= hit["cache_hit"]["score"] <= 1.0
    for prompt in bilingual_misses:
        assert served_from(create(client, tenant, prompt, cache="similar")) is None, prompt
    assert_ledger_clean(ctx.sessions)


def test_a_deleted_source_is_not_served(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    first = create(client, tenant, "paper lanterns")
    finish_without_media(ctx.sessions, first["id"])
    assert client.delete(f"/v1/videos/{first['id']}", headers=tenant.headers).status_code == 200
    assert served_from(create(client, tenant, "paper lanterns")) is None


def test_a_shared_cache_serves_across_tenants(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, cache_shared=True)
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant, other = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
        first = create(client, tenant, "a shared sunrise")
        finish_without_media(ctx.sessions, first["id"])
        hit = create(client, other, "a shared sunrise")
        assert served_from(hit) == first["id"]
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
