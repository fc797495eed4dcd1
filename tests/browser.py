"""Browser tests' shared pieces: one Chromium per test module (Debian's, driven by Playwright) and one
console server per test process; each test gets its own browser context (its own cookies)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidfactory.accounts import PasswordHasher, create_user
from vidfactory.tenancy import create_key, create_tenant

from conftest import TenantHandle, in_ci, make_settings
from live import LiveServer, live_server

chromium_path = Path("/usr/bin/chromium")
password = "correct horse battery"
action_timeout_ms = 60_000  # a loaded test machine: Swagger UI alone is 1.8 MB of script


# Per module: Playwright's sync API keeps an event loop running on this thread while it is open, and
# code that calls asyncio.run() (webhook delivery) must not meet it in the next module's tests.
@pytest.fixture(scope="module")
def browser():
    if not chromium_path.exists():
        message = f"{chromium_path} is missing: run `make system-packages` (as root) to install Chromium"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(chromium_path), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def console(tmp_path_factory, sqlite_template, models_dir) -> Iterator[LiveServer]:
    """The whole app with one in-process worker; sign-in failures per address are allowed generously so
    one test's failures never lock another's sign-in out (the per-address limit has its own test)."""
    root = tmp_path_factory.mktemp("console")
    database = root / "vidfactory.db"
    shutil.copy(sqlite_template, database)
    settings = make_settings(root, f"sqlite:///{database}", models_dir, events_poll_s=0.05,
                             password_hash_time_cost=1, password_hash_memory_kib=1024,
                             signin_address_failures_per_minute=1000, webhooks_enabled=False)
    with live_server(settings, workers=int(os.environ.get("VIDFACTORY_TEST_CONSOLE_WORKERS", "1"))) as live:
        yield live


@pytest.fixture
def page(browser, console):
    context = browser.new_context(base_url=console.url, locale="en-US")
    context.set_default_timeout(action_timeout_ms)
    yield context.new_page()
    context.close()


def new_person(console: LiveServer, role: str, tenant: TenantHandle | None = None, tokens: int = 0
               ) -> tuple[str, TenantHandle | None]:
    """A user with `role` (in `tenant`, or a new tenant for tenant roles); returns the email and tenant."""
    hasher = PasswordHasher.from_settings(console.ctx.settings)
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    with console.ctx.sessions.begin() as session:
        if tenant is None and role in ("owner", "member", "viewer"):
            made = create_tenant(session, f"t-{uuid.uuid4().hex[:8]}", "enterprise")
            if tokens:
                from vidfactory.billing import ledger

                ledger.credit(session, made.id, tokens)
            _, key = create_key(session, made.id)
            tenant = TenantHandle(made.id, key)
        create_user(session, hasher, email, role, password, None if tenant is None else tenant.id)
    return email, tenant


def sign_in(page, email: str, secret: str = password) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(secret)
    page.get_by_role("button", name="Sign in").click()
