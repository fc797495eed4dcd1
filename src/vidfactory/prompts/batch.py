"""Batch expansion: variable lists become items, as a cartesian product or zipped, each item tagged
with its variables and, optionally, an A/B group."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from vidfactory.prompts.errors import PromptError

__all__ = ["BatchItem", "expand", "expansion_modes"]

expansion_modes = ("cartesian", "zip")


@dataclass(frozen=True)
class BatchItem:
    index: int  # 0-based position in expansion order
    variables: dict[str, str]
    ab_group: str | None


def _count(lists: dict[str, list[str]], mode: str) -> int:
    lengths = [len(values) for values in lists.values()]
    if mode == "zip":
        if len(set(lengths)) > 1:
            sizes = ", ".join(f"{name}={len(values)}" for name, values in lists.items())
            raise PromptError("variables", f"zip needs lists of one length; got {sizes}")
        return lengths[0] if lengths else 1
    return math.prod(lengths)


def expand(lists: dict[str, list[str]], mode: str, items_max: int, ab_groups: list[str] | None = None
           ) -> list[BatchItem]:
    """Items in expansion order (cartesian: the last variable varies fastest). With `ab_groups`, items
    take the groups in turn (item i → ab_groups[i % len]), so every group gets an even share. The item
    count is checked against `items_max` before anything is built."""
    assert items_max >= 1
    if mode not in expansion_modes:
        raise PromptError("mode", f"unknown expansion mode {mode!r}; use {' or '.join(expansion_modes)}")
    for name, values in lists.items():
        if not values:
            raise PromptError(f"variables.{name}", f"variable {name!r} has an empty list")
    count = _count(lists, mode)
    if count > items_max:
        raise PromptError("variables", f"this batch expands to {count} items; a batch holds at most {items_max}",
                          code="batch_too_large")
    if ab_groups is not None and (not ab_groups or len(set(ab_groups)) != len(ab_groups)):
        raise PromptError("ab_groups", "ab_groups must be distinct labels, at least one")
    names = list(lists)
    rows = itertools.product(*lists.values()) if mode == "cartesian" else zip(*lists.values(), strict=True)
    if not names:
        rows = iter([()])
    return [BatchItem(index=i, variables=dict(zip(names, row, strict=True)),
                      ab_group=None if ab_groups is None else ab_groups[i % len(ab_groups)])
            for i, row in enumerate(rows)]
