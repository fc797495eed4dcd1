"""Billing's token counts: the model's own tokenizer, no special tokens, truncation at token boundaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_models import tiny_model_dir  # noqa: F401 - a fixture
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from vidfactory.billing.tokens import (TokenCounter, TokenizerUnavailable, Truncation, _tokenizer_class,
                                       generic_tokenizer_classes)

ENGLISH = "A red fox runs through a snowy forest at dawn, cinematic lighting, slow motion."
CHINESE = "一只红色的狐狸在黎明时分穿过雪林，电影般的灯光，慢动作。"
# Rare characters (not in the tiny corpus) become several byte tokens each: truncation must not split them.
RARE = "龘靐齉 𠀀𪚥 饕餮 🦊🎬"
MIXED = f"{ENGLISH} {CHINESE} {RARE} The end."
TEXTS = [
    ENGLISH,
    CHINESE,
    RARE,
    MIXED,
    "",
    " ",
    "  leading and trailing  ",
    "tab\tand\nnewline",
    "</s> <pad>",
]


@pytest.fixture(scope="module")
def counter(tiny_model_dir: Path) -> TokenCounter:  # noqa: F811 - the imported fixture
    return TokenCounter.from_model_path(str(tiny_model_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):  # noqa: F811 - the imported fixture
    return AutoTokenizer.from_pretrained(str(tiny_model_dir), subfolder="tokenizer", local_files_only=True)


@pytest.mark.parametrize("text", TEXTS)
def test_count_matches_the_model_tokenizer_without_special_tokens(counter, tokenizer, text: str) -> None:
    assert counter.count(text) == len(tokenizer(text, add_special_tokens=False).input_ids)
    # The pipeline's own encoding adds exactly one end-of-sequence token, which billing does not charge.
    assert len(tokenizer(text).input_ids) == counter.count(text) + 1


def test_the_tiny_tokenizer_is_pinned(counter, tokenizer) -> None:
    # Billed counts depend on these ids: a change in the corpus, trainer or library shows here first.
    ids = tokenizer("A red fox runs through a snowy forest at dawn.", add_special_tokens=False).input_ids
    assert ids == [
        35, 773, 762, 692, 85, 821, 259, 706, 91, 763, 444, 281, 67, 495, 16,
    ]  # fmt: skip
    assert counter.count(CHINESE) == 33
    assert counter.count("一只红色的狐狸在黎明时分穿过雪林。") == 22


@pytest.mark.parametrize("text", [CHINESE, RARE])
def test_chinese_is_counted_and_never_unknown(counter, tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert counter.count(text) == len(ids) >= len(text.replace(" ", "")) // 2
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_a_short_prompt_is_unchanged(counter) -> None:
    tokens = counter.count(ENGLISH)
    assert counter.truncate(ENGLISH, 512) == Truncation(
        text=ENGLISH, tokens=tokens, truncated=False, original_tokens=tokens
    )


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, MIXED])
def test_a_prompt_of_exactly_the_limit_is_not_truncated(counter, text: str) -> None:
    tokens = counter.count(text)
    result = counter.truncate(text, tokens)
    assert result == Truncation(text=text, tokens=tokens, truncated=False, original_tokens=tokens)


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, RARE, MIXED])
def test_truncation_keeps_a_fitting_prefix_at_every_limit(counter, text: str) -> None:
    original = counter.count(text)
    for tokens_max in range(original):
        result = counter.truncate(text, tokens_max)
        assert result.truncated and result.original_tokens == original
        assert text.startswith(result.text)
        assert result.tokens == counter.count(result.text) <= tokens_max
        # Never more than one character's byte tokens (at most 4) below the limit.
        assert result.tokens >= tokens_max - 4, (tokens_max, result)


def test_truncation_never_keeps_part_of_a_character(counter) -> None:
    # "龘" alone is three byte tokens: limits of 1 and 2 cannot hold it, so nothing is kept.
    assert counter.count("龘") == 3
    assert counter.truncate("龘", 2) == Truncation(text="", tokens=0, truncated=True, original_tokens=3)
    assert counter.truncate("龘龘", 4).text == "龘"


def test_a_negative_limit_is_refused(counter) -> None:
    with pytest.raises(ValueError, match="tokens_max"):
        counter.truncate(ENGLISH, -1)


def test_counts_ignore_truncation_saved_in_the_tokenizer(tiny_model_dir: Path, counter) -> None:  # noqa: F811
    backend = Tokenizer.from_file(str(tiny_model_dir / "tokenizer" / "tokenizer.json"))
    backend.enable_truncation(4)
    assert TokenCounter(backend).count(MIXED) == counter.count(MIXED) > 4


def test_a_missing_tokenizer_raises_tokenizer_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TokenizerUnavailable, match=str(tmp_path)):
        TokenCounter.from_model_path(str(tmp_path))


def test_a_generic_tokenizer_loads_as_auto_tokenizer_would_without_torch(tiny_model_dir: Path) -> None:  # noqa: F811
    """The tiny model's tokenizer_config names a class that loads tokenizer.json as it is: it is loaded by
    that class directly, the very class AutoTokenizer picks, and torch stays unimported."""
    code = ("import sys\n"
            "from vidfactory.billing.tokens import TokenCounter, _tokenizer_class\n"
            f"counter = TokenCounter.from_model_path({str(tiny_model_dir)!r})\n"
            f"print(_tokenizer_class({str(tiny_model_dir)!r}), 'torch' in sys.modules, counter.count({MIXED!r}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    named, torch_loaded, count = result.stdout.split()
    auto = AutoTokenizer.from_pretrained(str(tiny_model_dir), subfolder="tokenizer", local_files_only=True)
    assert named in generic_tokenizer_classes and type(auto).__name__ == named
    assert (torch_loaded, int(count)) == ("False", len(auto(MIXED, add_special_tokens=False)["input_ids"]))


def test_a_model_specific_tokenizer_class_goes_through_auto_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    assert _tokenizer_class(str(tmp_path)) == "T5Tokenizer" not in generic_tokenizer_classes
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text("[not an object")
    assert _tokenizer_class(str(tmp_path)) is None
