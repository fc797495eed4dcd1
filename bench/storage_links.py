"""Object storage and download links: upload and first-byte time of a 5 s 480p clip on the local
directory and on an S3 protocol server (moto's, in its own process, over HTTP), and the API process's
CPU time per download when /content streams the clip (proxy) against when it answers with a signed link
(redirect).

Part 1 puts the clip with each storage's `put` (median of `runs`). Part 2 runs `vidfactory serve`
(no in-process workers) three times: local directory (streamed), bucket streamed (`content_delivery=
proxy`), bucket redirected (signed URL); one tiny job is made by `vidfactory worker --once` and its stored
video replaced by the 5 s 480p clip, then the clip is downloaded `downloads` times: first byte, whole
clip, and the server's CPU seconds (utime + stime from /proc) per download. Prints Markdown.
Run: .venv/bin/python bench/storage_links.py
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import boto3  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from common import git_revision, machine, sized  # noqa: E402
from vidfactory.media.encode import encode_mp4  # noqa: E402
from vidfactory.settings import Settings  # noqa: E402
from vidfactory.storage import make_storage  # noqa: E402

runs = sized(5, 1)
downloads = sized(50, 2)
frames_n, height, width, fps = sized((81, 480, 832, 16), (9, 64, 64, 8))
ready_s_max = 300.0
job_s_max = 600.0
s3_env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def clip_bytes() -> bytes:
    """Moving gradients with grain: x264 makes about the size a real 5 s 480p clip has."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((frames_n, height, width, 3), np.uint8)
    for index in range(frames_n):
        phase = index / frames_n * 2 * np.pi
        base = 100 + 60 * np.sin(x / 40 + phase) * np.cos(y / 30 - phase)
        grain = rng.normal(0, 8, (height, width, 3))
        frames[index] = np.clip(base[..., None] + grain + [0, 20, 40], 0, 255).astype(np.uint8)
    return encode_mp4(frames, fps)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + ready_s_max
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {ready_s_max:g} s")


def start_s3() -> tuple[str, subprocess.Popen]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(endpoint, server)
    boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in s3_env.items() if k != "AWS_REGION"},
                 region_name="us-east-1").create_bucket(Bucket="bench-clips")
    return endpoint, server


def storage_settings(data_dir: Path, endpoint: str | None, delivery: str = "redirect") -> dict[str, str]:
    env = {"VIDFACTORY_DATA_DIR": str(data_dir), "VIDFACTORY_CONTENT_DELIVERY": delivery}
    if endpoint is not None:
        env |= {"VIDFACTORY_STORAGE_URL": "s3://bench-clips/vf", "AWS_ENDPOINT_URL": endpoint, **s3_env}
    return env


def upload_s(settings_env: dict[str, str], clip: bytes) -> float:
    saved = {key: os.environ.get(key) for key in settings_env}
    os.environ.update(settings_env)
    try:
        storage = make_storage(Settings())
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    times = []
    for index in range(runs):
        start = time.perf_counter()
        storage.put(f"tenants/bench/upload-{index}/video.mp4", clip, content_type="video/mp4")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def vidfactory(env: dict[str, str], *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from vidfactory.cli import app; app()", *args],
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, **popen)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.port = env, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = vidfactory(env, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "0",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"{self.base}/healthz", self.process)
        self.headers = {"Authorization": f"Bearer {(Path(env['VIDFACTORY_DATA_DIR']) / 'demo_key').read_text().strip()}"}

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def prepared_video(api: Api, clip: bytes) -> str:
    """A completed job (made by a worker) whose stored video is then the 5 s 480p clip."""
    video = httpx.post(f"{api.base}/v1/videos", headers=api.headers, timeout=60,
                       json={"prompt": "a lantern on a lake", "size": "64x64", "seconds": "1", "cache": "off"}).json()
    assert vidfactory(api.env, "worker", "--once").wait(timeout=job_s_max) == 0
    status = httpx.get(f"{api.base}/v1/videos/{video['id']}", headers=api.headers).json()["status"]
    assert status == "completed", status
    data_dir = Path(api.env["VIDFACTORY_DATA_DIR"])
    with create_engine(f"sqlite:///{data_dir / 'vidfactory.db'}").connect() as connection:
        key = connection.execute(text("select storage_key from assets where job_id = :id and variant = 'video'"),
                                 {"id": video["id"]}).scalar_one()
    saved = dict(os.environ)
    os.environ.update(api.env)
    try:
        make_storage(Settings()).put(key, clip, content_type="video/mp4")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return video["id"]


def downloads_measured(api: Api, video_id: str, size: int) -> tuple[float, float, float]:
    """Median first byte and whole clip (s), and the API's CPU seconds per download."""
    first, whole = [], []
    before = cpu_s(api.process.pid)
    with httpx.Client(follow_redirects=True, timeout=60) as client:
        for _ in range(downloads):
            start = time.perf_counter()
            with client.stream("GET", f"{api.base}/v1/videos/{video_id}/content", headers=api.headers) as answer:
                chunks = answer.iter_bytes()
                received = len(next(chunks))
                first.append(time.perf_counter() - start)
                received += sum(len(chunk) for chunk in chunks)
            whole.append(time.perf_counter() - start)
            assert answer.status_code == 200 and received == size, (answer.status_code, received)
    return statistics.median(first), statistics.median(whole), (cpu_s(api.process.pid) - before) / downloads


def main() -> None:
    clip = clip_bytes()
    endpoint, s3 = start_s3()
    rows, videos = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {"local": Path(tmp) / "local", "s3": Path(tmp) / "s3"}
            endpoints = {"local": None, "s3": endpoint}
            uploads = {kind: upload_s(storage_settings(dirs[kind], endpoints[kind]), clip) for kind in dirs}
            for name, kind, delivery in (("local directory, streamed", "local", "proxy"),
                                         ("S3 server, streamed (proxy)", "s3", "proxy"),
                                         ("S3 server, signed link (redirect)", "s3", "redirect")):
                env = storage_settings(dirs[kind], endpoints[kind], delivery)
                if kind not in videos:
                    assert vidfactory(env, "db", "upgrade", stdout=subprocess.DEVNULL).wait(timeout=300) == 0
                    assert vidfactory(env, "admin", "demo", stdout=subprocess.DEVNULL).wait(timeout=300) == 0
                api = Api(env)
                try:
                    if kind not in videos:  # one job per storage; both deliveries serve the same clip
                        videos[kind] = prepared_video(api, clip)
                    rows.append((name, uploads[kind], *downloads_measured(api, videos[kind], len(clip))))
                finally:
                    api.close()
    finally:
        s3.terminate()
        s3.wait(timeout=30)
    print(f"# Storage and links — {machine()}, commit {git_revision()}\n")
    print(f"Clip: {frames_n} frames {width}x{height} at {fps} fps, {len(clip) / 1e6:.2f} MB; upload median of {runs}, "
          f"downloads median of {downloads}.\n")
    print("| storage, delivery | upload s | first byte s | whole clip s | API CPU s per download |")
    print("|---|---|---|---|---|")
    for name, upload, first, whole, cpu in rows:
        print(f"| {name} | {upload:.3f} | {first:.4f} | {whole:.4f} | {cpu:.4f} |")
    proxied, redirected = rows[1][4], rows[2][4]
    print(f"\nSigned links instead of streaming through the API: the API spends "
          f"{redirected / proxied if proxied else float('nan'):.2f}× the CPU per download "
          f"({proxied - redirected:.4f} s less).")


if __name__ == "__main__":
    main()
