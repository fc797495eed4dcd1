"""Prompt screening: Aho-Corasick over the normalised prompt, matches mapped back to the original text.

Two passes share one normalisation of the prompt:

- text: every term's normalised skeleton. A term that starts (ends) with a Latin letter only matches at
  a word boundary, so "skill" never matches "kill" and "Sussex" never matches "sex". Separators inside
  a match are accepted where the term itself has them ("child-porn"), when every piece between them
  is at most `spelled_piece_chars_max` characters ("k.i.l.l", "炸 弹"), or when they are punctuation
  without white space: a term of one word split by dots or dashes ("Blue.Cow" for "bluecow") is caught,
  while two words a space apart ("blue cow") stay two words.
- pinyin: Chinese terms of two or more characters also match by pronunciation with tones (homophone
  swaps such as 涩情 for 色情), and typed pinyin without tones ("se qing"). Such matches score lower: a
  `block` term matched only by sound sends the job to review instead.

`allow` entries (innocent phrases such as "bath bomb") drop every match they overlap, except that a
tenant's allow list never lifts a platform `block`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick
from pypinyin import Style, lazy_pinyin

from vidfactory.safety.lexicon import Entry
from vidfactory.safety.normalize import Normalised, is_han, is_word, normalise

__all__ = ["Match", "Prepared", "Screener", "Verdict", "decide", "prepare", "screen_text"]

spelled_piece_chars_max = 2
pinyin_terms_han_min = 2
exact_score = 1.0
pinyin_score = 0.5
severity = {"pass": 0, "review": 1, "block": 2}


@dataclass(frozen=True)
class Match:
    term: str
    category: str
    action: str
    start: int  # offsets in the original text
    end: int
    score: float  # 1.0 for a spelling match, lower for a match by sound
    source: str  # "platform" or "tenant"

    @property
    def effective_action(self) -> str:
        """What the match asks for once its score is weighed: a match by sound never blocks alone."""
        if self.action == "block" and self.score < exact_score:
            return "review"
        return self.action


@lru_cache(maxsize=65536)
def _syllable(ch: str) -> str:
    """The character's most common reading with its tone digit ('色' → 'se4'); '' when it has none."""
    reading = lazy_pinyin(ch, style=Style.TONE3, errors="ignore")
    return reading[0] if reading else ""


@dataclass(frozen=True)
class Pinyin:
    """The normalised text read aloud: Han characters become toned syllables, Latin letters stay.
    `index[k]` is the normalised character letter k came from; a match may start only where `starts`
    and end only where `ends` say (syllable or Latin word edges); `breaks` are separators before letters."""

    text: str
    index: tuple[int, ...]
    starts: frozenset[int]
    ends: frozenset[int]
    breaks: frozenset[int]
    from_han: tuple[bool, ...]


def _to_pinyin(n: Normalised) -> Pinyin:
    letters: list[str] = []
    index: list[int] = []
    starts: set[int] = set()
    ends: set[int] = set()
    breaks: set[int] = set()
    from_han: list[bool] = []
    kinds, count = n.kinds, len(n.text)
    for i, ch in enumerate(n.text):
        han = kinds[i] == "h"
        syllable = _syllable(ch) if han else ch
        if not syllable:
            continue
        first = len(letters)
        if han or n.breaks[i] or kinds[i - 1] == "h":  # i == 0 always has a break
            starts.add(first)
        if n.breaks[i]:
            breaks.add(first)
        if han:
            letters.extend(syllable)
            index.extend([i] * len(syllable))
            from_han.extend([True] * len(syllable))
        else:
            letters.append(ch)
            index.append(i)
            from_han.append(False)
        if han or i + 1 == count or n.breaks[i + 1] or kinds[i + 1] == "h":
            ends.add(len(letters) - 1)
    return Pinyin("".join(letters), tuple(index), frozenset(starts), frozenset(ends), frozenset(breaks),
                  tuple(from_han))


@dataclass(frozen=True)
class Prepared:
    """A prompt normalised once, for every screener that looks at it."""

    original: str
    normalised: Normalised
    pinyin: Pinyin


def prepare(text: str) -> Prepared:
    n = normalise(text)
    return Prepared(text, n, _to_pinyin(n))


@dataclass(frozen=True)
class _Key:
    entry: Entry
    length: int
    breaks: frozenset[int]  # offsets inside the key where the term itself has a separator
    latin_start: bool
    latin_end: bool
    toneless: bool = False  # a typed-pinyin key: only matches letters that were typed, not Han


def _text_key(entry: Entry) -> tuple[str, _Key] | None:
    n = normalise(entry.term)
    if not n.text:
        return None
    inner = frozenset(i for i, brk in enumerate(n.breaks) if brk and i > 0)
    return n.text, _Key(entry, len(n.text), inner, is_word(n.text[0]), is_word(n.text[-1]))


def _pinyin_keys(entry: Entry) -> list[tuple[str, _Key]]:
    n = normalise(entry.term)
    if entry.action == "allow" or len(n.text) < pinyin_terms_han_min or not all(is_han(c) for c in n.text):
        return []
    syllables = [_syllable(c) for c in n.text]
    if not all(syllables):
        return []
    toned = "".join(syllables)
    edges = frozenset(sum(len(s) for s in syllables[:k]) for k in range(1, len(syllables)))
    toneless = "".join(s.rstrip("012345") for s in syllables)
    toneless_edges = frozenset(sum(len(s.rstrip("012345")) for s in syllables[:k]) for k in range(1, len(syllables)))
    return [(toned, _Key(entry, len(toned), edges, False, False)),
            (toneless, _Key(entry, len(toneless), toneless_edges, True, True, toneless=True))]


def _automaton(pairs: Iterable[tuple[str, _Key]]) -> ahocorasick.Automaton | None:
    automaton = ahocorasick.Automaton()
    for key, value in pairs:
        existing = automaton.get(key, [])
        automaton.add_word(key, existing + [value])
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _pieces_ok(breaks: Sequence[int], start: int, end: int, allowed: frozenset[int]) -> bool:
    """Separators inside [start, end) cut it into pieces; each piece is spelled out (short) or lies
    between separators the term itself has ("p.i.p.e-bomb" for "pipe bomb")."""
    inner = [p for p in breaks if start < p < end]
    edges = [start, *inner, end]
    term_edge = {start, end} | {start + offset for offset in allowed}
    return all(b - a <= spelled_piece_chars_max or (a in term_edge and b in term_edge)
               for a, b in zip(edges, edges[1:]))


class Screener:
    """One compiled lexicon (the platform's, or one tenant's additions)."""

    def __init__(self, entries: Iterable[Entry], source: str = "platform") -> None:
        entries = list(entries)
        self.source = source
        self.size = len(entries)
        self._text = _automaton(key for key in map(_text_key, entries) if key is not None)
        self._pinyin = _automaton(pair for entry in entries for pair in _pinyin_keys(entry))

    def matches(self, prepared: Prepared) -> list[Match]:
        found = self._text_matches(prepared.normalised)
        spelled = {(m.term, m.start, m.end) for m in found}
        found += [m for m in self._pinyin_matches(prepared) if (m.term, m.start, m.end) not in spelled]
        return found

    def _match(self, key: _Key, span: tuple[int, int], score: float) -> Match:
        return Match(key.entry.term, key.entry.category, key.entry.action, span[0], span[1], score, self.source)

    def _text_matches(self, n: Normalised) -> list[Match]:
        if self._text is None or not n.text:
            return []
        text, breaks, kinds = n.text, n.breaks, n.kinds
        space_positions = [i for i, spaced in enumerate(n.spaced) if spaced]
        found = []
        for last, keys in self._text.iter(text):
            for key in keys:
                start, end = last - key.length + 1, last + 1
                if key.latin_start and not (breaks[start] or kinds[start - 1] != "w" or n.leet[start - 1]):
                    continue
                if key.latin_end and not (end == len(text) or breaks[end] or kinds[end] != "w" or n.leet[end]):
                    continue
                if not _pieces_ok(space_positions, start, end, key.breaks):
                    continue
                found.append(self._match(key, n.span(start, end), exact_score))
        return found

    def _pinyin_matches(self, prepared: Prepared) -> list[Match]:
        p = prepared.pinyin
        if self._pinyin is None or not p.text:
            return []
        breaks = sorted(p.breaks)
        found = []
        for last, keys in self._pinyin.iter(p.text):
            for key in keys:
                start, end = last - key.length + 1, last + 1
                if start not in p.starts or last not in p.ends:
                    continue
                if key.toneless and any(p.from_han[start:end]):
                    continue
                if not _pieces_ok(breaks, start, end, key.breaks):
                    continue
                span = prepared.normalised.span(p.index[start], p.index[last] + 1)
                found.append(self._match(key, span, pinyin_score))
        return found


@dataclass(frozen=True)
class Verdict:
    action: str  # "pass", "review" or "block"
    category: str | None  # the category of the match that decided it
    matches: tuple[Match, ...]  # what is left after allow entries (admins only: never shown to users)


def _lifts(allow: Match, match: Match) -> bool:
    overlaps = allow.start < match.end and match.start < allow.end
    tenant_over_platform_block = allow.source == "tenant" and match.source == "platform" and match.action == "block"
    return overlaps and not tenant_over_platform_block


def decide(matches: Iterable[Match]) -> Verdict:
    matches = list(matches)
    allows = [m for m in matches if m.action == "allow"]
    standing = [m for m in matches if m.action != "allow" and not any(_lifts(a, m) for a in allows)]
    if not standing:
        return Verdict("pass", None, ())
    decisive = max(standing, key=lambda m: (severity[m.effective_action], m.score, m.end - m.start))
    return Verdict(decisive.effective_action, decisive.category, tuple(sorted(standing, key=lambda m: m.start)))


def screen_text(text: str, screeners: Iterable[Screener]) -> Verdict:
    prepared = prepare(text)
    return decide(m for screener in screeners for m in screener.matches(prepared))
