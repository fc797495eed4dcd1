"""End-to-end time through the platform vs a direct pipeline call, for the same tiny job.

Platform: HTTP submit (auth, tokenize, quote, hold) → queue → worker claim → generate → encode MP4 and
thumbnail → store → complete + settle → client polls until completed. Direct: `WanPipeline(...)` on the
same loaded weights, same size, frames, steps and seed. Both warm (pipeline loaded once before timing).
The result cache is off: every platform run generates, as the direct call does.
Prints a Markdown table row set; run: .venv/bin/python bench/platform_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.api.app import create_app  # noqa: E402
from vidfactory.billing import ledger  # noqa: E402
from vidfactory.jobs.worker import Worker  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.tenancy import create_key, create_tenant  # noqa: E402

runs = sized(7, 1)
shapes = sized([("64x64", "1"), ("128x128", "2")], [("64x64", "1")])  # (size, seconds) → 9 and 17 frames at 8 fps
poll_s = 0.01


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vf-bench-"))
    settings = Settings(data_dir=root, admin_token="bench", poll_s=0.01, progress_write_interval_s=0.5,
                        rate_limit_enabled=False)
    print(f"# platform overhead — {machine()}, commit {git_revision()}, torch threads {torch.get_num_threads()}")
    print("| job | direct pipeline s (median) | through platform s (median) | ratio | overhead s |")
    print("|---|---|---|---|---|")
    with TestClient(create_app(settings, workers=0)) as client:
        ctx = client.app.state.ctx
        with ctx.sessions.begin() as s:
            tenant = create_tenant(s, "bench", "enterprise")
            ledger.credit(s, tenant.id, 10**9)
            _, key = create_key(s, tenant.id)
        headers = {"Authorization": f"Bearer {key}"}
        worker = Worker(ctx.settings, ctx.sessions, ctx.storage, worker_id="bench")
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        engine = worker.engine_for("wan-tiny")  # load before timing: both paths run warm
        thread.start()
        for size, seconds in shapes:
            platform_s = [submit_and_wait(client, headers, size, seconds) for _ in range(runs)]
            direct_s = [direct(engine, size, seconds) for _ in range(runs)]
            p, d = statistics.median(platform_s), statistics.median(direct_s)
            print(f"| {size}, {seconds} s, {ctx.settings.models[0].steps} steps | {d:.3f} | {p:.3f} | "
                  f"{p / d:.2f}× | {p - d:.3f} |")
        stop.set()
        thread.join()


def submit_and_wait(client: TestClient, headers: dict, size: str, seconds: str) -> float:
    started = time.perf_counter()
    video = client.post("/v1/videos", headers=headers,
                        json={"prompt": "a red fox running through snow", "size": size, "seconds": seconds,
                              "seed": 7, "cache": "off"}).json()
    while True:
        status = client.get(f"/v1/videos/{video['id']}", headers=headers).json()["status"]
        if status == "completed":
            return time.perf_counter() - started
        assert status in ("queued", "in_progress"), status
        time.sleep(poll_s)


def direct(engine, size: str, seconds: str) -> float:
    width, height = (int(v) for v in size.split("x"))
    frames = 4 * round(int(seconds) * 8 / 4) + 1
    started = time.perf_counter()
    engine.pipeline(prompt="a red fox running through snow", height=height, width=width, num_frames=frames,
                    num_inference_steps=4, guidance_scale=5.0, output_type="np",
                    generator=torch.Generator().manual_seed(7))
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
