"""The console without a browser: every label in both languages, the language chosen from
Accept-Language, the sign-in redirect staying on this site, and the pages' security headers."""

from __future__ import annotations

import re

from vidfactory.web.i18n import messages, pick_locale


def test_every_label_exists_in_both_languages():
    assert set(messages["en"]) == set(messages["zh"])
    assert all(value.strip() for table in messages.values() for value in table.values())


def test_the_language_comes_from_the_cookie_then_accept_language():
    assert pick_locale(None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert pick_locale(None, "fr-FR, en;q=0.5, zh;q=0.7") == "zh"
    assert pick_locale(None, "fr-FR") == "en" and pick_locale(None, None) == "en"
    assert pick_locale("en", "zh-CN") == "en" and pick_locale("xx", "zh-CN") == "zh"


def test_sign_in_never_redirects_off_the_site(client):
    page = client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = client.post("/sign-in", data={"email": "x@example.com", "password": "wrong password",
                                               "csrf_token": token, "next": target})
        assert answer.status_code == 401
        assert f'value="{target}"' not in answer.text


def test_pages_forbid_framing_and_foreign_scripts(client):
    page = client.get("/sign-in")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    docs = client.get("/docs").text
    assert "/static/swagger-ui-" in docs and not re.search(r"(src|href)=\"https?://", docs)


def test_a_sign_in_without_the_forms_token_is_refused(client):
    answer = client.post("/sign-in", data={"email": "x@example.com", "password": "whatever it is"})
    assert answer.status_code == 403
