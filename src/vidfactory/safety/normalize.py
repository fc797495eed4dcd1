"""Normalise text for lexicon matching, keeping a map from every normalised character back to the
character of the original text it came from.

The same function normalises the lexicon's terms and the prompts, so a term matches every spelling
that folds to the same skeleton:

1. drop format characters (zero-width spaces and joiners, soft hyphens, BOM, Hangul fillers);
2. NFKC and casefold (full-width, circled, mathematical "fancy" letters), then strip accents;
3. traditional → simplified Chinese (OpenCC `t2s`);
4. Cyrillic/Greek/small-capital look-alikes → Latin; leetspeak digits and symbols inside a word → letters;
   `l` and `i` share one skeleton letter (`1`, `|`, `!` stand for either);
5. separators and symbols between characters are removed: the compact text has only word characters,
   `breaks` marks each character that had a separator (or the start of the text) before it, and
   `spaced` those whose separator included white space: punctuation alone joins ("Blue.Cow").
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import opencc

__all__ = ["Normalised", "is_han", "is_word", "normalise"]

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


@lru_cache(maxsize=65536)
def _kind(ch: str) -> str:
    """'h' Han, 'w' word character, 's' separator or symbol (cached: prompts repeat their characters)."""
    return "h" if is_han(ch) else "w" if ch.isalnum() else "s"


@lru_cache(maxsize=65536)
def _fold(ch: str) -> str:
    """Steps 1–2 for one character: '' for an invisible one, else its NFKC, casefolded, accent-free form."""
    if ch in invisible_letters or unicodedata.category(ch) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", ch).casefold()
    stripped = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).translate(confusables)


@dataclass(frozen=True)
class Normalised:
    """`text` holds only word and Han characters; `origin[i]` is the index in the original text of the
    character `text[i]` came from; `breaks[i]` is True when a separator (or the start) came before it;
    `leet[i]` is True when `text[i]` was a digit or symbol read as a letter; `kinds[i]` is 'h' for a Han
    character, 'w' for a word character; `spaced[i]` is True when white space (or the start) came before it."""

    text: str
    origin: tuple[int, ...]
    breaks: tuple[bool, ...]
    spaced: tuple[bool, ...]
    leet: tuple[bool, ...]
    kinds: str

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's [start, end) behind the normalised [start, end)."""
        assert 0 <= start < end <= len(self.text)
        return self.origin[start], self.origin[end - 1] + 1


def _folded_chars(text: str) -> tuple[list[str], list[int]]:
    """Steps 1–3: one entry per folded character, with the index of its original character."""
    chars: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        for out in _fold(ch):
            chars.append(out)
            origin.append(index)
    joined = "".join(chars)
    if any(is_han(ch) for ch in joined):
        simplified = _t2s().convert(joined)
        # t2s maps character for character; a phrase rule that changed the length would break the
        # offset map, so then each character is converted on its own.
        chars = list(simplified) if len(simplified) == len(chars) else [_t2s().convert(c)[:1] or c for c in chars]
    return chars, origin


def _leet_positions(chars: list[str], kinds: list[str]) -> set[int]:
    """Step 4: which characters are leet letters: those in a run of word characters and leet symbols that
    holds a Latin letter ("a$$", "k1ll", but not "2024" or "$5"). Linear in the text. A trailing "!" read
    as a letter does not hide a word: a leet neighbour counts as a word boundary when matching."""
    positions: set[int] = set()
    run_start, has_letter = 0, False
    for index in range(len(chars) + 1):
        in_run = index < len(chars) and (kinds[index] == "w" or chars[index] in leet_symbols)
        if in_run:
            has_letter = has_letter or chars[index].isalpha()
            continue
        if has_letter:
            positions.update(at for at in range(run_start, index) if chars[at] in leet)
        run_start, has_letter = index + 1, False
    return positions


def normalise(text: str) -> Normalised:
    chars, origin = _folded_chars(text)
    kinds = [_kind(ch) for ch in chars]
    leet_at = _leet_positions(chars, kinds)
    out: list[str] = []
    out_origin: list[int] = []
    out_kinds: list[str] = []
    breaks: list[bool] = []
    spaced: list[bool] = []
    leets: list[bool] = []
    pending_break = pending_space = True
    for index, ch in enumerate(chars):
        kind = kinds[index]
        is_leet = index in leet_at
        if is_leet:
            ch, kind = leet[ch], "w"
        elif kind == "s":
            pending_break = True  # step 5: a separator or symbol is dropped and leaves a break
            pending_space = pending_space or ch.isspace()
            continue
        out.append(ch.translate(skeleton) if kind == "w" else ch)
        out_origin.append(origin[index])
        out_kinds.append(kind)
        breaks.append(pending_break)
        spaced.append(pending_space)
        leets.append(is_leet)
        pending_break = pending_space = False
    return Normalised(text="".join(out), origin=tuple(out_origin), breaks=tuple(breaks), spaced=tuple(spaced),
                      leet=tuple(leets), kinds="".join(out_kinds))
