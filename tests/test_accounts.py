"""Console accounts: Argon2id passwords, database sessions that can be revoked, the lock after repeated
failed sign-ins, the operator's unlock and reset, roles bound to tenants, the audit trail of each change,
and the `vidfactory admin user` commands."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from vidfactory.accounts import (
    AccountError,
    AccountLocked,
    BadCredentials,
    PasswordHasher,
    UserExists,
    change_password,
    create_user,
    csrf_token,
    disable_user,
    reset_password,
    revoke_session,
    sign_in,
    signed_in,
    unlock_user,
)
from vidfactory.accounts.sessions import csrf_matches
from vidfactory.api.ratelimit import MemoryLimiter, RedisLimiter, signin_refused
from vidfactory.db.models import AuditEntry, ConsoleSession, User

from conftest import new_tenant
from test_cli import Cli, assert_refused, sessions_for  # noqa: F401  (fixture)

failures_max = 5
password = "correct horse battery"


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=1024)  # Argon2id still; cheap enough for many tests


def _sign_in(sessions, hasher, email: str, secret: str):
    with sessions.begin() as session:
        return sign_in(session, hasher, email, secret, ttl_s=3600, failures_max=failures_max)


def _user(sessions, hasher, role: str = "owner", email: str = "ana@example.com"):
    tenant = new_tenant(sessions)
    with sessions.begin() as session:
        user = create_user(session, hasher, email, role, password, tenant.id, actor="admin")
        return user.id, tenant.id


def _audit_kinds(sessions, user_id: str) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry.kind).where(AuditEntry.subject == f"user:{user_id}")
                                    .order_by(AuditEntry.seq)))


def test_a_session_opens_with_the_password_and_ends_when_revoked(sessions, hasher):
    user_id, tenant_id = _user(sessions, hasher)
    with sessions() as session:
        stored = session.get(User, user_id).password_hash
    assert stored.startswith("$argon2id$") and password not in stored
    assert isinstance(_sign_in(sessions, hasher, "ana@example.com", "wrong password!").error, BadCredentials)
    assert isinstance(_sign_in(sessions, hasher, "nobody@example.com", password).error, BadCredentials)
    done = _sign_in(sessions, hasher, "ANA@example.com ", password)  # emails compare case-insensitively
    assert done.error is None and done.principal.tenant_id == tenant_id and done.principal.role == "owner"
    with sessions() as session:
        assert session.scalar(select(ConsoleSession.token_sha256)) != done.token  # only its digest is stored
        assert signed_in(session, done.token) == done.principal
        assert signed_in(session, done.token + "x") is None
    with sessions.begin() as session:
        assert revoke_session(session, done.principal.session_id, actor=done.principal.actor)
        assert not revoke_session(session, done.principal.session_id)
    with sessions() as session:
        assert signed_in(session, done.token) is None
    assert _audit_kinds(sessions, user_id) == ["user.created", "user.signed_in", "user.session_revoked"]


def test_the_forms_token_belongs_to_one_session(sessions, hasher):
    _user(sessions, hasher)
    first = _sign_in(sessions, hasher, "ana@example.com", password).token
    second = _sign_in(sessions, hasher, "ana@example.com", password).token
    assert csrf_matches(first, csrf_token(first))
    assert not csrf_matches(first, csrf_token(second)) and not csrf_matches(first, "")


def test_five_failures_lock_the_account_until_an_operator_unlocks_it(sessions, hasher):
    user_id, _ = _user(sessions, hasher)
    for _ in range(failures_max):
        assert isinstance(_sign_in(sessions, hasher, "ana@example.com", "not the password").error, BadCredentials)
    locked = _sign_in(sessions, hasher, "ana@example.com", password)
    assert isinstance(locked.error, AccountLocked) and locked.token is None
    with sessions.begin() as session:
        unlock_user(session, user_id, actor="user:operator")
    assert _sign_in(sessions, hasher, "ana@example.com", password).error is None
    kinds = _audit_kinds(sessions, user_id)
    assert kinds.count("user.locked") == 1 and "user.unlocked" in kinds


def test_a_success_resets_the_count_of_failures(sessions, hasher):
    _user(sessions, hasher)
    for _ in range(failures_max - 1):
        _sign_in(sessions, hasher, "ana@example.com", "not the password")
    assert _sign_in(sessions, hasher, "ana@example.com", password).error is None
    for _ in range(failures_max - 1):
        _sign_in(sessions, hasher, "ana@example.com", "not the password")
    assert _sign_in(sessions, hasher, "ana@example.com", password).error is None


def test_disabling_a_user_ends_their_sessions_and_refuses_sign_in(sessions, hasher):
    user_id, _ = _user(sessions, hasher)
    token = _sign_in(sessions, hasher, "ana@example.com", password).token
    with sessions.begin() as session:
        disable_user(session, user_id, actor="cli")
        disable_user(session, user_id, actor="cli")
    with sessions() as session:
        assert signed_in(session, token) is None
    assert isinstance(_sign_in(sessions, hasher, "ana@example.com", password).error, BadCredentials)
    assert _audit_kinds(sessions, user_id).count("user.disabled") == 1


def test_password_change_keeps_this_session_and_ends_the_others(sessions, hasher):
    user_id, _ = _user(sessions, hasher)
    here = _sign_in(sessions, hasher, "ana@example.com", password)
    elsewhere = _sign_in(sessions, hasher, "ana@example.com", password)
    with sessions.begin() as session, pytest.raises(BadCredentials):
        change_password(session, hasher, user_id, "not the password", "a new long password", here.principal.session_id)
    with sessions.begin() as session, pytest.raises(AccountError, match="characters"):
        change_password(session, hasher, user_id, password, "short", here.principal.session_id)
    with sessions.begin() as session:
        change_password(session, hasher, user_id, password, "a new long password", here.principal.session_id)
    with sessions() as session:
        assert signed_in(session, here.token) is not None and signed_in(session, elsewhere.token) is None
    assert _sign_in(sessions, hasher, "ana@example.com", "a new long password").error is None


def test_an_operators_reset_gives_a_new_password_ends_sessions_and_lifts_a_lock(sessions, hasher):
    user_id, _ = _user(sessions, hasher)
    token = _sign_in(sessions, hasher, "ana@example.com", password).token
    for _ in range(failures_max):
        _sign_in(sessions, hasher, "ana@example.com", "not the password")
    with sessions.begin() as session:
        _, fresh = reset_password(session, hasher, user_id, actor="user:operator")
    with sessions() as session:
        assert signed_in(session, token) is None
    assert isinstance(_sign_in(sessions, hasher, "ana@example.com", password).error, BadCredentials)
    assert _sign_in(sessions, hasher, "ana@example.com", fresh).error is None


def test_roles_are_bound_to_tenants_and_emails_are_unique(sessions, hasher):
    tenant = new_tenant(sessions)
    cases = [("owner", None, "needs tenant"), ("operator", tenant.id, "takes no tenant"),
             ("admin", None, "role must be one of"), ("owner", "ten_missing", "no tenant")]
    for role, tenant_id, message in cases:
        with sessions.begin() as session, pytest.raises(AccountError, match=message):
            create_user(session, hasher, "x@example.com", role, password, tenant_id)
    with sessions.begin() as session:
        create_user(session, hasher, "op@example.com", "operator", password)
    with sessions.begin() as session, pytest.raises(UserExists):
        create_user(session, hasher, "OP@example.com", "member", password, tenant.id)
    with sessions.begin() as session, pytest.raises(AccountError, match="not an email"):
        create_user(session, hasher, "not-an-email", "member", password, tenant.id)


def _limiters(redis_prefix: str):
    yield MemoryLimiter()
    redis_limiter = RedisLimiter.from_url("redis://127.0.0.1:6379/0", prefix=redis_prefix, failure_mode="closed",
                                          timeout_s=1.0)
    yield redis_limiter
    for key in redis_limiter.client.scan_iter(f"{redis_prefix}*"):
        redis_limiter.client.delete(key)


def test_sign_in_failures_from_one_address_are_refused_past_the_limit():
    import uuid

    for limiter in _limiters(f"vftest-signin-{uuid.uuid4().hex[:8]}:"):
        for attempt in range(failures_max - 1):
            assert signin_refused(limiter, "203.0.113.7", failures_max, record=True) is None, attempt
        wait_s = signin_refused(limiter, "203.0.113.7", failures_max, record=True)
        assert wait_s is not None and 0 < wait_s <= 60
        assert signin_refused(limiter, "203.0.113.7", failures_max, record=False) is not None
        assert signin_refused(limiter, "198.51.100.1", failures_max, record=False) is None


def test_admin_user_commands(tmp_path, sqlite_url, models_dir):
    cli = Cli(tmp_path, models_dir, sqlite_url)
    cli.ok("admin", "tenant", "create", "acme")
    made = cli.json("admin", "user", "create", "ana@example.com", "--role", "member", "--tenant", "acme")
    assert made["role"] == "member" and len(made["password"]) >= 16
    operator = cli.json("admin", "user", "create", "op@example.com", "--role", "operator")
    assert operator["tenant_id"] is None
    assert_refused(cli("admin", "user", "create", "bo@example.com", "--role", "owner"), "needs tenant")
    assert_refused(cli("admin", "user", "create", "ana@example.com", "--role", "viewer", "--tenant", "acme"),
                   "exists")
    listed = cli.json("admin", "user", "list", "--tenant", "acme")["data"]
    assert [u["email"] for u in listed] == ["ana@example.com"]
    assert cli.json("admin", "user", "disable", "ana@example.com")["disabled_at"] is not None
    reset = cli.json("admin", "user", "reset-password", made["id"])
    assert cli.json("admin", "user", "sign-out", "op@example.com")["sessions_revoked"] == 0
    assert reset["password"] != made["password"]
    assert "password" not in cli.ok("admin", "user", "list").stdout


def test_demo_prints_a_console_password_that_stays_the_same(tmp_path, sqlite_url, models_dir, sessions_for):
    cli = Cli(tmp_path, models_dir, sqlite_url)
    first = cli.json("admin", "demo")
    assert first["sign_in_url"].endswith("/sign-in") and first["email"]
    assert cli.json("admin", "demo")["password"] == first["password"]
    assert first["password"] in cli.ok("admin", "demo").stdout
    with sessions_for(sqlite_url).begin() as session:
        done = sign_in(session, PasswordHasher(3, 65536), first["email"], first["password"], ttl_s=60,
                       failures_max=failures_max)
    assert done.error is None and done.principal.tenant_id == first["tenant_id"]
