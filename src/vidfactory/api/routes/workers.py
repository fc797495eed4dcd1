"""/v1/admin/workers: the worker registry — each worker's device, memory, loaded models, load costs and
the jobs it runs now."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from vidfactory.api.deps import AdminDep, ContextDep, SessionDep
from vidfactory.api.render import timestamp
from vidfactory.api.schemas import WorkerList, WorkerPublic
from vidfactory.db.models import RegisteredWorker
from vidfactory.db.types import utcnow
from vidfactory.jobs import workers

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def worker_public(worker: RegisteredWorker, live: bool, current: list[str]) -> WorkerPublic:
    return WorkerPublic(
        id=worker.id, gpu_name=worker.gpu_name, memory_total_bytes=worker.memory_total_bytes,
        memory_free_bytes=worker.memory_free_bytes, devices=worker.devices, models_served=list(worker.models_served),
        models_held=list(worker.models_held), model_load_s=dict(worker.model_load_s), live=live,
        started_at=timestamp(worker.started_at), heartbeat_at=timestamp(worker.heartbeat_at), current_jobs=current)


@router.get("/workers")
def list_workers(session: SessionDep, ctx: ContextDep, _admin: AdminDep) -> WorkerList:
    """Every registered worker; `live`: heard from within `worker_stale_s` (admission counts only these)."""
    cutoff = utcnow() - timedelta(seconds=ctx.settings.worker_stale_s)
    running = workers.current_jobs(session)
    return WorkerList(data=[worker_public(w, w.heartbeat_at >= cutoff, running.get(w.id, []))
                            for w in workers.list_workers(session)])
