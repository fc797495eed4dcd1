"""Dependency probes: is each thing this deployment needs there and usable? `vidfactory doctor` runs them
all; readiness (`readiness`, `GET /readyz`) runs the ones every request depends on; liveness (`alive`,
`GET /healthz`) runs none, so an orchestrator never restarts a process for a database outage.

Each probe returns one `Check` (never raises): its status (`ok`, `warn` — works, but not as configured
for production —, `fail`), and one line saying what was found or what is wrong and how to fix it. Lines
name URLs without their passwords.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url

from vidfactory.settings import ConfigurationError, Settings, load_settings

__all__ = ["Check", "alive", "doctor", "probe_database", "probe_gpu", "probe_models", "probe_redis", "probe_storage",
           "readiness"]

Status = Literal["ok", "warn", "fail"]
connect_timeout_s = 5
storage_probe_prefix = "_health"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  an unparsable URL is reported, never echoed (it may hold a password)
        return "(an unparsable URL)"


def _reason(exc: BaseException) -> str:
    """The exception in one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__


def probe_database(settings: Settings) -> Check:
    """Reachable, and migrated to the revision this code ships."""
    from vidfactory.db.migrate import current_revision, head_revision
    from vidfactory.db.session import is_sqlite, make_engine, sqlalchemy_url

    url = sqlalchemy_url(settings.resolved_database_url)
    shown = _safe_url(url)
    if not is_sqlite(url):
        url = make_url(url).update_query_dict({"connect_timeout": str(connect_timeout_s)}).render_as_string(
            hide_password=False)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = current_revision(engine), head_revision()
    except Exception as exc:  # noqa: BLE001  every driver error means the same to an operator: unreachable
        return Check("database", "fail", f"{shown} unreachable: {_reason(exc)}")
    finally:
        engine.dispose()
    if current is None:
        return Check("database", "fail", f"{shown} reachable but never migrated: run `vidfactory db upgrade`")
    if current != head:
        return Check("database", "fail", f"{shown} is at migration {current}, this code needs {head}: run "
                                         "`vidfactory db upgrade`")
    return Check("database", "ok", f"{shown} at migration {head}")


def probe_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check("redis", "ok", "not configured: rate limits are kept in memory, per process")
    import redis

    shown = _safe_url(settings.redis_url)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=connect_timeout_s,
                                      socket_connect_timeout=connect_timeout_s)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError) as exc:
        return Check("redis", "fail", f"{shown} unreachable: {_reason(exc)}")
    return Check("redis", "ok", f"{shown} answers")


def probe_storage(settings: Settings) -> Check:
    """Writable, readable and deletable, through the storage the workers use."""
    from vidfactory.storage import make_storage

    key = f"{storage_probe_prefix}/probe-{secrets.token_hex(8)}"
    payload = secrets.token_bytes(16)
    root = settings.storage_url or settings.resolved_storage_dir
    try:
        storage = make_storage(settings)
        storage.put(key, payload)
        read_back = storage.read(key)
        storage.delete(key)
    except OSError as exc:
        return Check("storage", "fail", f"{root} is not writable: {_reason(exc)}")
    if read_back != payload:
        return Check("storage", "fail", f"{root} returned other bytes than were written")
    return Check("storage", "ok", f"{root} writable")


def probe_models(settings: Settings) -> list[Check]:
    """Each configured model's files (or hosted credentials), checked without loading weights."""
    from vidfactory.engines.base import EngineError
    from vidfactory.engines.checkpoints import check_model

    checks = []
    for config in settings.models:
        try:
            checks.append(Check(f"model {config.id}", "ok", check_model(config, settings.models_dir)))
        except EngineError as exc:
            checks.append(Check(f"model {config.id}", "fail", str(exc)))
    return checks


def probe_gpu(settings: Settings) -> Check:
    """The device local checkpoints run on. No GPU is fine for wan-tiny and hosted models only."""
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return Check("gpu", "ok", f"{torch.cuda.get_device_name(index)}, {total / 2**30:.1f} GiB "
                                  f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    checkpoints = [m.id for m in settings.models if m.engine == "wan"]
    if checkpoints:
        return Check("gpu", "warn", f"no CUDA device (torch {torch.__version__}): {', '.join(checkpoints)} would "
                                    "run on the CPU, far too slowly for a real checkpoint")
    return Check("gpu", "ok", f"none (torch {torch.__version__}); the configured models need none")


def alive() -> Check:
    """The process answers. Nothing else is checked: a dependency's outage is readiness's to report."""
    return Check("process", "ok", "alive")


def readiness(settings: Settings) -> list[Check]:
    """What every request needs: the database, Redis when configured, storage."""
    probes: tuple[Callable[[Settings], Check], ...] = (probe_database, probe_redis, probe_storage)
    return [probe(settings) for probe in probes]


def doctor() -> list[Check]:
    """Configuration first (nothing else can be checked without it), then every dependency."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        return [Check("configuration", "fail", str(exc))]
    configured = Check("configuration", "ok", f"{len(settings.models)} model(s) "
                                              f"({', '.join(m.id for m in settings.models)}), data in "
                                              f"{settings.data_dir.resolve()}")
    return [configured, *readiness(settings), *probe_models(settings), probe_gpu(settings)]
