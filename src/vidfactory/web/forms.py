"""What the console's form pages share: the signed-in page a role may open, the posted form with its CSRF
check, and a refusal (the API's own exceptions and schema errors) as the field it names and its message."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from vidfactory.api.errors import ApiError, validation_message
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.jobs.screening import ImageRejected, PromptRejected
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.jobs.submit import ActiveJobsLimit
from vidfactory.prompts.errors import PromptError
from vidfactory.styles.errors import StyleError
from vidfactory.tenancy import TenantSuspended
from vidfactory.web.console import Console

__all__ = ["field_chars_max", "opened", "posted", "posted_lists", "refusal", "refusals"]

field_chars_max = 4000  # any one field of these forms (a template's body is the longest)
# What a submission may raise that the person can act on: shown next to the field it names.
refusals = (ApiError, InvalidRequest, PromptError, StyleError, PromptRejected, ImageRejected, InsufficientBalance,
            ActiveJobsLimit, TenantSuspended, ValidationError)


def opened(request: Request, role_page: str) -> Console | Response:
    """The signed-in page, or the answer that ends the request (sign-in, 403 for a role that may not)."""
    page = Console(request)
    if page.principal is None:
        return page.to_sign_in()
    if not page.allowed(role_page):
        return page.error(403, "error.forbidden")
    return page


async def posted(request: Request, role_page: str) -> tuple[Console, dict[str, str]] | Response:
    """The page and its form's fields (bounded), or the answer that ends the request (CSRF refusal too)."""
    page = opened(request, role_page)
    if not isinstance(page, Console):
        return page
    fields = {key: str(value)[:field_chars_max] for key, value in (await request.form()).items()
              if isinstance(value, str)}
    if not page.csrf_ok(fields):
        return page.error(403, "error.csrf")
    return page, fields


def refusal(page: Console, exc: Exception, field_of: dict[str, str] | None = None) -> dict[str, str]:
    """{"param", "message"}: `param` is the form field at fault ("" for the form as a whole); the API's
    param is mapped to the page's field by `field_of`."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ())]
        param, message = ".".join(loc), validation_message(first)
    elif isinstance(exc, ApiError):
        param, message = exc.param or "", exc.message
    elif isinstance(exc, PromptRejected):
        param, message = "prompt", page.t("forms.blocked", category=exc.category)
    elif isinstance(exc, InsufficientBalance):
        param, message = "", page.t("forms.insufficient")
    else:
        param, message = str(getattr(exc, "param", "") or ""), str(exc)
    return {"param": _field(param, field_of or {}), "message": message}


def _field(param: str, field_of: dict[str, str]) -> str:
    """The longest listed prefix of a dotted param (`form.keywords.0` → `form.keywords`), else its head."""
    parts = param.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in field_of:
            return field_of[".".join(parts[:end])]
    return parts[0]


async def posted_lists(request: Request, name: str) -> list[str]:
    """Every value of a field the form repeats (a grid's column), in the order the page sent them."""
    return [str(value)[:field_chars_max] for value in (await request.form()).getlist(name) if isinstance(value, str)]
