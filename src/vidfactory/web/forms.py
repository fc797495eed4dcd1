"""What the console's form pages share: the signed-in page a role may open, the posted form with its CSRF
check, and a refusal (the API's own exceptions, and its schema's errors) as a `FieldError` by the field
it names (web/errors.py)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from vidfactory.api.errors import validation_message
from vidfactory.web.console import Console
from vidfactory.web.errors import FieldError, field_error, service_errors

__all__ = ["field_chars_max", "opened", "posted", "posted_lists", "refusal", "refusals"]

field_chars_max = 4000  # any one field of these forms (a template's body is the longest)
refusals = (*service_errors, ValidationError)


def opened(request: Request, role_page: str) -> Console | Response:
    """The signed-in page, or the answer that ends the request (sign-in, 403 for a role that may not)."""
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed(role_page):
        return page.error(403, "error.forbidden")
    return page


async def posted(request: Request, role_page: str, chars_max: int = field_chars_max,
                 ) -> tuple[Console, dict[str, str]] | Response:
    """The page and its form's fields (each cut at `chars_max`), or the answer that ends the request (CSRF
    refusal too)."""
    page = opened(request, role_page)
    if not isinstance(page, Console):
        return page
    fields = {key: str(value)[:chars_max] for key, value in (await request.form()).items()
              if isinstance(value, str)}
    if not page.csrf_ok(fields):
        return page.error(403, "error.csrf")
    return page, fields


async def posted_lists(request: Request, name: str) -> list[str]:
    """Every value of a field the form repeats (a grid's column), in the order the page sent them."""
    return [str(value)[:field_chars_max] for value in (await request.form()).getlist(name) if isinstance(value, str)]


def refusal(page: Console, exc: Exception, fields: tuple[str, ...], field_of: dict[str, str]) -> FieldError:
    """The error by the page's field it names: an API param is mapped by `field_of` (a dotted one, such as
    the schema's `form.keywords.0`, by its longest listed prefix)."""
    if isinstance(exc, ValidationError):
        # A union (a string, or a list of strings) reports a type mismatch for the branch not taken.
        first = next((e for e in exc.errors() if not e["type"].endswith("_type")), exc.errors()[0])
        param = ".".join(str(part) for part in first.get("loc", ()))
        envelope = {"error": {"code": "invalid_value", "param": param, "message": validation_message(first)}}
        return field_error(page.locale, envelope, fields, {param: _field(param, field_of)})
    param = str(getattr(exc, "param", "") or "")
    return field_error(page.locale, exc, fields, {param: _field(param, field_of)})


def _field(param: str, field_of: dict[str, str]) -> str:
    """The longest listed prefix of a dotted param (`form.keywords.0` → `form.keywords`), else its head."""
    parts = param.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in field_of:
            return field_of[".".join(parts[:end])]
    return parts[0]
