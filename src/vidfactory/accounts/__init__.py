"""Console users: a tenant's people (owner, member, viewer) and platform operators (operator, reviewer),
their Argon2id passwords and their browser sessions. API keys stay the API's credential: nothing here
accepts one."""

from vidfactory.accounts.passwords import PasswordHasher
from vidfactory.accounts.sessions import (
    Principal,
    csrf_token,
    revoke_session,
    session_cookie,
    sign_in,
    signed_in,
)
from vidfactory.accounts.users import (
    AccountError,
    AccountLocked,
    BadCredentials,
    InvalidPassword,
    UserExists,
    change_password,
    create_user,
    demo_user,
    disable_user,
    find_user,
    list_users,
    operator_roles,
    reset_password,
    roles,
    tenant_roles,
    unlock_user,
)

__all__ = [
    "AccountError",
    "AccountLocked",
    "BadCredentials",
    "InvalidPassword",
    "PasswordHasher",
    "Principal",
    "UserExists",
    "change_password",
    "create_user",
    "csrf_token",
    "demo_user",
    "disable_user",
    "find_user",
    "list_users",
    "operator_roles",
    "reset_password",
    "revoke_session",
    "roles",
    "session_cookie",
    "sign_in",
    "signed_in",
    "tenant_roles",
    "unlock_user",
]
