"""The operator pages in a real browser: an operator creates a tenant, credits it, and unlocks a user
locked out after repeated wrong passwords."""

from __future__ import annotations

import re
import uuid

from vidfactory.accounts import PasswordHasher
from vidfactory.accounts import sign_in as sign_in_service

from browser import browser, console, new_person, page, password, sign_in  # noqa: F401  (fixtures)


def lock_out(console, email: str) -> None:
    """Wrong passwords until the account locks (through the sign-in service: the lock itself has its own
    browser test)."""
    settings = console.ctx.settings
    hasher = PasswordHasher.from_settings(settings)
    for _ in range(settings.signin_failures_max):
        with console.ctx.sessions.begin() as session:
            sign_in_service(session, hasher, email, "not the password", ttl_s=60,
                            failures_max=settings.signin_failures_max)


def test_an_operator_creates_and_credits_a_tenant_and_unlocks_a_user(page, console):
    email, _ = new_person(console, "operator")
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/review$"))
    page.get_by_role("navigation").get_by_role("link", name="Tenants").click()
    name = f"studio-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Plan").select_option("pro")
    page.get_by_role("button", name="Create tenant").click()
    page.wait_for_url(re.compile(r"/tenants/ten_\w+\?done=created$"))
    assert page.get_by_role("heading", level=1).inner_text() == name
    credit = page.locator("form[action$='/credit']")
    credit.get_by_label("Tokens").fill("-5")
    credit.get_by_role("button", name="Credit").click()
    assert page.locator("#credit-tokens-error").inner_text() == "Must be more than 0."
    page.locator("form[action$='/credit']").get_by_label("Tokens").fill("25000")
    page.locator("form[action$='/credit']").get_by_role("button", name="Credit").click()
    page.wait_for_url(re.compile(r"\?done=credit$"))
    assert page.get_by_role("status").inner_text() == "Tokens credited."
    assert page.locator("#tenant-available").inner_text() == "25000"

    member, _ = new_person(console, "member")
    lock_out(console, member)
    page.get_by_role("navigation").get_by_role("link", name="Users").click()
    row = page.locator(f"tr[data-email='{member}']")
    assert "locked" in row.inner_text()
    row.get_by_role("button", name="Unlock").click()
    page.wait_for_url(re.compile(r"/users\?done=unlock$"))
    assert "active" in page.locator(f"tr[data-email='{member}']").inner_text()
    page.context.clear_cookies()
    sign_in(page, member, password)
    page.wait_for_url(re.compile(r"/videos$"))
