"""`vidfactory serve | worker | generate | calibrate-magcache | verify | doctor | db | admin | ledger`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vidfactory.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
admin_app = typer.Typer(no_args_is_help=True, help="Tenants, keys and credits.")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants.")
key_app = typer.Typer(no_args_is_help=True, help="API keys.")
ledger_app = typer.Typer(no_args_is_help=True, help="The token ledger.")
lexicon_app = typer.Typer(no_args_is_help=True, help="A tenant's own prompt-screening terms.")
template_app = typer.Typer(no_args_is_help=True, help="A tenant's templates (and the built-in library).")
batch_app = typer.Typer(no_args_is_help=True, help="A tenant's batches.")
style_app = typer.Typer(no_args_is_help=True, help="A tenant's styles (LoRA adapters).")
user_app = typer.Typer(no_args_is_help=True, help="Console users: a tenant's people and platform operators.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(tenant_app, name="tenant")
admin_app.add_typer(key_app, name="key")
admin_app.add_typer(lexicon_app, name="lexicon")
admin_app.add_typer(template_app, name="template")
admin_app.add_typer(batch_app, name="batch")
admin_app.add_typer(style_app, name="style")
admin_app.add_typer(user_app, name="user")
app.add_typer(ledger_app, name="ledger")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
demo_tenant_name = "demo"
demo_credit_tokens = 1_000_000
cli_actor = "cli"
steps_max = 200
cli_clip_prefix = "clip_"  # a CLI clip's content ID: never a job's (those start with video_)
cli_clip_owner = "local"  # no tenant: the file is written where --out says, not to storage
cli_watermark_bytes = 4  # the watermark's 32-bit payload
batches_listed_max = 1000


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"vidfactory {version('vidfactory')}")
        raise typer.Exit()


@app.callback()
def main(_version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


def _settings() -> Settings:
    """The environment's settings, or exit with one line naming what is wrong in it."""
    from vidfactory.settings import ConfigurationError, load_settings

    try:
        return load_settings()
    except ConfigurationError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _engine():
    from vidfactory.db.session import database_engine

    return database_engine(_settings())


def _sessions():
    from vidfactory.db.session import make_session_factory

    return make_session_factory(_engine())


def _database_problem() -> str | None:
    """Why the configured database cannot serve this code: unreachable, never migrated, or at another
    migration; None when it can."""
    from sqlalchemy.exc import OperationalError

    from vidfactory.db.migrate import current_revision, head_revision

    try:
        revision = current_revision(_engine())
    except OperationalError as exc:
        return f"cannot reach the database: {' '.join(str(exc.orig).split())}"
    if revision is None:
        return "the database has no vidfactory schema yet: run `vidfactory db upgrade`"
    head = head_revision()
    if revision != head:
        return (f"the database's schema is at migration {revision} and this vidfactory's at {head}: "
                "run `vidfactory db upgrade` from the newer of the two")
    return None


def _emit(as_json: bool, payload: dict, text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Create or migrate the schema and seed plans, operator accounts and price book v1."""
    from vidfactory.bootstrap import upgrade_and_seed
    from vidfactory.db.migrate import current_revision

    engine = _engine()
    upgrade_and_seed(engine)
    _emit(as_json, {"ok": True, "revision": current_revision(engine)}, "database is up to date")


@tenant_app.command("create")
def tenant_create(name: str, plan: Annotated[str, typer.Option()] = "free", as_json: JsonFlag = False) -> None:
    from vidfactory.tenancy import TenancyError, create_tenant

    try:
        with _sessions().begin() as session:
            tenant = create_tenant(session, name, plan, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": tenant.id, "name": tenant.name, "plan": tenant.plan_id},
          f"created tenant {tenant.name} ({tenant.id}) on plan {tenant.plan_id}")


@tenant_app.command("suspend")
def tenant_suspend(tenant: str, reason: Annotated[str, typer.Option(help="Why; shown in the tenant's 403s.")],
                   as_json: JsonFlag = False) -> None:
    """Suspend TENANT (id or name): no new submissions or keys; queued and running jobs finish."""
    from vidfactory.tenancy import TenancyError, suspend_tenant

    try:
        with _sessions().begin() as session:
            row = suspend_tenant(session, tenant, reason, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": row.id, "suspended": True, "reason": row.suspended_reason},
          f"suspended tenant {row.name} ({row.id}): {row.suspended_reason}")


@tenant_app.command("resume")
def tenant_resume(tenant: str, as_json: JsonFlag = False) -> None:
    """Lift TENANT's suspension."""
    from vidfactory.tenancy import TenancyError, resume_tenant

    try:
        with _sessions().begin() as session:
            row = resume_tenant(session, tenant, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": row.id, "suspended": False}, f"tenant {row.name} ({row.id}) is active")


def _tenant_object(tenant) -> dict:
    return {"id": tenant.id, "name": tenant.name, "plan": tenant.plan_id, "created_at": tenant.created_at.isoformat()}


@tenant_app.command("list")
def tenant_list(as_json: JsonFlag = False) -> None:
    """Every tenant, oldest first."""
    from vidfactory.tenancy import list_tenants

    with _sessions()() as session:
        tenants = [_tenant_object(t) for t in list_tenants(session)]
    _emit(as_json, {"data": tenants},
          "\n".join(f"{t['id']}\t{t['name']}\t{t['plan']}" for t in tenants) or "no tenants")


@tenant_app.command("show")
def tenant_show(tenant: str, as_json: JsonFlag = False) -> None:
    """TENANT (id or name): its plan, balance, vouchers and active keys."""
    from vidfactory.billing import ledger
    from vidfactory.tenancy import TenancyError, find_tenant, list_keys

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            shown = _tenant_object(found) | {
                "balance": vars(ledger.balance(session, found.id)),
                "vouchers": vars(ledger.voucher_balance(session, found.id)),
                "keys_active": sum(1 for key in list_keys(session, found.id) if key.revoked_at is None)}
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, shown, "\n".join([f"tenant:   {shown['name']} ({shown['id']})", f"plan:     {shown['plan']}",
                                     f"balance:  {shown['balance']['available']} tokens available, "
                                     f"{shown['balance']['pending']} held",
                                     f"vouchers: {shown['vouchers']['available']} tokens available",
                                     f"keys:     {shown['keys_active']} active"]))


@tenant_app.command("set-plan")
def tenant_set_plan(tenant: str, plan: str, as_json: JsonFlag = False) -> None:
    """Move TENANT (id or name) to PLAN; its next request gets the plan's limits (audited)."""
    from vidfactory.tenancy import TenancyError, change_plan, find_tenant

    try:
        with _sessions().begin() as session:
            changed = _tenant_object(change_plan(session, find_tenant(session, tenant).id, plan, actor=cli_actor))
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, changed, f"{changed['name']} is on plan {changed['plan']}")


@key_app.command("create")
def key_create(tenant: str, as_json: JsonFlag = False) -> None:
    """Create an API key for TENANT (id or name). The key is shown once."""
    from vidfactory.tenancy import TenancyError, create_key, find_tenant

    try:
        with _sessions().begin() as session:
            row, plaintext = create_key(session, find_tenant(session, tenant).id, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": row.id, "tenant_id": row.tenant_id, "key": plaintext}, plaintext)


def _key_object(key) -> dict:
    return {"id": key.id, "tenant_id": key.tenant_id, "prefix": key.prefix, "label": key.label,
            "created_at": key.created_at.isoformat(),
            "revoked_at": None if key.revoked_at is None else key.revoked_at.isoformat()}


@key_app.command("list")
def key_list(tenant: str, as_json: JsonFlag = False) -> None:
    """TENANT's API keys, revoked ones included: ids and prefixes (a key itself is never shown again)."""
    from vidfactory.tenancy import TenancyError, find_tenant, list_keys

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            keys = [_key_object(key) for key in list_keys(session, found.id)]
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": keys},
          "\n".join(f"{k['id']}\t{k['prefix']}…\t{k['label'] or '-'}\t"
                    f"{'revoked ' + k['revoked_at'] if k['revoked_at'] else 'active'}" for k in keys)
          or f"{found.name}: no keys")


@key_app.command("revoke")
def key_revoke(key_id: str, as_json: JsonFlag = False) -> None:
    """Revoke the API key KEY_ID at once (revoking a revoked key changes nothing)."""
    from vidfactory.tenancy import revoke_key

    with _sessions().begin() as session:
        row = revoke_key(session, key_id, actor=cli_actor)
        revoked = None if row is None else _key_object(row)
    if revoked is None:
        _fail(f"no api key {key_id!r}")
    _emit(as_json, revoked, f"revoked {revoked['id']} ({revoked['prefix']}…)")


def _user_object(user) -> dict:
    return {"id": user.id, "email": user.email, "role": user.role, "tenant_id": user.tenant_id,
            "created_at": user.created_at.isoformat(),
            "disabled_at": None if user.disabled_at is None else user.disabled_at.isoformat(),
            "locked": user.locked_at is not None}


def _user_line(user: dict) -> str:
    state = "disabled" if user["disabled_at"] else "locked" if user["locked"] else "active"
    return f"{user['id']}\t{user['email']}\t{user['role']}\t{user['tenant_id'] or '-'}\t{state}"


@user_app.command("create")
def user_create(email: str, role: Annotated[str, typer.Option(help="owner | member | viewer | operator | reviewer")],
                tenant: Annotated[str | None, typer.Option(help="The tenant (id or name) of an owner, member "
                                                                "or viewer; none for operators.")] = None,
                password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input "
                                                                  "(default: a generated one, shown once).")] = False,
                as_json: JsonFlag = False) -> None:
    """Create a console user who signs in with EMAIL and a password."""
    from vidfactory.accounts import AccountError, PasswordHasher, create_user
    from vidfactory.accounts.passwords import generated_password
    from vidfactory.tenancy import TenancyError, find_tenant

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generated_password()
    try:
        with _sessions().begin() as session:
            tenant_id = None if tenant is None else find_tenant(session, tenant).id
            user = _user_object(create_user(session, PasswordHasher.from_settings(_settings()), email, role,
                                            password, tenant_id, actor=cli_actor))
    except (AccountError, TenancyError) as exc:
        _fail(str(exc))
    shown = {**user, **({} if password_stdin else {"password": password})}
    _emit(as_json, shown, _user_line(user) + ("" if password_stdin else f"\npassword (shown once): {password}"))


@user_app.command("list")
def user_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant's (id or name).")] = None,
              as_json: JsonFlag = False) -> None:
    """Console users, oldest first."""
    from vidfactory.accounts import list_users
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            tenant_id = None if tenant is None else find_tenant(session, tenant).id
            users = [_user_object(user) for user in list_users(session, tenant_id)]
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"data": users}, "\n".join(_user_line(user) for user in users) or "no users")


def _user_change(change, user: str, as_json: bool, verb: str) -> None:
    from vidfactory.accounts import AccountError

    try:
        with _sessions().begin() as session:
            shown = _user_object(change(session, user))
    except AccountError as exc:
        _fail(str(exc))
    _emit(as_json, shown, f"{verb} {shown['email']}")


@user_app.command("disable")
def user_disable(user: str, as_json: JsonFlag = False) -> None:
    """Disable USER (id or email): no more sign-ins, and every open session ends now."""
    from vidfactory.accounts import disable_user

    _user_change(lambda session, u: disable_user(session, _user_id(session, u), actor=cli_actor), user,
                 as_json, "disabled")


@user_app.command("unlock")
def user_unlock(user: str, as_json: JsonFlag = False) -> None:
    """Unlock USER (id or email) after repeated failed sign-ins."""
    from vidfactory.accounts import unlock_user

    _user_change(lambda session, u: unlock_user(session, _user_id(session, u), actor=cli_actor), user,
                 as_json, "unlocked")


@user_app.command("sign-out")
def user_sign_out(user: str, as_json: JsonFlag = False) -> None:
    """End every console session of USER (id or email) now; their password still signs them in."""
    from vidfactory.accounts import AccountError, end_sessions, find_user

    try:
        with _sessions().begin() as session:
            revoked = end_sessions(session, _user_id(session, user), actor=cli_actor)
            shown = _user_object(find_user(session, _user_id(session, user)))
    except AccountError as exc:
        _fail(str(exc))
    _emit(as_json, {**shown, "sessions_revoked": revoked}, f"signed out {shown['email']} ({revoked} sessions)")


@user_app.command("reset-password")
def user_reset_password(user: str, as_json: JsonFlag = False) -> None:
    """Give USER (id or email) a new generated password, shown once; their sessions end and a lock lifts."""
    from vidfactory.accounts import AccountError, PasswordHasher, reset_password

    try:
        with _sessions().begin() as session:
            row, password = reset_password(session, PasswordHasher.from_settings(_settings()),
                                           _user_id(session, user), actor=cli_actor)
            shown = _user_object(row)
    except AccountError as exc:
        _fail(str(exc))
    _emit(as_json, {**shown, "password": password}, f"{shown['email']}: new password (shown once): {password}")


def _user_id(session, user: str) -> str:
    from vidfactory.accounts import find_user

    return find_user(session, user).id


@admin_app.command("credit")
def admin_credit(tenant: str, tokens: int, as_json: JsonFlag = False) -> None:
    """Top up TENANT (id or name) by TOKENS."""
    from vidfactory.billing import ledger
    from vidfactory.tenancy import TenancyError, find_tenant

    if not 0 < tokens <= 10**12:
        _fail("TOKENS must be between 1 and 10^12")
    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            transfer = ledger.credit(session, found.id, tokens, actor=cli_actor)
            current = ledger.balance(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"transfer_id": transfer.id, "tenant_id": found.id, "balance": vars(current)},
          f"credited {tokens} tokens to {found.name}; available {current.available}")


@admin_app.command("sweep")
def admin_sweep(orphans: Annotated[bool, typer.Option(help="Also delete stored objects no row names, older "
                                                       "than VIDFACTORY_ORPHAN_GRACE_S.")] = True,
                as_json: JsonFlag = False) -> None:
    """Delete expired videos' files now (workers also do this every few seconds), and orphaned objects
    (workers scan every VIDFACTORY_ORPHAN_SCAN_INTERVAL_S). Runs until nothing expired is left."""
    from vidfactory.db.types import utcnow
    from vidfactory.jobs.maintenance import delete_orphans, sweep_expired_content
    from vidfactory.storage import make_storage

    settings, sessions, now = _settings(), _sessions(), utcnow()
    storage = make_storage(settings)
    expired = 0
    while swept := sweep_expired_content(sessions, storage, now):
        expired += swept
    deleted = delete_orphans(sessions, storage, now, settings.orphan_grace_s) if orphans else 0
    _emit(as_json, {"expired_videos": expired, "orphans_deleted": deleted},
          f"deleted the files of {expired} expired videos and {deleted} orphaned objects")


@admin_app.command("voucher")
def admin_voucher(tenant: str, tokens: int, reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
                  days: Annotated[int, typer.Option(help="Days until it expires.")] = 30,
                  as_json: JsonFlag = False) -> None:
    """Grant TENANT (id or name) a voucher of TOKENS, spent before paid balance, expiring after --days."""
    from datetime import timedelta

    from vidfactory.billing import ledger
    from vidfactory.db.types import utcnow
    from vidfactory.notify.events import voucher_event
    from vidfactory.tenancy import TenancyError, find_tenant

    if not 0 < tokens <= 10**12:
        _fail("TOKENS must be between 1 and 10^12")
    if not 1 <= days <= 3650:
        _fail("--days must be between 1 and 3650")
    if not reason.strip() or len(reason) > 200:
        _fail("--reason must be 1–200 characters")
    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            transfer = ledger.grant_voucher(session, found.id, tokens, utcnow() + timedelta(days=days), reason,
                                            actor=cli_actor)
            voucher_event(session, transfer)
            current = ledger.voucher_balance(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"transfer_id": transfer.id, "tenant_id": found.id, "vouchers": vars(current)},
          f"granted a {tokens}-token voucher to {found.name}; vouchers available {current.available}")


@ledger_app.command("expire-vouchers")
def ledger_expire_vouchers(as_json: JsonFlag = False) -> None:
    """Expire every voucher grant past its expiry now (workers also do this every few seconds)."""
    from vidfactory.db.types import utcnow
    from vidfactory.jobs.maintenance import expire_vouchers

    expired = expire_vouchers(_sessions(), utcnow())
    _emit(as_json, {"expired": expired}, f"expired {expired} voucher grants")


@lexicon_app.command("add")
def lexicon_add(tenant: str, term: str, category: Annotated[str, typer.Option()],
                action: Annotated[str, typer.Option(help="block | review | allow")] = "block",
                as_json: JsonFlag = False) -> None:
    """Add TERM to TENANT's lexicon (or change its category and action)."""
    from vidfactory.jobs import screening
    from vidfactory.safety.lexicon import Entry, LexiconError
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        entry = Entry(term.strip(), category, action)
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            if not screening.add_entry(session, found.id, entry):
                _fail(f"a tenant lexicon holds at most {screening.tenant_lexicon_entries_max} terms")
    except (LexiconError, TenancyError) as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "term": entry.term, "category": entry.category, "action": entry.action},
          f"{found.name}: {entry.term!r} → {entry.category} ({entry.action})")


@lexicon_app.command("remove")
def lexicon_remove(tenant: str, term: str, as_json: JsonFlag = False) -> None:
    """Remove TERM from TENANT's lexicon."""
    from vidfactory.jobs import screening
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            removed = screening.remove_entry(session, found.id, term.strip())
    except TenancyError as exc:
        _fail(str(exc))
    if not removed:
        _fail(f"{found.name} has no lexicon term {term.strip()!r}")
    _emit(as_json, {"tenant_id": found.id, "term": term.strip(), "deleted": True}, f"{found.name}: removed {term.strip()!r}")


@lexicon_app.command("list")
def lexicon_list(tenant: str, as_json: JsonFlag = False) -> None:
    """TENANT's own terms (the platform lexicon is the file in VIDFACTORY_LEXICON_PATH or the default)."""
    from vidfactory.jobs import screening
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            entries = screening.list_entries(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": [vars(e) for e in entries]},
          "\n".join(f"{e.term}\t{e.category}\t{e.action}" for e in entries) or f"{found.name}: no terms")


def _template_object(template, source: str) -> dict:
    from vidfactory.prompts.templates import check_template

    image = template.reference
    return {"name": template.name, "source": source, "language": template.language,
            "description": template.description, "body": template.body,
            "variables": sorted(check_template(template)), "defaults": dict(template.defaults),
            "seconds": template.seconds, "size": template.size,
            "reference_image": None if image is None else {"sha256": image.sha256, "width": image.width,
                                                           "height": image.height}}


@template_app.command("list")
def template_list(tenant: str, as_json: JsonFlag = False) -> None:
    """The built-in library, then TENANT's own templates, by name."""
    from vidfactory.jobs.prompting import tenant_templates
    from vidfactory.prompts.library import library
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            own = tenant_templates(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    listed = ([_template_object(t, "library") for t in sorted(library.values(), key=lambda t: t.name)]
              + [_template_object(t, "tenant") for t in own])
    _emit(as_json, {"tenant_id": found.id, "data": listed},
          "\n".join(f"{t['name']}\t{t['source']}\t{t['language']}\t{t['description']}" for t in listed))


@template_app.command("show")
def template_show(tenant: str, name: str, as_json: JsonFlag = False) -> None:
    """One template as TENANT sees it (its own, else the built-in one of that name)."""
    from vidfactory.jobs.prompting import find_template
    from vidfactory.jobs.spec import InvalidRequest
    from vidfactory.prompts.library import library
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            template = find_template(session, found.id, name)
    except (TenancyError, InvalidRequest) as exc:
        _fail(str(exc).replace("; GET /v1/templates lists them", f"; `vidfactory admin template list {tenant}` lists them"))
    shown = _template_object(template, "library" if library.get(name) is template else "tenant")
    _emit(as_json, shown, "\n".join([f"{shown['name']} ({shown['source']}, {shown['language']})",
                                     f"variables: {', '.join(shown['variables']) or '-'}", "", shown["body"]]))


def _style_line(style: dict) -> str:
    return (f"{style['name']}\t{style['id']}\t{style['model']}\t{style['status']}\t{style['source']}\t"
            f"rank {style['rank']}\tscale {style['default_scale']:g}")


@style_app.command("list")
def style_list(tenant: str, as_json: JsonFlag = False) -> None:
    """TENANT's styles, by name."""
    from sqlalchemy import select

    from vidfactory.db.models import Style
    from vidfactory.styles.service import describe
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            listed = [describe(style) for style in session.scalars(
                select(Style).where(Style.tenant_id == found.id).order_by(Style.name))]
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": listed},
          "\n".join(_style_line(style) for style in listed) or f"{found.name}: no styles")


@style_app.command("add")
def style_add(tenant: str, name: str, file: Path,
              model: Annotated[str | None, typer.Option(help="The model it adapts (default: the first).")] = None,
              scale: Annotated[float, typer.Option(help="Its default scale.")] = 1.0,
              description: Annotated[str, typer.Option()] = "", as_json: JsonFlag = False) -> None:
    """Upload FILE (a .safetensors LoRA adapter) as TENANT's style NAME, checked as the API checks it."""
    from vidfactory.storage import make_storage
    from vidfactory.styles.errors import StyleError
    from vidfactory.styles.service import upload_style
    from vidfactory.tenancy import TenancyError, find_tenant

    settings = _settings()
    if not file.is_file() or file.stat().st_size > settings.style_upload_bytes_max:
        _fail(f"{file} is not a file of at most {settings.style_upload_bytes_max} bytes")
    sessions = _sessions()
    try:
        with sessions() as session:
            tenant_id = find_tenant(session, tenant).id
        style = upload_style(sessions, make_storage(settings), settings, tenant_id, name=name,
                             model=model, data=file.read_bytes(), filename=file.name, default_scale=scale,
                             description=description)
    except (TenancyError, StyleError) as exc:
        _fail(str(exc))
    _emit(as_json, style, _style_line(style))


@style_app.command("remove")
def style_remove(tenant: str, style: str, as_json: JsonFlag = False) -> None:
    """Delete TENANT's STYLE (name or id) and its adapter; refused while queued or running videos use it."""
    from vidfactory.storage import make_storage
    from vidfactory.styles.errors import StyleError
    from vidfactory.styles.service import delete_style
    from vidfactory.tenancy import TenancyError, find_tenant

    sessions = _sessions()
    try:
        with sessions() as session:
            tenant_id = find_tenant(session, tenant).id
        deleted = delete_style(sessions, make_storage(_settings()), tenant_id, style)
    except (TenancyError, StyleError) as exc:
        _fail(str(exc))
    if deleted is None:
        _fail(f"{tenant} has no style {style!r}")
    _emit(as_json, deleted, f"deleted style {deleted['name']} ({deleted['id']})")


def _training_line(training: dict) -> str:
    loss = "-" if training["loss"] is None else f"{training['loss']:.4f}"
    return (f"{training['id']}\t{training['name']}\t{training['model']}\t{training['status']}\t"
            f"step {training['step']}/{training['steps']}\tloss {loss}\t{training['usage']['total_tokens']} tokens")


@style_app.command("train")
def style_train(tenant: str, name: str, dataset: Path,
                model: Annotated[str | None, typer.Option(help="The Wan model to adapt (default: the first).")] = None,
                steps: Annotated[int | None, typer.Option(help="Training steps (default: the model's).")] = None,
                rank: Annotated[int | None, typer.Option(help="LoRA rank (default: the model's).")] = None,
                learning_rate: Annotated[float | None, typer.Option(help="Default: the model's.")] = None,
                caption: Annotated[str | None, typer.Option(help="For files without their own caption.")] = None,
                scale: Annotated[float, typer.Option(help="The style's default scale.")] = 1.0,
                seed: Annotated[int | None, typer.Option()] = None,
                description: Annotated[str, typer.Option()] = "", as_json: JsonFlag = False) -> None:
    """Train TENANT's style NAME from DATASET (a ZIP of images and clips with captions): queued, quoted and
    held as `POST /v1/styles/train` does; a worker trains it."""
    from vidfactory.billing.ledger import InsufficientBalance
    from vidfactory.jobs.screening import ImageRejected, ImageScreen
    from vidfactory.jobs.spec import InvalidRequest
    from vidfactory.jobs.training import TrainingRequest, TrainingsLimit, submit_training
    from vidfactory.storage import make_storage
    from vidfactory.tenancy import TenancyError, console_caller, find_tenant

    settings = _settings()
    if not dataset.is_file() or dataset.stat().st_size > settings.training_upload_bytes_max:
        _fail(f"{dataset} is not a file of at most {settings.training_upload_bytes_max} bytes")
    sessions = _sessions()
    request = TrainingRequest(name=name, model=model or settings.models[0].id, dataset=dataset.read_bytes(),
                              caption=caption, steps=steps, rank=rank, learning_rate=learning_rate,
                              default_scale=scale, description=description, seed=seed)
    try:
        with sessions() as session:
            caller = console_caller(session, find_tenant(session, tenant).id)
        training = submit_training(sessions, settings, caller, request, ImageScreen(settings),
                                   make_storage(settings)).body
    except (TenancyError, InvalidRequest, ImageRejected, InsufficientBalance, TrainingsLimit) as exc:
        _fail(str(exc))
    _emit(as_json, training, _training_line(training))


@style_app.command("trainings")
def style_trainings(tenant: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
                    as_json: JsonFlag = False) -> None:
    """TENANT's style trainings, newest first."""
    from vidfactory.jobs.training import training_object, trainings_page
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            page, _ = trainings_page(session, found.id, None, limit)
            listed = [training_object(session, job) for job in page]
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": listed},
          "\n".join(_training_line(training) for training in listed) or f"{found.name}: no trainings")


@style_app.command("training")
def style_training(tenant: str, training_id: str, as_json: JsonFlag = False) -> None:
    """One of TENANT's trainings: its state, step and loss, settings and dataset."""
    from vidfactory.jobs.training import find_training, training_object
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            job = find_training(session, find_tenant(session, tenant).id, training_id)
            shown = None if job is None else training_object(session, job)
    except TenancyError as exc:
        _fail(str(exc))
    if shown is None:
        _fail(f"{tenant} has no training {training_id!r}")
    settings = shown["settings"] or {}
    _emit(as_json, shown, "\n".join([_training_line(shown),
                                     f"style: {shown['style']['name'] if shown['style'] else '-'}",
                                     f"rank {settings.get('rank')}, learning rate {settings.get('learning_rate')}",
                                     f"dataset: {shown['dataset']['samples']} samples"]))


def _batch_object(batch, counts: dict[str, int]) -> dict:
    return {"id": batch.id, "template": batch.template, "mode": batch.mode, "atomic": batch.atomic,
            "items_total": batch.items_total, "total_tokens": batch.total_tokens,
            "created_at": batch.created_at.isoformat(), "counts": counts}


@batch_app.command("list")
def batch_list(tenant: str, limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
               as_json: JsonFlag = False) -> None:
    """TENANT's batches, newest first, with their items counted by state."""
    from vidfactory.jobs.batches import status_counts, tenant_batches
    from vidfactory.tenancy import TenancyError, find_tenant

    if not 1 <= limit <= batches_listed_max:
        _fail(f"--limit must be between 1 and {batches_listed_max}")
    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            batches = tenant_batches(session, found.id, limit)
            counts = status_counts(session, batches)
            listed = [_batch_object(b, counts[b.id]) for b in batches]
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": listed},
          "\n".join(f"{b['id']}\t{b['template']}\t{b['items_total']} items\t"
                    + " ".join(f"{state}={n}" for state, n in b["counts"].items() if n) for b in listed)
          or f"{found.name}: no batches")


@batch_app.command("show")
def batch_show(tenant: str, batch_id: str, as_json: JsonFlag = False) -> None:
    """One of TENANT's batches: its quote, counts and every item's video and state."""
    from sqlalchemy import select

    from vidfactory.db.models import Job
    from vidfactory.jobs.batches import batch_quote, find_batch, status_counts
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            batch = find_batch(session, found.id, batch_id)
            if batch is None:
                _fail(f"{found.name} has no batch {batch_id!r}")
            jobs = session.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.batch_item))
            shown = _batch_object(batch, status_counts(session, [batch])[batch.id]) | {
                "quote": batch_quote(session, batch),
                "items": [{"item": job.batch_item, "video_id": job.id, "status": job.status,
                           "ab_group": job.ab_group, "variables": job.variables} for job in jobs],
                "rejected": list(batch.rejected)}
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, shown, "\n".join(
        [f"{shown['id']}: template {shown['template']}, {shown['items_total']} items, "
         f"{shown['quote']['total_tokens']} tokens ({shown['quote']['currency']} {shown['quote']['amount']})"]
        + [f"{i['item']}\t{i['video_id']}\t{i['status']}\t{json.dumps(i['variables'], ensure_ascii=False)}"
           for i in shown["items"]]
        + [f"{r['item']}\trejected: {r['code']}" for r in shown["rejected"]]))


@admin_app.command("demo")
def admin_demo(port: int = 8000, as_json: JsonFlag = False) -> None:
    """Create the demo tenant (once, with a balance) and print its API key, the same on every run (kept
    in the data directory, readable by its owner only)."""
    from sqlalchemy import select

    from vidfactory.accounts import PasswordHasher, demo_user
    from vidfactory.billing import ledger
    from vidfactory.db.models import Tenant
    from vidfactory.tenancy import create_tenant, demo_key, demo_key_file, ensure_admin_token

    settings = _settings()
    with _sessions().begin() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == demo_tenant_name))
        if tenant is None:
            tenant = create_tenant(session, demo_tenant_name, plan="pro")
            ledger.credit(session, tenant.id, demo_credit_tokens, memo="demo balance")
        plaintext = demo_key(session, settings, tenant.id)
        email, password = demo_user(session, PasswordHasher.from_settings(settings), settings.data_dir, tenant.id)
        available = ledger.balance(session, tenant.id).available
    ensure_admin_token(settings)
    base = f"http://127.0.0.1:{port}/v1"
    sign_in = f"http://127.0.0.1:{port}/sign-in"
    if as_json:
        _emit(True, {"tenant_id": tenant.id, "available": available, "key": plaintext, "base_url": base,
                     "sign_in_url": sign_in, "email": email, "password": password,
                     "key_file": str(settings.data_dir / demo_key_file),
                     "admin_token_file": str(settings.data_dir / "admin_token")}, "")
        return
    typer.echo(f"""
  vidfactory demo tenant: {available} tokens available
  API key:               {plaintext}
                         (kept in {settings.data_dir / demo_key_file}; the same after a restart)
  Base URL:              {base}
  Admin token:           in {settings.data_dir / 'admin_token'}
  Console:               {sign_in}
                         {email} / {password}

  curl -s {base}/videos -H "Authorization: Bearer {plaintext}" \\
       -H "Content-Type: application/json" -d '{{"prompt": "a red fox running through snow"}}'
""")


@ledger_app.command("verify")
def ledger_verify(as_json: JsonFlag = False) -> None:
    """Check every ledger invariant and the audit log's hash chain on the live database; exit 1 on any
    breach (a broken chain is reported at its first broken link)."""
    from vidfactory.billing.verify import verify
    from vidfactory.db.types import utcnow
    from vidfactory.jobs.maintenance import ledger_verify_check, record_check

    sessions = _sessions()
    with sessions() as session:
        breaches = verify(session)
    with sessions.begin() as session:  # for /metrics (vidfactory_ledger_verify_ok) and its alert
        record_check(session, ledger_verify_check, not breaches, "\n".join(breaches), utcnow())
    _emit(as_json, {"ok": not breaches, "breaches": breaches},
          "\n".join(breaches) if breaches else "ledger verified: no breaches")
    raise typer.Exit(1 if breaches else 0)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000,
          workers: Annotated[int | None, typer.Option(help="In-process worker threads.")] = None) -> None:
    """Serve the API (and, by default, one in-process worker)."""
    import uvicorn

    from vidfactory.api.app import create_app
    from vidfactory.observability.phases import configure_phase_log
    from vidfactory.observability.requests import configure_request_log

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_request_log()
    configure_phase_log()  # the in-process workers' phase lines
    settings = _settings()
    if (settings.workers_in_process if workers is None else workers) > 0:
        _check_served_models(settings, None)
    # The request log (one JSON line per request, with its request id and tenant) replaces the access log.
    uvicorn.run(create_app(settings, workers=workers), host=host, port=port, log_level="info", access_log=False)


def _check_served_models(settings: Settings, served: list[str] | None) -> None:
    """Fail fast, before any job is claimed: every model asked for is configured and its files are there."""
    from vidfactory.engines.base import EngineError
    from vidfactory.engines.checkpoints import check_model

    for model_id in served or [m.id for m in settings.models]:
        config = _configured_model(settings, model_id)
        try:
            check_model(config, settings.models_dir)
        except EngineError as exc:
            _fail(str(exc))


@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """Check the configuration, database (reachable and migrated), Redis, storage, every model's files and
    the GPU; print each finding, and exit 1 when anything fails."""
    from vidfactory.observability.health import doctor as run_checks

    checks = run_checks()
    failed = [c for c in checks if c.status == "fail"]
    _emit(as_json, {"ok": not failed, "checks": [vars(c) for c in checks]},
          "\n".join(f"{c.status:<5} {c.name:<16} {c.detail}" for c in checks))
    raise typer.Exit(1 if failed else 0)


@app.command()
def worker(model: Annotated[list[str] | None, typer.Option(help="Serve only these models.")] = None,
           once: Annotated[bool, typer.Option(help="Process at most one job, then exit.")] = False) -> None:
    """Run a worker: claims jobs, keeps its pipeline loaded, settles each job."""
    settings = _settings()  # a configuration error answers before the engines' seconds of imports
    _check_served_models(settings, model)  # so does a missing model
    from vidfactory.bootstrap import upgrade_and_seed
    from vidfactory.db.session import database_engine, make_session_factory
    from vidfactory.engines.parallel import DevicePlan, end_process, leave_group
    from vidfactory.engines.registry import load_engine
    from vidfactory.jobs.multidevice import LeaderEngine, follow, stop_followers
    from vidfactory.jobs.worker import Worker, speed_settings
    from vidfactory.observability.phases import configure_phase_log
    from vidfactory.storage import make_storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_phase_log()
    devices = DevicePlan.from_environment()
    if devices.parallel:
        spanned = _spanned_model(settings, model)
        if not devices.is_leader:  # a follower only generates, in step with the leader
            follow(spanned, settings.models_dir, speed_settings(settings), devices)
            end_process(0)
    engine = database_engine(settings)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    loader = None
    if devices.parallel:
        def loader(config, models_dir):
            return LeaderEngine(load_engine(config, models_dir, speed_settings(settings), devices))
    loop = Worker(settings, sessions, make_storage(settings), models=model,
                  engine_loader=loader, devices=devices)
    if devices.parallel:
        loop.engine_for(spanned.id)  # every rank loads together: the device mesh is built collectively
    try:
        _work(loop, settings, sessions, once)
    finally:
        if devices.parallel:
            stop_followers()
            leave_group()
    if devices.parallel:
        end_process(0)


def _work(loop, settings: Settings, sessions, once: bool) -> None:
    """One job (`once`), or jobs until SIGTERM or SIGINT, with the webhook dispatcher beside them."""
    from vidfactory.notify.delivery import start_dispatcher

    if once:
        loop.maintain(force=True)
        loop.run_once()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatchers = start_dispatcher(settings, sessions, stop)  # the outbox is drained by workers too
    loop.run(stop)
    for thread in dispatchers:
        thread.join(settings.webhook_send_deadline_s + 5)


def _spanned_model(settings: Settings, model: list[str] | None):
    """The one local model a multi-device worker serves (its ranks load it together at start)."""
    if not model or len(model) != 1:
        _fail("a worker spanning several devices (torchrun) serves exactly one model: pass --model ID")
    config = _configured_model(settings, model[0])
    if config.is_hosted:
        _fail(f"model {config.id!r} is hosted: only a local Wan model runs across devices")
    return config


def _request_for(config, prompt: str, size: str | None, seconds: int | None, seed: int, steps: int | None):
    """The GenerationRequest a CLI command runs for `config`, or exit with the option to fix."""
    from vidfactory.engines.base import GenerationRequest
    from vidfactory.jobs.spec import InvalidRequest, shape_for

    try:
        shape = shape_for(config, size, seconds)
    except InvalidRequest as exc:
        _fail(f"{exc.param}: {exc}")
    if steps is not None and not 1 <= steps <= steps_max:
        _fail(f"--steps must be between 1 and {steps_max}")
    return GenerationRequest(prompt=prompt, negative_prompt="", width=shape.width, height=shape.height,
                             num_frames=shape.num_frames, fps=shape.fps,
                             num_inference_steps=config.steps if steps is None else steps,
                             guidance_scale=config.guidance_scale, seed=seed,
                             guidance_scale_2=config.guidance_scale_2)


def _first_frame(config, path: Path, width: int, height: int):
    """The image as the worker gives it to the engine: checked, upright RGB, cropped to the clip's shape."""
    from vidfactory.media.reference import ReferenceRefused, center_crop, decode_rgb, read_reference

    if not config.takes_reference_image:
        _fail(f"--image: model {config.id} generates from text only (image-to-video: wan-tiny-i2v on a CPU, "
              "or a checkpoint with the wan2.2-ti2v-5b preset)")
    try:
        data = read_reference(path.read_bytes()).data
    except (OSError, ReferenceRefused) as exc:
        _fail(f"--image: {path}: {exc}")
    return center_crop(decode_rgb(data), width, height)


def _configured_model(settings: Settings, model: str):
    config = settings.model(model)
    if config is None:
        _fail(f"unknown model {model!r}; configured: {', '.join(m.id for m in settings.models)}")
    return config


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("clip.mp4"),
    model: str = "wan-tiny",
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seconds: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    image: Annotated[Path | None, typer.Option(help="the first frame (PNG, JPEG or WebP): image-to-video, "
                                                    "for wan-tiny-i2v or the wan2.2-ti2v-5b preset")] = None,
    as_json: JsonFlag = False,
) -> None:
    """One-shot generation with no server and no ledger: prompt in (and a first frame), MP4 out, through
    the server's output pipeline (visible label, watermark, AIGC tag, C2PA manifest) under its own
    `clip_` content ID, so `vidfactory verify` vouches for it."""
    settings = _settings()
    config = _configured_model(settings, model)
    request = _request_for(config, prompt, size, seconds, seed, steps)
    if image is not None:
        request = replace(request, image=_first_frame(config, image, request.width, request.height))
    if not out.parent.is_dir():
        _fail(f"--out: directory {out.parent} does not exist")
    # Bad input is answered above, before the engines' seconds of imports.
    from tqdm import tqdm

    from vidfactory.engines.base import EngineError
    from vidfactory.engines.registry import load_engine
    from vidfactory.jobs.worker import speed_settings

    try:
        engine = load_engine(config, settings.models_dir, speed_settings(settings))
        with tqdm(total=request.num_inference_steps, unit="step", file=sys.stderr) as bar:
            video = engine.generate(request, lambda done, total: bar.update(done - bar.n), lambda: False)
    except EngineError as exc:
        _fail(f"{exc.error_type}: {exc}")
    clip, mp4 = _labelled_clip(settings, video.frames, video.fps)
    out.write_bytes(mp4)
    _emit(as_json, {"file": str(out), "width": request.width, "height": request.height,
                    "frames": len(video.frames), "fps": video.fps, "content_id": clip.job_id,
                    "watermark_id": clip.watermark_id},
          f"wrote {out} ({request.width}x{request.height}, {len(video.frames)} frames at {video.fps} fps; "
          f"content id {clip.job_id}, watermark {clip.watermark_id})")


def _labelled_clip(settings: Settings, frames, fps: int):
    """(identity, MP4 bytes) of frames rendered by the output pipeline under a new `clip_` content ID."""
    import secrets
    import uuid

    from vidfactory.jobs import output
    from vidfactory.media.errors import MediaError

    clip = output.ClipIdentity(job_id=f"{cli_clip_prefix}{uuid.uuid4().hex}", tenant_id=cli_clip_owner,
                               watermark_id=secrets.token_hex(cli_watermark_bytes))
    try:
        rendition = output.render(frames, fps, clip, output.load_provenance(settings),
                                  steps=output.frame_steps(settings))
    except MediaError as exc:
        _fail(str(exc))
    [video_file] = [file for file in rendition.files if file.variant == "video"]
    return clip, video_file.data


@app.command("calibrate-magcache")
def calibrate_magcache(
    model: str,
    prompt: str = "A red fox runs through a snowy forest at dawn, cinematic lighting",
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seconds: int | None = None,
    seed: int = 0,
    steps: int | None = None,
) -> None:
    """Measure MODEL's MagCache ratios on one generation and print them as JSON: set them as the
    model's `step_cache_mag_ratios` to let `VIDFACTORY_STEP_CACHE=mag` skip steps for it."""
    settings = _settings()
    config = _configured_model(settings, model)
    if config.is_hosted:
        _fail(f"model {model!r} runs on a hosted service ({config.engine}): no local transformer to calibrate")
    request = _request_for(config, prompt, size, seconds, seed, steps)
    # Bad input is answered above, before the engines' seconds of imports.
    from vidfactory.engines.base import EngineError
    from vidfactory.engines.calibrate import mag_ratios
    from vidfactory.engines.registry import load_engine
    from vidfactory.engines.wan import WanEngine
    from vidfactory.jobs.worker import speed_settings

    try:
        engine = load_engine(config, settings.models_dir, speed_settings(settings))
        assert isinstance(engine, WanEngine)
        ratios = mag_ratios(engine, request)
    except EngineError as exc:
        _fail(f"{exc.error_type}: {exc}")
    typer.echo(json.dumps({"model": model, "steps": request.num_inference_steps,
                           "step_cache_mag_ratios": [round(r, 6) for r in ratios]}))


@app.command()
def verify(file: Path, as_json: JsonFlag = False) -> None:
    """Which video FILE is and whether it was altered (as the operator: every tenant's videos).
    Exits 0 when it is a stored file unchanged, 1 when altered or unknown."""
    from vidfactory.jobs.output import load_provenance
    from vidfactory.jobs.verification import Scope, verify_file
    from vidfactory.media.errors import MediaError

    settings = _settings()
    if not file.is_file():
        _fail(f"{file} is not a file")
    if file.stat().st_size > settings.verify_upload_bytes_max:
        _fail(f"{file} is over {settings.verify_upload_bytes_max} bytes")
    try:
        anchors = load_provenance(settings).anchors_pem
    except MediaError as exc:
        _fail(str(exc))
    with _sessions()() as session:
        report = verify_file(session, file.read_bytes(), Scope(tenant_id=None), anchors_pem=anchors,
                             watermark_step=settings.watermark_step)
    lines = [f"video:     {report['video_id'] or 'unknown'}",
             f"altered:   {'unknown' if report['altered'] is None else 'yes' if report['altered'] else 'no'}",
             f"sha256:    {report['hashes']['sha256']} ({'stored' if report['hashes']['matches_stored'] else 'not stored'})",
             f"c2pa:      {report['c2pa']['state']} {' '.join(report['c2pa']['failures'])}".rstrip(),
             f"aigc:      {'present' if report['aigc'] else 'absent'}",
             f"watermark: {'found' if report['watermark']['found'] else 'not found'}"]
    _emit(as_json, report, "\n".join(lines))
    raise typer.Exit(0 if report["altered"] is False else 1)


def run() -> None:
    """The `vidfactory` command. A database error is looked into once it happens (the check costs every
    command a quarter of a second of imports): a database the command cannot use is named in one line."""
    from sqlalchemy.exc import DBAPIError

    try:
        app()
    except DBAPIError:
        problem = _database_problem()
        if problem is None:
            raise
        typer.echo(f"error: {problem}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
