"""The Developers page in a real browser (Chromium through Playwright): an owner makes an API key, which
works for the API and is not shown again, adds a webhook endpoint, sends it a test event and watches the
delivery turn to delivered without reloading. (A member's refusal is in test_console_browser.py.)"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator

import httpx
import pytest

from browser import action_timeout_ms, browser, new_person, sign_in  # noqa: F401  (fixtures)
from conftest import make_settings
from live import LiveServer, live_server
from receivers import Receiver, start_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = start_receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def webhook_console(tmp_path_factory, sqlite_template, models_dir) -> Iterator[LiveServer]:
    """The app with its webhook dispatcher running and this machine's loopback allowed as a target (the
    shared console sends no webhooks); no video workers, none is needed."""
    root = tmp_path_factory.mktemp("webhook-console")
    database = root / "vidfactory.db"
    shutil.copy(sqlite_template, database)
    settings = make_settings(root, f"sqlite:///{database}", models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024, webhook_allowed_networks=["127.0.0.0/8"],
                             webhook_poll_s=0.05)
    with live_server(settings, workers=0) as live:
        yield live


def test_an_owner_makes_a_key_and_sees_a_test_event_delivered(browser, webhook_console, receiver):  # noqa: F811
    email, _ = new_person(webhook_console, "owner")
    context = browser.new_context(base_url=webhook_console.url, locale="en-US")
    context.set_default_timeout(action_timeout_ms)
    page = context.new_page()
    sign_in(page, email)
    page.wait_for_url(re.compile(r"/videos$"))
    page.get_by_role("navigation").get_by_role("link", name="Developers").click()
    page.get_by_label("Label for a new key (optional)").fill("from the browser")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret key").input_value()
    balance = httpx.get(f"{webhook_console.url}/v1/balance", headers={"Authorization": f"Bearer {secret}"}, timeout=60)
    assert balance.status_code == 200
    page.goto("/developers")
    assert secret not in page.content() and page.get_by_text("from the browser").is_visible()

    page.get_by_label("Endpoint URL").fill(receiver.url("/console-hook"))
    page.get_by_role("button", name="Add endpoint").click()
    assert page.get_by_label("Signing secret").input_value().startswith("whsec_")
    page.get_by_role("button", name="Send test event").click()
    delivered = page.locator(".delivery[data-status=delivered]")
    delivered.wait_for()  # the panel polls while the delivery is pending; no reload
    assert "webhook.test" in delivered.inner_text() and "200" in delivered.inner_text()
    [received] = receiver.at("/console-hook")
    assert json.loads(received.body)["type"] == "webhook.test" and received.headers["webhook-signature"]
    context.close()
