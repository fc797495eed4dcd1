"""Lexicon files: plain UTF-8 text, one term a line, `term<TAB>category<TAB>action`.

`action` is `block` (refuse the request), `review` (hold the job for an admin) or `allow` (an innocent
phrase: any match overlapping it is dropped, e.g. "bath bomb", "紫砂"). Lines starting with `#` and
blank lines are ignored. The platform ships `default_lexicon.tsv`; an operator replaces it with their
own file through the `lexicon_path` setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vidfactory.safety.normalize import normalise

__all__ = ["LexiconError", "Entry", "actions", "category_pattern", "default_lexicon", "load_lexicon",
           "parse_lexicon", "term_chars_max"]

actions = ("block", "review", "allow")
term_chars_max = 100
category_pattern = re.compile(r"[a-z][a-z0-9_]{0,31}")
default_lexicon_name = "default_lexicon.tsv"


class LexiconError(ValueError):
    """A lexicon line or entry is malformed; the message names the line."""


@dataclass(frozen=True)
class Entry:
    term: str
    category: str
    action: str

    def __post_init__(self) -> None:
        if not self.term.strip() or len(self.term) > term_chars_max or "\t" in self.term or "\n" in self.term:
            raise LexiconError(f"term must be 1–{term_chars_max} characters without tabs or newlines")
        if not normalise(self.term).text:
            raise LexiconError(f"term {self.term!r} has no letters, digits or Han characters to match")
        if category_pattern.fullmatch(self.category) is None:
            raise LexiconError(f"category {self.category!r} must match {category_pattern.pattern}")
        if self.action not in actions:
            raise LexiconError(f"action {self.action!r} must be one of {', '.join(actions)}")


def parse_lexicon(text: str, source: str = "<lexicon>") -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise LexiconError(f"{source}:{number}: expected term<TAB>category<TAB>action, got {len(fields)} fields")
        try:
            entries.append(Entry(fields[0].strip(), fields[1].strip(), fields[2].strip()))
        except LexiconError as exc:
            raise LexiconError(f"{source}:{number}: {exc}") from exc
    return entries


def load_lexicon(path: Path) -> list[Entry]:
    return parse_lexicon(path.read_text(encoding="utf-8"), str(path))


def default_lexicon() -> list[Entry]:
    text = resources.files("vidfactory.safety").joinpath(default_lexicon_name).read_text(encoding="utf-8")
    return parse_lexicon(text, default_lexicon_name)
