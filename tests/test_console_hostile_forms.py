"""Every form the console shows an owner and an operator, sent with hostile values one field at a time
(empty, too long, NUL, control characters, not a number, beyond any integer the database holds): each is
answered without a server error, and the ledger stays whole. What the API's fuzzing does for the API."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from vidfactory.api.app import create_app

from conftest import assert_ledger_clean, make_settings, new_tenant
from test_console_operators import person

hostile_values = ["", "x" * 5000, "a\x00b", "\r", "-1", "abc", "1e400", "9223372036854775808"]
owner_pages = ["/create", "/billing", "/developers", "/styles", "/trainings", "/templates/new", "/batches/new"]
operator_pages = ["/tenants", "/price-books", "/users", "/plans/pro"]
skipped_actions = ("/sign-out", "/account/password")  # they end the session the rest of the test uses
form_pattern = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
field_pattern = re.compile(r'name="([a-z_]+)"')


def forms(html: str) -> list[tuple[str, list[str]]]:
    """(action, field names) of each form on a page, its CSRF token left to `Person.post`."""
    return [(action, sorted(set(field_pattern.findall(body)) - {"csrf_token"}))
            for action, body in form_pattern.findall(html) if not action.startswith(skipped_actions)]


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
        pages = {"owner": [*owner_pages, f"/videos/{video.json()['id']}", "/templates/tpl"],
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
