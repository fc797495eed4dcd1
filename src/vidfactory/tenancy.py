"""Tenants, plans and API keys. Keys are shown once and stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.billing import audit, ledger
from vidfactory.db.models import ApiKey, Plan, Tenant
from vidfactory.db.types import utcnow
from vidfactory.settings import Settings

__all__ = [
    "Caller",
    "InvalidPlan",
    "PlanExists",
    "PlanTerms",
    "TenancyError",
    "TenantExists",
    "TenantSuspended",
    "authenticate",
    "check_not_suspended",
    "console_caller",
    "change_plan",
    "create_key",
    "create_plan",
    "create_tenant",
    "demo_key",
    "ensure_admin_token",
    "default_plans",
    "ensure_plans",
    "find_tenant",
    "hash_key",
    "key_use_due",
    "key_use_resolution_s",
    "list_keys",
    "list_tenants",
    "note_key_used",
    "plan_fields",
    "plans_with_tenants",
    "resume_tenant",
    "revoke_key",
    "revoke_keys",
    "suspend_tenant",
    "tenants_page",
    "update_plan",
    "write_private",
]

key_prefix = "vf_"
tenant_name_chars_max = 100
suspended_reason_chars_max = 200
demo_key_label = "demo"
demo_key_file = "demo_key"
key_use_resolution_s = 60  # a key's last use is written at most once a minute, not on every request


class TenancyError(Exception):
    pass


class TenantExists(TenancyError):
    pass


class PlanExists(TenancyError):
    pass


class TenantSuspended(TenancyError):
    """The tenant is suspended: it may not submit new work or get new keys."""


class InvalidPlan(TenancyError):
    """Limits that contradict each other; `param` names the field to change."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# What an admin may set on a plan (its id is fixed: tenants refer to it).
plan_fields = ("priority", "requests_per_minute", "tenant_requests_per_minute", "read_requests_per_minute",
               "tenant_read_requests_per_minute", "concurrent_jobs", "active_jobs_max", "step_cache_allowed",
               "review_deadline_s", "review_deadline_action", "training_samples_max", "training_steps_max",
               "concurrent_trainings", "retention_days")


def default_plans() -> list[Plan]:
    return [
        Plan(id="free", priority=0, requests_per_minute=30, concurrent_jobs=1, tenant_requests_per_minute=60,
             read_requests_per_minute=300, tenant_read_requests_per_minute=600, active_jobs_max=4,
             training_samples_max=20, training_steps_max=500, concurrent_trainings=1, retention_days=7),
        Plan(id="pro", priority=5, requests_per_minute=120, concurrent_jobs=4, tenant_requests_per_minute=300,
             read_requests_per_minute=1200, tenant_read_requests_per_minute=3000, active_jobs_max=50,
             training_samples_max=100, training_steps_max=3000, concurrent_trainings=2, retention_days=30),
        Plan(id="enterprise", priority=10, requests_per_minute=600, concurrent_jobs=16,
             tenant_requests_per_minute=1500, read_requests_per_minute=6000,
             tenant_read_requests_per_minute=15000, active_jobs_max=200, training_samples_max=500,
             training_steps_max=10000, concurrent_trainings=4, retention_days=90),
    ]


def ensure_plans(session: Session) -> None:
    for plan in default_plans():
        if session.get(Plan, plan.id) is None:
            session.add(plan)
    session.flush()


def _check_plan(limits: dict[str, Any]) -> None:
    if limits["active_jobs_max"] < limits["concurrent_jobs"]:
        raise InvalidPlan(f"active_jobs_max ({limits['active_jobs_max']}) must be at least concurrent_jobs "
                          f"({limits['concurrent_jobs']}): running jobs count as active", "active_jobs_max")


def plans_with_tenants(session: Session, plan_id: str | None = None) -> list[tuple[Plan, int]]:
    """Every plan (or the one named), by id, with how many tenants it has."""
    counts = (select(Tenant.plan_id, func.count().label("tenants")).group_by(Tenant.plan_id).subquery())
    query = (select(Plan, func.coalesce(counts.c.tenants, 0)).outerjoin(counts, counts.c.plan_id == Plan.id)
             .order_by(Plan.id))
    if plan_id is not None:
        query = query.where(Plan.id == plan_id)
    return [(plan, int(tenants)) for plan, tenants in session.execute(query)]


def create_plan(session: Session, plan_id: str, limits: dict[str, Any],
                actor: str = audit.system_actor) -> Plan:
    """A new plan with every limit set (audited)."""
    assert set(limits) == set(plan_fields), f"a plan needs exactly {plan_fields}"
    if session.get(Plan, plan_id) is not None:
        raise PlanExists(f"plan {plan_id!r} already exists")
    _check_plan(limits)
    plan = Plan(id=plan_id, **limits)
    session.add(plan)
    try:
        session.flush()
    except IntegrityError as exc:  # another admin created it meanwhile; the caller's transaction rolls back
        raise PlanExists(f"plan {plan_id!r} already exists") from exc
    audit.append(session, "plan.created", f"plan:{plan_id}", dict(limits), actor)
    return plan


def update_plan(session: Session, plan_id: str, changes: dict[str, Any], actor: str = audit.system_actor
                ) -> Plan | None:
    """Change some of a plan's limits; None when there is no such plan. Audited with each field's old and
    new value (nothing is recorded when nothing changes). Jobs already submitted keep what they copied from
    the plan (priority, concurrency, step-cache permission); the rate and active-job limits apply to the
    next request."""
    assert set(changes) <= set(plan_fields), f"unknown plan fields: {set(changes) - set(plan_fields)}"
    # Locked: two admins' changes apply one after the other, each checked against the other's result.
    plan = session.scalars(select(Plan).where(Plan.id == plan_id).with_for_update()
                           .execution_options(populate_existing=True)).one_or_none()
    if plan is None:
        return None
    current = {field: getattr(plan, field) for field in plan_fields}
    _check_plan({**current, **changes})
    changed = {field: value for field, value in changes.items() if current[field] != value}
    if not changed:
        return plan
    for field, value in changed.items():
        setattr(plan, field, value)
    session.flush()
    audit.append(session, "plan.updated", f"plan:{plan_id}",
                 {field: {"from": current[field], "to": value} for field, value in changed.items()}, actor)
    return plan


@dataclass(frozen=True)
class Caller:
    """Who is calling: resolved from an API key on every request."""

    tenant_id: str
    api_key_id: str | None  # None: one of the tenant's people, through the console
    plan: str
    priority: int
    requests_per_minute: int  # this key's writes (POST, PATCH, DELETE)
    concurrent_jobs: int
    tenant_requests_per_minute: int = 60  # all the tenant's keys' writes together
    active_jobs_max: int = 8  # queued + running
    read_requests_per_minute: int = 300  # this key's reads (GET, HEAD, OPTIONS)
    tenant_read_requests_per_minute: int = 600  # all the tenant's keys' reads together
    key_last_used_at: datetime | None = None  # as read when the key was checked


@dataclass(frozen=True)
class PlanTerms:
    """What the tenant's plan lets new work do, as read when the work is admitted."""

    step_cache_allowed: bool


def hash_key(key: str) -> str:
    # API keys carry 256 bits of randomness, so a plain digest is enough (no password stretching).
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, name: str, plan: str = "free", actor: str = audit.system_actor) -> Tenant:
    name = name.strip()
    if not 1 <= len(name) <= tenant_name_chars_max:
        raise TenancyError(f"tenant name must be 1–{tenant_name_chars_max} characters")
    if session.get(Plan, plan) is None:
        raise TenancyError(f"unknown plan {plan!r}")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantExists(f"tenant {name!r} already exists")
    tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:20]}", name=name, plan_id=plan)
    session.add(tenant)
    session.flush()
    ledger.ensure_tenant_account(session, tenant.id)
    audit.append(session, "tenant.created", f"tenant:{tenant.id}", {"name": name, "plan": plan}, actor)
    return tenant


def find_tenant(session: Session, id_or_name: str) -> Tenant:
    # NUL is in no tenant's id or name, and PostgreSQL refuses it in a query outright.
    tenant = None if "\x00" in id_or_name else (
        session.get(Tenant, id_or_name) or session.scalar(select(Tenant).where(Tenant.name == id_or_name)))
    if tenant is None:
        raise TenancyError(f"no tenant {id_or_name!r}")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    """Every tenant, oldest first."""
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)))


def tenants_page(session: Session, after: str | None, limit: int) -> tuple[list[Tenant], bool]:
    """Up to `limit` tenants, oldest first, after the tenant with id `after` (None: from the start; an
    unknown id: from the start too); and whether more follow."""
    query = select(Tenant).order_by(Tenant.created_at, Tenant.id)
    cursor = None if after is None else session.get(Tenant, after)
    if cursor is not None:
        query = query.where(or_(Tenant.created_at > cursor.created_at,
                                and_(Tenant.created_at == cursor.created_at, Tenant.id > cursor.id)))
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def change_plan(session: Session, tenant_id: str, plan_id: str, actor: str = audit.system_actor) -> Tenant:
    """Move a tenant to another plan (audited with the old and new plan; nothing recorded when unchanged).
    Its next request gets the new plan's limits; jobs already submitted keep what they copied."""
    tenant = session.scalars(select(Tenant).where(Tenant.id == tenant_id).with_for_update()
                             .execution_options(populate_existing=True)).one_or_none()
    if tenant is None:
        raise TenancyError(f"no tenant {tenant_id!r}")
    if session.get(Plan, plan_id) is None:
        raise TenancyError(f"unknown plan {plan_id!r}")
    if tenant.plan_id == plan_id:
        return tenant
    previous = tenant.plan_id
    tenant.plan_id = plan_id
    session.flush()
    audit.append(session, "tenant.plan_changed", f"tenant:{tenant_id}", {"from": previous, "to": plan_id}, actor)
    return tenant


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    """A tenant's API keys, revoked ones included, oldest first: ids and prefixes, never a key."""
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)
                                .order_by(ApiKey.created_at, ApiKey.id)))


def create_key(session: Session, tenant_id: str, label: str = "", actor: str = audit.system_actor
               ) -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key, which is never stored or shown again. A suspended
    tenant gets none (TenantSuspended)."""
    check_not_suspended(session, tenant_id)
    plaintext = key_prefix + secrets.token_urlsafe(32)
    row = ApiKey(id=f"key_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, label=label[:100],
                 prefix=plaintext[:10], key_sha256=hash_key(plaintext))
    session.add(row)
    session.flush()
    # The prefix identifies the key to an operator; the key itself (and its digest) stay out of the log.
    audit.append(session, "api_key.created", f"api_key:{row.id}", {"tenant_id": tenant_id, "prefix": row.prefix,
                                                                   "label": row.label}, actor)
    return row, plaintext


_tenant_terms = (select(Tenant.suspended_at, Tenant.suspended_reason, Plan.step_cache_allowed)
                 .join(Plan, Plan.id == Tenant.plan_id).where(Tenant.id == bindparam("tenant_id")))


def check_not_suspended(session: Session, tenant_id: str) -> PlanTerms:
    """Raises TenantSuspended; called where new work or new keys are made, inside their transaction.
    Returns what the tenant's plan lets that work do, read in the same statement."""
    row = session.execute(_tenant_terms, {"tenant_id": tenant_id}).one_or_none()
    assert row is not None, f"no tenant {tenant_id}"
    if row.suspended_at is not None:
        raise TenantSuspended(f"tenant {tenant_id} is suspended ({row.suspended_reason}); what was queued "
                              "or running finishes, but nothing new is accepted")
    return PlanTerms(step_cache_allowed=row.step_cache_allowed)


def suspend_tenant(session: Session, tenant_id: str, reason: str, actor: str = audit.system_actor) -> Tenant:
    """Suspend: no new submissions (videos, regenerations, batches) and no new keys. What is queued or
    running finishes and settles as usual; reads, downloads, cancels and credits go on. Suspending a
    suspended tenant changes nothing (audited once)."""
    reason = reason.strip()
    if not 1 <= len(reason) <= suspended_reason_chars_max:
        raise TenancyError(f"a suspension needs a reason of 1–{suspended_reason_chars_max} characters")
    tenant = find_tenant(session, tenant_id)
    changed = session.execute(update(Tenant).where(Tenant.id == tenant.id, Tenant.suspended_at.is_(None))
                              .values(suspended_at=utcnow(), suspended_reason=reason)
                              .execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        audit.append(session, "tenant.suspended", f"tenant:{tenant.id}", {"reason": reason}, actor)
    session.refresh(tenant)
    return tenant


def resume_tenant(session: Session, tenant_id: str, actor: str = audit.system_actor) -> Tenant:
    """Lift a suspension (a no-op for an active tenant)."""
    tenant = find_tenant(session, tenant_id)
    changed = session.execute(update(Tenant).where(Tenant.id == tenant.id, Tenant.suspended_at.is_not(None))
                              .values(suspended_at=None, suspended_reason=None)
                              .execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        audit.append(session, "tenant.resumed", f"tenant:{tenant.id}", {}, actor)
    session.refresh(tenant)
    return tenant


def revoke_keys(session: Session, tenant_id: str, label: str, actor: str = audit.system_actor) -> int:
    revoked = list(session.scalars(
        update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.label == label, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow()).returning(ApiKey.id).execution_options(synchronize_session=False)))
    for key_id in revoked:
        audit.append(session, "api_key.revoked", f"api_key:{key_id}", {"tenant_id": tenant_id}, actor)
    return len(revoked)


def revoke_key(session: Session, key_id: str, actor: str = audit.system_actor, tenant_id: str | None = None
               ) -> ApiKey | None:
    """Revoke one key by id; None when there is no such key (or, with `tenant_id`, when it is another
    tenant's). Revoking twice is a no-op (audited once)."""
    row = session.get(ApiKey, key_id)
    if row is None or tenant_id not in (None, row.tenant_id):
        return None
    result = session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    if result.rowcount == 1:
        audit.append(session, "api_key.revoked", f"api_key:{key_id}", {"tenant_id": row.tenant_id}, actor)
    session.refresh(row)
    return row


# Every request runs this, so it is built once: building a statement and its cache key costs about as much
# CPU as PostgreSQL's driver spends sending it.
_caller_by_key = (
    select(ApiKey.tenant_id, ApiKey.id.label("api_key_id"), ApiKey.last_used_at, Plan.id.label("plan_id"),
           Plan.priority, Plan.requests_per_minute, Plan.concurrent_jobs, Plan.tenant_requests_per_minute,
           Plan.active_jobs_max, Plan.read_requests_per_minute, Plan.tenant_read_requests_per_minute)
    .join(Tenant, Tenant.id == ApiKey.tenant_id).join(Plan, Plan.id == Tenant.plan_id)
    .where(ApiKey.key_sha256 == bindparam("key_sha256"), ApiKey.revoked_at.is_(None)))


def authenticate(session: Session, key: str) -> Caller | None:
    # Columns, not ORM objects: every request authenticates, and a caller needs no identity map.
    found = session.execute(_caller_by_key, {"key_sha256": hash_key(key)}).one_or_none()
    if found is None:
        return None
    return Caller(tenant_id=found.tenant_id, api_key_id=found.api_key_id, key_last_used_at=found.last_used_at,
                  plan=found.plan_id, priority=found.priority,
                  requests_per_minute=found.requests_per_minute, concurrent_jobs=found.concurrent_jobs,
                  tenant_requests_per_minute=found.tenant_requests_per_minute,
                  active_jobs_max=found.active_jobs_max, read_requests_per_minute=found.read_requests_per_minute,
                  tenant_read_requests_per_minute=found.tenant_read_requests_per_minute)


def key_use_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a key's last use is older than key_use_resolution_s (so this use should be written)."""
    return last_used_at is None or now - last_used_at >= timedelta(seconds=key_use_resolution_s)


def note_key_used(session: Session, key_id: str, now: datetime) -> bool:
    """Record the key's use at `now`, unless another request recorded one within key_use_resolution_s
    (guarded by that previous value, so concurrent requests write once). True when this one wrote."""
    stale = now - timedelta(seconds=key_use_resolution_s)
    result = session.execute(update(ApiKey).where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None),
                                                                           ApiKey.last_used_at <= stale))
                             .values(last_used_at=now).execution_options(synchronize_session=False))
    return result.rowcount == 1


def console_caller(session: Session, tenant_id: str) -> Caller:
    """The tenant as its people act through the console: its plan's limits, and no API key."""
    tenant, plan = session.execute(select(Tenant, Plan).join(Plan, Plan.id == Tenant.plan_id)
                                   .where(Tenant.id == tenant_id)).one()
    return Caller(tenant_id=tenant.id, api_key_id=None, plan=plan.id, priority=plan.priority,
                  requests_per_minute=plan.requests_per_minute, concurrent_jobs=plan.concurrent_jobs,
                  tenant_requests_per_minute=plan.tenant_requests_per_minute,
                  active_jobs_max=plan.active_jobs_max, read_requests_per_minute=plan.read_requests_per_minute,
                  tenant_read_requests_per_minute=plan.tenant_read_requests_per_minute)


def ensure_admin_token(settings: Settings) -> str:
    """The configured admin token, or one generated once into data_dir/admin_token (mode 0600)."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_dir / "admin_token"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("vfadmin_" + secrets.token_urlsafe(32))
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), never visible with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    staging.replace(path)


def demo_key(session: Session, settings: Settings, tenant_id: str) -> str:
    """The demo tenant's API key, the same on every call: kept in data_dir/demo_key (mode 0600), the one key
    ever stored in plaintext. A stored key that no longer authenticates as the tenant (revoked, another
    database, edited) is replaced by a new one, and the tenant's older demo keys are revoked."""
    path = settings.data_dir / demo_key_file
    if path.is_file():
        stored = path.read_text().strip()
        caller = authenticate(session, stored)
        if caller is not None and caller.tenant_id == tenant_id:
            path.chmod(0o600)
            return stored
    revoke_keys(session, tenant_id, label=demo_key_label)
    _, plaintext = create_key(session, tenant_id, label=demo_key_label)
    write_private(path, plaintext)
    return plaintext
