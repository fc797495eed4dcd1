"""The worker registry: every worker's device, free memory, loaded models and model load cost.

Workers register when they start and heartbeat while they run; admission asks it for the largest device
that serves a model (a request none could ever fit is refused), and operators list it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from vidfactory.db.models import Job, RegisteredWorker

__all__ = [
    "DeviceReport",
    "current_jobs",
    "deregister",
    "fleet_devices",
    "heartbeat",
    "list_workers",
    "record_load",
    "register",
]

gpu_name_chars_max = 100


@dataclass(frozen=True)
class DeviceReport:
    gpu_name: str
    memory_total_bytes: int
    memory_free_bytes: int
    devices: int = 1  # memory figures are per device; a multi-device worker runs each job on all of them

    def __post_init__(self) -> None:
        assert self.memory_total_bytes >= 0 and self.memory_free_bytes >= 0 and self.devices >= 1


def register(session: Session, worker_id: str, device: DeviceReport, models_served: list[str],
             now: datetime) -> None:
    """Insert the worker, or start its record afresh if the id comes back (a restarted process)."""
    session.execute(delete(RegisteredWorker).where(RegisteredWorker.id == worker_id))
    session.add(RegisteredWorker(
        id=worker_id, gpu_name=device.gpu_name[:gpu_name_chars_max], memory_total_bytes=device.memory_total_bytes,
        memory_free_bytes=device.memory_free_bytes, devices=device.devices, models_served=list(models_served), models_held=[],
        model_load_s={}, started_at=now, heartbeat_at=now))
    session.flush()


def heartbeat(session: Session, worker_id: str, *, memory_free_bytes: int, models_held: list[str],
              now: datetime) -> bool:
    """False when the worker is not registered (an operator removed it): the caller registers again."""
    assert memory_free_bytes >= 0
    result = session.execute(update(RegisteredWorker).where(RegisteredWorker.id == worker_id).values(
        memory_free_bytes=memory_free_bytes, models_held=list(models_held), heartbeat_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def record_load(session: Session, worker_id: str, model: str, seconds: float) -> None:
    """The model switch cost: how long loading `model` took on this worker, last time."""
    assert seconds >= 0
    row = session.get(RegisteredWorker, worker_id, with_for_update=True)
    if row is None:
        return  # not registered (yet, or any more): the job still records its own load time
    row.model_load_s = {**row.model_load_s, model: round(seconds, 3)}


def deregister(session: Session, worker_id: str) -> None:
    session.execute(delete(RegisteredWorker).where(RegisteredWorker.id == worker_id))


def list_workers(session: Session) -> list[RegisteredWorker]:
    return list(session.scalars(select(RegisteredWorker).order_by(RegisteredWorker.started_at,
                                                                   RegisteredWorker.id)))


def current_jobs(session: Session) -> dict[str, list[str]]:
    """The jobs each worker runs now (in progress under its lease), by worker id, oldest start first."""
    running: dict[str, list[str]] = {}
    rows = session.execute(select(Job.lease_owner, Job.id).where(Job.status == "in_progress",
                                                                 Job.lease_owner.is_not(None))
                           .order_by(Job.started_at, Job.id))
    for worker_id, job_id in rows:
        running.setdefault(worker_id, []).append(job_id)
    return running


_live_workers = select(RegisteredWorker.memory_total_bytes, RegisteredWorker.devices, RegisteredWorker.models_served
                       ).where(RegisteredWorker.heartbeat_at >= bindparam("since"))


def fleet_devices(session: Session, model: str, now: datetime, stale_s: float) -> list[tuple[int, int]]:
    """(memory per device, devices) of each live worker serving `model`; empty when none is live."""
    live = session.execute(_live_workers, {"since": now - timedelta(seconds=stale_s)})
    return [(w.memory_total_bytes, w.devices) for w in live if model in w.models_served]
