"""SQLAlchemy 2 models. The schema itself is created by the Alembic migrations in db/migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vidfactory.db.types import UTCDateTime, utcnow

__all__ = [
    "Account",
    "ApiKey",
    "Asset",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Batch",
    "CacheEntry",
    "ConsoleSession",
    "EngineBreaker",
    "Feedback",
    "IdempotencyRecord",
    "Job",
    "JobPhaseBucket",
    "MaintenanceRun",
    "Plan",
    "PriceBook",
    "RegisteredWorker",
    "ServedModel",
    "Statement",
    "Style",
    "Template",
    "Tenant",
    "TenantLexiconEntry",
    "TenantWebhookSecret",
    "Transfer",
    "User",
    "VoucherCode",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    priority: Mapped[int] = mapped_column(Integer)
    requests_per_minute: Mapped[int] = mapped_column(Integer)  # writes per API key
    concurrent_jobs: Mapped[int] = mapped_column(Integer)  # running at once (the scheduler's limit)
    tenant_requests_per_minute: Mapped[int] = mapped_column(Integer, default=60)  # writes, all keys together
    # Reads (GET, HEAD, OPTIONS: polling, listing) have their own budget, so polling never spends the writes'.
    read_requests_per_minute: Mapped[int] = mapped_column(Integer, default=300, server_default="300")
    tenant_read_requests_per_minute: Mapped[int] = mapped_column(Integer, default=600, server_default="600")
    active_jobs_max: Mapped[int] = mapped_column(Integer, default=8)  # queued + running (admission's limit)
    # Step caching (First Block Cache, MagCache, TaylorSeer) is faster but changes the output.
    step_cache_allowed: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # A job held for review that no admin decided within this many seconds gets the plan's action:
    # "approve" (it runs, or its clip is delivered and charged) or "refund" (it fails, nothing charged).
    review_deadline_s: Mapped[int] = mapped_column(Integer, default=3600, server_default="3600")
    review_deadline_action: Mapped[str] = mapped_column(String(8), default="refund", server_default="refund")
    # Style training: samples in one dataset, steps in one training, trainings queued or running at once.
    training_samples_max: Mapped[int] = mapped_column(Integer, default=50, server_default="50")
    training_steps_max: Mapped[int] = mapped_column(Integer, default=2000, server_default="2000")
    concurrent_trainings: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A finished job's stored files (clip, previews, its reference copy) are deleted this many days after it
    # ends; the job record and its ledger history stay.
    retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A contract pin: this tenant is priced with this version, whatever is published later. NULL: current.
    price_book_version: Mapped[int | None] = mapped_column(ForeignKey("price_books.version"), default=None)
    # The tenant's brand mark on every delivered clip (see vidfactory.branding). NULL: none.
    brand: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # Suspended: no new submissions or keys; what is queued or running finishes. NULL: active.
    suspended_at: Mapped[datetime | None] = mapped_column(default=None)
    suspended_reason: Mapped[str | None] = mapped_column(String(200), default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)  # to tenancy.key_use_resolution_s


class VoucherCode(Base):
    """A code an operator issues (its SHA-256 kept, never the code) that one tenant redeems, once, for a
    voucher grant of `tokens` expiring `expires_days` after the redemption."""

    __tablename__ = "voucher_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    tokens: Mapped[int] = mapped_column(BigInteger)
    expires_days: Mapped[int] = mapped_column(Integer)
    memo: Mapped[str] = mapped_column(String(200), default="")
    redeem_by: Mapped[datetime | None] = mapped_column(default=None)  # NULL: no deadline
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    redeemed_at: Mapped[datetime | None] = mapped_column(default=None)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), index=True, default=None)
    transfer_id: Mapped[str | None] = mapped_column(String(40), default=None)  # the grant it made

    __table_args__ = (
        CheckConstraint("tokens > 0", "voucher_code_tokens_positive"),
        CheckConstraint("(redeemed_at IS NULL) = (tenant_id IS NULL)", "voucher_code_redeemed_by_one"),
    )


class User(Base):
    """A person who signs in to the console: a tenant's owner, member or viewer, or a platform operator or
    reviewer (no tenant). The password is kept as an Argon2id hash only."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Failed sign-ins in a row; at the settings' limit the account is locked until an operator unlocks it.
    failed_signins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        CheckConstraint("role IN ('owner', 'member', 'viewer', 'operator', 'reviewer')", "user_role_known"),
        CheckConstraint("(role IN ('operator', 'reviewer')) = (tenant_id IS NULL)", "user_tenant_matches_role"),
    )


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random token, the database its SHA-256 only."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Account(Base):
    """A ledger account. Balance columns are a cache of the transfers, kept for tenant accounts only
    (a tenant's paid account, kind "tenant", and its voucher account, kind "voucher", tenant_id NULL):
    admission locks and checks the tenant's rows, and `ledger verify` recomputes them from transfers.
    Operator accounts (issuance, revenue) are derived from transfers so that every tenant's admission
    does not serialise on one hot row."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # tenant | voucher | issuance | revenue
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        CheckConstraint("debits_pending >= 0 AND debits_posted >= 0 AND credits_posted >= 0", "balances_nonneg"),
        CheckConstraint(
            "kind <> 'tenant' OR credits_posted - debits_posted - debits_pending >= 0", "tenant_no_overdraft"
        ),
        CheckConstraint(
            "kind <> 'voucher' OR credits_posted - debits_posted - debits_pending >= 0", "voucher_no_overdraft"
        ),
    )


class Transfer(Base):
    """Append-only. kind: credit (posted top-up), hold (pending), post / void (resolve a hold once),
    grant (posted voucher, issuance → the tenant's voucher account, with an expiry), expire (what is left
    of a grant going back to issuance; names its grant in pending_id, so a grant expires once)."""

    __tablename__ = "transfers"

    # seq orders the ledger (and pages it); id is the public name.
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    debit_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    credit_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    # post/void name the hold they resolve, expire its grant; the unique index makes a second resolution
    # fail loudly.
    pending_id: Mapped[str | None] = mapped_column(ForeignKey("transfers.id"), unique=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    job_id: Mapped[str | None] = mapped_column(String(40))
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    memo: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("amount >= 0", "amount_nonneg"),
        CheckConstraint("debit_account_id <> credit_account_id", "distinct_accounts"),
        CheckConstraint("kind IN ('credit', 'hold', 'post', 'void', 'grant', 'expire')", "kind_known"),
        Index("ix_transfers_tenant_seq", "tenant_id", "seq"),
        Index("ix_transfers_job", "job_id"),
        Index("ix_transfers_kind", "kind"),  # /metrics counts unresolved holds from the index alone
    )


class PriceBook(Base):
    """Published price books never change: `ledger verify` rehashes each body against body_sha256."""

    __tablename__ = "price_books"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    body_sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)  # what is generated and billed (after truncation)
    user_prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[int] = mapped_column(Integer)
    num_frames: Mapped[int] = mapped_column(Integer)
    fps: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance_scale: Mapped[float] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    concurrent_jobs_max: Mapped[int] = mapped_column(Integer, default=1)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempts_max: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(80), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_type: Mapped[str | None] = mapped_column(String(40), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    price_book_version: Mapped[int] = mapped_column(ForeignKey("price_books.version"))
    pricing_method: Mapped[str] = mapped_column(String(8))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    total_tokens: Mapped[int] = mapped_column(Integer)
    hold_id: Mapped[str] = mapped_column(String(40))
    # A hold drawn from vouchers and paid balance has two legs: hold_id is the paid leg, this the voucher
    # leg. A hold wholly on vouchers (or wholly paid) has one leg, hold_id.
    voucher_hold_id: Mapped[str | None] = mapped_column(String(40), default=None)
    cache_mode: Mapped[str] = mapped_column(String(8), default="exact")  # exact | similar | off
    # What determines the output (cache/keys.py), computed at submission: indexed when the job completes.
    cache_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    cache_shape_key: Mapped[str | None] = mapped_column(String(64), default=None)
    cache_hit_job_id: Mapped[str | None] = mapped_column(String(40), default=None)  # the clip served
    cache_hit_score: Mapped[float | None] = mapped_column(Float, default=None)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    request_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # Review: a prompt held before it runs, or a finished clip held before it is delivered and settled.
    review_status: Mapped[str | None] = mapped_column(String(16), default=None)  # pending|approved|rejected
    review_source: Mapped[str | None] = mapped_column(String(32), default=None)  # prompt|qc|output_safety
    review_reason: Mapped[str | None] = mapped_column(String(500), default=None)  # admins only
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set when the review starts, from the tenant's plan: when the review ends without an admin, and how.
    review_due_at: Mapped[datetime | None] = mapped_column(default=None)
    review_on_due: Mapped[str | None] = mapped_column(String(8), default=None)  # approve | refund
    # GPU routing: the least device memory any memory mode needs (0: unknown architecture, no gating);
    # the mode an out-of-memory retry forces (None: the worker picks the fastest that fits).
    memory_bytes_min: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    memory_mode: Mapped[str | None] = mapped_column(String(24), default=None)
    # {"step_cache_allowed": bool} at submission; the worker adds what it applied (attention, compile, ...).
    engine_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    model_load_s: Mapped[float | None] = mapped_column(Float, default=None)  # the model switch this job paid
    # Output pipeline: the quality report of the delivered clip (admins only), and the invisible
    # watermark's payload (hex) that names this job inside the pixels.
    qc_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    watermark_id: Mapped[str | None] = mapped_column(String(32), default=None, unique=True)
    # How the clip was made, as the engine reports it (hosted: remote task id, actual_prompt, usage).
    engine_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Where the prompt came from: a template and its variables, an enhancement (rules|llm), a batch item
    # and its A/B group, the job this one regenerates. `prompt` is what ran; `user_prompt` what was asked.
    template: Mapped[str | None] = mapped_column(String(64), default=None)
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    enhancement: Mapped[str | None] = mapped_column(String(8), default=None)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), default=None)
    batch_item: Mapped[int | None] = mapped_column(Integer, default=None)
    ab_group: Mapped[str | None] = mapped_column(String(32), default=None)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    # Image-to-video: the reference image as uploaded (this job's own copy in storage), its SHA-256 (part
    # of the cache fingerprint), its upright size and its format. All NULL for a text-to-video job.
    reference_key: Mapped[str | None] = mapped_column(String(300), default=None)
    reference_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    reference_width: Mapped[int | None] = mapped_column(Integer, default=None)
    reference_height: Mapped[int | None] = mapped_column(Integer, default=None)
    reference_content_type: Mapped[str | None] = mapped_column(String(16), default=None)
    # The styles (LoRA adapters) it is made with, as resolved at submission: [{"id", "name", "sha256",
    # "scale", "key"}]. Each names its adapter's file and hash, so the job runs what was priced and cached.
    # NULL: unstyled.
    styles: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # What the job makes: "video", or "training" (a LoRA style; never listed among videos). A training's
    # own description: {"style_id", "name", "caption", "settings": {...}, "dataset": {...}, "step", "loss"}.
    job_type: Mapped[str] = mapped_column(String(16), default="video", server_default="video")
    training: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    # Retention: set when the job ends (its end + its tenant's plan's retention), when its stored files go.
    # content_status: NULL while they are kept; "expiring" once the sweeper marked it (its content answers
    # 410 from then; files and references are being deleted); "expired" when both are gone.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    content_status: Mapped[str | None] = mapped_column(String(8), default=None)

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled')", "status_known"
        ),
        CheckConstraint("review_status IS NULL OR review_status IN ('pending', 'approved', 'rejected')",
                        "review_status_known"),
        CheckConstraint("progress BETWEEN 0 AND 100", "progress_range"),
        # The claim's two orders, each read straight off an index so LIMIT 1 stops at the first fit: by
        # priority (highest first), then age; and the aging tier, oldest first.
        Index("ix_jobs_claim", "status", text("priority DESC"), "created_at", "id"),
        Index("ix_jobs_queued_created", "status", "created_at", "id"),
        Index("ix_jobs_review", "review_status"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_jobs_batch", "batch_id", "batch_item"),
        Index("ix_jobs_completed", "completed_at"),  # the failure-rate alert reads a recent window
        # /metrics counts jobs by state, model and priority from this index alone, whatever the history.
        Index("ix_jobs_status_model", "status", "model", "priority"),
        Index("ix_jobs_retention", "content_status", "expires_at"),  # the sweeper: kept and due, oldest first
        # A queued video's start estimate reads its model's last runs: the newest 20 off an index, not a sort
        # of every completed job of the model.
        Index("ix_jobs_model_runs", "status", "model", "completed_at"),
    )

    @property
    def hold_leg_ids(self) -> list[str]:
        return [self.hold_id] + ([self.voucher_hold_id] if self.voucher_hold_id else [])

    def content_expired(self, now: datetime) -> bool:
        """Past its expiry, swept or not: its content answers 410 from that moment on."""
        return self.content_status is not None or (self.expires_at is not None and self.expires_at <= now)


class Template(Base):
    """A tenant's named form; the body is Jinja2 source rendered in the prompts sandbox."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    language: Mapped[str] = mapped_column(String(8), default="en")
    body: Mapped[str] = mapped_column(Text)
    form: Mapped[dict[str, Any]] = mapped_column(JSON)  # industry, style, keywords, camera, mood
    seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    size: Mapped[str | None] = mapped_column(String(11), default=None)
    # An http(s) URL saved before images were stored (never fetched: generation refuses it).
    reference_image: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The reference image saved with the template (a data URL's bytes): its file in storage (named by its
    # SHA-256, so a replaced image never changes under a job being made from the old one), size, format.
    reference_key: Mapped[str | None] = mapped_column(String(300), default=None)
    reference_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    reference_width: Mapped[int | None] = mapped_column(Integer, default=None)
    reference_height: Mapped[int | None] = mapped_column(Integer, default=None)
    reference_content_type: Mapped[str | None] = mapped_column(String(16), default=None)
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pre_generate: Mapped[bool] = mapped_column(Boolean, default=False)
    # The style its videos get unless a request names its own; cleared when that style is deleted.
    style_id: Mapped[str | None] = mapped_column(ForeignKey("styles.id"), default=None)
    style_scale: Mapped[float | None] = mapped_column(Float, default=None)  # None: the style's default_scale
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "name"),)


class Style(Base):
    """A tenant's LoRA adapter for one base model (a Wan preset id, engines/presets.py). Uploaded styles
    are `ready` at once; a trained one is `training` until its adapter exists (then `ready`, or `failed`).
    The adapter's file, hash, rank and size are NULL until it exists."""

    __tablename__ = "styles"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(32))  # the preset whose modules the adapter fits
    status: Mapped[str] = mapped_column(String(16), default="ready")
    source: Mapped[str] = mapped_column(String(8))  # uploaded | trained
    default_scale: Mapped[float] = mapped_column(Float, default=1.0)
    description: Mapped[str] = mapped_column(String(500), default="")
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    rank: Mapped[int | None] = mapped_column(Integer, default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    storage_key: Mapped[str | None] = mapped_column(String(300), default=None)
    # Provenance of a trained style (dataset, steps, loss curve ...), written by its training. NULL: uploaded.
    training: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint("status IN ('training', 'ready', 'failed')", "style_status_known"),
        CheckConstraint("source IN ('uploaded', 'trained')", "style_source_known"),
        Index("ix_styles_tenant_created", "tenant_id", "created_at"),
    )


class Batch(Base):
    """Many jobs from one template and variable lists; each job names its batch and item."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    template: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # cartesian | zip
    atomic: Mapped[bool] = mapped_column(Boolean)
    items_total: Mapped[int] = mapped_column(Integer)
    total_tokens: Mapped[int] = mapped_column(BigInteger)  # the quote for every item
    price_book_version: Mapped[int] = mapped_column(ForeignKey("price_books.version"))
    rejected: Mapped[list[Any]] = mapped_column(JSON, default=list)  # items not created, and why
    request_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A user's rating of a clip, append-only: the preference data exported for tuning."""

    __tablename__ = "feedback"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    rating: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(64), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("rating IN ('up', 'down')", "rating_known"),)


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    variant: Mapped[str] = mapped_column(String(16))  # video | thumbnail | spritesheet
    storage_key: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # verify looks files up by hash
    md5: Mapped[str | None] = mapped_column(String(32), default=None)  # None: stored before hashes had MD5
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "variant"),)


class IdempotencyRecord(Base):
    """One Idempotency-Key: reserved by the first request (status_code NULL) until its outcome is stored."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # Which key space: "tenant" (the tenant's own requests) or an operator's (admin-credit, admin-voucher).
    scope: Mapped[str] = mapped_column(String(16), primary_key=True, default="tenant", server_default="tenant")
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)  # None: the first request runs
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    reservation: Mapped[str | None] = mapped_column(String(32), default=None)  # the running request's token
    reserved_until: Mapped[datetime | None] = mapped_column(default=None)  # after it, another may take over
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredWorker(Base):
    """A worker process and its device, kept fresh by heartbeats: routing and admission read it."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    gpu_name: Mapped[str] = mapped_column(String(100))
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger)  # per device
    memory_free_bytes: Mapped[int] = mapped_column(BigInteger)
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # one job spans them all
    models_served: Mapped[list[str]] = mapped_column(JSON)
    models_held: Mapped[list[str]] = mapped_column(JSON)  # loaded now
    model_load_s: Mapped[dict[str, Any]] = mapped_column(JSON)  # model -> seconds its last load took
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("memory_total_bytes >= 0 AND memory_free_bytes >= 0", "memory_nonneg"),
    )


class JobPhaseBucket(Base):
    """One bucket of a job phase's duration histogram (what `/metrics` exports), kept in the database
    because workers run in other processes and hosts than the API that is scraped. `le` is the bucket's
    upper bound as Prometheus writes it ("0.5", "+Inf"); `jobs` counts the phases that fell in it (not
    cumulative), `seconds` sums them. Workers add to it with an upsert; nothing else writes it."""

    __tablename__ = "job_phase_buckets"

    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    le: Mapped[str] = mapped_column(String(16), primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)


class MaintenanceRun(Base):
    """The last outcome of a periodic check any process may run (`ledger verify`), for `/metrics`."""

    __tablename__ = "maintenance_runs"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")
    ran_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """Something an operator must look at (a clip waiting for review, a failure spike, an open breaker)."""

    __tablename__ = "alerts"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), default=None)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An operator has seen it (and says so): the alert stays, marked, for the record.
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(80), default=None)


class AuditEntry(Base):
    """Append-only, hash-chained: hash = sha256(prev_hash + canonical JSON of the entry). seq is assigned
    under the locked audit head, so it has no gaps and the chain is linear."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(80))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditHead(Base):
    """One row: the last entry's seq and hash. Appends lock it (FOR UPDATE), so they chain one by one."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class CacheEntry(Base):
    """A completed job whose clip can be served again. fingerprint: everything that determines the output
    (exact hits); similar_key: the shape and the prompt's canonical form (similar hits); None when the
    prompt has no canonical form (or was indexed before canonical forms existed): exact hits only."""

    __tablename__ = "cache_entries"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    shape_key: Mapped[str] = mapped_column(String(64))
    similar_key: Mapped[str | None] = mapped_column(String(64), default=None)
    prompt: Mapped[str] = mapped_column(Text)  # the canonical form, for people reading the index
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_cache_entries_fingerprint", "fingerprint"),
        Index("ix_cache_entries_similar_key", "similar_key"),
    )


class Statement(Base):
    """A closed month's statement, stored when first generated after the month ended; never changes."""

    __tablename__ = "statements"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    body_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantLexiconEntry(Base):
    """A tenant's own screening term on top of the platform lexicon: `block`, `review` or `allow`."""

    __tablename__ = "tenant_lexicon"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    term: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tenant_id", "term"),
        CheckConstraint("action IN ('block', 'review', 'allow')", name="lexicon_action_known"),
    )


class EngineBreaker(Base):
    """A circuit breaker per hosted model, shared by every worker. Each change is a compare-and-set on
    `version`. closed: jobs run; open: its jobs stay queued; half_open: one probe job (probe_owner) runs."""

    __tablename__ = "engine_breakers"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="closed")
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive
    opened_at: Mapped[datetime | None] = mapped_column(default=None)
    probe_owner: Mapped[str | None] = mapped_column(String(80), default=None)
    probe_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("state IN ('closed', 'open', 'half_open')", "breaker_state_known"),
        CheckConstraint("failures >= 0", "breaker_failures_nonneg"),
    )


class WebhookEndpoint(Base):
    """A tenant's subscription. The signing secret is kept in clear (HMAC needs it) and shown only at
    creation and rotation; after a rotation the previous secret also signs until it expires."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every event
    secret: Mapped[str] = mapped_column(String(80))
    previous_secret: Mapped[str | None] = mapped_column(String(80), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16), default="enabled")  # enabled | disabled
    disabled_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (CheckConstraint("status IN ('enabled', 'disabled')", "endpoint_status_known"),)


class TenantWebhookSecret(Base):
    """Signs deliveries to per-job `webhook_url`s, which have no endpoint of their own."""

    __tablename__ = "tenant_webhook_secrets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(80))
    previous_secret: Mapped[str | None] = mapped_column(String(80), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """One event (its id is the `webhook-id` every delivery of it carries, retries included)."""

    __tablename__ = "webhook_events"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))  # None: for the operator
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)  # the video it is about, if any

    # The event streams read a tenant's events, or one video's, in order after the last one a client saw.
    __table_args__ = (
        Index("ix_webhook_events_tenant_seq", "tenant_id", "seq"),
        Index("ix_webhook_events_job_seq", "job_id", "seq"),
    )


class WebhookDelivery(Base):
    """The outbox: one row per (event, target), written in the transaction of the change it reports.
    pending → delivered | failed (dead: attempts spent, 410 Gone, or the endpoint removed)."""

    __tablename__ = "webhook_deliveries"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))  # None: to the operator webhook
    endpoint_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_endpoints.id"), default=None)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", "delivery_status_known"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant_seq", "tenant_id", "seq"),
    )


class ServedModel(Base):
    """A configured model id and when this platform first served it (the models list's `created`)."""

    __tablename__ = "served_models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
