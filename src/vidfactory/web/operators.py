"""What the operator pages share (tenants, plans, price books, workers, alerts, users): the role gate, the
posted form read under its CSRF check, and a schema's validation errors put next to the fields they name
in the reader's language. The pages call the same services, with the same schemas, as `/v1/admin`."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from vidfactory.web.console import Console

__all__ = ["field_errors", "number", "opened", "posted"]

form_chars_max = 1000  # any one field of an operator's form
whole_number = re.compile(r"-?\d{1,20}")
# pydantic's error types, and the words that say each one (with its limit from the error's context)
error_words = {"greater_than": "operators.error_gt", "greater_than_equal": "operators.error_ge",
               "less_than": "operators.error_lt", "less_than_equal": "operators.error_le",
               "string_too_short": "operators.error_required", "string_too_long": "operators.error_too_long",
               "string_pattern_mismatch": "operators.error_pattern", "int_type": "operators.error_number",
               "int_parsing": "operators.error_number", "missing": "operators.error_required"}


def opened(request: Request, page_name: str) -> Console | Response:
    """The page for a signed-in user whose role reaches it, or the answer to send instead."""
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed(page_name):
        return page.error(403, "error.forbidden")
    return page


async def posted(request: Request, page_name: str) -> tuple[Console, dict[str, str]] | Response:
    """`opened`, and the form when its CSRF token is this session's."""
    form = await request.form()
    fields = {key: str(value)[:form_chars_max] for key, value in form.items() if isinstance(value, str)}
    page = opened(request, page_name)
    if isinstance(page, Response):
        return page
    if not page.csrf_ok(fields):
        return page.error(403, "error.csrf")
    return page, fields


def number(value: str) -> int | str:
    """A form's whole number as an int; anything else stays text, which the schema refuses as not a number."""
    value = value.strip()
    return int(value) if whole_number.fullmatch(value) else value


def field_errors(page: Console, exc: ValidationError) -> dict[str, str]:
    """The first error of each field, in the page's language."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "form"
        context: dict[str, Any] = error.get("ctx") or {}
        key = error_words.get(error["type"], "operators.error_invalid")
        errors.setdefault(field, page.t(key, **{name: value for name, value in context.items()
                                                 if isinstance(value, int | float | str)}))
    return errors
