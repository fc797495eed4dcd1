"""Normalise text for lexicon matching, keeping a map from every normalised character back to the
character of the original text it came from.

The same function normalises the lexicon's terms and the prompts, so a term matches every spelling
that folds to the same skeleton:

1. drop format characters (zero-width spaces and joiners, soft hyphens, BOM, Hangul fillers);
2. NFKC and casefold (full-width, circled, mathematical "fancy" letters), then strip accents;
3. traditional → simplified Chinese, character by character (OpenCC `t2s`);
4. Cyrillic/Greek/small-capital look-alikes → Latin; leetspeak digits and symbols inside a word → letters;
   `l` and `i` share one skeleton letter (`1`, `|`, `!` stand for either);
5. separators and symbols between characters are removed: the compact text has only word characters,
   `breaks` marks each character that had a separator (or the start of the text) before it, and
   `spaced` those whose separator included white space: punctuation alone joins ("Blue.Cow").

Speed: no step loops over the characters in Python. Steps 1–3 are one table built once per process and
applied to the prompt's code points as one array lookup; a second lookup classes each code point (a word
character or not, leetspeak or not, folding to other than one character), so a prompt without leetspeak
or irregular characters is normalised in a handful of array operations. Leetspeak is resolved only in
the runs around the prompt's digits and symbols. Where the pieces start, and the offset map back to the
original text, are computed only when a match needs them: most prompts match no term.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import opencc

__all__ = ["Normalised", "han_class", "is_han", "is_word", "normalise"]

# Look-alikes NFKC leaves alone: Cyrillic, Greek and small capitals that read as Latin letters.
confusables = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ӏ": "l", "ց": "g",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w",
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
})
# Digits and symbols that stand for letters when they sit inside a word ("k1ll", "h@te", "b0mb").
leet = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
        "!": "i", "|": "i", "€": "e", "£": "l", "+": "t"}
leet_symbols = frozenset(ch for ch in leet if not ch.isdigit())
# `l`, `1`, `|`, `!` and `i` are interchangeable in leetspeak, so they share one skeleton letter.
skeleton = str.maketrans({"l": "i"})
# Invisible characters that are letters to Unicode (category Lo), so step 1 must name them.
invisible_letters = frozenset("\u115f\u1160\u3164\uffa0\u2800")
opencc_config = "t2s"
han_class = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
_han = re.compile(f"[{han_class}]")
_white = re.compile(r"\s")
_leet_chars = re.compile("[" + re.escape("".join(leet)) + "]")
# A word as leetspeak writes it: word characters that are not Han, and symbols that stand for letters.
_leet_run = re.compile(f"(?:[^\\W_{han_class}]|[{re.escape(''.join(leet_symbols))}])*")
bmp_size = 0x10000
word_class, leet_class, irregular_class = 1, 2, 4


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    # Cached: building the converter loads its dictionaries (milliseconds); converting is microseconds.
    return opencc.OpenCC(opencc_config)


def is_han(ch: str) -> bool:
    code = ord(ch)
    return (0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x3FFFF)


def is_word(ch: str) -> bool:
    """A character a Latin word is made of (letters and digits of any non-Han script)."""
    return ch.isalnum() and not is_han(ch)


def _fold_char(ch: str) -> str:
    """Steps 1–2 for one character: '' for an invisible one, else its NFKC, casefolded, accent-free form."""
    if ch in invisible_letters or unicodedata.category(ch) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", ch).casefold()
    stripped = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).translate(confusables)


class _Folding:
    """Steps 1–3 as one table, built once on first use for the Basic Multilingual Plane (a fraction of a
    second; traditional characters converted in one OpenCC call); characters beyond it are folded on
    sight. `changing` finds the characters that do not fold to themselves, `irregular` those that fold
    to other than one character: a prompt without them takes no per-character step at all."""

    def __init__(self) -> None:
        table: dict[str, str] = {}
        for code in range(bmp_size):
            if 0xD800 <= code <= 0xDFFF:
                continue
            ch = chr(code)
            folded = _fold_char(ch)
            if folded != ch:
                table[ch] = folded
        han = [chr(c) for c in range(bmp_size) if is_han(chr(c))]
        simplified = _t2s().convert("\n".join(table.get(ch, ch) for ch in han)).split("\n")
        assert len(simplified) == len(han)
        for ch, out in zip(han, simplified):
            if len(out) == 1 and out != table.get(ch, ch):
                table[ch] = out
        self.table = table
        # The same folding for text without irregular characters, as one array lookup per prompt; and
        # which characters step 5 treats as separators, white space, and step 4 as leetspeak.
        self.codes = np.arange(bmp_size, dtype=np.uint32)
        for ch, out in table.items():
            if len(out) == 1:
                self.codes[ord(ch)] = ord(out)
        # Beyond the BMP nothing is white space or leetspeak; separators there are looked up on sight.
        bmp = [chr(code) for code in range(bmp_size)]
        self.separator = np.array([not ch.isalnum() for ch in bmp], dtype=bool)
        self.white = np.array([ch.isspace() for ch in bmp], dtype=bool)
        self.leet = np.zeros(bmp_size, dtype=bool)
        self.leet[[ord(ch) for ch in leet]] = True
        # The common case in two lookups by the prompt's own code points: what each folds to with the
        # skeleton applied, and a class saying whether that is a word character, a leetspeak one, or
        # whether the character folds to other than one character (then the general path runs).
        self.skeleton_codes = np.where(self.codes == ord("l"), ord("i"), self.codes).astype(np.uint32)
        self.char_class = np.where(self.separators(self.codes), 0, word_class).astype(np.uint8)
        self.char_class[self.leet[np.minimum(self.codes, bmp_size - 1)]] |= leet_class
        self.char_class[[ord(ch) for ch, out in table.items() if len(out) != 1]] |= irregular_class
        astral = "\U00010000-\U0010ffff"
        self.changing = re.compile("[" + _char_class(table) + astral + "]")
        self.irregular = re.compile("[" + _char_class({k: v for k, v in table.items() if len(v) != 1}) + astral + "]")

    def separators(self, codes: np.ndarray) -> np.ndarray:
        """Which code points step 5 removes: what `isalnum()` refuses (the underscore included)."""
        if codes.size == 0 or codes.max() < bmp_size:
            return self.separator[codes]
        separator = self.separator[np.minimum(codes, bmp_size - 1)]
        astral = np.flatnonzero(codes >= bmp_size)
        separator[astral] = [not chr(code).isalnum() for code in codes[astral].tolist()]
        return separator

    def irregular_fold(self, text: str) -> str:
        return self.changing.sub(lambda m: self.fold(m.group()), text)

    def fold(self, ch: str) -> str:
        out = self.table.get(ch)
        return out if out is not None else _fold_astral(ch) if ord(ch) >= bmp_size else ch


def _char_class(chars) -> str:
    return "".join(re.escape(ch) for ch in sorted(chars))


@lru_cache(maxsize=65536)
def _fold_astral(ch: str) -> str:
    out = _fold_char(ch)
    if len(out) == 1 and is_han(out):
        simplified = _t2s().convert(out)
        out = simplified if len(simplified) == 1 else out
    return out


@lru_cache(maxsize=1)
def _folding() -> _Folding:
    return _Folding()


@dataclass(frozen=True, eq=False)
class Normalised:
    """`text` holds only word and Han characters. Everything else is computed when first asked for, as
    most prompts match no term and need nothing more: `break_list` holds the positions with a separator
    (or the start) before them (`is_break` and `breaks_within` answer for one match without it),
    `leet_at` those that were a digit or symbol read as a letter; `breaks` and `origin` per character."""

    text: str
    _folded: np.ndarray  # steps 1–4 as code points
    _kept: np.ndarray  # the folded index of each character of `text`
    _leet_folded: tuple[int, ...]  # folded indices of digits and symbols read as letters
    _folded_origin: tuple[int, ...] | None  # folded index → original index; None: the same index

    @cached_property
    def _starts(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self._kept, prepend=-2) > 1)

    @cached_property
    def break_list(self) -> tuple[int, ...]:
        return tuple(self._starts.tolist())

    @cached_property
    def break_set(self) -> frozenset[int]:
        return frozenset(self.break_list)

    @cached_property
    def _kept_list(self) -> list[int]:
        return self._kept.tolist()

    @cached_property
    def _folded_text(self) -> str:
        return _text(self._folded)

    def is_break(self, i: int) -> bool:
        """Whether a separator (or the start of the text) comes before `text[i]`."""
        kept = self._kept_list
        return i == 0 or kept[i] - kept[i - 1] > 1

    def breaks_within(self, start: int, end: int, spaced: bool = False) -> list[int]:
        """The positions in (start, end) with a separator before them; with `spaced`, only those whose
        separator held white space."""
        kept = self._kept_list
        inner = [i for i in range(start + 1, end) if kept[i] - kept[i - 1] > 1]
        if spaced and inner:
            folded = self._folded_text
            inner = [i for i in inner if _white.search(folded, kept[i - 1] + 1, kept[i]) is not None]
        return inner

    @cached_property
    def leet_at(self) -> frozenset[int]:
        if not self._leet_folded:
            return frozenset()
        return frozenset(np.searchsorted(self._kept, self._leet_folded).tolist())

    @cached_property
    def has_han(self) -> bool:
        return _han.search(self.text) is not None

    @cached_property
    def breaks(self) -> tuple[bool, ...]:
        return tuple(i in self.break_set for i in range(len(self.text)))

    def _origin_of(self, i: int) -> int:
        folded = int(self._kept[i])
        return folded if self._folded_origin is None else self._folded_origin[folded]

    @cached_property
    def origin(self) -> tuple[int, ...]:
        return tuple(self._origin_of(i) for i in range(len(self.text)))

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's [start, end) behind the normalised [start, end)."""
        assert 0 <= start < end <= len(self.text)
        return self._origin_of(start), self._origin_of(end - 1) + 1


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _text(codes: np.ndarray) -> str:
    return codes.astype(np.uint32, copy=False).tobytes().decode("utf-32-le")


def _fold_text(text: str) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Steps 1–3 as code points, and the folded text's offset map when some character did not fold to
    exactly one."""
    folding = _folding()
    if folding.irregular.search(text) is None:
        return folding.codes[_codes(text)], None
    folded = folding.irregular_fold(text)
    origin: list[int] = []
    for index, ch in enumerate(text):
        origin.extend([index] * len(folding.fold(ch)))
    return _codes(folded), tuple(origin)


def _apply_leet(folded: str, codes: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Step 4's leetspeak: in a run of word characters and leet symbols holding a letter, digits and
    symbols that stand for letters become those letters ("a$$", "k1ll", but not "2024" or "$5").
    Only the runs around the prompt's few digits and symbols are looked at; `codes` is `folded`."""
    backwards = folded[::-1]
    at: list[int] = []
    run_end = -1
    run_has_letter = False
    for candidate in _leet_chars.finditer(folded):
        position = candidate.start()
        if position >= run_end:
            run_start = len(folded) - _leet_run.match(backwards, len(folded) - position).end()
            run_end = _leet_run.match(folded, position).end()
            run_has_letter = any(ch.isalpha() for ch in folded[run_start:run_end])
        if run_has_letter:
            at.append(position)
    if not at:
        return codes, at
    codes = codes.copy()
    codes[at] = [ord(leet[folded[i]]) for i in at]
    return codes, at


def normalise(text: str) -> Normalised:
    folding = _folding()
    raw = _codes(text)
    if raw.size and raw.max() < bmp_size:
        classes = folding.char_class[raw]
        if not (classes & (leet_class | irregular_class)).any():
            kept = np.flatnonzero(classes)
            return Normalised(text=_text(folding.skeleton_codes[raw[kept]]), _folded=folding.codes[raw], _kept=kept,
                              _leet_folded=(), _folded_origin=None)
    return _normalise_general(text)


def _normalise_general(text: str) -> Normalised:
    """Any text: characters beyond the Basic Multilingual Plane, folding to more or fewer than one
    character, or leetspeak."""
    folding = _folding()
    codes, origin = _fold_text(text)
    leet_folded: list[int] = []
    if folding.leet[np.minimum(codes, bmp_size - 1)].any():  # U+FFFF and beyond: never leetspeak
        codes, leet_folded = _apply_leet(_text(codes), codes)
    # Step 5: keep the word characters.
    kept = np.flatnonzero(~folding.separators(codes))
    compact = codes[kept]
    compact = np.where(compact == ord("l"), ord("i"), compact)  # the skeleton: only word characters are "l"
    return Normalised(text=_text(compact), _folded=codes, _kept=kept, _leet_folded=tuple(leet_folded),
                      _folded_origin=origin)

