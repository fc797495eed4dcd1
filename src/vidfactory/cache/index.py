"""The result cache's index: every SQL statement of the cache lives here.

A completed job is indexed (its fingerprint, its shape, and the key of its prompt's canonical form) in
the transaction that completes it. A lookup finds the newest completed clip of the same fingerprint
(`exact`), or else, for `similar`, of the same canonical form in the same shape: both are index hits.
Only the caller's own clips are candidates unless the operator shares the cache; a clip carries its
tenant's brand mark, so a branded tenant's clips are never shared, and a branded tenant is served only its
own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, delete, or_, select
from sqlalchemy.orm import Session

from vidfactory.cache.keys import similar_key
from vidfactory.db.models import CacheEntry, Job, Tenant

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
    similar = similar_key(job.cache_shape_key, job.prompt)
    session.add(CacheEntry(job_id=job.id, tenant_id=job.tenant_id, fingerprint=job.cache_fingerprint,
                           shape_key=job.cache_shape_key, similar_key=None if similar is None else similar[0],
                           prompt="" if similar is None else similar[1]))
    session.flush()


def forget_tenant(session: Session, tenant_id: str) -> None:
    """Drop a tenant's clips from the index (its brand changed: they carry the old mark). The clips stay."""
    session.execute(delete(CacheEntry).where(CacheEntry.tenant_id == tenant_id))


def _shares(session: Session, tenant_id: str, shared: bool) -> bool:
    """Whether this tenant's lookup takes other tenants' clips: the operator shares the cache and the
    tenant has no brand."""
    return shared and session.scalar(select(Tenant.brand).where(Tenant.id == tenant_id)) is None


@functools.cache
def _candidates(key: str, shared: bool) -> Select:
    """The newest clips whose `key` column (fingerprint, similar_key) matches: the tenant's own, or with
    `shared` every unbranded tenant's too. Built once each: every submission looks up."""
    scope = CacheEntry.tenant_id == bindparam("tenant_id")
    if shared:
        scope = or_(scope, CacheEntry.tenant_id.in_(select(Tenant.id).where(Tenant.brand.is_(None))))
    return (select(CacheEntry.job_id).where(getattr(CacheEntry, key) == bindparam("key"), scope)
            .order_by(CacheEntry.created_at.desc()).limit(bindparam("candidates_max")))


def _servable(session: Session, job_ids: list[str]) -> set[str]:
    """Which of these jobs may serve a clip: completed and not deleted. A second, primary-key query
    rather than a join, so that neither database plans the lookup as a scan of completed jobs."""
    if not job_ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status == "completed",
                                                    Job.deleted_at.is_(None))))


def _newest_servable(session: Session, key: str, value: str, tenant_id: str, shared: bool,
                     candidates_max: int) -> str | None:
    job_ids = list(session.scalars(_candidates(key, shared), {"key": value, "tenant_id": tenant_id,
                                                              "candidates_max": candidates_max}))
    servable = _servable(session, job_ids)
    return next((job_id for job_id in job_ids if job_id in servable), None)


def lookup(session: Session, *, tenant_id: str, mode: str, fingerprint: str, shape_key: str, prompt: str,
           candidates_max: int, shared: bool = False) -> CacheHit | None:
    """A hit's score is 1.0: `similar` serves only a prompt with the same canonical form."""
    assert mode in modes, f"unknown cache mode {mode!r}"
    assert candidates_max >= 1
    if mode == "off":
        return None
    shares = _shares(session, tenant_id, shared)
    hit = _newest_servable(session, "fingerprint", fingerprint, tenant_id, shares, candidates_max)
    if hit is None and mode == "similar":
        similar = similar_key(shape_key, prompt)
        if similar is not None:
            hit = _newest_servable(session, "similar_key", similar[0], tenant_id, shares, candidates_max)
    return None if hit is None else CacheHit(job_id=hit, score=1.0)
