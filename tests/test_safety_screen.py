"""Prompt screening without a database: normalisation, offsets, word boundaries, allow lists, and the
pinned evasion and innocent sets (recall and false-positive rate are printed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vidfactory.safety.lexicon import Entry, LexiconError, default_lexicon, load_lexicon, parse_lexicon
from vidfactory.safety.normalize import normalise
from vidfactory.safety.screen import Screener, decide, prepare, screen_text

data = Path(__file__).parent / "data"


def _rows(name: str) -> list[list[str]]:
    rows = []
    for line in (data / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            line = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), line)
            rows.append(line.split("\t"))
    return rows


@pytest.fixture(scope="module")
def platform() -> Screener:
    return Screener(default_lexicon())


def test_evasions_are_caught_with_their_category(platform):
    rows = _rows("screening_evasions.tsv")
    missed = []
    for prompt, category in rows:
        verdict = screen_text(prompt, [platform])
        if verdict.action == "pass" or verdict.category != category:
            missed.append((prompt, verdict.action, verdict.category))
    recall = 1 - len(missed) / len(rows)
    print(f"\nscreening recall: {len(rows) - len(missed)}/{len(rows)} evasions caught ({recall:.1%})")
    assert len(rows) >= 50
    assert missed == []


def test_innocent_prompts_pass(platform):
    rows = _rows("screening_innocent.tsv")
    flagged = [(row[0], screen_text(row[0], [platform])) for row in rows]
    flagged = [(prompt, v.action, [m.term for m in v.matches]) for prompt, v in flagged if v.action != "pass"]
    rate = len(flagged) / len(rows)
    print(f"\nscreening false positives: {len(flagged)}/{len(rows)} innocent prompts flagged ({rate:.1%}): {flagged}")
    assert len(rows) >= 50
    assert rate <= 0.02, flagged


def test_matches_map_back_to_the_original_text(platform):
    prompt = "Ｓｈｏｗ ａ\u200b p.i.p.e-b0mb, then 毒 品"
    verdict = screen_text(prompt, [platform])
    spans = {m.term: prompt[m.start:m.end] for m in verdict.matches}
    assert spans["pipe bomb"] == "p.i.p.e-b0mb"
    assert spans["毒品"] == "毒 品"


def test_normalised_offsets_point_at_source_characters():
    n = normalise("Ｋ\u200b1-ll")
    assert n.text == "kiii"
    assert n.origin == (0, 2, 4, 5)
    assert n.breaks == (True, False, True, False)


def test_word_boundaries_and_allow_entries():
    screener = Screener([Entry("ass", "test", "block"), Entry("bomb", "weapons", "review"),
                         Entry("bath bomb", "innocent", "allow")])
    assert screen_text("a class on assassins", [screener]).action == "pass"
    assert screen_text("what an a$$", [screener]).action == "block"
    assert screen_text("a bath bomb", [screener]).action == "pass"
    assert screen_text("a bath bomb and a bomb", [screener]).action == "review"


def test_sound_alike_matches_only_hold_for_review():
    verdict = screen_text("涩情片", [Screener([Entry("色情", "sexual", "block")])])
    assert verdict.action == "review" and verdict.matches[0].score < 1


def test_tenant_allow_never_lifts_a_platform_block():
    platform = Screener([Entry("heroin", "drugs", "block"), Entry("gun", "weapons", "review")])
    tenant = Screener([Entry("heroin chic", "fashion", "allow"), Entry("gun", "studio", "allow")], source="tenant")
    prepared = prepare("heroin chic photo with a gun")
    verdict = decide([*platform.matches(prepared), *tenant.matches(prepared)])
    assert verdict.action == "block" and [m.term for m in verdict.matches] == ["heroin"]


def test_lexicon_files_parse_and_refuse_bad_lines(tmp_path):
    path = tmp_path / "lexicon.tsv"
    path.write_text("# comment\n\nfoo\tcat_a\tblock\n酒驾\tcat_b\treview\n", encoding="utf-8")
    assert load_lexicon(path) == [Entry("foo", "cat_a", "block"), Entry("酒驾", "cat_b", "review")]
    with pytest.raises(LexiconError, match="lexicon:1"):
        parse_lexicon("foo\tcat\tdelete", "lexicon")
    with pytest.raises(LexiconError, match="2 fields"):
        parse_lexicon("foo\tcat", "lexicon")
    with pytest.raises(LexiconError, match="nothing|no letters"):
        parse_lexicon("!!!\tcat\tblock", "lexicon")


def test_punctuation_joining_the_halves_of_a_latin_term_is_caught_but_a_space_is_not():
    brand = Screener([Entry("bluecow", "brand", "block")], source="tenant")
    for evasion in ("a Blue.Cow can", "BLUE-COW energy drink", "blue_cow logo", "a Blue·Cow sign", "bluecow"):
        assert screen_text(evasion, [brand]).action == "block", evasion
    for innocent in ("a blue cow in a meadow", "blue. Cow grazing", "a blue-eyed cow"):
        assert screen_text(innocent, [brand]).action == "pass", innocent


def test_offsets_survive_characters_that_fold_to_more_or_fewer_than_one(platform):
    prompt = "ﬁre ② 🎬 Ｓｔｒａßｅ ｋ\u200bｉｌｌ a ｂｏｍｂ, 紅色 毒\u200b品"
    verdict = screen_text(prompt, [platform])
    spans = {m.term: prompt[m.start:m.end] for m in verdict.matches}
    assert spans == {"kill": "ｋ\u200bｉｌｌ", "bomb": "ｂｏｍｂ", "毒品": "毒\u200b品"}


def test_the_fast_normalisation_equals_the_general_one_and_sounds_map_back():
    """Prompts without leetspeak or irregular characters take a shortcut; it must agree with the general
    path on every field a match reads, and each sound code must sit on a Han character."""
    import random

    from vidfactory.safety.normalize import _normalise_general, is_han

    rng = random.Random(20261206)
    pool = [chr(c) for c in [*range(32, 127), *range(0x4E00, 0x4E60), 0x3000, 0xFF0C, 0x430, 0xE9, 0x2460, 0x200B]]
    for _ in range(1500):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
        fast, general = normalise(text), _normalise_general(text)
        assert (fast.text, fast.break_list, fast.leet_at, fast.origin, fast.breaks_within(0, len(fast.text), spaced=True)) == (
            general.text, general.break_list, general.leet_at, general.origin,
            general.breaks_within(0, len(general.text), spaced=True)), text
        prepared = prepare(text)
        for position, code in enumerate(prepared.sounds):
            if code != " ":
                assert is_han(prepared.normalised.text[prepared.normalised_index(position)]), text


sound_table_digest = """
import hashlib, sys
if sys.argv[1] == "phrases":
    import pypinyin  # before vidfactory sets PYPINYIN_NO_PHRASES: the phrase dictionary loads
    assert pypinyin.constants.PHRASES_DICT
from vidfactory.safety.screen import _sound_table
table = _sound_table()
extension_b = "".join(chr(code) for code in range(0x20000, 0x20400))
print(hashlib.sha256(table.by_code_point.tobytes() + "".join(map(table.code, extension_b)).encode()).hexdigest())
"""


def test_sound_table_is_the_same_without_phrases():
    """The screening process skips pypinyin's phrase dictionary: every reading it takes, of the Basic
    Multilingual Plane and beyond it, is the one the dictionary would give."""
    env = {name: value for name, value in os.environ.items() if name != "PYPINYIN_NO_PHRASES"}  # ours set it
    digests = [subprocess.run([sys.executable, "-c", sound_table_digest, mode], capture_output=True, text=True,
                              check=True, timeout=120, env=env).stdout for mode in ("phrases", "no phrases")]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64
