"""The result cache's index: every SQL statement of the cache lives here.

A completed job is indexed (its fingerprint, its shape, its normalised prompt and LSH band keys) in the
transaction that completes it. A lookup finds the newest completed clip of the same fingerprint
(`exact`), or else, for `similar`, the best-scoring prompt among the candidates sharing a band key of the
same shape. Only the caller's own clips are candidates unless the operator shares the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.cache.keys import band_keys, jaccard, normalise, shingles
from vidfactory.db.models import CacheBand, CacheEntry, Job

__all__ = ["CacheHit", "index_job", "lookup"]

modes = ("exact", "similar", "off")


@dataclass(frozen=True)
class CacheHit:
    job_id: str
    score: float


def index_job(session: Session, job: Job) -> None:
    """Make a completed job's clip servable. Jobs that were themselves served from the cache, or that
    carry no fingerprint, are not indexed (their clip is already in the index, or cannot be matched)."""
    if job.cache_fingerprint is None or job.cache_shape_key is None or job.cache_hit_job_id is not None:
        return
    prompt = normalise(job.prompt)
    session.add(CacheEntry(job_id=job.id, tenant_id=job.tenant_id, fingerprint=job.cache_fingerprint,
                           shape_key=job.cache_shape_key, prompt=prompt))
    session.flush()
    grams = shingles(prompt)
    if grams:
        session.add_all(CacheBand(band_key=key, job_id=job.id) for key in set(band_keys(job.cache_shape_key, grams)))
        session.flush()


def _servable(statement, tenant_id: str, shared: bool):
    statement = statement.join(Job, Job.id == CacheEntry.job_id).where(
        Job.status == "completed", Job.deleted_at.is_(None))
    return statement if shared else statement.where(CacheEntry.tenant_id == tenant_id)


def lookup(session: Session, *, tenant_id: str, mode: str, fingerprint: str, shape_key: str, prompt: str,
           similarity_min: float, candidates_max: int, shared: bool = False) -> CacheHit | None:
    assert mode in modes, f"unknown cache mode {mode!r}"
    assert 0.0 < similarity_min <= 1.0 and candidates_max >= 1
    if mode == "off":
        return None
    exact = session.scalar(_servable(select(CacheEntry.job_id), tenant_id, shared)
                           .where(CacheEntry.fingerprint == fingerprint)
                           .order_by(CacheEntry.created_at.desc()).limit(1))
    if exact is not None:
        return CacheHit(job_id=exact, score=1.0)
    if mode == "exact":
        return None
    grams = shingles(normalise(prompt))
    if not grams:
        return None
    keys = band_keys(shape_key, grams)
    candidate_ids = select(CacheBand.job_id).where(CacheBand.band_key.in_(keys)).distinct()
    candidates = session.execute(
        _servable(select(CacheEntry.job_id, CacheEntry.prompt, CacheEntry.created_at), tenant_id, shared)
        .where(CacheEntry.job_id.in_(candidate_ids), CacheEntry.shape_key == shape_key)
        .order_by(CacheEntry.created_at.desc()).limit(candidates_max)).all()
    scored = [(jaccard(grams, shingles(row.prompt)), row.created_at, row.job_id) for row in candidates]
    best = max(scored, default=None)
    if best is None or best[0] < similarity_min:
        return None
    return CacheHit(job_id=best[2], score=round(best[0], 4))
