"""Price books and quotes: pure functions from a request's shape and token count to tokens and money.

Tokens are the billing unit (integers). Money appears only as tokens × unit_price, a Decimal rounded
once, to `amount_quantum`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DurationTable",
    "PriceBookBody",
    "Quote",
    "ResolutionTier",
    "body_sha256",
    "default_price_book",
    "quote",
    "resolution_tier",
    "duration_bucket",
]

DurationTable = dict[str, dict[str, int]]  # tier name -> duration bucket ("5", "10", "30") -> value


class ResolutionTier(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str = Field(min_length=1, max_length=16)
    short_side_max_px: int = Field(ge=16, le=8192)


class PriceBookBody(BaseModel):
    """The content of one published price book version. Validated at publish; immutable afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = Field(default="CNY", min_length=3, max_length=3)
    unit_price: Decimal = Field(default=Decimal("0.001"), gt=0, max_digits=18, decimal_places=9)
    amount_quantum: Decimal = Field(default=Decimal("0.001"), gt=0)
    method: Literal["ratio", "table"] = "ratio"
    prompt_tokens_max: int = Field(default=512, ge=1, le=100_000)
    resolution_tiers: list[ResolutionTier] = Field(
        default_factory=lambda: [
            ResolutionTier(name="480p", short_side_max_px=480),
            ResolutionTier(name="720p", short_side_max_px=720),
            ResolutionTier(name="1080p", short_side_max_px=8192),
        ]
    )
    duration_buckets_s: list[int] = Field(default_factory=lambda: [5, 10, 30])
    # ratio method: output tokens = input tokens × k[tier][bucket]
    ratio_k: DurationTable = Field(
        default_factory=lambda: {
            "480p": {"5": 2, "10": 4, "30": 6},
            "720p": {"5": 3, "10": 5, "30": 8},
            "1080p": {"5": 6, "10": 10, "30": 16},
        }
    )
    # table method: fixed output tokens per tier and bucket, plus audio
    table_output_tokens: DurationTable = Field(
        default_factory=lambda: {
            "480p": {"5": 128, "10": 256, "30": 512},
            "720p": {"5": 256, "10": 512, "30": 1024},
            "1080p": {"5": 512, "10": 1024, "30": 2048},
        }
    )
    audio_output_tokens: int = Field(default=256, ge=0)

    @model_validator(mode="after")
    def _tables_cover_every_tier_and_bucket(self) -> PriceBookBody:
        assert self.duration_buckets_s == sorted(set(self.duration_buckets_s)), "buckets must ascend"
        sides = [t.short_side_max_px for t in self.resolution_tiers]
        if sides != sorted(set(sides)):
            raise ValueError("resolution_tiers must ascend by short_side_max_px")
        keys = {str(b) for b in self.duration_buckets_s}
        for table_name in ("ratio_k", "table_output_tokens"):
            table: DurationTable = getattr(self, table_name)
            for tier in self.resolution_tiers:
                row = table.get(tier.name)
                if row is None or set(row) != keys:
                    raise ValueError(f"{table_name} must have buckets {sorted(keys)} for tier {tier.name}")
                if any(v < 0 for v in row.values()):
                    raise ValueError(f"{table_name} values must be non-negative")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def default_price_book() -> PriceBookBody:
    return PriceBookBody()


def body_sha256(body: PriceBookBody) -> str:
    return hashlib.sha256(body.canonical_json().encode()).hexdigest()


@dataclass(frozen=True)
class Quote:
    method: str
    tier: str
    duration_bucket_s: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    currency: str
    amount: Decimal


def resolution_tier(book: PriceBookBody, width: int, height: int) -> str:
    short_side = min(width, height)
    for tier in book.resolution_tiers:
        if short_side <= tier.short_side_max_px:
            return tier.name
    raise ValueError(f"{width}x{height} is larger than every resolution tier of the price book")


def duration_bucket(book: PriceBookBody, seconds: int) -> int:
    for bucket in book.duration_buckets_s:
        if seconds <= bucket:
            return bucket
    raise ValueError(f"{seconds} s is longer than the price book's longest duration ({book.duration_buckets_s[-1]} s)")


def money(book: PriceBookBody, tokens: int) -> Decimal:
    return (Decimal(tokens) * book.unit_price).quantize(book.amount_quantum, rounding=ROUND_HALF_UP)


def quote(book: PriceBookBody, *, input_tokens: int, width: int, height: int, seconds: int,
          audio: bool = False) -> Quote:
    assert 0 <= input_tokens <= book.prompt_tokens_max, "prompt must be truncated before quoting"
    tier = resolution_tier(book, width, height)
    bucket = duration_bucket(book, seconds)
    if book.method == "ratio":
        output_tokens = input_tokens * book.ratio_k[tier][str(bucket)]
    else:
        output_tokens = book.table_output_tokens[tier][str(bucket)]
    if audio:
        output_tokens += book.audio_output_tokens
    total = input_tokens + output_tokens
    return Quote(
        method=book.method,
        tier=tier,
        duration_bucket_s=bucket,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        currency=book.currency,
        amount=money(book, total),
    )
