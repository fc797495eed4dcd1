"""The result cache's index: every SQL statement of the cache lives here.

A completed job is indexed (its fingerprint, its shape, its normalised prompt and LSH band keys) in the
transaction that completes it. A lookup finds the newest completed clip of the same fingerprint
(`exact`), or else, for `similar`, the best-scoring prompt among the candidates sharing a band key of the
same shape. Only the caller's own clips are candidates unless the operator shares the cache; a clip carries
its tenant's brand mark, so a branded tenant's clips are never shared, and a branded tenant is served only
its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from vidfactory.cache.keys import band_keys, jaccard, normalise, shingles
from vidfactory.db.models import CacheBand, CacheEntry, Job, Tenant

__all__ = ["CacheHit", "forget_tenant", "index_job", "lookup"]

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


def forget_tenant(session: Session, tenant_id: str) -> None:
    """Drop a tenant's clips from the index (its brand changed: they carry the old mark). The clips stay."""
    entries = select(CacheEntry.job_id).where(CacheEntry.tenant_id == tenant_id)
    session.execute(delete(CacheBand).where(CacheBand.job_id.in_(entries)))
    session.execute(delete(CacheEntry).where(CacheEntry.tenant_id == tenant_id))


def _scope(session: Session, tenant_id: str, shared: bool) -> list:
    own = CacheEntry.tenant_id == tenant_id
    if not shared or session.scalar(select(Tenant.brand).where(Tenant.id == tenant_id)) is not None:
        return [own]
    return [or_(own, CacheEntry.tenant_id.in_(select(Tenant.id).where(Tenant.brand.is_(None))))]


def _servable(session: Session, job_ids: list[str]) -> set[str]:
    """Which of these jobs may serve a clip: completed and not deleted. A second, primary-key query
    rather than a join, so that neither database plans the lookup as a scan of completed jobs."""
    if not job_ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status == "completed",
                                                    Job.deleted_at.is_(None))))


def lookup(session: Session, *, tenant_id: str, mode: str, fingerprint: str, shape_key: str, prompt: str,
           similarity_min: float, candidates_max: int, shared: bool = False) -> CacheHit | None:
    assert mode in modes, f"unknown cache mode {mode!r}"
    assert 0.0 < similarity_min <= 1.0 and candidates_max >= 1
    if mode == "off":
        return None
    scope = _scope(session, tenant_id, shared)
    exact = list(session.scalars(select(CacheEntry.job_id).where(CacheEntry.fingerprint == fingerprint, *scope)
                                 .order_by(CacheEntry.created_at.desc()).limit(candidates_max)))
    servable = _servable(session, exact)
    for job_id in exact:
        if job_id in servable:
            return CacheHit(job_id=job_id, score=1.0)
    if mode == "exact":
        return None
    grams = shingles(normalise(prompt))
    if not grams:
        return None
    # The more bands two signatures share, the likelier their prompts are close: score those first.
    shared_bands = func.count()
    candidate_ids = list(session.scalars(
        select(CacheBand.job_id).where(CacheBand.band_key.in_(band_keys(shape_key, grams)))
        .group_by(CacheBand.job_id).order_by(shared_bands.desc(), CacheBand.job_id).limit(candidates_max)))
    if not candidate_ids:
        return None
    candidates = session.execute(
        select(CacheEntry.job_id, CacheEntry.prompt, CacheEntry.created_at)
        .where(CacheEntry.job_id.in_(candidate_ids), CacheEntry.shape_key == shape_key, *scope)).all()
    servable = _servable(session, [row.job_id for row in candidates])
    scored = [(jaccard(grams, shingles(row.prompt)), row.created_at, row.job_id)
              for row in candidates if row.job_id in servable]
    best = max(scored, default=None)
    if best is None or best[0] < similarity_min:
        return None
    return CacheHit(job_id=best[2], score=round(best[0], 4))
