"""Prompt tokens, counted with the model's own tokenizer: the unit billing charges and truncates in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Encoding, Tokenizer

__all__ = ["TokenCounter", "TokenizerUnavailable", "Truncation"]


class TokenizerUnavailable(Exception):
    """The model's tokenizer cannot be loaded (missing files, not cached, no offsets support)."""

    error_type = "tokenizer_unavailable"


@dataclass(frozen=True)
class Truncation:
    text: str  # a prefix of the original text
    tokens: int  # tokens in `text`
    truncated: bool
    original_tokens: int  # tokens in the original text


class TokenCounter:
    """Counts and truncates text exactly as the model's tokenizer splits it, special tokens excluded.

    Safe to share between threads: it only encodes with a private tokenizer that nothing reconfigures.
    """

    def __init__(self, tokenizer: Tokenizer):
        # A copy, so truncation or padding saved in tokenizer.json (or set by someone else) never cuts counts.
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    @classmethod
    def from_model_path(cls, path: str) -> TokenCounter:
        """Load `path`/tokenizer (a diffusers-layout directory or a cached hub id), never downloading."""
        # Imported here: transformers takes a second to import, which only a process that counts tokens needs.
        import transformers

        try:
            named = _tokenizer_class(path)
            generic = named in generic_tokenizer_classes
            loader = getattr(transformers, named) if generic else transformers.AutoTokenizer
            tokenizer = loader.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        except Exception as exc:  # mapped, not swallowed: from_pretrained fails in many types
            raise TokenizerUnavailable(f"cannot load the tokenizer of the model at {path!r}: {exc}") from exc
        if not getattr(tokenizer, "is_fast", False):
            # Truncation needs the character offsets only the `tokenizers` backend reports.
            raise TokenizerUnavailable(
                f"the tokenizer at {path!r} is {type(tokenizer).__name__}, not a fast tokenizer: "
                f"its directory needs a tokenizer.json"
            )
        return cls(tokenizer.backend_tokenizer)

    def count(self, text: str) -> int:
        return len(self._encode(text).ids)

    def truncate(self, text: str, tokens_max: int) -> Truncation:
        """The longest prefix of `text` cut at a token boundary that has at most `tokens_max` tokens."""
        if tokens_max < 0:
            raise ValueError(f"tokens_max must be >= 0, got {tokens_max}")
        encoding = self._encode(text)
        original_tokens = len(encoding.ids)
        if original_tokens <= tokens_max:
            return Truncation(
                text=text, tokens=original_tokens, truncated=False, original_tokens=original_tokens
            )
        prefix, tokens = self._fitting_prefix(text, encoding.offsets, tokens_max)
        assert tokens <= tokens_max, f"truncated prompt has {tokens} tokens, more than {tokens_max}"
        return Truncation(text=prefix, tokens=tokens, truncated=True, original_tokens=original_tokens)

    def _encode(self, text: str) -> Encoding:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def _fitting_prefix(
        self, text: str, offsets: Sequence[tuple[int, int]], tokens_max: int
    ) -> tuple[str, int]:
        # Re-tokenizing a prefix can merge differently at its new end (BPE and unigram are not prefix-stable),
        # so verify and keep one token fewer until it fits; the empty prefix (0 tokens) always does.
        for kept in range(tokens_max, 0, -1):
            prefix = text[: _cut_offset(offsets, kept)]
            tokens = self.count(prefix)
            if tokens <= tokens_max:
                return prefix, tokens
        return "", 0


def _cut_offset(offsets: Sequence[tuple[int, int]], kept: int) -> int:
    """Character offset where the first `kept` tokens end, never inside a character the next token shares.

    Byte tokens of one multi-byte character all report that character's span, so when the next token
    starts before the kept tokens end, the boundary is inside a character: cut before it.
    """
    return min(offsets[kept - 1][1], offsets[kept][0])


# Classes that load tokenizer.json as it is, which AutoTokenizer would pick by the same name. Loading them
# directly skips AutoTokenizer's configuration machinery, which imports torch (a second of CPU) and takes 0.1 s
# a load. A model's own class (T5Tokenizer for Wan) rebuilds parts of the pipeline itself: AutoTokenizer.
generic_tokenizer_classes = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})


def _tokenizer_class(path: str) -> str | None:
    """The class `path`/tokenizer/tokenizer_config.json names, when `path` is a local directory that has one."""
    try:
        config = json.loads((Path(path) / "tokenizer" / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None
