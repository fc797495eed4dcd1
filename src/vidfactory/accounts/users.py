"""Users: create, list, disable, unlock, passwords. Every change is audited in the caller's transaction."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.accounts.passwords import PasswordHasher, generated_password
from vidfactory.billing import audit
from vidfactory.db.models import ConsoleSession, Tenant, User
from vidfactory.db.types import utcnow
from vidfactory.tenancy import write_private

__all__ = ["AccountError", "AccountLocked", "BadCredentials", "InvalidPassword", "UserExists", "change_password",
           "create_user", "demo_user", "disable_user", "end_sessions", "find_user", "list_users", "operator_roles", "password_chars_max",
           "password_chars_min", "reset_password", "revoke_user_sessions", "roles", "tenant_roles", "unlock_user", "users_page"]

tenant_roles = ("owner", "member", "viewer")
operator_roles = ("operator", "reviewer")
roles = tenant_roles + operator_roles
email_chars_max = 254
password_chars_min = 10
password_chars_max = 200
email_pattern = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(Exception):
    """A request about a user that cannot be done; `param` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UserExists(AccountError):
    pass


class InvalidPassword(AccountError):
    pass


class BadCredentials(AccountError):
    """Unknown email, wrong password or disabled account: one answer for all three (no account probing)."""


class AccountLocked(AccountError):
    """Too many failed sign-ins; an operator unlocks the account."""


def _normal_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > email_chars_max or not email_pattern.match(email):
        raise AccountError(f"{email!r} is not an email address", "email")
    return email


def check_password_rules(password: str) -> None:
    if not password_chars_min <= len(password) <= password_chars_max:
        raise InvalidPassword(f"a password has {password_chars_min}–{password_chars_max} characters", "password")


def create_user(session: Session, hasher: PasswordHasher, email: str, role: str, password: str,
                tenant_id: str | None = None, actor: str = audit.system_actor) -> User:
    """A tenant role needs a tenant; an operator role must have none."""
    email = _normal_email(email)
    if role not in roles:
        raise AccountError(f"role must be one of {', '.join(roles)}", "role")
    if (role in tenant_roles) != (tenant_id is not None):
        raise AccountError(f"role {role} {'needs' if role in tenant_roles else 'takes no'} tenant", "tenant")
    if tenant_id is not None and session.get(Tenant, tenant_id) is None:
        raise AccountError(f"no tenant {tenant_id!r}", "tenant")
    check_password_rules(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserExists(f"a user with email {email} exists", "email")
    user = User(id=f"usr_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, email=email, role=role,
                password_hash=hasher.hash(password))
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # created meanwhile by another request; the caller's transaction rolls back
        raise UserExists(f"a user with email {email} exists", "email") from exc
    audit.append(session, "user.created", f"user:{user.id}", {"email": email, "role": role, "tenant_id": tenant_id},
                 actor)
    return user


def find_user(session: Session, id_or_email: str) -> User:
    user = session.get(User, id_or_email) or session.scalar(
        select(User).where(User.email == id_or_email.strip().lower()))
    if user is None:
        raise AccountError(f"no user {id_or_email!r}", "user")
    return user


def list_users(session: Session, tenant_id: str | None = None) -> list[User]:
    """Every user (or one tenant's), oldest first."""
    query = select(User).order_by(User.created_at, User.id)
    if tenant_id is not None:
        query = query.where(User.tenant_id == tenant_id)
    return list(session.scalars(query))


def users_page(session: Session, after: str | None, limit: int) -> tuple[list[User], bool]:
    """Up to `limit` users, oldest first, after the user with id `after` (None or unknown: from the start);
    and whether more follow."""
    query = select(User).order_by(User.created_at, User.id)
    cursor = None if after is None else session.get(User, after)
    if cursor is not None:
        query = query.where(or_(User.created_at > cursor.created_at,
                                and_(User.created_at == cursor.created_at, User.id > cursor.id)))
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def end_sessions(session: Session, user_id: str, actor: str = audit.system_actor) -> int:
    """An operator signs the user out everywhere (audited with how many sessions ended); they may sign in
    again with their password."""
    user = find_user(session, user_id)
    revoked = revoke_user_sessions(session, user.id)
    audit.append(session, "user.sessions_revoked", f"user:{user.id}", {"sessions_revoked": revoked}, actor)
    return revoked


def revoke_user_sessions(session: Session, user_id: str, keep_session_id: str | None = None) -> int:
    query = update(ConsoleSession).where(ConsoleSession.user_id == user_id, ConsoleSession.revoked_at.is_(None))
    if keep_session_id is not None:
        query = query.where(ConsoleSession.id != keep_session_id)
    return session.execute(query.values(revoked_at=utcnow()).execution_options(synchronize_session=False)).rowcount


def disable_user(session: Session, user_id: str, actor: str = audit.system_actor) -> User:
    """No more sign-ins, and every open session ends now. Disabling twice is a no-op (audited once)."""
    user = find_user(session, user_id)
    changed = session.execute(update(User).where(User.id == user.id, User.disabled_at.is_(None))
                              .values(disabled_at=utcnow()).execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        revoked = revoke_user_sessions(session, user.id)
        audit.append(session, "user.disabled", f"user:{user.id}", {"sessions_revoked": revoked}, actor)
    session.refresh(user)
    return user


def unlock_user(session: Session, user_id: str, actor: str = audit.system_actor) -> User:
    """Clear a lock after failed sign-ins (a no-op when not locked)."""
    user = find_user(session, user_id)
    changed = session.execute(update(User).where(User.id == user.id, User.locked_at.is_not(None))
                              .values(locked_at=None, failed_signins=0).execution_options(synchronize_session=False))
    if changed.rowcount == 1:
        audit.append(session, "user.unlocked", f"user:{user.id}", {}, actor)
    session.refresh(user)
    return user


def change_password(session: Session, hasher: PasswordHasher, user_id: str, current: str, new: str,
                    keep_session_id: str | None = None) -> User:
    """The user's own change: the current password is checked, every other session of theirs ends."""
    user = find_user(session, user_id)
    if not hasher.verify(user.password_hash, current):
        raise BadCredentials("the current password is not right", "current_password")
    check_password_rules(new)
    _set_password(session, hasher, user, new)
    revoked = revoke_user_sessions(session, user.id, keep_session_id)
    audit.append(session, "user.password_changed", f"user:{user.id}", {"sessions_revoked": revoked},
                 f"user:{user.id}")
    return user


def reset_password(session: Session, hasher: PasswordHasher, user_id: str, actor: str = audit.system_actor
                   ) -> tuple[User, str]:
    """An operator's reset: a new generated password (shown once), the account unlocked, every session ended."""
    user = find_user(session, user_id)
    password = generated_password()
    _set_password(session, hasher, user, password)
    user.locked_at, user.failed_signins = None, 0
    revoked = revoke_user_sessions(session, user.id)
    session.flush()
    audit.append(session, "user.password_reset", f"user:{user.id}", {"sessions_revoked": revoked}, actor)
    return user, password


def _set_password(session: Session, hasher: PasswordHasher, user: User, password: str) -> None:
    user.password_hash = hasher.hash(password)
    user.password_changed_at = utcnow()
    session.flush()


demo_email = "demo@vidfactory.example"
demo_password_file = "demo_password"


def demo_user(session: Session, hasher: PasswordHasher, data_dir: Path, tenant_id: str) -> tuple[str, str]:
    """The demo tenant's owner and password, the same on every call: the password is kept in
    data_dir/demo_password (mode 0600). A stored password that no longer signs the user in (changed,
    another database) is replaced by a new one."""
    path = data_dir / demo_password_file
    user = session.scalar(select(User).where(User.email == demo_email))
    stored = path.read_text().strip() if path.is_file() else None
    if user is not None and stored is not None and hasher.verify(user.password_hash, stored):
        return demo_email, stored
    if user is None:
        password = generated_password()
        create_user(session, hasher, demo_email, "owner", password, tenant_id)
    else:
        _, password = reset_password(session, hasher, user.id)
    write_private(path, password)
    return demo_email, password
