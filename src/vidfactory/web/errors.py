"""Errors in the console: the API's `code` and `param`, in the page's language, next to the field they name.

The API answers in English with one envelope, `{"error": {"code", "message", "type", "param"}}`; the console
calls the same services, whose exceptions carry the same code and param. `field_error` turns either (an
exception, or an envelope's dict) into a `FieldError`:

- `message`: the words in the page's language, from `web/messages/errors.py`, looked up as
  `errors.<code>.<param>`, then `errors.<code>`, then `errors.generic` (a key whose words need a value the
  error does not carry, such as a category, falls through to the next);
- `detail`: the API's own English message, which names the specifics (limits, model names);
- `param`: the page's form field it belongs to (the API's name mapped through `renamed`), or "" when it
  names none of `fields`: the page then shows it at the top of the form;
- `status`: what the page answers with (the API's status).

How a page uses it (web/create.py does):

    from vidfactory.web.errors import field_error, service_errors

    try:
        ...call the service, as the API route does...
    except service_errors as exc:
        error = field_error(page.locale, exc, fields=("size", "seconds", "keywords"), renamed={"prompt": "keywords"})
        return page.render("page.html", status_code=error.status, error=error, ...)

and its template draws each field with the macros of `partials/form.html`, which put the error (if it
names that field) right under it and mark the input invalid:

    {% from "partials/form.html" import field, invalid, form_error %}
    {{ form_error(error) }}
    {% call field("size", t("create.size"), error) %}
      <select id="size" name="size"{{ invalid(error, "size") }}>...</select>
    {% endcall %}

A live check (htmx) can refresh every field's slot at once with `error_slots(error, fields)`, whose
elements swap out of band. New codes get their words in `web/messages/errors.py` (both languages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vidfactory.api.errors import ApiError
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.jobs.queue import StaleJob
from vidfactory.jobs.screening import ImageRejected, PromptRejected
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.jobs.submit import ActiveJobsLimit
from vidfactory.jobs.training import TrainingsLimit
from vidfactory.prompts.errors import PromptError
from vidfactory.styles.errors import StyleError
from vidfactory.tenancy import TenantSuspended
from vidfactory.web.i18n import messages

__all__ = ["FieldError", "describe", "field_error", "service_errors"]

# What a console handler catches around a service call: each is answered by code and param below.
service_errors = (ApiError, InvalidRequest, PromptError, StyleError, PromptRejected, ImageRejected,
                  InsufficientBalance, ActiveJobsLimit, TrainingsLimit, TenantSuspended, StaleJob)


@dataclass(frozen=True)
class FieldError:
    param: str  # the form field it belongs to; "" for the form as a whole
    code: str
    message: str  # in the page's language
    detail: str  # the API's English message (specifics: limits, names)
    status: int


@dataclass(frozen=True)
class Described:
    status: int
    code: str
    param: str | None
    message: str
    values: dict[str, Any]


def describe(exc: BaseException) -> Described:
    """The status, code and param the API's error handlers (api/errors.py) answer this exception with,
    and the values its words may use."""
    param = getattr(exc, "param", None)
    if isinstance(exc, ApiError):
        return Described(exc.status, exc.code, exc.param, exc.message, {})
    if isinstance(exc, (InvalidRequest, PromptError)):
        return Described(400, exc.code, param, str(exc), {})
    if isinstance(exc, StyleError):
        return Described(exc.status, exc.code, param, str(exc), {})
    if isinstance(exc, PromptRejected):
        return Described(400, "content_policy", "prompt", str(exc), {"category": exc.category})
    if isinstance(exc, ImageRejected):
        return Described(400, "content_policy", exc.param, str(exc), {})
    if isinstance(exc, InsufficientBalance):
        return Described(402, "insufficient_balance", None, str(exc),
                         {"needed": exc.needed, "available": exc.available})
    if isinstance(exc, ActiveJobsLimit):
        return Described(429, "active_jobs_limit", None, str(exc), {"limit": exc.limit})
    if isinstance(exc, TrainingsLimit):
        return Described(403, "plan_limit", None, str(exc), {}) if exc.limit == 0 else \
            Described(429, "trainings_limit", None, str(exc), {"limit": exc.limit})
    if isinstance(exc, TenantSuspended):
        return Described(403, "tenant_suspended", None, str(exc), {})
    if isinstance(exc, StaleJob):
        return Described(409, "invalid_state", None, str(exc), {})
    raise TypeError(f"no error code for {type(exc).__name__}")


def _from_envelope(body: Mapping[str, Any], status: int) -> Described:
    error = body.get("error") or {}
    return Described(status, str(error.get("code") or "generic"), error.get("param"), str(error.get("message", "")),
                     {})


def _words(locale: str, code: str, param: str | None, values: Mapping[str, Any]) -> str:
    table = messages[locale]
    keys = ([f"errors.{code}.{param}"] if param else []) + [f"errors.{code}", "errors.generic"]
    for key in keys:
        if key in table:
            try:
                return table[key].format(**values)
            except KeyError:  # these words need a value this error does not carry: less specific words
                continue
    raise AssertionError("errors.generic has no placeholders")


def field_error(locale: str, error: BaseException | Mapping[str, Any], fields: Iterable[str] = (),
                renamed: Mapping[str, str] | None = None, status: int = 400) -> FieldError:
    """`error`: one of `service_errors`, or an API error envelope (then `status` is its HTTP status).
    `fields`: the page's form fields; `renamed`: API param -> form field where the page names it otherwise."""
    described = _from_envelope(error, status) if isinstance(error, Mapping) else describe(error)
    field = (renamed or {}).get(described.param or "", described.param or "")
    words = _words(locale, described.code, described.param, described.values)
    return FieldError(param=field if field in set(fields) else "", code=described.code, message=words,
                      detail=described.message, status=described.status)
