"""Browser sessions: a random token in an HttpOnly cookie, its SHA-256 in the database; revocable one by one
or all of a user's at once. The CSRF token of a form is derived from the session's token, so it is valid
for that session only and needs nothing more stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vidfactory.accounts.passwords import PasswordHasher
from vidfactory.accounts.users import AccountError, AccountLocked, BadCredentials, operator_roles
from vidfactory.billing import audit
from vidfactory.db.models import ConsoleSession, Tenant, User
from vidfactory.db.types import utcnow

__all__ = ["Principal", "SignIn", "csrf_matches", "csrf_token", "revoke_session", "session_cookie", "sign_in",
           "signed_in"]

session_token_bytes = 32
session_cookie = "vf_session"


@dataclass(frozen=True)
class Principal:
    """Who is signed in, on every console request."""

    user_id: str
    email: str
    role: str
    tenant_id: str | None  # None for operators and reviewers
    tenant_name: str | None
    session_id: str

    @property
    def is_operator(self) -> bool:
        return self.role in operator_roles

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


@dataclass(frozen=True)
class SignIn:
    """The outcome: a principal and the cookie's token, or the error to show (its failure is recorded)."""

    principal: Principal | None = None
    token: str | None = None
    error: AccountError | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The forms' token for the session whose cookie holds `session_token`."""
    return hmac.new(session_token.encode(), b"vidfactory-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, sent: str) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(session_token), sent)


def _principal(user: User, tenant_name: str | None, session_id: str) -> Principal:
    return Principal(user_id=user.id, email=user.email, role=user.role, tenant_id=user.tenant_id,
                     tenant_name=tenant_name, session_id=session_id)


def sign_in(session: Session, hasher: PasswordHasher, email: str, password: str, *, ttl_s: int,
            failures_max: int) -> SignIn:
    """Check the password and open a session. A wrong password counts against the account; at
    `failures_max` in a row it is locked (audited) and even the right password is refused until an
    operator unlocks it. The caller commits either way, so failures are kept."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        hasher.dummy_verify(password)
        return SignIn(error=BadCredentials("the email or password is not right"))
    if not hasher.verify(user.password_hash, password):
        _count_failure(session, user, failures_max)
        return SignIn(error=BadCredentials("the email or password is not right"))
    if user.disabled_at is not None:
        return SignIn(error=BadCredentials("the email or password is not right"))
    if user.locked_at is not None:
        return SignIn(error=AccountLocked("this account is locked after repeated failed sign-ins; "
                                          "an operator can unlock it"))
    user.failed_signins = 0
    token = secrets.token_urlsafe(session_token_bytes)
    now = utcnow()
    row = ConsoleSession(id=f"ses_{uuid.uuid4().hex[:20]}", user_id=user.id, token_sha256=_digest(token),
                         created_at=now, expires_at=now + timedelta(seconds=ttl_s))
    session.add(row)
    session.flush()
    audit.append(session, "user.signed_in", f"user:{user.id}", {"session_id": row.id}, f"user:{user.id}")
    tenant_name = None if user.tenant_id is None else session.get(Tenant, user.tenant_id).name
    return SignIn(principal=_principal(user, tenant_name, row.id), token=token)


def _count_failure(session: Session, user: User, failures_max: int) -> None:
    """One more failure, counted in the database (two replicas' failures add up), locking at the limit."""
    session.execute(update(User).where(User.id == user.id).values(failed_signins=User.failed_signins + 1)
                    .execution_options(synchronize_session=False))
    locked = session.execute(update(User).where(User.id == user.id, User.locked_at.is_(None),
                                                User.failed_signins >= failures_max)
                             .values(locked_at=utcnow()).execution_options(synchronize_session=False))
    if locked.rowcount == 1:
        audit.append(session, "user.locked", f"user:{user.id}", {"failed_signins": failures_max})
    session.refresh(user)


def signed_in(session: Session, token: str) -> Principal | None:
    """The principal of a live session: not revoked, not expired, its user neither disabled nor locked."""
    row = session.execute(
        select(ConsoleSession, User).join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_sha256 == _digest(token), ConsoleSession.revoked_at.is_(None),
               ConsoleSession.expires_at > utcnow(), User.disabled_at.is_(None), User.locked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    console_session, user = row
    tenant_name = None if user.tenant_id is None else session.get(Tenant, user.tenant_id).name
    return _principal(user, tenant_name, console_session.id)


def revoke_session(session: Session, session_id: str, actor: str = audit.system_actor) -> bool:
    """End one session (signing out, or an operator's revocation); False when it was over already."""
    row = session.get(ConsoleSession, session_id)
    if row is None:
        return False
    changed = session.execute(update(ConsoleSession).where(ConsoleSession.id == session_id,
                                                           ConsoleSession.revoked_at.is_(None))
                              .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        audit.append(session, "user.session_revoked", f"user:{row.user_id}", {"session_id": session_id}, actor)
        return True
    return False
