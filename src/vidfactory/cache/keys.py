"""Cache keys from plain values: the fingerprint of what determines a clip (exact hits), and the key of
its prompt's canonical form within the same shape (similar hits; see `cache.canonical`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from vidfactory.cache.canonical import canonical

__all__ = ["CacheSpec", "fingerprint", "shape_key", "similar_key"]

canonical_version = 1  # bumped whenever `canonical` changes: older keys then simply stop matching


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
    styles: tuple[tuple[str, float], ...] = ()  # (adapter SHA-256, scale) of each style, in the order applied


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def shape_key(spec: CacheSpec) -> str:
    """The reference image and the styles are part of the shape, so that even `similar` lookups (which
    compare prompts within one shape) never serve a clip made from another image or style, or from none.
    Each is left out when there is none, so that keys stay what they were before images and styles existed."""
    fields = asdict(spec)
    if fields["reference_sha256"] is None:
        del fields["reference_sha256"]
    if not fields["styles"]:  # likewise: unstyled keys stay what they were before styles existed
        del fields["styles"]
    return _digest({"v": 1, **fields})


def fingerprint(spec: CacheSpec, prompt: str) -> str:
    """Exact: the prompt the model reads, unaltered."""
    return _digest({"shape": shape_key(spec), "prompt": prompt})


def similar_key(shape: str, prompt: str) -> tuple[str, str] | None:
    """(key, canonical form) for `similar` lookups; None when the prompt is nothing but filler."""
    form = canonical(prompt)
    if not form:
        return None
    return _digest({"v": canonical_version, "shape": shape, "prompt": form}), form
