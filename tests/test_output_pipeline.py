"""The output chain as a user meets it: a delivered clip carries the AIGC tag and a C2PA manifest, its
files' hashes are on the video object, every variant downloads; /v1/verify and `vidfactory verify` name
the job for its own tenant and the admin only, and report altered files; the worker post-processes one
clip while generating the next, and a cancel that arrives meanwhile still cancels and refunds."""

import io
import json
import threading
import time

import av
import numpy as np
from PIL import Image

from vidfactory.db.models import Job
from vidfactory.engines.registry import load_engine
from vidfactory.jobs import queue
from vidfactory.jobs.worker import Worker
from vidfactory.media.encode import encode_mp4
from vidfactory.media.hashes import file_hashes
from vidfactory.media.label import LabelSpec, apply_label
from vidfactory.media.provenance import read_aigc, read_c2pa
from vidfactory.media.watermark import extract_watermark_from_video

from conftest import assert_ledger_clean, new_tenant

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1"}


def make_video(client, ctx, tenant, size="64x64") -> dict:
    created = client.post("/v1/videos", headers=tenant.headers,
                          json={"prompt": "a paper boat", "size": size, "seconds": "1"})
    assert created.status_code == 200, created.text
    assert Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w").run_once()
    return client.get(f"/v1/videos/{created.json()['id']}", headers=tenant.headers).json()


def download(client, tenant, video_id, variant="video") -> bytes:
    response = client.get(f"/v1/videos/{video_id}/content?variant={variant}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.content


def verify(client, headers, data: bytes):
    return client.post("/v1/verify", headers=headers, files={"file": ("clip.mp4", data, "video/mp4")})


def test_a_delivered_clip_is_labelled_signed_hashed_and_previewed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = make_video(client, ctx, tenant)
    assert video["status"] == "completed"
    with ctx.sessions() as session:
        job = session.get(Job, video["id"])
    mp4 = download(client, tenant, video["id"])
    # Hashes of every stored file are on the video object and match what downloads.
    assert set(video["hashes"]) == {"video", "thumbnail", "spritesheet"}
    for variant, expected in video["hashes"].items():
        assert file_hashes(download(client, tenant, video["id"], variant)).as_dict() == expected
    # The implicit labels: GB 45438 metadata naming the job and its watermark, a trusted C2PA manifest.
    label = read_aigc(mp4)
    assert (label.label, label.produce_id, label.content_producer) == ("1", video["id"], "vidfactory")
    assert label.reserved_code1 == job.watermark_id and len(job.watermark_id) >= 8
    finding = read_c2pa(mp4, "video/mp4", anchors_pem=ctx.provenance.anchors_pem)
    assert (finding.state, finding.produce_id) == ("trusted", video["id"])
    with av.open(io.BytesIO(mp4)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 9
    sheet = Image.open(io.BytesIO(download(client, tenant, video["id"], "spritesheet")))
    assert sheet.format == "WEBP" and sheet.size[0] > 64
    assert_ledger_clean(ctx.sessions)


def test_verify_names_the_video_for_its_tenant_and_the_admin_only(client, ctx):
    owner, stranger = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions)
    video = make_video(client, ctx, owner)
    mp4 = download(client, owner, video["id"])
    mine = verify(client, owner.headers, mp4).json()
    assert (mine["video_id"], mine["altered"]) == (video["id"], False)
    assert mine["hashes"] == {**video["hashes"]["video"], "matches_stored": True, "variant": "video"}
    assert mine["c2pa"] == {"state": "trusted", "failures": []}
    assert mine["aigc"] == {"label": "1", "content_producer": "vidfactory"}
    assert verify(client, admin, mp4).json()["video_id"] == video["id"]
    theirs = verify(client, stranger.headers, mp4).json()
    # Another tenant learns what the file itself says (signed here, unchanged), never that the video exists.
    assert (theirs["video_id"], theirs["altered"], theirs["hashes"]["matches_stored"]) == (None, False, False)
    thumbnail = verify(client, owner.headers, download(client, owner, video["id"], "thumbnail")).json()
    assert (thumbnail["video_id"], thumbnail["hashes"]["variant"], thumbnail["altered"]) == (
        video["id"], "thumbnail", False)


def test_verify_reports_a_changed_file_as_altered(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = make_video(client, ctx, tenant)
    changed = bytearray(download(client, tenant, video["id"]))
    changed[-100] ^= 0x01
    found = verify(client, tenant.headers, bytes(changed)).json()
    assert found["altered"] is True and found["hashes"]["matches_stored"] is False
    assert found["c2pa"]["state"] == "tampered" and "assertion.bmffHash.mismatch" in found["c2pa"]["failures"]


def test_verify_refuses_bad_requests(client, ctx):
    tenant = new_tenant(ctx.sessions)
    assert client.post("/v1/verify", files={"file": ("a", b"x")}).status_code == 401
    assert client.post("/v1/verify", headers=tenant.headers, json={"file": "x"}).status_code == 415
    missing = client.post("/v1/verify", headers=tenant.headers, files={"other": ("a", b"x")})
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "file")
    assert client.post("/v1/verify", headers=tenant.headers, files={"file": ("a", b"")}).status_code == 400
    ctx.settings.verify_upload_bytes_max = 1000
    assert client.post("/v1/verify", headers=tenant.headers, files={"file": ("a", b"x" * 2000)}).status_code == 413
    unknown = client.post("/v1/verify", headers=tenant.headers, files={"file": ("a", b"just some bytes")}).json()
    assert (unknown["video_id"], unknown["altered"], unknown["c2pa"]["state"]) == (None, None, "absent")


class CancelAfterGenerating:
    """The real engine; once it returns, the tenant cancels (as if during post-processing)."""

    def __init__(self, engine, sessions):
        self.engine, self.sessions, self.model_id = engine, sessions, engine.model_id

    def generate(self, request, on_progress, is_cancelled):
        video = self.engine.generate(request, on_progress, is_cancelled)
        with self.sessions.begin() as session:
            job = session.query(Job).filter(Job.status == "in_progress").one()
            queue.request_cancel(session, job)
        return video


def test_a_cancel_during_post_processing_cancels_and_refunds(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a kite", **small}).json()
    engine = CancelAfterGenerating(load_engine(ctx.settings.models[0], ctx.settings.models_dir), ctx.sessions)
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda *_: engine)
    assert worker.run_once()
    video = client.get(f"/v1/videos/{created['id']}", headers=tenant.headers).json()
    assert (video["status"], video["billing"]["status"], video["hashes"]) == ("cancelled", "voided", {})
    assert_ledger_clean(ctx.sessions)


class TimedEngine:
    """The real engine, recording when each generation starts and ends."""

    def __init__(self, engine):
        self.engine, self.model_id, self.spans = engine, engine.model_id, []

    def generate(self, request, on_progress, is_cancelled):
        start = time.monotonic()
        video = self.engine.generate(request, on_progress, is_cancelled)
        self.spans.append((start, time.monotonic()))
        return video


def test_the_worker_generates_the_next_clip_while_the_last_is_post_processed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000)
    ids = [client.post("/v1/videos", headers=tenant.headers, json={"prompt": f"clip {n}", **small}).json()["id"]
           for n in range(3)]
    engine = TimedEngine(load_engine(ctx.settings.models[0], ctx.settings.models_dir))
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda *_: engine)
    assert worker.settings.overlap_post_processing
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,))
    loop.start()
    deadline = time.monotonic() + 120
    statuses = []
    while time.monotonic() < deadline:
        statuses = [client.get(f"/v1/videos/{i}", headers=tenant.headers).json()["status"] for i in ids]
        if all(status == "completed" for status in statuses):
            break
        time.sleep(0.1)
    stop.set()
    loop.join(60)
    assert statuses == ["completed"] * 3 and len(engine.spans) == 3
    assert worker.post_thread is None  # drained on stop
    assert_ledger_clean(ctx.sessions)


def test_cli_verify_names_the_video_for_the_operator(client, ctx, tmp_path, models_dir, database_url):
    from test_cli import Cli

    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video = make_video(client, ctx, tenant)
    path = tmp_path / "clip.mp4"
    path.write_bytes(download(client, tenant, video["id"]))
    cli = Cli(tmp_path, models_dir, database_url)
    found = json.loads(cli.ok("verify", str(path), "--json").stdout)
    assert (found["video_id"], found["altered"], found["c2pa"]["state"]) == (video["id"], False, "trusted")
    foreign = tmp_path / "foreign.mp4"
    foreign.write_bytes(encode_mp4(np.zeros((9, 64, 64, 3), np.uint8), 8))
    result = cli("verify", str(foreign))
    assert result.returncode == 1 and "video:     unknown" in result.stdout


def test_a_clip_from_vidfactory_generate_is_labelled_watermarked_signed_and_verifies(client, ctx, tmp_path,
                                                                                    models_dir, database_url):
    from test_cli import Cli, generate_timeout_s

    from vidfactory.cli import _request_for

    cli = Cli(tmp_path, models_dir, database_url)  # the server's data directory: the same signing CA
    # 128 px, not 64: the mark's payload is the clip's own content ID, new on every run, and 64 px carries
    # too few pixels per code bit for every payload to be read back
    side = 128
    wrote = cli.ok("generate", "a paper boat", "--out", "clip.mp4", "--size", f"{side}x{side}", "--seconds", "1",
                   "--seed", "5", timeout=generate_timeout_s)
    mp4 = (tmp_path / "clip.mp4").read_bytes()
    # 1. The implicit labels name the clip by its own content ID, and so does the watermark in its pixels.
    label = read_aigc(mp4)
    assert (label.label, label.content_producer) == ("1", "vidfactory") and label.produce_id.startswith("clip_")
    assert f"content id {label.produce_id}, watermark {label.reserved_code1}" in wrote.stdout
    reading = extract_watermark_from_video(mp4, step=ctx.settings.watermark_step)
    assert reading is not None and f"{reading.payload:08x}" == label.reserved_code1
    # 2. The visible label: inside its box the clip differs from the engine's own frames far more than in
    #    the same box mirrored to the other side.
    request = _request_for(ctx.settings.models[0], "a paper boat", f"{side}x{side}", 1, 5, None)
    engine = load_engine(ctx.settings.models[0], ctx.settings.models_dir)
    raw = engine.generate(request, lambda *_: None, lambda: False).frames
    _, placement = apply_label(raw, request.fps, LabelSpec.from_settings(ctx.settings))
    left, top, right, bottom = placement.box
    with av.open(io.BytesIO(mp4)) as container:
        delivered = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    diff = np.abs(delivered.astype(int) - raw.astype(int)).mean(axis=(0, 3))
    inside, mirrored = diff[top:bottom, left:right].mean(), diff[top:bottom, side - right:side - left].mean()
    assert inside > 2 * mirrored, (inside, mirrored)
    # 3. `vidfactory verify` and /v1/verify vouch for it: signed here, unchanged, the content ID it carries.
    found = json.loads(cli.ok("verify", "clip.mp4", "--json").stdout)
    assert (found["video_id"], found["content_id"], found["altered"], found["c2pa"]["state"]) == (
        None, label.produce_id, False, "trusted")
    assert found["aigc"] == {"label": "1", "content_producer": "vidfactory"}
    assert (found["watermark"]["found"], found["watermark"]["payload"]) == (True, label.reserved_code1)
    served = verify(client, admin, mp4).json()
    assert (served["content_id"], served["altered"], served["c2pa"]["state"]) == (label.produce_id, False, "trusted")
    changed = bytearray(mp4)
    changed[-100] ^= 0x01
    (tmp_path / "changed.mp4").write_bytes(bytes(changed))
    altered = cli("verify", "changed.mp4", "--json")
    assert altered.returncode == 1 and json.loads(altered.stdout)["altered"] is True


class ScriptedFrames:
    """The real engine, whose frames are replaced, call by call, by a script: "black", "frozen" or
    "real" (the last entry repeats)."""

    def __init__(self, engine, script):
        self.engine, self.model_id, self.script, self.seeds = engine, engine.model_id, list(script), []

    def generate(self, request, on_progress, is_cancelled):
        video = self.engine.generate(request, on_progress, is_cancelled)
        self.seeds.append(request.seed)
        kind = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        frames = video.frames.copy()
        if kind == "black":
            frames[:] = 0
        elif kind == "frozen":
            frames[:] = np.clip(frames[0].astype(int) // 2 + 64, 0, 255).astype(np.uint8)
        return type(video)(frames, video.fps)


def run_scripted(ctx, client, tenant, script) -> tuple[dict, ScriptedFrames]:
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a bell tower", **small}).json()
    engine = ScriptedFrames(load_engine(ctx.settings.models[0], ctx.settings.models_dir), script)
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="w", engine_loader=lambda *_: engine)
    while worker.run_once():
        pass
    return client.get(f"/v1/videos/{created['id']}", headers=tenant.headers).json(), engine


def test_a_flagged_clip_waits_for_review_with_an_alert_and_its_report(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video, _ = run_scripted(ctx, client, tenant, ["frozen"])
    assert (video["status"], video["review"]["status"], video["review"]["source"], video["billing"]["status"]) == (
        "in_progress", "pending", "qc", "held")
    assert "qc" not in video  # the report is for admins
    assert client.get(f"/v1/videos/{video['id']}/content", headers=tenant.headers).status_code == 409
    held = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [r["id"] for r in held] == [video["id"]]
    assert held[0]["qc"]["verdict"] == "flag" and "frozen flag" in held[0]["review"]["reason"]
    alerts = client.get("/v1/admin/alerts", headers=admin).json()["data"]
    assert [(a["kind"], a["video_id"]) for a in alerts] == [("review_required", video["id"])]
    assert client.post(f"/v1/admin/reviews/{video['id']}/approve", headers=admin).status_code == 200
    done = client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()
    assert (done["status"], done["billing"]["status"]) == ("completed", "settled")
    assert read_aigc(download(client, tenant, video["id"])).produce_id == video["id"]
    assert_ledger_clean(ctx.sessions)


def test_a_failed_clip_is_regenerated_once_with_a_new_seed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video, engine = run_scripted(ctx, client, tenant, ["black", "real"])
    assert video["status"] == "completed" and video["billing"]["status"] == "settled"
    assert len(engine.seeds) == 2 and engine.seeds[0] != engine.seeds[1] and video["seed"] == engine.seeds[1]
    with ctx.sessions() as session:
        report = session.get(Job, video["id"]).qc_report
    assert report["verdict"] == "pass" and report["earlier"]["verdict"] == "fail"
    assert report["earlier"]["seed"] == engine.seeds[0]
    assert_ledger_clean(ctx.sessions)


def test_a_clip_that_fails_twice_is_refunded_as_qc_failed(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    video, engine = run_scripted(ctx, client, tenant, ["black"])
    assert len(engine.seeds) == 2
    assert (video["status"], video["error"]["code"], video["billing"]["status"]) == ("failed", "qc_failed", "voided")
    assert "black fail" in video["error"]["message"]
    assert client.get("/v1/balance", headers=tenant.headers).json()["available"] == 10_000
    assert_ledger_clean(ctx.sessions)


def reencode(mp4: bytes, *, crf: int, half: bool = False) -> bytes:
    """Decode and encode again with x264 (no metadata, no manifest), optionally at half size."""
    with av.open(io.BytesIO(mp4)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    if half:
        frames = frames[:, ::2, ::2]
    return encode_mp4(np.ascontiguousarray(frames), 8, crf=crf)


def test_verify_finds_a_reencoded_clip_by_its_watermark(client, ctx):
    owner, stranger = new_tenant(ctx.sessions, tokens=10_000), new_tenant(ctx.sessions)
    video = make_video(client, ctx, owner, size="128x128")  # 64 px of noise is too little to survive CRF 28
    copy = reencode(download(client, owner, video["id"]), crf=28)
    found = verify(client, owner.headers, copy).json()
    assert (found["video_id"], found["altered"]) == (video["id"], True)
    assert found["watermark"]["found"] is True and found["c2pa"]["state"] == "absent" and found["aigc"] is None
    assert verify(client, stranger.headers, copy).json()["video_id"] is None


def test_a_clip_flagged_by_screening_and_qc_is_held_once_with_both_reasons(client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=10_000)
    ctx.settings.output_nsfw_threshold = 0.0  # every clip reaches it: the real classifier flags this one too
    video, _ = run_scripted(ctx, client, tenant, ["frozen"])
    assert (video["review"]["status"], video["review"]["source"]) == ("pending", "output_safety")
    held = client.get("/v1/admin/reviews", headers=admin).json()["data"]
    assert [r["id"] for r in held] == [video["id"]]
    reason = held[0]["review"]["reason"]
    assert "output_safety: frame" in reason and "qc: frozen flag" in reason
    alerts = client.get("/v1/admin/alerts", headers=admin).json()["data"]
    assert [(a["kind"], a["video_id"]) for a in alerts] == [("review_required", video["id"])]
    assert client.post(f"/v1/admin/reviews/{video['id']}/reject", headers=admin, json={}).status_code == 200
    assert client.get(f"/v1/videos/{video['id']}", headers=tenant.headers).json()["billing"]["status"] == "voided"
    assert_ledger_clean(ctx.sessions)
