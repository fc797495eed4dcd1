"""Price books and quotes: pure functions from a request's shape and token count to tokens and money.

Tokens are the billing unit (integers). Money appears only as tokens × unit_price, a Decimal rounded
once, to `amount_quantum`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from vidfactory import failures

__all__ = [
    "CompensationPolicy",
    "DurationTable",
    "ModelPrice",
    "PriceBookBody",
    "Quote",
    "ResolutionTier",
    "body_sha256",
    "cache_hit_charge",
    "compensation_tokens",
    "default_price_book",
    "model_price",
    "quote",
    "resolution_tier",
    "training_quote",
    "duration_bucket",
]

# tier name -> duration bucket ("5", "10", "30") -> value. Every integer here is strict: JSON's true or "5"
# is no number of tokens, and is refused rather than read as 1 or 5.
DurationTable = dict[str, dict[str, StrictInt]]


table_value_max = 1_000_000  # output tokens, or a ratio k: keeps every quote far inside tokens_max
tiers_max = 8
buckets_max = 8
models_priced_max = 64
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=64)]  # as settings.ModelConfig.id


class ResolutionTier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1, max_length=16)
    short_side_max_px: int = Field(ge=16, le=8192, strict=True)


class CompensationPolicy(BaseModel):
    """A voucher for a job that failed through no fault of the caller: `ratio` of its quote (rounded up,
    0 = no voucher), valid for `expires_days`, for the error types listed (vidfactory.failures; names of
    books published before that vocabulary are read through its legacy names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: Decimal = Field(default=Decimal("0"), ge=0, le=10, max_digits=6, decimal_places=4)
    expires_days: int = Field(default=30, ge=1, le=3650, strict=True)
    error_types: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=lambda: [str(t) for t in failures.compensated_by_default], max_length=32)

    def covers(self, error_type: str) -> bool:
        return failures.read(error_type) in {failures.read(listed) for listed in self.error_types}

    def for_publication(self) -> CompensationPolicy:
        """Every listed type known, legacy names written as what they mean (ValueError otherwise)."""
        listed = [str(failures.recognised(name)) for name in self.error_types]
        return self.model_copy(update={"error_types": list(dict.fromkeys(listed))})


class ModelPrice(BaseModel):
    """One model's own prices: the book's token tables it replaces for that model (a 14B clip costs more
    tokens than a tiny one for the same prompt). What it leaves out, and the unit price, are the book's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio_k: DurationTable | None = None
    table_output_tokens: DurationTable | None = None
    audio_output_tokens: int | None = Field(default=None, ge=0, le=10**9, strict=True)

    def overrides(self) -> dict[str, Any]:
        return {name: value for name, value in self if value is not None}


# The extension mechanism. Fields added after v1 was published, each with the value every book published
# before it existed holds (what those books always did), frozen: a field holding exactly that value is
# left out of the canonical JSON, so those books keep their digests whatever later defaults become.
extension_baselines: dict[str, Any] = {
    "cache_hit_charge_ratio": "0.2",
    "compensation": {"ratio": "0", "expires_days": 30,
                     "error_types": ["engine_error", "timeout", "out_of_memory", "worker_lost", "internal_error",
                                    "media_error", "storage_error", "database_error", "hold_expired"]},
    "models": {},
    "styled_output_ratio": "1",
    "training_step_tokens": 20,
}


class PriceBookBody(BaseModel):
    """The content of one published price book version. Validated at publish; immutable afterwards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = Field(default="CNY", min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")
    unit_price: Decimal = Field(default=Decimal("0.001"), gt=0, le=1_000_000, max_digits=18, decimal_places=9)
    amount_quantum: Decimal = Field(default=Decimal("0.001"), gt=0, le=1, max_digits=12, decimal_places=9)
    method: Literal["ratio", "table"] = "ratio"
    prompt_tokens_max: int = Field(default=512, ge=1, le=100_000, strict=True)
    resolution_tiers: list[ResolutionTier] = Field(
        min_length=1, max_length=tiers_max,
        default_factory=lambda: [
            ResolutionTier(name="480p", short_side_max_px=480),
            ResolutionTier(name="720p", short_side_max_px=720),
            ResolutionTier(name="1080p", short_side_max_px=8192),
        ]
    )
    duration_buckets_s: list[Annotated[int, Field(ge=1, le=3600, strict=True)]] = Field(
        default_factory=lambda: [5, 10, 30], min_length=1, max_length=buckets_max)
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
    audio_output_tokens: int = Field(default=256, ge=0, le=10**9, strict=True)
    # A cache hit is held at the full quote and posted at this share of it; the rest is released.
    cache_hit_charge_ratio: Decimal = Field(default=Decimal("0.2"), ge=0, le=1, max_digits=6, decimal_places=4)
    compensation: CompensationPolicy = Field(default_factory=CompensationPolicy)
    # A video made with styles (LoRA adapters): its output tokens times this, rounded up to whole tokens.
    styled_output_ratio: Decimal = Field(default=Decimal("1"), gt=0, le=100, max_digits=8, decimal_places=4)
    # Per model (its id as configured): its own token tables; a model not listed is priced by the book's.
    models: dict[ModelId, ModelPrice] = Field(default_factory=dict, max_length=models_priced_max)
    # Style training is billed per step (a step is a forward and backward pass: a few denoising steps' work).
    training_step_tokens: int = Field(default=20, ge=1, le=table_value_max, strict=True)

    @model_validator(mode="after")
    def _tables_cover_every_tier_and_bucket(self) -> PriceBookBody:
        if self.duration_buckets_s != sorted(set(self.duration_buckets_s)):
            raise ValueError("duration_buckets_s must ascend")
        sides = [t.short_side_max_px for t in self.resolution_tiers]
        if sides != sorted(set(sides)):
            raise ValueError("resolution_tiers must ascend by short_side_max_px")
        tables = [(name, getattr(self, name)) for name in ("ratio_k", "table_output_tokens")]
        tables += [(f"models.{model}.{name}", table) for model, price in self.models.items()
                   for name, table in (("ratio_k", price.ratio_k), ("table_output_tokens", price.table_output_tokens))
                   if table is not None]
        for table_name, table in tables:
            self._check_table(table_name, table)
        return self

    def _check_table(self, table_name: str, table: DurationTable) -> None:
        keys = {str(b) for b in self.duration_buckets_s}
        if set(table) != {tier.name for tier in self.resolution_tiers}:
            raise ValueError(f"{table_name} must have exactly one row per resolution tier")
        for tier in self.resolution_tiers:
            row = table[tier.name]
            if set(row) != keys:
                raise ValueError(f"{table_name} must have buckets {sorted(keys)} for tier {tier.name}")
            if any(not 0 <= v <= table_value_max for v in row.values()):
                raise ValueError(f"{table_name} values must be between 0 and {table_value_max}")

    def for_model(self, model_id: str) -> PriceBookBody:
        """The book as it prices `model_id`: its own tables where the book lists the model."""
        price = self.models.get(model_id)
        return self if price is None else self.model_copy(update=price.overrides())

    def for_publication(self) -> PriceBookBody:
        """What a new version publishes: its compensation policy in today's names (ValueError: unknown)."""
        return self.model_copy(update={"compensation": self.compensation.for_publication()})

    def canonical_json(self) -> str:
        body = self.model_dump(mode="json")
        for name, baseline in extension_baselines.items():
            if body[name] == baseline:
                del body[name]
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


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


def cache_hit_charge(book: PriceBookBody, quoted_tokens: int) -> int:
    """Tokens posted for a cache hit: the book's share of the quote, rounded half up to whole tokens."""
    charge = int((Decimal(quoted_tokens) * book.cache_hit_charge_ratio).to_integral_value(ROUND_HALF_UP))
    assert 0 <= charge <= quoted_tokens
    return charge


def compensation_tokens(book: PriceBookBody, quoted_tokens: int, error_type: str) -> int:
    """The voucher a failed job earns under the book's policy (0: none)."""
    policy = book.compensation
    if not policy.covers(error_type):
        return 0
    return int((Decimal(quoted_tokens) * policy.ratio).to_integral_value(ROUND_CEILING))


def model_price(book: PriceBookBody, version: int, model_id: str) -> dict[str, Any]:
    """The price that applies to `model_id` under book `version`, as the models list, a quote and a
    statement name it: the model's own entry in the book (`source` "model") or the book's tables ("book")."""
    priced = book.for_model(model_id)
    table = {"ratio_k": priced.ratio_k} if priced.method == "ratio" else \
        {"table_output_tokens": priced.table_output_tokens}
    return {"price_book_version": version, "model": model_id, "source": "model" if model_id in book.models else "book",
            "method": priced.method, "currency": priced.currency, "unit_price": str(priced.unit_price), **table,
            "audio_output_tokens": priced.audio_output_tokens, "styled_output_ratio": str(priced.styled_output_ratio)}


def money(book: PriceBookBody, tokens: int) -> Decimal:
    return (Decimal(tokens) * book.unit_price).quantize(book.amount_quantum, rounding=ROUND_HALF_UP)


def quote(book: PriceBookBody, *, input_tokens: int, width: int, height: int, seconds: int,
          audio: bool = False, styled: bool = False) -> Quote:
    assert 0 <= input_tokens <= book.prompt_tokens_max, "prompt must be truncated before quoting"
    tier = resolution_tier(book, width, height)
    bucket = duration_bucket(book, seconds)
    if book.method == "ratio":
        output_tokens = input_tokens * book.ratio_k[tier][str(bucket)]
    else:
        output_tokens = book.table_output_tokens[tier][str(bucket)]
    if audio:
        output_tokens += book.audio_output_tokens
    if styled:
        output_tokens = int((Decimal(output_tokens) * book.styled_output_ratio).to_integral_value(ROUND_CEILING))
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


def training_quote(book: PriceBookBody, steps: int) -> Quote:
    """A style training: `steps` × the book's price per step, all of it output (nothing is read as a prompt)."""
    assert steps >= 1
    total = steps * book.training_step_tokens
    return Quote(method="steps", tier="training", duration_bucket_s=0, input_tokens=0,
                 output_tokens=total, total_tokens=total, currency=book.currency, amount=money(book, total))
