"""Request and response schemas, one per purpose, with a limit on every field."""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from vidfactory.branding import brand_logo_bytes_max, brand_text_chars_max
from vidfactory.media.reference import reference_bytes_max
from vidfactory.prompts import templates as tpl

from vidfactory.notify.events import event_types

__all__ = [
    "BrandPublic",
    "BrandSet",
    "AmountPublic",
    "BalancePublic",
    "BatchCreate",
    "EnhanceCreate",
    "FeedbackCreate",
    "RegenerateCreate",
    "RemixCreate",
    "StyleCreate",
    "StyleUse",
    "TemplateCreate",
    "TemplateForm",
    "data_url_chars_max",
    "CreditCreate",
    "ErrorEnvelope",
    "KeyPublic",
    "LexiconEntryCreate",
    "LexiconEntryPublic",
    "PlanCreate",
    "PlanPublic",
    "PlanUpdate",
    "QuotePublic",
    "TenantCreate",
    "TenantPublic",
    "TenantSuspend",
    "PlainText",
    "VideoCreate",
    "WebhookEndpointCreate",
    "WebhookEndpointUpdate",
    "WorkerList",
    "WorkerPublic",
    "has_control_characters",
]

prompt_chars_max = 4000
metadata_keys_max = 16
metadata_key_chars_max = 64
metadata_value_chars_max = 512
seed_max = 2**31 - 1
url_chars_max = 2000
description_chars_max = 200
allowed_controls = {"\n", "\t", "\r"}


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in allowed_controls for ch in text)


def _without_control_characters(value: str) -> str:
    # Shown in consoles and statements, and PostgreSQL refuses NUL in text outright.
    if has_control_characters(value):
        raise ValueError("must not contain control characters")
    return value


PlainText = Annotated[str, AfterValidator(_without_control_characters)]


def _not_blank(value: str) -> str:
    if value and not value.strip():  # empty: the field's min_length says "at least 1 character"
        raise ValueError("must not be blank")
    return value


NonBlankText = Annotated[PlainText, AfterValidator(_not_blank)]  # a prompt or a reason: white space says nothing


# Echoed into webhooks, consoles and logs: no NUL, ESC or other control characters.
MetadataKey = Annotated[PlainText, StringConstraints(min_length=1, max_length=metadata_key_chars_max)]
MetadataValue = Annotated[PlainText, StringConstraints(max_length=metadata_value_chars_max)]


TemplateName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
VariableName = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
VariableValue = Annotated[PlainText, Field(max_length=tpl.variable_chars_max)]
Variables = Annotated[dict[VariableName, VariableValue], Field(max_length=tpl.variables_max)]
batch_values_max = 100  # values in one variable's list


# A style as a request names it: its name, or its id (style_<hex>), which the same pattern admits.
StyleRefText = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
style_scale_limit = 16.0  # the schema's bound; the platform's own (settings.style_scale_max) is checked after
training_rank_max = 128
training_learning_rate_max = 0.05


class StyleUse(BaseModel):
    """One style a video is made with, at `scale` (default: the style's default_scale)."""

    model_config = ConfigDict(extra="forbid")
    style: StyleRefText
    scale: float | None = Field(default=None, ge=0.0, le=style_scale_limit, allow_inf_nan=False, strict=True)


class StyleCreate(BaseModel):
    """The text fields of POST /v1/styles (multipart, beside the `file`)."""

    model_config = ConfigDict(extra="forbid")
    name: StyleRefText
    model: str | None = Field(default=None, min_length=1, max_length=64)
    default_scale: float = Field(default=1.0, ge=0.0, le=style_scale_limit, allow_inf_nan=False, strict=True)
    description: PlainText = Field(default="", max_length=500)


def _seconds_also_integer(schema: dict) -> None:
    schema["anyOf"].insert(1, {"type": "integer", "minimum": 0, "maximum": 999})


class VideoCreate(BaseModel):
    """The body of POST /v1/videos and POST /v1/quotes (JSON, or multipart as the openai SDK sends).
    A `prompt`, or a `template` with its `variables`; `enhance_prompt` rewrites either before it is
    billed and generated."""

    model_config = ConfigDict(extra="forbid")

    prompt: NonBlankText | None = Field(default=None, min_length=1, max_length=prompt_chars_max)
    template: TemplateName | None = None
    variables: Variables | None = None
    enhance_prompt: bool = Field(default=False, strict=True)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    # A string as in OpenAI's API; an integer is accepted too (see _seconds_as_text) and documented so.
    seconds: str | None = Field(default=None, min_length=1, max_length=3, pattern=r"^[0-9]+$",
                                json_schema_extra=_seconds_also_integer)
    size: str | None = Field(default=None, min_length=3, max_length=11)
    negative_prompt: PlainText = Field(default="", max_length=prompt_chars_max)
    # Strict: lax validation would take "7", and true as seed 1, which the schema says are not integers.
    seed: int | None = Field(default=None, ge=0, le=seed_max, strict=True)
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=metadata_keys_max)
    # Result cache: exact (default) serves a stored clip of an identical request, similar also one of a
    # prompt close enough, off always generates. A hit is charged at the price book's cache rate.
    cache: Literal["exact", "similar", "off"] = "exact"
    # Receives this video's events, signed with the tenant's job webhook secret (GET /v1/webhook_secret).
    webhook_url: str | None = Field(default=None, min_length=1, max_length=url_chars_max)
    # The tenant's styles (LoRA adapters): one by name or id, or several with their scales. None: the
    # template's default style, if any.
    style: StyleRefText | None = None
    styles: list[StyleUse] | None = Field(default=None, max_length=16)

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _prompt_or_template(self) -> VideoCreate:
        if (self.prompt is None) == (self.template is None):
            raise ValueError("send either prompt or template (with variables)")
        if self.variables is not None and self.template is None:
            raise ValueError("variables belong to a template")
        if self.style is not None and self.styles is not None:
            raise ValueError("send style or styles, not both")
        return self


class ErrorPublic(BaseModel):
    code: str
    message: str
    type: str
    param: str | None


class ErrorEnvelope(BaseModel):
    """Every 4xx answer: the one error envelope (see api/errors.py)."""

    error: ErrorPublic


class AmountPublic(BaseModel):
    currency: str
    value: str


class QuotePrompt(BaseModel):
    """The prompt a quote bills: the generated one, when a template or an enhancement made it."""

    billed: str
    user: str
    enhancement: str | None


class QuotePublic(BaseModel):
    object: Literal["quote"] = "quote"
    model: str
    price_book_version: int
    method: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    amount: AmountPublic
    price: dict[str, Any]  # the book and the model's price in it (billing.pricebook.model_price)
    warnings: list[str]
    prompt: QuotePrompt | None = None


class BalancePublic(BaseModel):
    """Paid tokens. Vouchers (GET /v1/vouchers) are a second balance, spent first."""

    object: Literal["balance"] = "balance"
    available: int
    pending: int
    posted: int


class VoucherGrantPublic(BaseModel):
    id: str
    amount: int
    memo: str
    created_at: int
    expires_at: int | None
    expired: int | None = Field(description="tokens that expired unspent; null while the grant is live")


class VouchersPublic(BaseModel):
    object: Literal["vouchers"] = "vouchers"
    available: int
    pending: int
    posted: int
    grants: list[VoucherGrantPublic]


class VoucherGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(gt=0, le=10**12, strict=True)
    expires_days: int = Field(default=30, ge=1, le=3650, strict=True)
    reason: PlainText = Field(min_length=1, max_length=200)


class VoucherCodeCreate(BaseModel):
    """A code worth a voucher of `tokens`, valid `expires_days` after its redemption; `redeem_within_days`
    bounds when it can be redeemed (null: no deadline)."""

    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(gt=0, le=10**12, strict=True)
    expires_days: int = Field(default=30, ge=1, le=3650, strict=True)
    reason: PlainText = Field(min_length=1, max_length=200)
    redeem_within_days: int | None = Field(default=None, ge=1, le=3650, strict=True)


class VoucherRedeem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64)


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PlainText = Field(min_length=1, max_length=100)
    plan: str = Field(default="free", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")


class TenantPublic(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: str
    name: str
    plan: str
    created_at: int
    suspended_at: int | None = None  # suspended: no new submissions or keys
    suspended_reason: str | None = None


class TenantPlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")


class TenantSuspend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: NonBlankText = Field(min_length=1, max_length=200, description="shown to the tenant in its 403s")


# A plan's limits. Jobs copy priority, concurrency and the step-cache permission at submission, so a change
# applies to jobs submitted afterwards; rate and active-job limits apply to the next request.
PlanId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
PlanPriority = Annotated[int, Field(ge=0, le=100, strict=True, description="higher is claimed first")]
PlanKeyRate = Annotated[int, Field(ge=1, le=100_000, strict=True,
                                   description="writes (POST, PATCH, DELETE) per minute per API key")]
PlanTenantRate = Annotated[int, Field(ge=1, le=1_000_000, strict=True,
                                      description="writes per minute for all of a tenant's keys together")]
PlanKeyReadRate = Annotated[int, Field(ge=1, le=100_000, strict=True,
                                       description="reads (GET, HEAD, OPTIONS) per minute per API key")]
PlanTenantReadRate = Annotated[int, Field(ge=1, le=1_000_000, strict=True,
                                          description="reads per minute for all of a tenant's keys together")]
PlanConcurrent = Annotated[int, Field(ge=1, le=1_000, strict=True, description="jobs running at once")]
PlanActive = Annotated[int, Field(ge=1, le=100_000, strict=True, description="jobs queued and running")]
PlanReviewDeadline = Annotated[int, Field(ge=60, le=30 * 24 * 3600, strict=True, description=(
    "seconds a job held for review waits for an admin before review_deadline_action applies"))]
PlanReviewAction = Annotated[Literal["approve", "refund"], Field(description=(
    "at the review deadline: approve (it runs, or its clip is delivered and charged) or refund (it fails, "
    "charged nothing)"))]
PlanRetention = Annotated[int, Field(ge=1, le=3650, strict=True, description=(
    "days a finished video's files (clip, previews, reference image) are kept; then they are deleted and its "
    "content answers 410 video_expired"))]
PlanStepCache = Annotated[bool, Field(strict=True, description="step caching (First Block Cache, MagCache, "
                                      "TaylorSeer) may run: faster, but it changes the output")]
PlanTrainingSamples = Annotated[int, Field(ge=1, le=10_000, strict=True, description=(
    "images and clips one style training may learn from"))]
PlanTrainingSteps = Annotated[int, Field(ge=1, le=20_000, strict=True, description=(
    "training steps one style training may run (each step is billed)"))]
PlanTrainingsAtOnce = Annotated[int, Field(ge=0, le=64, strict=True, description=(
    "style trainings queued or running at once (0: the plan cannot train styles)"))]


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: PlanId
    priority: PlanPriority = 0
    requests_per_minute: PlanKeyRate = 30
    tenant_requests_per_minute: PlanTenantRate = 60
    read_requests_per_minute: PlanKeyReadRate = 300
    tenant_read_requests_per_minute: PlanTenantReadRate = 600
    concurrent_jobs: PlanConcurrent = 1
    active_jobs_max: PlanActive = 8
    step_cache_allowed: PlanStepCache = False
    review_deadline_s: PlanReviewDeadline = 3600
    review_deadline_action: PlanReviewAction = "refund"
    training_samples_max: PlanTrainingSamples = 50
    training_steps_max: PlanTrainingSteps = 2000
    concurrent_trainings: PlanTrainingsAtOnce = 1
    retention_days: PlanRetention = 30


class PlanUpdate(BaseModel):
    """Only the fields sent change. The defaults (None) are never validated, so they only mark a field left
    out; a null sent is not an integer (or boolean) and is refused like any other wrong type."""

    model_config = ConfigDict(extra="forbid")
    priority: PlanPriority = None
    requests_per_minute: PlanKeyRate = None
    tenant_requests_per_minute: PlanTenantRate = None
    read_requests_per_minute: PlanKeyReadRate = None
    tenant_read_requests_per_minute: PlanTenantReadRate = None
    concurrent_jobs: PlanConcurrent = None
    active_jobs_max: PlanActive = None
    step_cache_allowed: PlanStepCache = None
    review_deadline_s: PlanReviewDeadline = None
    review_deadline_action: PlanReviewAction = None
    training_samples_max: PlanTrainingSamples = None
    training_steps_max: PlanTrainingSteps = None
    concurrent_trainings: PlanTrainingsAtOnce = None
    retention_days: PlanRetention = None


class PlanPublic(BaseModel):
    object: Literal["plan"] = "plan"
    id: str
    priority: int
    requests_per_minute: int
    tenant_requests_per_minute: int
    read_requests_per_minute: int
    tenant_read_requests_per_minute: int
    concurrent_jobs: int
    active_jobs_max: int
    step_cache_allowed: bool
    review_deadline_s: int
    review_deadline_action: str
    training_samples_max: int
    training_steps_max: int
    concurrent_trainings: int
    retention_days: int
    tenants: int = Field(description="tenants on this plan")


class KeyPublic(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    tenant_id: str
    prefix: str
    key: str | None = Field(default=None, description="shown once, at creation")
    revoked: bool = False


class CreditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(gt=0, le=10**12, strict=True)  # lax would credit "5" tokens, or true as 1
    memo: PlainText = Field(default="top-up", max_length=200)


class PriceBookSample(BaseModel):
    """A request to price under a price book: model, size, duration and the prompt's billed tokens."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/-]+$")
    size: str = Field(default="832x480", pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$", max_length=11)
    seconds: int = Field(default=5, ge=1, le=3600, strict=True)
    input_tokens: int = Field(default=100, ge=0, le=100_000, strict=True)


class PriceBookPreviewRequest(BaseModel):
    """A proposed price book (not published) and the sample request to price under it and the book in force."""

    model_config = ConfigDict(extra="forbid")
    body: dict[str, Any] = Field(description="the proposed price book, as POST /v1/admin/price_books takes it")
    sample: PriceBookSample


class PriceBookPin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(ge=1, le=2**31 - 1, strict=True,
                                description="the version the tenant's contract pins; null: the newest")


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: PlainText = Field(default="", max_length=500)


class WorkerPublic(BaseModel):
    object: Literal["worker"] = "worker"
    id: str = Field(max_length=80)
    gpu_name: str = Field(max_length=100)
    memory_total_bytes: int = Field(ge=0, description="per device")
    memory_free_bytes: int = Field(ge=0)
    devices: int = Field(ge=1, description="devices each job runs across (context parallelism)")
    models_served: list[str]
    models_held: list[str]
    model_load_s: dict[str, float] = Field(description="seconds the last load of each model took (switch cost)")
    live: bool
    started_at: int
    heartbeat_at: int
    current_jobs: list[str] = Field(description="the videos and trainings it runs now (in progress under its lease)")


class WorkerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WorkerPublic]


class TemplateForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    industry: PlainText = Field(default="", max_length=100)
    style: PlainText = Field(default="", max_length=100)
    keywords: list[Annotated[PlainText, Field(min_length=1, max_length=50)]] = Field(default_factory=list,
                                                                                      max_length=20)
    camera: PlainText = Field(default="", max_length=200)
    mood: PlainText = Field(default="", max_length=100)


# A reference image as a base64 data URL: what fits `reference_bytes_max` bytes of image.
data_url_chars_max = len("data:image/webp;base64,") + 4 * math.ceil(reference_bytes_max / 3)
# Checked (format, size, decodability) by the route, exactly as POST /v1/videos checks input_reference.
ReferenceImage = Annotated[str, Field(min_length=1, max_length=data_url_chars_max,
                                      description="image-to-video: the first frame of every video made from "
                                                  "the template, as a data URL data:image/png|jpeg|webp;"
                                                  f"base64,... (at most {reference_bytes_max} bytes); URLs "
                                                  "are not fetched")]


class TemplateUpdate(BaseModel):
    """PUT /v1/templates/{name}: the whole template but its name."""

    model_config = ConfigDict(extra="forbid")
    description: PlainText = Field(default="", max_length=500)
    language: Literal["en", "zh"] = "en"
    body: PlainText = Field(min_length=1, max_length=tpl.body_chars_max)
    form: TemplateForm = Field(default_factory=TemplateForm)
    seconds: int | None = Field(default=None, ge=1, le=30, strict=True)
    size: str | None = Field(default=None, min_length=3, max_length=11, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")
    reference_image: ReferenceImage | None = None
    defaults: Variables = Field(default_factory=dict)
    # Render the defaults and generate them when saved (billed as a job), so that the first request for
    # the template as it stands is a result-cache hit.
    pre_generate: bool = Field(default=False, strict=True)
    # The tenant's style (name or id) its videos get unless a request names its own, at style_scale
    # (default: the style's default_scale).
    style: StyleRefText | None = None
    style_scale: float | None = Field(default=None, ge=0.0, le=style_scale_limit, allow_inf_nan=False,
                                      strict=True)


class TemplateCreate(TemplateUpdate):
    """POST /v1/templates."""

    name: TemplateName


class EnhanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: PlainText = Field(min_length=1, max_length=prompt_chars_max)
    mode: Literal["rules", "llm"] | None = Field(default=None, description="default: llm when configured")


class BatchCreate(BaseModel):
    """A template and its variables: a string is the same for every item, a list expands (cartesian
    product, or zipped). `atomic`: every item is held and queued, or none."""

    model_config = ConfigDict(extra="forbid")
    template: TemplateName
    variables: dict[VariableName, VariableValue | Annotated[list[VariableValue], Field(
        min_length=1, max_length=batch_values_max)]] = Field(default_factory=dict, max_length=tpl.variables_max)
    mode: Literal["cartesian", "zip"] = "cartesian"
    ab_groups: list[Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
                    ] | None = Field(default=None, min_length=1, max_length=26)
    atomic: bool = Field(default=False, strict=True)
    enhance_prompt: bool = Field(default=False, strict=True)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    seconds: str | None = Field(default=None, min_length=1, max_length=3, pattern=r"^[0-9]+$")
    size: str | None = Field(default=None, min_length=3, max_length=11)
    negative_prompt: PlainText = Field(default="", max_length=prompt_chars_max)
    seed: int | None = Field(default=None, ge=0, le=seed_max, strict=True)
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=metadata_keys_max)
    style: StyleRefText | None = None
    styles: list[StyleUse] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _style_or_styles(self) -> BatchCreate:
        if self.style is not None and self.styles is not None:
            raise ValueError("send style or styles, not both")
        return self


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: Literal["up", "down"]
    reason: PlainText = Field(default="", max_length=64, description="a short label, e.g. blurry, off-prompt")
    comment: PlainText = Field(default="", max_length=2000)


class RegenerateCreate(BaseModel):
    """A new job from a video: a new seed, or an edited prompt (which keeps the parent's seed unless one
    is given, so the prompt is the only change)."""

    model_config = ConfigDict(extra="forbid")
    prompt: NonBlankText | None = Field(default=None, min_length=1, max_length=prompt_chars_max)
    seed: int | None = Field(default=None, ge=0, le=seed_max, strict=True)
    enhance_prompt: bool = Field(default=False, strict=True)


class TrainingCreate(BaseModel):
    """POST /v1/styles/train: the style to make and how; the dataset is the multipart file `dataset` (a ZIP
    of images and clips, each captioned by a same-named .txt or by `caption`), or `video_ids`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="the style's name (unique per tenant)")
    model: str = Field(min_length=1, max_length=64, description="the Wan model whose transformer it adapts")
    video_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=1_000, description="the tenant's own completed videos")
    caption: str | None = Field(default=None, min_length=1, max_length=2_000,
                                description="for files without their own caption")
    steps: int | None = Field(default=None, ge=1, le=20_000, strict=True, description="default: the model's preset")
    rank: int | None = Field(default=None, ge=1, le=training_rank_max, strict=True)
    learning_rate: float | None = Field(default=None, gt=0, le=training_learning_rate_max, strict=True)
    default_scale: float = Field(default=1.0, ge=0, le=16, strict=True)
    description: str = Field(default="", max_length=500)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, strict=True)


class RemixCreate(BaseModel):
    """OpenAI's remix: the same video settings with a new prompt."""

    model_config = ConfigDict(extra="forbid")
    prompt: NonBlankText = Field(min_length=1, max_length=prompt_chars_max)


class LexiconEntryCreate(BaseModel):
    """One term of a tenant's own lexicon: `block` refuses, `review` holds for an admin, `allow` lifts
    overlapping matches (never a platform `block`)."""

    model_config = ConfigDict(extra="forbid")

    term: PlainText = Field(min_length=1, max_length=100, pattern=r"^[^\t\r\n]+$")
    category: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    action: Literal["block", "review", "allow"]


class BrandSet(BaseModel):
    """A tenant's brand mark on every delivered clip: exactly one of text and a PNG logo (base64)."""

    model_config = ConfigDict(extra="forbid")

    text: PlainText | None = Field(default=None, min_length=1, max_length=brand_text_chars_max,
                                   pattern=r"^[^\t\r\n]+$")
    logo_png_base64: str | None = Field(default=None, min_length=4, max_length=4 * -(-brand_logo_bytes_max // 3),
                                        pattern=r"^[A-Za-z0-9+/]+={0,2}$", description="a PNG, base64")
    corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-right"
    opacity: float = Field(default=0.6, ge=0.05, le=1.0, strict=True)


class BrandPublic(BaseModel):
    object: Literal["tenant.brand"] = "tenant.brand"
    tenant_id: str
    kind: Literal["text", "logo"]
    text: str | None
    logo_png_base64: str | None
    corner: str
    opacity: float


class LexiconEntryPublic(BaseModel):
    term: str
    category: str
    action: str


EventType = Literal[event_types]  # type: ignore[valid-type]


class KeyCreate(BaseModel):
    """The label the console's developer page gives a new API key (the admin API's keys have none)."""

    model_config = ConfigDict(extra="forbid")
    label: PlainText = Field(default="", max_length=100)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=url_chars_max)
    description: PlainText = Field(default="", max_length=description_chars_max)
    # Empty: every event type.
    event_types: list[EventType] = Field(default_factory=list, max_length=len(event_types))


class WebhookEndpointUpdate(BaseModel):
    """Only the fields sent change; `enabled: true` re-enables an endpoint disabled by 410 Gone."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, min_length=1, max_length=url_chars_max)
    description: PlainText | None = Field(default=None, max_length=description_chars_max)
    event_types: list[EventType] | None = Field(default=None, max_length=len(event_types))
    enabled: bool | None = Field(default=None, strict=True)
