"""Cache keys from plain values: the fingerprint of what determines a clip, and prompt similarity.

Similarity is the Jaccard index of character shingles of the normalised prompt: bigrams inside runs of
CJK characters (Chinese has no spaces and a character carries a word's weight), trigrams elsewhere. A
MinHash signature (64 hashes) cut into 16 bands of 4 gives LSH band keys: prompts with Jaccard 0.7
share a band with probability 0.99, prompts with 0.3 with 0.12, so a lookup reads a handful of
candidates whatever the size of the index, then scores them exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CacheSpec", "band_keys", "fingerprint", "jaccard", "normalise", "shape_key", "shingles",
           "signature"]

hashes_count = 64
band_rows = 4
bands_count = hashes_count // band_rows
minhash_seed = 20261202  # fixed: band keys must be the same in every process and release
whitespace_run = re.compile(r"\s+")


@dataclass(frozen=True)
class CacheSpec:
    """Everything besides the prompt that determines the output. `seed` None: the caller let the
    platform draw one, so any clip made with a drawn seed is as good as another."""

    model: str
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    seed: int | None
    reference_sha256: str | None = None  # image-to-video: the first frame the clip starts from


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def shape_key(spec: CacheSpec) -> str:
    """The reference image is part of the shape, so that even `similar` lookups (which compare prompts
    within one shape) never serve a clip made from another image, or from none. Left out when there is
    none, so that text-to-video keys stay what they were before images existed."""
    fields = asdict(spec)
    if fields["reference_sha256"] is None:
        del fields["reference_sha256"]
    return _digest({"v": 1, **fields})


def fingerprint(spec: CacheSpec, prompt: str) -> str:
    """Exact: the prompt the model reads, unaltered."""
    return _digest({"shape": shape_key(spec), "prompt": prompt})


def normalise(prompt: str) -> str:
    """NFKC (full-width to half-width), case-folded, punctuation and symbols to spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return whitespace_run.sub(" ", text).strip()


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x3040 <= code <= 0x30FF
            or 0xAC00 <= code <= 0xD7AF or 0x20000 <= code <= 0x2A6DF or 0xF900 <= code <= 0xFAFF)


def shingles(normalised: str) -> frozenset[str]:
    runs: list[tuple[bool, str]] = []
    for ch in normalised:
        cjk = _is_cjk(ch)
        if runs and runs[-1][0] == cjk:
            runs[-1] = (cjk, runs[-1][1] + ch)
        else:
            runs.append((cjk, ch))
    grams: set[str] = set()
    for cjk, run in runs:
        run = run if cjk else run.strip()
        n = 2 if cjk else 3
        if not run:
            continue
        if len(run) <= n:
            grams.add(run)
        grams.update(run[i:i + n] for i in range(len(run) - n + 1))
    return frozenset(grams)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _permutations() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(minhash_seed)
    a = rng.integers(1, 2**63, size=hashes_count, dtype=np.uint64) | np.uint64(1)  # odd multipliers
    b = rng.integers(0, 2**63, size=hashes_count, dtype=np.uint64)
    return a, b


def signature(grams: frozenset[str]) -> np.ndarray:
    """MinHash: per hash function, the least (a·x + b mod 2^64) over the shingles' 64-bit digests."""
    assert grams, "a signature needs at least one shingle"
    values = np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                       for g in sorted(grams)], dtype=np.uint64)
    a, b = _permutations()
    with np.errstate(over="ignore"):  # multiplication modulo 2^64 is the hash family
        hashed = values[:, None] * a[None, :] + b[None, :]
    return hashed.min(axis=0)


def band_keys(shape: str, grams: frozenset[str]) -> list[str]:
    """One key per band; the shape is part of it, so only clips of the same shape can be candidates."""
    rows = signature(grams).reshape(bands_count, band_rows)
    return [hashlib.sha1(f"{shape}:{i}:".encode() + row.tobytes()).hexdigest() for i, row in enumerate(rows)]
