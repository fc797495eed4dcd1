"""Job phase durations: what a worker spent on each phase of a delivered job, as a JSON log line per phase
and as histogram buckets in the database (`job_phase_buckets`), which `/metrics` exports.

The buckets live in the database, not in the worker's memory, because workers run in other processes and
hosts than the API that Prometheus scrapes, come and go with autoscaling, and are killed: a count kept
in the database is the fleet's, survives restarts and is the same whichever API replica is scraped.

Phases: `wait` (queued and eligible to run, until claimed), `model_load` (only when the job paid a model
switch), `denoise` (up to the last denoising step), `decode` (the VAE decode after it), `postprocess` (QC,
screening, label, watermark, encode, previews), `upload` (storing the files).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from vidfactory.db.models import JobPhaseBucket

__all__ = ["PHASES", "PhaseHistogram", "bucket_bounds_s", "configure_phase_log", "histograms", "log_phases",
           "observe"]

PHASES = ("wait", "model_load", "denoise", "decode", "postprocess", "upload")
# From a tiny CPU job's decode (tens of ms) to a 14B model's 720p denoise on a small GPU (an hour).
bucket_bounds_s = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
infinity = "+Inf"

phase_log = logging.getLogger("vidfactory.phases")


def _le(seconds: float) -> str:
    """The label of the smallest bucket holding `seconds`, written as Prometheus writes bounds."""
    for bound in bucket_bounds_s:
        if seconds <= bound:
            return repr(bound)
    return infinity


def observe(session: Session, model: str, phases: Mapping[str, float]) -> None:
    """Add one job's phases to the histograms: one upsert per phase, in PHASES order (every writer locks
    the rows in the same order, so concurrent workers never deadlock on them)."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    for phase in PHASES:
        if phase not in phases:
            continue
        seconds = max(0.0, phases[phase])
        statement = insert(JobPhaseBucket).values(phase=phase, model=model, le=_le(seconds), jobs=1,
                                                  seconds=seconds)
        session.execute(statement.on_conflict_do_update(
            index_elements=["phase", "model", "le"],
            set_={"jobs": JobPhaseBucket.jobs + 1, "seconds": JobPhaseBucket.seconds + seconds}))


@dataclass(frozen=True)
class PhaseHistogram:
    phase: str
    model: str
    buckets: list[tuple[str, int]]  # cumulative, every bound then "+Inf", as Prometheus exposes them
    sum_s: float


def histograms(session: Session) -> list[PhaseHistogram]:
    """Every (phase, model) histogram recorded so far (a few rows per model: cheap at any job count)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    sums: dict[tuple[str, str], float] = {}
    for row in session.execute(select(JobPhaseBucket.phase, JobPhaseBucket.model, JobPhaseBucket.le,
                                      JobPhaseBucket.jobs, JobPhaseBucket.seconds)):
        key = (row.phase, row.model)
        counts.setdefault(key, {})[row.le] = int(row.jobs)
        sums[key] = sums.get(key, 0.0) + float(row.seconds)
    result = []
    for (phase, model), by_le in sorted(counts.items()):
        running, buckets = 0, []
        for le in [*map(repr, bucket_bounds_s), infinity]:
            running += by_le.get(le, 0)
            buckets.append((le, running))
        result.append(PhaseHistogram(phase, model, buckets, sums[(phase, model)]))
    return result


def log_phases(job_id: str, model: str, worker_id: str, phases: Mapping[str, float]) -> None:
    """One JSON line per phase, for log shippers (the worker's own log says the same in words)."""
    for phase in PHASES:
        if phase in phases:
            phase_log.info(json.dumps({"event": "job.phase", "job_id": job_id, "model": model,
                                       "worker": worker_id, "phase": phase,
                                       "duration_ms": round(phases[phase] * 1000, 2)}, separators=(",", ":")))


def configure_phase_log() -> None:
    """The phase log as bare JSON lines (one object per line, nothing before it), like the request log."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    phase_log.addHandler(handler)
    phase_log.setLevel(logging.INFO)
    phase_log.propagate = False
