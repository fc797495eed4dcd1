"""Retention on SQLite and PostgreSQL: every finished video expires after its plan's retention period;
the sweep deletes its files (clip, previews, reference copy) and the rows that name them, and its content
answers 410 `video_expired` while the record stays; a sweep that stops anywhere is finished by the next;
objects no row names (an upload whose commit never happened) are deleted after a grace period; templates'
images never expire; the ledger is untouched."""

from __future__ import annotations

import base64
import csv
import io
import zipfile
from datetime import timedelta

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select

from vidfactory.api.app import create_app
from vidfactory.db.migrate import alembic_config
from vidfactory.db.models import Asset, Job, Plan
from vidfactory.db.session import make_engine
from vidfactory.db.types import utcnow
from vidfactory.jobs import maintenance, queue
from vidfactory.jobs.worker import Worker
from vidfactory.storage.retention import key_columns

from conftest import assert_ledger_clean, make_settings, new_bucket, new_tenant
from test_cli import Cli
from test_image_to_video import picture

admin = {"Authorization": "Bearer test-admin-token"}
small = {"size": "64x64", "seconds": "1", "cache": "off"}
day_s = 24 * 3600


def work(ctx, jobs: int = 1) -> None:
    worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="test-worker")
    for _ in range(jobs):
        assert worker.run_once()


def submit(client, tenant, **fields) -> str:
    """A fixed seed unless given: the same frames, so the same quality verdict, on every run."""
    created = client.post("/v1/videos", headers=tenant.headers, json={"prompt": "a red fox in snow", "seed": 1,
                                                                      **small, **fields})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def submit_with_image(client, tenant) -> str:
    created = client.post("/v1/videos", headers=tenant.headers,
                          data={"model": "wan-tiny-i2v", "prompt": "the lantern drifts away", "seconds": "1", "seed": "1",
                                "size": "128x128", "cache": "off"},
                          files={"input_reference": ("lantern.png", picture(3), "image/png")})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def video(client, tenant, video_id: str) -> dict:
    found = client.get(f"/v1/videos/{video_id}", headers=tenant.headers)
    assert found.status_code == 200, found.text
    return found.json()


def stored(ctx) -> set[str]:
    return {found.key for found in ctx.storage.list("")}


def named(ctx) -> set[str]:
    with ctx.sessions() as session:
        return {key for column in key_columns for key in session.scalars(select(column).where(column.is_not(None)))}


def expiring_names(ctx) -> set[str]:
    """What rows of jobs marked expiring still name: the one place a named object may be missing."""
    with ctx.sessions() as session:
        marked = select(Job.id).where(Job.content_status == "expiring")
        return (set(session.scalars(select(Asset.storage_key).where(Asset.job_id.in_(marked))))
                | set(session.scalars(select(Job.reference_key).where(Job.id.in_(marked),
                                                                      Job.reference_key.is_not(None)))))


def sweep(ctx, at, storage=None, limit: int = maintenance.expiring_jobs_max) -> int:
    return maintenance.sweep_expired_content(ctx.sessions, storage or ctx.storage, at, limit)


def expires_at(ctx, video_id: str):
    with ctx.sessions() as session:
        return session.get(Job, video_id).expires_at


def test_a_finished_video_expires_after_its_plans_retention(client, ctx):
    seeded = {plan["id"]: plan["retention_days"] for plan in client.get("/v1/admin/plans", headers=admin).json()["data"]}
    assert seeded == {"free": 7, "pro": 30, "enterprise": 90}
    free, enterprise = new_tenant(ctx.sessions, 100_000, plan="free"), new_tenant(ctx.sessions, 100_000)
    first, big = submit(client, free), submit(client, enterprise)
    assert video(client, free, first)["expires_at"] is None  # known when it ends
    work(ctx, 2)
    done, done_big = video(client, free, first), video(client, enterprise, big)
    assert done["status"] == done_big["status"] == "completed"
    assert done["expires_at"] - done["completed_at"] in (7 * day_s, 7 * day_s + 1)  # whole seconds shown
    assert done_big["expires_at"] - done_big["completed_at"] in (90 * day_s, 90 * day_s + 1)
    # A plan's new retention applies to videos that end afterwards; the others keep theirs.
    changed = client.patch("/v1/admin/plans/free", headers=admin, json={"retention_days": 2})
    assert changed.status_code == 200 and changed.json()["retention_days"] == 2
    assert client.patch("/v1/admin/plans/free", headers=admin, json={"retention_days": 0}).status_code == 400
    later, cancelled = submit(client, free, seed=5), submit(client, free, seed=6)
    assert client.post(f"/v1/videos/{cancelled}/cancel", headers=free.headers).json()["status"] == "cancelled"
    work(ctx)
    done_later, done_cancelled = video(client, free, later), video(client, free, cancelled)
    assert done_later["expires_at"] - done_later["completed_at"] in (2 * day_s, 2 * day_s + 1)
    assert done_cancelled["expires_at"] - done_cancelled["completed_at"] in (2 * day_s, 2 * day_s + 1)
    assert video(client, free, first)["expires_at"] == done["expires_at"]


def test_the_sweep_deletes_files_and_references_and_the_content_answers_410(client, ctx):
    tenant = new_tenant(ctx.sessions, 1_000_000, plan="free")
    template = client.post("/v1/templates", headers=tenant.headers, json={
        "name": "lantern", "body": "A lantern at {{ time }}.", "form": {},
        "reference_image": "data:image/png;base64," + base64.b64encode(picture(4)).decode()})
    assert template.status_code == 201, template.text
    template_files = stored(ctx)
    assert len(template_files) == 1
    with_image, text_only = submit_with_image(client, tenant), submit(client, tenant)
    work(ctx, 2)
    assert len(stored(ctx)) == 1 + 4 + 3  # the template's image; clip, previews (+ the reference copy)
    assert stored(ctx) == named(ctx)
    ledger_before = client.get("/v1/ledger", headers=tenant.headers).json()
    before = video(client, tenant, with_image)
    assert set(before["hashes"]) == {"video", "thumbnail", "spritesheet"}

    assert sweep(ctx, utcnow()) == 0  # nothing has expired yet
    assert client.get(f"/v1/videos/{with_image}/content", headers=tenant.headers).status_code == 200
    assert sweep(ctx, utcnow() + timedelta(days=7, seconds=2)) == 2
    assert stored(ctx) == named(ctx) == template_files  # templates never expire
    assert sweep(ctx, utcnow() + timedelta(days=7, seconds=2)) == 0

    for variant in ("video", "thumbnail", "spritesheet"):
        gone = client.get(f"/v1/videos/{with_image}/content?variant={variant}", headers=tenant.headers)
        assert gone.status_code == 410, gone.text
        assert gone.json()["error"]["code"] == "video_expired"
        assert gone.json()["error"]["type"] == "invalid_request_error"
    # The ledger is append-only: expiry moves no tokens.
    assert client.get("/v1/ledger", headers=tenant.headers).json() == ledger_before
    after = video(client, tenant, with_image)  # the record stays, without its files' hashes
    assert (after["status"], after["expires_at"], after["hashes"]) == ("completed", before["expires_at"], {})
    assert after["input_reference"] == before["input_reference"]
    # Its first frame went with it; a text-to-video job regenerates from its record alone.
    regenerated = client.post(f"/v1/videos/{with_image}/regenerate", headers=tenant.headers, json={})
    assert regenerated.status_code == 410 and regenerated.json()["error"]["code"] == "video_expired"
    assert client.post(f"/v1/videos/{text_only}/regenerate", headers=tenant.headers, json={}).status_code == 200
    assert client.get("/v1/templates/lantern", headers=tenant.headers).json()["reference_image"] is not None
    assert_ledger_clean(ctx.sessions)


def test_a_video_past_its_expiry_answers_410_before_the_sweep_and_the_cli_sweeps_it(
        client, ctx, tmp_path, database_url, models_dir):
    tenant = new_tenant(ctx.sessions, 100_000, plan="free")
    video_id = submit(client, tenant)
    work(ctx)
    with ctx.sessions.begin() as session:  # as if its retention ran out a second ago
        session.get(Job, video_id).expires_at = utcnow() - timedelta(seconds=1)
    gone = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"
    assert len(stored(ctx)) == 3
    cli = Cli(tmp_path, models_dir, database_url)
    assert cli.json("admin", "sweep") == {"expired_videos": 1, "orphans_deleted": 0}
    assert stored(ctx) == named(ctx) == set()
    assert "deleted the files of 0 expired videos" in cli.ok("admin", "sweep").stdout


class SweepCrash(BaseException):
    """The sweeping process dies here (nothing catches it)."""


class CrashingStorage:
    """The real storage, until the `crash_at`-th delete of one job's files: the process dies just before
    it (`after=False`) or just after it (`after=True`)."""

    def __init__(self, storage, job_id: str, crash_at: int, after: bool) -> None:
        self.storage, self.job_id, self.crash_at, self.after = storage, job_id, crash_at, after
        self.deletes = 0

    def delete(self, key: str) -> None:
        if self.job_id in key:
            self.deletes += 1
            if self.deletes == self.crash_at and not self.after:
                raise SweepCrash(f"before deleting {key}")
        self.storage.delete(key)
        if self.job_id in key and self.deletes == self.crash_at and self.after:
            raise SweepCrash(f"after deleting {key}")

    def __getattr__(self, name: str):
        return getattr(self.storage, name)


def test_a_sweep_that_stops_anywhere_is_finished_by_the_next(client, ctx):
    tenant = new_tenant(ctx.sessions, 100_000, plan="free")
    videos = [submit(client, tenant, seed=seed) for seed in (1, 2, 3)]
    work(ctx, 3)
    # Marked, no file deleted yet; one of three deleted; all deleted, their rows not yet forgotten.
    for video_id, crash_at, after in zip(videos, (1, 2, 3), (False, False, True), strict=True):
        at = expires_at(ctx, video_id) + timedelta(seconds=1)
        with pytest.raises(SweepCrash):
            sweep(ctx, at, CrashingStorage(ctx.storage, video_id, crash_at, after))
        # The crashed job answers 410 already; only its rows may name a missing file, and every stored
        # file is named.
        gone = client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"
        assert stored(ctx) <= named(ctx)
        assert named(ctx) - stored(ctx) <= expiring_names(ctx)
        assert sum(video_id in key for key in stored(ctx)) == 3 - (crash_at - 1) - after
    # The next sweep starts with the one left marked, and finishes it.
    assert sweep(ctx, expires_at(ctx, videos[-1]) + timedelta(seconds=1)) == 1
    assert stored(ctx) == named(ctx) == set() and expiring_names(ctx) == set()
    with ctx.sessions() as session:
        assert {job.content_status for job in session.scalars(select(Job))} == {"expired"}
    assert_ledger_clean(ctx.sessions)


def test_an_upload_whose_commit_never_happened_is_an_orphan_the_scan_deletes(client, ctx, monkeypatch):
    tenant = new_tenant(ctx.sessions, 100_000, plan="free")
    kept = submit(client, tenant, seed=1)
    work(ctx)
    crashed = submit(client, tenant, seed=2)

    def crash(*args, **kwargs):
        raise SweepCrash("the worker dies after storing the clip, before its transaction commits")

    monkeypatch.setattr(queue, "complete", crash)
    with pytest.raises(SweepCrash):
        work(ctx)
    orphans = stored(ctx) - named(ctx)
    assert len(orphans) == 3 and all(crashed in key for key in orphans)
    grace_s = ctx.settings.orphan_grace_s
    # Within the grace period an upload may still be waiting for its commit: nothing is taken.
    assert maintenance.delete_orphans(ctx.sessions, ctx.storage, utcnow(), grace_s) == 0
    later = utcnow() + timedelta(seconds=grace_s + 1)
    assert maintenance.delete_orphans(ctx.sessions, ctx.storage, later, grace_s) == 3
    assert stored(ctx) == named(ctx) and all(kept in key for key in stored(ctx))
    assert client.get(f"/v1/videos/{kept}/content", headers=tenant.headers).status_code == 200
    assert maintenance.delete_orphans(ctx.sessions, ctx.storage, later, grace_s) == 0


def test_videos_that_exist_at_the_upgrade_expire_at_the_upgrade_time_plus_retention(client, ctx):
    tenant = new_tenant(ctx.sessions, 100_000, plan="free")
    video_id = submit(client, tenant)
    work(ctx)
    config = alembic_config()
    engine = make_engine(ctx.settings.resolved_database_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0026_training_jobs")
    upgraded_from = utcnow()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    upgraded_to = utcnow()
    engine.dispose()
    with ctx.sessions() as session:
        assert {plan.id: plan.retention_days for plan in session.scalars(select(Plan))} == {
            "free": 7, "pro": 30, "enterprise": 90}
    expiry = expires_at(ctx, video_id)
    assert upgraded_from + timedelta(days=7) <= expiry <= upgraded_to + timedelta(days=7)
    assert sweep(ctx, utcnow()) == 0  # the first sweep after the upgrade deletes nothing
    assert client.get(f"/v1/videos/{video_id}/content", headers=tenant.headers).status_code == 200


def test_a_batch_archive_loses_each_clip_as_it_expires_and_expires_with_the_last(client, ctx):
    tenant = new_tenant(ctx.sessions, 100_000, plan="free")
    saved = client.post("/v1/templates", headers=tenant.headers, json={"name": "tour", "body": "a walk in {{ city }}"})
    assert saved.status_code == 201, saved.text
    batch = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "tour", "variables": {"city": ["Hangzhou", "Chengdu"]}, "seconds": "1", "size": "64x64"}).json()
    assert batch["expires_at"] is None  # not known until every item has ended
    work(ctx, 2)
    shown = client.get(f"/v1/batches/{batch['id']}", headers=tenant.headers).json()
    # the API shows whole seconds, and both clips may end within one: order them by the stored instant
    first, last = sorted((expires_at(ctx, item["video_id"]), item["video_id"]) for item in shown["items"])
    assert shown["expires_at"] == max(item["expires_at"] for item in shown["items"])
    assert sweep(ctx, expires_at(ctx, first[1]) + timedelta(microseconds=1)) == 1
    archive = client.get(f"/v1/batches/{batch['id']}/archive", headers=tenant.headers)
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        rows = {row["video_id"]: row for row in csv.DictReader(io.StringIO(opened.read("manifest.csv").decode()))}
        assert len([name for name in opened.namelist() if name.endswith(".mp4")]) == 1
    assert (rows[first[1]]["status"], rows[first[1]]["file"]) == ("expired", "")
    assert rows[last[1]]["status"] == "completed"
    assert sweep(ctx, expires_at(ctx, last[1]) + timedelta(microseconds=1)) == 1
    gone = client.get(f"/v1/batches/{batch['id']}/archive", headers=tenant.headers)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "batch_expired"


def test_on_an_s3_bucket_orphans_and_expired_videos_go_and_nothing_dangles(tmp_path, sqlite_url, models_dir,
                                                                            s3_server, monkeypatch):
    settings = make_settings(tmp_path, sqlite_url, models_dir, **new_bucket(s3_server))
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        tenant = new_tenant(ctx.sessions, 100_000, plan="free")
        kept = submit(client, tenant, seed=1)
        work(ctx)
        crashed = submit(client, tenant, seed=2)
        with monkeypatch.context() as patched:
            patched.setattr(queue, "complete", lambda *args, **kwargs: (_ for _ in ()).throw(
                SweepCrash("the worker dies after uploading, before its transaction commits")))
            with pytest.raises(SweepCrash):
                work(ctx)
        orphans = stored(ctx) - named(ctx)
        assert len(orphans) == 3 and all(crashed in key for key in orphans)
        later = utcnow() + timedelta(seconds=settings.orphan_grace_s + 1)
        assert maintenance.delete_orphans(ctx.sessions, ctx.storage, utcnow(), settings.orphan_grace_s) == 0
        assert maintenance.delete_orphans(ctx.sessions, ctx.storage, later, settings.orphan_grace_s) == 3
        assert stored(ctx) == named(ctx) and len(stored(ctx)) == 3
        # A sweep that dies after deleting one of the clip's objects; the next one finishes it.
        at = expires_at(ctx, kept) + timedelta(seconds=1)
        with pytest.raises(SweepCrash):
            sweep(ctx, at, CrashingStorage(ctx.storage, kept, 2, False))
        assert named(ctx) - stored(ctx) <= expiring_names(ctx) and stored(ctx) <= named(ctx)
        assert sweep(ctx, at) == 1
        assert stored(ctx) == named(ctx) == set()
        gone = client.get(f"/v1/videos/{kept}/content", headers=tenant.headers)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "video_expired"
        assert_ledger_clean(ctx.sessions)
