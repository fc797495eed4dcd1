"""API memory under concurrent image quotes: 8 clients at once each POST /v1/quotes with a 4096×4096 PNG
(one colour compresses well: 48 MiB once decoded as RGB) as a data URL, `rounds` times over; each client
is its own tenant, with zero balance. Two deployments: text-only (the default wan-tiny: no model takes an image) and one
whose first model takes images (an OpenAI-compatible server, never called by a quote). The API runs as
its own process (uvicorn, SQLite); its peak RSS is sampled every 10 ms.
Run: PYTHONPATH=src .venv/bin/python bench/image_quote_memory.py
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import git_revision, machine, sized  # noqa: E402

clients = sized(8, 2)
rounds = sized(3, 1)
side_px = sized(4096, 512)
admin_token = "bench-admin-token"
image_model = {"id": "i2v", "engine": "openai-video", "hosted": {"base_url": "http://127.0.0.1:9/v1",
                                                                  "remote_model": "sora-2"}}

serve = """
import sys, uvicorn
from vidfactory.api.app import create_app
from vidfactory.settings import Settings
uvicorn.run(create_app(Settings(), workers=0), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def big_png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (side_px, side_px), (30, 120, 200)).save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def run(models: list[dict] | None, image: str) -> tuple[float, float, dict[int, int]]:
    """(idle RSS MiB, peak RSS MiB, status counts)."""
    data = Path(tempfile.mkdtemp())
    env = {**os.environ, "VIDFACTORY_DATA_DIR": str(data), "VIDFACTORY_ADMIN_TOKEN": admin_token,
           "VIDFACTORY_WEBHOOKS_ENABLED": "false", "VIDFACTORY_RATE_LIMIT_ENABLED": "false"}
    if models is not None:
        env["VIDFACTORY_MODELS"] = json.dumps(models)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", serve, str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            for _ in range(600):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            admin = {"Authorization": f"Bearer {admin_token}"}
            keys = []
            for index in range(clients):
                tenant = client.post("/v1/admin/tenants", headers=admin, json={"name": f"bench-{index}"}).json()
                keys.append(client.post(f"/v1/admin/tenants/{tenant['id']}/keys", headers=admin,
                                        json={}).json()["key"])
            client.post("/v1/quotes", headers={"Authorization": f"Bearer {keys[0]}"}, json={"prompt": "warm up"})
        process = psutil.Process(server.pid)
        idle = process.memory_info().rss
        peak, statuses, done = idle, {}, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.01)

        def quote(key: str) -> None:
            with httpx.Client(base_url=base, timeout=300) as client:
                for _ in range(rounds):
                    status = client.post("/v1/quotes", headers={"Authorization": f"Bearer {key}"},
                                         json={"prompt": "a cat", "input_reference": image}).status_code
                    statuses[status] = statuses.get(status, 0) + 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        workers = [threading.Thread(target=quote, args=(key,)) for key in keys]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        sampler.join()
        return idle / 2**20, peak / 2**20, statuses
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    image = big_png()
    print(f"# API memory, {clients} concurrent {side_px}² PNG quotes × {rounds} "
          f"({len(image) * 3 // 4 // 1000} KB each) — {machine()}, commit {git_revision()}")
    print("| deployment | idle RSS MiB | peak RSS MiB | answers |")
    print("|---|---|---|---|")
    for name, models in (("text-only (wan-tiny)", None), ("takes images (openai-video first)",
                                                           [image_model, {"id": "wan-tiny", "engine": "wan-tiny"}])):
        idle, peak, statuses = run(models, image)
        answers = ", ".join(f"{count}× {status}" for status, count in sorted(statuses.items()))
        print(f"| {name} | {idle:.0f} | {peak:.0f} | {answers} |")


if __name__ == "__main__":
    main()
