"""A tenant's brand mark as an operator and its customers meet it: the admin sets, reads and removes it
(a bad one is refused and nothing changes); every clip delivered to that tenant carries it in the chosen
corner, under the invisible watermark, which still names the job; other tenants' clips are untouched."""

import base64
import io

import av
import numpy as np
from PIL import Image

from vidfactory.db.models import Job, Tenant
from vidfactory.jobs.worker import Worker
from vidfactory.media.label import BrandMark, apply_brand
from vidfactory.media.watermark import extract_watermark_from_video

from conftest import new_tenant

admin = {"Authorization": "Bearer test-admin-token"}


def brand_url(tenant_id: str) -> str:
    return f"/v1/admin/tenants/{tenant_id}/brand"


def png(size=(40, 20), color=(255, 0, 0, 255)) -> str:
    out = io.BytesIO()
    Image.new("RGBA", size, color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def stored_brand(ctx, tenant_id):
    with ctx.sessions() as session:
        return session.get(Tenant, tenant_id).brand


def delivered_frames(client, ctx, tenant) -> tuple[np.ndarray, bytes, str]:
    created = client.post("/v1/videos", headers=tenant.headers,
                          json={"prompt": "a paper boat", "size": "128x128", "seconds": "1", "seed": 7})
    assert created.status_code == 200, created.text
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    video_id = created.json()["id"]
    assert client.get(f"/v1/videos/{video_id}", headers=tenant.headers).json()["status"] == "completed"
    mp4 = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers).content
    with av.open(io.BytesIO(mp4)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)
    with ctx.sessions() as session:
        watermark_id = session.get(Job, video_id).watermark_id
    return frames, mp4, watermark_id


def corner_diffs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference inside the mark's box (bottom-right) and in the same box mirrored to the
    bottom-left, where no mark is."""
    _, placement = apply_brand(np.zeros((1, 128, 128, 3), np.uint8), BrandMark(text="ACME", opacity=1.0))
    left, top, right, bottom = placement.box
    diff = np.abs(a - b).mean(axis=(0, 3))
    return float(diff[top:bottom, left:right].mean()), float(diff[top:bottom, 128 - right:128 - left].mean())


def test_admin_sets_reads_replaces_and_removes_a_brand(client, ctx):
    tenant = new_tenant(ctx.sessions)
    assert client.get(brand_url(tenant.id), headers=admin).status_code == 404
    put = client.put(brand_url(tenant.id), headers=admin, json={"text": "Acme", "corner": "top-right"})
    assert put.status_code == 200, put.text
    assert put.json() == {"object": "tenant.brand", "tenant_id": tenant.id, "kind": "text", "text": "Acme",
                          "logo_png_base64": None, "corner": "top-right", "opacity": 0.6}
    assert client.get(brand_url(tenant.id), headers=admin).json() == put.json()
    logo = png()
    replaced = client.put(brand_url(tenant.id), headers=admin, json={"logo_png_base64": logo, "opacity": 1.0})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["kind"], replaced.json()["logo_png_base64"], replaced.json()["corner"]) == (
        "logo", logo, "bottom-right")
    assert client.delete(brand_url(tenant.id), headers=admin).json()["deleted"] is True
    assert stored_brand(ctx, tenant.id) is None
    assert client.delete(brand_url(tenant.id), headers=admin).status_code == 404


def test_a_bad_brand_is_refused_and_nothing_changes(client, ctx):
    tenant = new_tenant(ctx.sessions)
    assert client.put(brand_url(tenant.id), headers=admin, json={"text": "Acme"}).status_code == 200
    before = stored_brand(ctx, tenant.id)
    not_png = base64.b64encode(b"GIF89a not a png at all").decode()
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    for body, param in (({}, "text"),  # neither
                        ({"text": "Acme", "logo_png_base64": png()}, "text"),  # both
                        ({"logo_png_base64": not_png}, "logo_png_base64"),
                        ({"logo_png_base64": base64.b64encode(jpeg.getvalue()).decode()}, "logo_png_base64"),
                        ({"text": "\U0010fffd"}, "text"),  # a glyph the font lacks
                        ({"text": "x" * 25}, "text"),
                        ({"text": "Acme", "corner": "middle"}, "corner"),
                        ({"text": "Acme", "opacity": 1.5}, "opacity"),
                        ({"text": "Acme", "size": 3}, "size")):
        response = client.put(brand_url(tenant.id), headers=admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, (body, response.json())
    assert stored_brand(ctx, tenant.id) == before
    assert client.put(brand_url(tenant.id), json={"text": "Acme"}).status_code == 401
    assert client.put(brand_url(tenant.id), headers=tenant.headers, json={"text": "Acme"}).status_code in (401, 403)
    for method in ("GET", "PUT", "DELETE"):
        missing = client.request(method, brand_url("tenant_nope"), headers=admin, json={"text": "Acme"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_a_branded_tenants_clips_carry_the_mark_in_its_corner_and_the_watermark(client, ctx):
    branded, plain = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions, tokens=10_000)
    put = client.put(brand_url(branded.id), headers=admin,
                     json={"text": "ACME", "corner": "bottom-right", "opacity": 1.0})
    assert put.status_code == 200, put.text
    marked, marked_mp4, marked_watermark = delivered_frames(client, ctx, branded)
    clean, _, _ = delivered_frames(client, ctx, plain)
    # Same prompt and seed: the clips differ by the mark (plus the per-job watermark's faint noise).
    bottom_right, bottom_left = corner_diffs(marked, clean)
    assert bottom_right > 3 * bottom_left, (bottom_right, bottom_left)
    # The mark is on every frame, not only the label's opening seconds.
    last_right, last_left = corner_diffs(marked[-1:], clean[-1:])
    assert last_right > 3 * last_left, (last_right, last_left)
    reading = extract_watermark_from_video(marked_mp4, step=ctx.settings.watermark_step)
    assert reading is not None and f"{reading.payload:08x}" == marked_watermark
    # Removing the brand: the tenant's next clip is clean again.
    assert client.delete(brand_url(branded.id), headers=admin).status_code == 200
    again, _, _ = delivered_frames(client, ctx, branded)
    again_right, again_left = corner_diffs(again, clean)
    assert again_right < 1.5 * again_left + 1, (again_right, again_left)


def test_a_shared_cache_never_crosses_a_brand(client, ctx):
    ctx.settings.cache_shared = True
    branded, plain, other = (new_tenant(ctx.sessions, tokens=10_000) for _ in range(3))
    assert client.put(brand_url(branded.id), headers=admin, json={"text": "ACME"}).status_code == 200
    body = {"prompt": "a paper boat", "size": "64x64", "seconds": "1", "seed": 7}

    def submit(tenant) -> tuple[str, str | None]:
        """The new video, and the video it is served from (None: it is generated)."""
        created = client.post("/v1/videos", headers=tenant.headers, json=body)
        assert created.status_code == 200, created.text
        hit = created.json()["cache_hit"]
        return created.json()["id"], None if hit is None else hit["video_id"]

    branded_first, served = submit(branded)
    assert served is None
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    plain_first, served = submit(plain)
    assert served is None  # the branded clip is not served to another tenant
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    assert submit(other)[1] == plain_first  # ... while unbranded tenants share as before
    assert submit(branded)[1] == branded_first  # and the branded tenant is served its own
