"""The console's words in English and Chinese: chosen from the `vf_lang` cookie (the language switch),
else the browser's Accept-Language, else English. Every label has both (the tables live in
`web/messages/`, one module per page); the API stays English."""

from __future__ import annotations

from collections.abc import Callable

from vidfactory.web.messages import collect

__all__ = ["default_locale", "locale_cookie", "locales", "messages", "pick_locale", "translator"]

locales = ("en", "zh")
default_locale = "en"
locale_cookie = "vf_lang"

messages: dict[str, dict[str, str]] = collect(locales)


def pick_locale(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's choice, else the first supported language of Accept-Language by weight."""
    if cookie in locales:
        return cookie
    ranked = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        ranked.append((-weight, index, tag.strip().lower().split("-")[0]))
    for _, _, language in sorted(ranked):
        if language in locales:
            return language
    return default_locale


def translator(locale: str) -> Callable[..., str]:
    table = messages[locale]

    def t(key: str, **values: object) -> str:
        return table[key].format(**values) if values else table[key]

    return t
