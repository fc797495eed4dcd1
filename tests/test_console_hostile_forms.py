"""Every form the console shows an owner and an operator, sent with hostile values one field at a time
(empty, too long, NUL, control characters, not a number, beyond any integer the database holds), and every
page and action named by an id or a list cursor, with ids no page issues: each is answered without a server
error, and the ledger stays whole. What the API's fuzzing does for the API."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from vidfactory.api.app import create_app

from conftest import assert_ledger_clean, make_settings, new_tenant
from test_console_operators import person

hostile_values = ["", "x" * 5000, "a\x00b", "\r", "-1", "abc", "1e400", "9223372036854775808"]
owner_pages = ["/create", "/billing", "/developers", "/styles", "/trainings", "/templates/new"]
operator_pages = ["/tenants", "/price-books", "/users", "/plans/pro"]
# Pages and actions that take an id or a cursor ({x}), sent ids no page could have issued.
hostile_ids = ["a%00b", "%0d", "9" * 30, "x" * 3000]
pages_by_id = ["/batches/{x}", "/batches/{x}/archive", "/batches/{x}/compare", "/batches/{x}/progress",
               "/billing/statements/{x}", "/developers/webhooks/{x}/deliveries", "/plans/{x}", "/review/{x}/frame/1",
               "/review/{x}/preview/video", "/styles/{x}/download", "/templates/{x}", "/tenants/{x}", "/trainings/{x}",
               "/trainings/{x}/preview", "/trainings/{x}/status", "/videos/{x}", "/videos/{x}/file",
               "/videos/{x}/provenance", "/videos/{x}/status", "/videos/{x}/tile", "/videos?after={x}",
               "/tenants?after={x}", "/users?after={x}", "/trainings?after={x}"]
actions_by_id = ["/videos/{x}/delete", "/videos/{x}/feedback", "/videos/{x}/regenerate", "/videos/{x}/remix",
                 "/review/{x}/approve", "/review/{x}/reject", "/styles/{x}/delete", "/templates/{x}",
                 "/tenants/{x}/credit", "/tenants/{x}/plan", "/tenants/{x}/resume", "/tenants/{x}/suspend",
                 "/tenants/{x}/voucher", "/trainings/{x}/cancel", "/users/{x}/disable", "/users/{x}/reset-password",
                 "/users/{x}/sign-out", "/users/{x}/unlock", "/alerts/{x}/acknowledge", "/plans/{x}",
                 "/developers/keys/{x}/revoke", "/developers/webhooks/{x}/delete", "/developers/webhooks/{x}/test"]
skipped_actions = ("/sign-out", "/account/password")  # they end the session the rest of the test uses
form_pattern = re.compile(r'<form([^>]*)>(.*?)</form>', re.S)
target_pattern = re.compile(r'(?:hx-post|action)="([^"]+)"')
field_pattern = re.compile(r'name="([a-z_]+)"')


def forms(html: str) -> list[tuple[str, list[str]]]:
    """(where it posts, field names) of each form on a page, its live quote (hx-post) too; the CSRF token
    is left to `Person.post`."""
    found = []
    for attributes, body in form_pattern.findall(html):
        if 'method="get"' in attributes:
            continue
        names = sorted(set(field_pattern.findall(body)) - {"csrf_token"})
        found += [(target, names) for target in target_pattern.findall(attributes)
                  if not target.startswith(skipped_actions)]
    return found


def test_no_console_form_answers_a_server_error(tmp_path, database_url, models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024, rate_limit_enabled=False)
    app = create_app(settings, workers=0)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        sessions = app.state.ctx.sessions
        tenant = new_tenant(sessions, tokens=10**6)
        auth = {"Authorization": f"Bearer {tenant.key}"}
        video = client.post("/v1/videos", headers=auth, json={"prompt": "a fox", "size": "64x64", "seconds": "1"})
        template = client.post("/v1/templates", headers=auth,
                               json={"name": "tpl", "body": "a {{ thing }}", "size": "64x64", "seconds": 1})
        assert (video.status_code, template.status_code) == (200, 201)
        owned = [f"/videos/{video.json()['id']}", "/templates/tpl", "/batches/new?template=tpl"]
        pages = {"owner": [*owner_pages, *owned],
                 "operator": [*operator_pages, f"/tenants/{tenant.id}"]}
        failures, sent = [], 0
        for role, paths in pages.items():
            user = person(client, role, tenant.id if role == "owner" else None)
            for path in paths:
                for action, names in forms(user.client.get(path).text):
                    for name in names:
                        for value in hostile_values:
                            answer = user.post(action, **{**dict.fromkeys(names, "1"), name: value})
                            sent += 1
                            if answer.status_code >= 500:
                                failures.append((role, action, name, value[:20], answer.status_code))
            client.cookies.clear()
    assert sent > 500, sent  # the pages still have their forms
    assert not failures, failures
    assert_ledger_clean(sessions)


def test_no_console_page_or_action_answers_a_server_error_for_an_id_it_never_issued(tmp_path, database_url,
                                                                                   models_dir):
    settings = make_settings(tmp_path, database_url, models_dir, password_hash_time_cost=1,
                             password_hash_memory_kib=1024, rate_limit_enabled=False)
    app = create_app(settings, workers=0)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        tenant = new_tenant(app.state.ctx.sessions, tokens=1000)
        failures = []
        for role in ("owner", "operator"):
            user = person(client, role, tenant.id if role == "owner" else None)
            for x in hostile_ids:
                answers = [("GET", path, user.client.get(path.format(x=x))) for path in pages_by_id]
                answers += [("POST", path, user.post(path.format(x=x))) for path in actions_by_id]
                failures += [(role, method, path, x[:10], answer.status_code) for method, path, answer in answers
                             if answer.status_code >= 500]
            client.cookies.clear()
    assert not failures, failures
