"""Shared bench helpers: machine description, git revision, a throwaway PostgreSQL database."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


tiny_env = "VIDFACTORY_BENCH_TINY"


def is_tiny() -> bool:
    """True when VIDFACTORY_BENCH_TINY=1: the suite runs every script this way so none breaks silently;
    its figures mean nothing."""
    return os.environ.get(tiny_env) == "1"


def sized(full, tiny):
    """`full` for a real measurement, `tiny` in the suite's smoke run (see `is_tiny`)."""
    return tiny if is_tiny() else full


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, no GPU"


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A new empty database on the server at `admin_url`: its URL, and a function that drops it."""
    name = f"vf_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def extract_src(revision: str, into: Path) -> Path:
    """Another commit's `src/`, for a baseline API process to import before the installed tree."""
    archive = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", revision, "src"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"
