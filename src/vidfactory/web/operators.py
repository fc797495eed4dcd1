"""What the operator pages share (tenants, plans, price books, workers, alerts, users), besides the role gate
and CSRF check of `web/forms.py`: a form's numbers, and the admin API's schema errors put next to every
field they name in the reader's language (an operator's form may be wrong in several fields at once)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from vidfactory.web.console import Console

__all__ = ["field_errors", "number"]

whole_number = re.compile(r"-?\d{1,20}")
# pydantic's error types, and the words that say each one (with its limit from the error's context)
error_words = {"greater_than": "operators.error_gt", "greater_than_equal": "operators.error_ge",
               "less_than": "operators.error_lt", "less_than_equal": "operators.error_le",
               "string_too_short": "operators.error_required", "string_too_long": "operators.error_too_long",
               "string_pattern_mismatch": "operators.error_pattern", "int_type": "operators.error_number",
               "int_parsing": "operators.error_number", "missing": "operators.error_required"}


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
