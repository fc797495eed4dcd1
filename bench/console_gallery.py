"""The console's gallery with 1,000 videos: time to first byte and full load (the page, then every
thumbnail, stylesheet and script it names, as a browser with an empty cache fetches them) for a tenant
with 10 videos and for one with 1,000, interleaved run by run, and the ratio. The gallery pages (24 tiles),
so the two should cost about the same; a ratio far above 1 would mean it reads every video.

A third tenant with one page and one more (25 videos) shows the same number of tiles as the 1,000: the
ratio against it is the cost of the 975 videos the page does not show.

The app (SQLite, local storage, no workers) is served by uvicorn in a thread of this process. The videos are
made the way a worker makes them: submitted, claimed and completed through the queue's services with a
stored clip and thumbnail; the newest two of each tenant stay queued (their tiles show a queue place).
Prints Markdown. Run: .venv/bin/python bench/console_gallery.py
"""

from __future__ import annotations

import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.accounts import PasswordHasher, create_user, session_cookie, sign_in  # noqa: E402
from vidfactory.api.app import create_app  # noqa: E402
from vidfactory.api.render import video_object  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.db.types import utcnow  # noqa: E402
from vidfactory.jobs import queue  # noqa: E402
from vidfactory.jobs.submit import VideoRequest, submit  # noqa: E402
from vidfactory.media.encode import encode_mp4, sha256_hex  # noqa: E402
from vidfactory.media.preview import thumbnail_image  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import console_caller, create_tenant  # noqa: E402
from vidfactory.web.videos import videos_per_page  # noqa: E402

small_videos = 10
one_page_videos = videos_per_page + 1  # as many tiles as the 1,000, on one page
large_videos = sized(1000, 30)
queued_videos = 2  # of each tenant, left queued
runs = sized(15, 2)
start_s_max = 60.0
password = "bench password long enough"
worker_id = "bench-worker"
# What a browser fetches to show the page (not the links it only follows when clicked).
asset_url = re.compile(r'(?:src="(/[^"]+)"|<link[^>]+href="(/static/[^"]+)")')


def stored_files(ctx) -> list[queue.AssetRecord]:
    """One small clip and its thumbnail, stored once; every completed video names them."""
    frames = np.full((8, 64, 64, 3), 120, np.uint8)
    records = []
    for variant, data, content_type in (("video", encode_mp4(frames, 8), "video/mp4"),
                                        ("thumbnail", thumbnail_image(frames), "image/webp")):
        key = f"bench/{variant}-{uuid.uuid4().hex}"
        ctx.storage.put(key, data, content_type=content_type)
        records.append(queue.AssetRecord(variant, key, content_type, len(data), sha256_hex(data)))
    return records


def tenant_with_videos(ctx, videos: int, files: list[queue.AssetRecord]) -> str:
    """A tenant whose owner is signed in, with `videos` videos: its session cookie."""
    hasher = PasswordHasher.from_settings(ctx.settings)
    email = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    with ctx.sessions.begin() as session:
        tenant = create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", "enterprise")
        ledger.credit(session, tenant.id, 10**12)
        create_user(session, hasher, email, "owner", password, tenant.id)
        caller = console_caller(session, tenant.id)
    model = ctx.settings.models[0].id
    for index in range(videos):
        request = VideoRequest(prompt=f"clip {index} of a harbour at dawn", model=model, seconds="1", size="64x64",
                               cache="off")
        submit(ctx.sessions, ctx.settings, ctx.counters, caller, request, video_object, screens=ctx.screens)
        if index >= videos - queued_videos:
            continue
        with ctx.sessions.begin() as session:
            job = queue.claim(session, worker_id=worker_id, models=[model], lease_s=60, now=utcnow())
            queue.complete(session, job, worker_id, files, charge=job.total_tokens)
    with ctx.sessions.begin() as session:
        return sign_in(session, hasher, email, password, ttl_s=3600, failures_max=5).token


def serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_s_max
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def load(base: str, token: str) -> tuple[float, float, float, int, int]:
    """(first byte s, full load s, CPU s, requests, tiles) of the gallery with an empty cache. The CPU is
    this process's (the server's and the client's), which the machine's other work does not inflate."""
    with httpx.Client(base_url=base, cookies={session_cookie: token}, timeout=60) as client:
        cpu_started, started = time.process_time(), time.perf_counter()
        with client.stream("GET", "/videos") as answer:
            assert answer.status_code == 200, answer.status_code
            chunks = answer.iter_bytes()
            body = next(chunks)
            first_byte_s = time.perf_counter() - started
            body += b"".join(chunks)
        page = body.decode()
        assets = sorted({src or href for src, href in asset_url.findall(page.replace("&amp;", "&"))})
        for path in assets:
            assert client.get(path).status_code == 200, path
        return (first_byte_s, time.perf_counter() - started, time.process_time() - cpu_started, 1 + len(assets),
                page.count('class="tile"'))


def main() -> None:
    # In memory where the system has it: SQLite's commits then wait for no disk the machine shares.
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as root:
        settings = Settings(data_dir=Path(root), database_url=f"sqlite:///{root}/bench.db",
                            password_hash_time_cost=1, password_hash_memory_kib=1024, webhooks_enabled=False)
        app = create_app(settings, workers=0)
        base, server, thread = serve(app)
        try:
            ctx = app.state.ctx
            files = stored_files(ctx)
            made = time.perf_counter()
            tenants = {f"{count} videos": tenant_with_videos(ctx, count, files)
                       for count in (small_videos, one_page_videos, large_videos)}
            made_s = time.perf_counter() - made
            for token in tenants.values():
                load(base, token)  # warm: templates compiled, connections made
            figures: dict[str, list[tuple[float, float, float, int, int]]] = {name: [] for name in tenants}
            for _ in range(runs):  # interleaved: the machine's load falls on both alike
                for name, token in tenants.items():
                    figures[name].append(load(base, token))
        finally:
            server.should_exit = True
            thread.join(start_s_max)
    report(figures, made_s)


def report(figures: dict[str, list[tuple[float, float, float, int, int]]], made_s: float) -> None:
    print(f"Machine: {machine()}, commit {git_revision()}; median of {runs} interleaved loads each "
          f"({made_s:.0f} s to make the videos)\n")
    print("| tenant | first byte ms | full load ms | full load CPU ms | requests | tiles on the page |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for name, rows in figures.items():
        first, full, cpu = (statistics.median(row[column] for row in rows) * 1000 for column in range(3))
        medians[name] = (first, full, cpu)
        print(f"| {name} | {first:.1f} | {full:.1f} | {cpu:.1f} | {rows[0][3]} | {rows[0][4]} |")
    small, page, large = medians.values()
    for name, base in ((f"{small_videos}", small), (f"{one_page_videos} (the same tiles)", page)):
        print(f"\nWith {large_videos} videos against {name}: first byte {large[0] / base[0]:.2f}×, "
              f"full load {large[1] / base[1]:.2f}×, full load CPU {large[2] / base[2]:.2f}×.")


if __name__ == "__main__":
    main()
