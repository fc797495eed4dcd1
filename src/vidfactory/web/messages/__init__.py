"""The console's words, one module per page (and `common` for what every page shares). Each module holds
an `en` and a `zh` table with the same keys; a key lives in exactly one module."""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["collect"]


def collect(locales: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Every module's tables merged per locale; a key defined twice or missing in one language fails here."""
    merged: dict[str, dict[str, str]] = {locale: {} for locale in locales}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        tables = {locale: getattr(module, locale) for locale in locales}
        keys = set(tables[locales[0]])
        for locale, table in tables.items():
            if set(table) != keys:
                raise RuntimeError(f"messages.{module_info.name}: {locale} differs in keys {sorted(set(table) ^ keys)}")
            twice = keys & set(merged[locale])
            if twice:
                raise RuntimeError(f"messages.{module_info.name}: keys defined twice {sorted(twice)}")
            merged[locale].update(table)
    return merged
