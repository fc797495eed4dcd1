"""Tenants, plans and API keys. Keys are shown once and stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vidfactory.billing import audit, ledger
from vidfactory.db.models import ApiKey, Plan, Tenant
from vidfactory.db.types import utcnow
from vidfactory.settings import Settings

__all__ = [
    "Caller",
    "TenancyError",
    "TenantExists",
    "authenticate",
    "create_key",
    "create_tenant",
    "ensure_admin_token",
    "default_plans",
    "ensure_plans",
    "find_tenant",
    "hash_key",
    "revoke_key",
    "revoke_keys",
]

key_prefix = "vf_"
tenant_name_chars_max = 100


class TenancyError(Exception):
    pass


class TenantExists(TenancyError):
    pass


def default_plans() -> list[Plan]:
    return [
        Plan(id="free", priority=0, requests_per_minute=30, concurrent_jobs=1),
        Plan(id="pro", priority=5, requests_per_minute=120, concurrent_jobs=4),
        Plan(id="enterprise", priority=10, requests_per_minute=600, concurrent_jobs=16),
    ]


def ensure_plans(session: Session) -> None:
    for plan in default_plans():
        if session.get(Plan, plan.id) is None:
            session.add(plan)
    session.flush()


@dataclass(frozen=True)
class Caller:
    """Who is calling: resolved from an API key on every request."""

    tenant_id: str
    api_key_id: str
    plan: str
    priority: int
    requests_per_minute: int
    concurrent_jobs: int


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
    tenant = session.get(Tenant, id_or_name) or session.scalar(select(Tenant).where(Tenant.name == id_or_name))
    if tenant is None:
        raise TenancyError(f"no tenant {id_or_name!r}")
    return tenant


def create_key(session: Session, tenant_id: str, label: str = "", actor: str = audit.system_actor
               ) -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key, which is never stored or shown again."""
    plaintext = key_prefix + secrets.token_urlsafe(32)
    row = ApiKey(id=f"key_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, label=label[:100],
                 prefix=plaintext[:10], key_sha256=hash_key(plaintext))
    session.add(row)
    session.flush()
    # The prefix identifies the key to an operator; the key itself (and its digest) stay out of the log.
    audit.append(session, "api_key.created", f"api_key:{row.id}", {"tenant_id": tenant_id, "prefix": row.prefix,
                                                                   "label": row.label}, actor)
    return row, plaintext


def revoke_keys(session: Session, tenant_id: str, label: str, actor: str = audit.system_actor) -> int:
    revoked = list(session.scalars(
        update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.label == label, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow()).returning(ApiKey.id).execution_options(synchronize_session=False)))
    for key_id in revoked:
        audit.append(session, "api_key.revoked", f"api_key:{key_id}", {"tenant_id": tenant_id}, actor)
    return len(revoked)


def revoke_key(session: Session, key_id: str, actor: str = audit.system_actor) -> ApiKey | None:
    """Revoke one key by id; None when there is no such key. Revoking twice is a no-op (audited once)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    result = session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    if result.rowcount == 1:
        audit.append(session, "api_key.revoked", f"api_key:{key_id}", {"tenant_id": row.tenant_id}, actor)
    session.refresh(row)
    return row


def authenticate(session: Session, key: str) -> Caller | None:
    row = session.execute(
        select(ApiKey, Plan).join(Tenant, Tenant.id == ApiKey.tenant_id).join(Plan, Plan.id == Tenant.plan_id)
        .where(ApiKey.key_sha256 == hash_key(key), ApiKey.revoked_at.is_(None))).one_or_none()
    if row is None:
        return None
    api_key, plan = row
    return Caller(tenant_id=api_key.tenant_id, api_key_id=api_key.id, plan=plan.id, priority=plan.priority,
                  requests_per_minute=plan.requests_per_minute, concurrent_jobs=plan.concurrent_jobs)


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
