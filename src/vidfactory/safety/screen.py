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

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import ahocorasick
import numpy as np

# Readings are taken one character at a time, where pypinyin's phrase dictionary changes none of them
# (test_sound_table_is_the_same_without_phrases); loading it cost every screening process 0.25 s at start.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "1")
from pypinyin import Style, lazy_pinyin  # noqa: E402

from vidfactory.safety.lexicon import Entry
from vidfactory.safety.normalize import Normalised, is_han, is_word, normalise, skeleton

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


class _SoundTable:
    """Each toned syllable gets one private-use character, so Han text read aloud is one character per
    syllable: a sound-alike match is a plain substring match, always on syllable edges. Built once per
    process for every Han character of the Basic Multilingual Plane (one pypinyin call, a third of a
    second); characters beyond it are read on sight. In `by_code_point`, a Han character maps to its
    syllable's code (0 without a reading) and anything else to a space."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}
        self.lock = threading.Lock()
        self.by_code_point = np.full(bmp_size, ord(" "), dtype=np.uint32)
        han = [chr(code) for code in range(bmp_size) if is_han(chr(code))]
        readings = lazy_pinyin(han, style=Style.TONE3, errors=lambda chars: [""] * len(chars))
        assert len(readings) == len(han)
        for ch, syllable in zip(han, readings):
            self.by_code_point[ord(ch)] = ord(self._code_of(syllable)) if syllable else 0

    def _code_of(self, syllable: str) -> str:
        with self.lock:
            return self.codes.setdefault(syllable, chr(sound_codes_first + len(self.codes)))

    def code(self, ch: str) -> str:
        """The Han character's syllable code ('' without a reading)."""
        if ord(ch) < bmp_size:
            code = int(self.by_code_point[ord(ch)])
            return chr(code) if code else ""
        syllable = _syllable(ch)
        return self._code_of(syllable) if syllable else ""

    def read(self, text: str) -> tuple[str, np.ndarray]:
        """`text` read aloud: each run of non-Han characters becomes one space and each Han character its
        syllable's code (dropped without a reading); and the index in `text` of each character kept."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        sounds = self.by_code_point[np.minimum(codes, bmp_size - 1)]
        for at in np.flatnonzero(codes >= bmp_size).tolist():
            code = self.code(text[at]) if is_han(text[at]) else " "
            sounds[at] = ord(code) if code else 0
        space = sounds == ord(" ")
        kept = np.flatnonzero((sounds != 0) & ~(space & np.concatenate(([False], space[:-1]))))
        return sounds[kept].tobytes().decode("utf-32-le"), kept


sound_codes_first = 0xF0000  # Supplementary Private Use Area-A: never a prompt's own character
bmp_size = 0x10000


@lru_cache(maxsize=1)
def _sound_table() -> _SoundTable:
    return _SoundTable()


@dataclass(frozen=True)
class Prepared:
    """A prompt normalised once, for every screener that looks at it."""

    original: str
    normalised: Normalised

    @cached_property
    def _read(self) -> tuple[str, np.ndarray]:
        return _sound_table().read(self.normalised.text)

    @property
    def sounds(self) -> str:
        """The normalised text's Han characters as syllable codes; each run of anything else a space."""
        return self._read[0]

    def normalised_index(self, position: int) -> int:
        """The normalised text's index of the Han character at `position` in `sounds`."""
        return int(self._read[1][position])


def prepare(text: str) -> Prepared:
    return Prepared(text, normalise(text))


@dataclass(frozen=True)
class _Key:
    entry: Entry
    length: int
    breaks: frozenset[int]  # offsets inside the key where the term itself has a separator
    latin_start: bool
    latin_end: bool
    typed: bool = False  # typed pinyin: a sound-alike key matched against the letters of the text



def _text_key(entry: Entry) -> tuple[str, _Key] | None:
    n = normalise(entry.term)
    if not n.text:
        return None
    inner = frozenset(i for i in n.break_list if i > 0)
    return n.text, _Key(entry, len(n.text), inner, is_word(n.text[0]), is_word(n.text[-1]))


def _han_syllables(entry: Entry) -> list[str] | None:
    """The readings of a Chinese term of two or more characters (None for any other term)."""
    n = normalise(entry.term)
    if entry.action == "allow" or len(n.text) < pinyin_terms_han_min or not all(is_han(c) for c in n.text):
        return None
    syllables = [_syllable(c) for c in n.text]
    return syllables if all(syllables) else None


def _sound_key(entry: Entry) -> tuple[str, _Key] | None:
    """Toned: matches Han characters that read the same (涩情 for 色情)."""
    syllables = _han_syllables(entry)
    if syllables is None:
        return None
    codes = "".join(map(_sound_table().code, normalise(entry.term).text))
    return codes, _Key(entry, len(codes), frozenset(), False, False)


def _typed_key(entry: Entry) -> tuple[str, _Key] | None:
    """Toneless: matches pinyin typed in letters ("se qing"), spelled like the normalised text."""
    syllables = _han_syllables(entry)
    if syllables is None:
        return None
    typed = [s.rstrip("012345").translate(skeleton) for s in syllables]
    edges = frozenset(sum(map(len, typed[:k])) for k in range(1, len(typed)))
    key = "".join(typed)
    return key, _Key(entry, len(key), edges, True, True, typed=True)


def _automaton(pairs: Iterable[tuple[str, _Key]]) -> ahocorasick.Automaton | None:
    automaton = ahocorasick.Automaton()
    for key, value in pairs:
        existing = automaton.get(key, [])
        automaton.add_word(key, existing + [value])
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _pieces_ok(inner: Sequence[int], start: int, end: int, allowed: frozenset[int]) -> bool:
    """Separators at `inner` (sorted, inside (start, end)) cut [start, end) into pieces; each piece is
    spelled out (short) or lies between separators the term itself has ("p.i.p.e-bomb" for "pipe bomb")."""
    if not inner:
        return True
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
        # One automaton for the text's own letters (terms and typed pinyin: one scan), one for sounds.
        self._text = _automaton(key for keys in (map(_text_key, entries), map(_typed_key, entries))
                                for key in keys if key is not None)
        self._sound = _automaton(key for key in map(_sound_key, entries) if key is not None)

    def matches(self, prepared: Prepared) -> list[Match]:
        spelled, typed = self._text_matches(prepared.normalised)
        by_sound = self._sound_matches(prepared) + typed
        if by_sound:
            seen = {(m.term, m.start, m.end) for m in spelled}
            spelled += [m for m in by_sound if (m.term, m.start, m.end) not in seen]
        return spelled

    def _match(self, key: _Key, span: tuple[int, int], score: float) -> Match:
        return Match(key.entry.term, key.entry.category, key.entry.action, span[0], span[1], score, self.source)

    def _text_matches(self, n: Normalised) -> tuple[list[Match], list[Match]]:
        """(spelled, typed pinyin). Typed pinyin starts and ends at a word's or a Han character's edge;
        its syllables may be split by separators ("se qing")."""
        if self._text is None or not n.text:
            return [], []
        text, leets = n.text, n.leet_at
        spelled, typed = [], []
        for last, keys in self._text.iter(text):
            for key in keys:
                start, end = last - key.length + 1, last + 1
                if key.typed:
                    if (n.is_break(start) or is_han(text[start - 1])) and (
                            end == len(text) or n.is_break(end) or is_han(text[end])) and (
                            _pieces_ok(n.breaks_within(start, end), start, end, key.breaks)):
                        typed.append(self._match(key, n.span(start, end), pinyin_score))
                    continue
                if key.latin_start and not (n.is_break(start) or is_han(text[start - 1]) or start - 1 in leets):
                    continue
                if key.latin_end and not (end == len(text) or n.is_break(end) or is_han(text[end]) or end in leets):
                    continue
                if not _pieces_ok(n.breaks_within(start, end, spaced=True), start, end, key.breaks):
                    continue
                spelled.append(self._match(key, n.span(start, end), exact_score))
        return spelled, typed

    def _sound_matches(self, prepared: Prepared) -> list[Match]:
        if self._sound is None or not prepared.normalised.has_han:
            return []
        found = []
        for last, keys in self._sound.iter(prepared.sounds):
            for key in keys:
                first = prepared.normalised_index(last - key.length + 1)
                final = prepared.normalised_index(last)
                found.append(self._match(key, prepared.normalised.span(first, final + 1), pinyin_score))
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
