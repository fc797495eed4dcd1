"""One settings object, read from `VIDFACTORY_*` environment variables, with embedded defaults."""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vidfactory.db.session import pool_overflow_max_default, pool_size_default
from vidfactory.engines.presets import PRESETS, TINY, TINY_PRESETS, WanPreset

__all__ = ["HOSTED_ENGINES", "ConfigurationError", "HostedConfig", "ModelConfig", "Settings", "default_models",
           "load_settings"]

HOSTED_ENGINES = ("dashscope", "openai-video")
mag_ratios_max = 1000  # one per denoising step at calibration; diffusers interpolates to other step counts


class HostedConfig(BaseModel):
    """Where a hosted video API lives and how patiently to talk to it. `api_key` is a SecretStr: it
    prints as `**********` in logs, reprs and errors."""

    # DashScope: https://dashscope-intl.aliyuncs.com/api/v1 (or dashscope.aliyuncs.com for mainland China);
    # openai-video: the server's /v1 root, e.g. http://gpu-box:8000/v1.
    base_url: str = Field(min_length=1, max_length=500, pattern=r"^https?://")
    api_key: SecretStr = SecretStr("")
    api_key_env: str = Field(default="", max_length=100)  # read the key from this variable instead
    remote_model: str = Field(min_length=1, max_length=100)  # the model's name on the remote side
    poll_interval_s: float = Field(default=5.0, gt=0, le=300)
    task_timeout_s: float = Field(default=1800.0, gt=0)  # a task still unfinished then is abandoned
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)  # one HTTP request
    http_attempts_max: int = Field(default=4, ge=1, le=20)  # per request, for 429/5xx/timeouts
    http_backoff_s: float = Field(default=1.0, ge=0, le=600)  # exponential: 1, 2, 4 ... s
    http_backoff_max_s: float = Field(default=30.0, ge=0, le=3600)
    retry_after_max_s: float = Field(default=120.0, ge=0, le=3600)  # cap on a server's Retry-After
    download_bytes_max: int = Field(default=1_000_000_000, ge=1)
    prompt_extend: bool = False  # dashscope: let the service rewrite the prompt (kept as actual_prompt)
    send_extensions: bool = True  # openai-video: also send negative_prompt and seed (OpenAI itself refuses them)

    def resolved_api_key(self) -> str:
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return self.api_key.get_secret_value()


class ModelConfig(BaseModel):
    """One servable model: which engine runs it, where its weights are, its generation defaults."""

    id: str = Field(min_length=1, max_length=64)
    engine: str = Field(pattern=r"^(wan|wan-tiny|dashscope|openai-video)$")
    # A local directory (diffusers layout) or a hub id already in the local cache. Empty for wan-tiny:
    # the preset is built under data_dir/models/<id> on first use. Hosted engines read only its
    # tokenizer/ (billing counts tokens with the model family's own tokenizer).
    path: str = ""
    hosted: HostedConfig | None = None  # required by the hosted engines, refused by the others
    default_size: str = "128x128"
    default_seconds: int = Field(default=2, ge=1, le=30)
    fps: int = Field(default=8, ge=1, le=60)
    steps: int = Field(default=4, ge=1, le=200)
    guidance_scale: float = Field(default=5.0, ge=0.0, le=30.0)
    size_min_px: int = 64
    size_max_px: int = 1280
    size_multiple_px: int = 16
    seconds_max: int = 30
    # A Wan preset (engines/presets.py): its defaults fill every field above left unset, and the memory
    # planner reads its sizes. Empty for a checkpoint of unknown architecture (no memory gating).
    preset: str = Field(default="", max_length=32)
    guidance_scale_2: float | None = Field(default=None, ge=0.0, le=30.0)  # Wan2.2 A14B's low-noise expert
    # MagCache's per-step ratios for this checkpoint (`vidfactory calibrate-magcache`); none: `mag` is not used.
    step_cache_mag_ratios: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=list, max_length=mag_ratios_max)

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        # The tiny presets are built locally (engine wan-tiny); the others describe real checkpoints.
        presets = TINY_PRESETS if data.get("engine") == "wan-tiny" else PRESETS
        known = presets.get(data["preset"])
        if known is None:
            raise ValueError(f"unknown preset {data['preset']!r} for engine {data.get('engine')!r}; known: "
                             f"{', '.join(presets)}")
        defaults = {"default_size": known.default_size, "default_seconds": known.default_seconds,
                    "fps": known.fps, "steps": known.steps, "guidance_scale": known.guidance_scale,
                    "guidance_scale_2": known.guidance_scale_2, "size_multiple_px": known.side_multiple_px,
                    "size_min_px": known.side_multiple_px * 4}
        return {**defaults, **data}

    @property
    def wan_preset(self) -> WanPreset | None:
        """The architecture the memory planner and the engine's input rules use."""
        if self.engine == "wan-tiny":
            return TINY_PRESETS.get(self.preset, TINY)
        return PRESETS.get(self.preset)

    @model_validator(mode="after")
    def _hosted_matches_engine(self) -> ModelConfig:
        if (self.engine in HOSTED_ENGINES) != (self.hosted is not None):
            raise ValueError(f"model {self.id!r}: 'hosted' settings are required for the engines "
                             f"{', '.join(HOSTED_ENGINES)} and only for them (engine is {self.engine!r})")
        return self

    @property
    def is_hosted(self) -> bool:
        return self.engine in HOSTED_ENGINES

    @property
    def takes_reference_image(self) -> bool:
        """Image-to-video: a local Wan model whose preset conditions on a first frame (the TI2V-5B, or its
        tiny CPU layout `wan-tiny-i2v`),
        or an OpenAI-compatible server, which is sent the image as OpenAI's `input_reference` (a server
        that cannot use one refuses the job, which is then voided). A local checkpoint of unknown
        architecture (no preset) is not trusted with one; DashScope's image-to-video is other models."""
        if self.engine == "openai-video":
            return True
        preset = self.wan_preset
        return self.engine in ("wan", "wan-tiny") and preset is not None and preset.image_to_video


def default_models() -> list[ModelConfig]:
    """Both built on the CPU with random weights: text-to-video, and image-to-video from a first frame."""
    return [ModelConfig(id="wan-tiny", engine="wan-tiny"),
            ModelConfig(id="wan-tiny-i2v", engine="wan-tiny", preset="wan-tiny-i2v")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDFACTORY_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite file under data_dir
    # Connections each process keeps open at most, and opens beyond them for a burst (db/session.py): with
    # several API replicas, replicas × (both) plus the workers' must stay under the server's max_connections.
    database_pool_size: int = Field(default=pool_size_default, ge=1, le=1000)
    database_pool_overflow_max: int = Field(default=pool_overflow_max_default, ge=0, le=1000)
    storage_dir: Path | None = None  # default: data_dir/storage
    # Object storage for several hosts: s3://bucket/prefix on any S3-compatible service (empty: storage_dir).
    # Endpoint, region and credentials come from the standard AWS variables and chain (AWS_ENDPOINT_URL,
    # AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, roles); these override them.
    storage_url: str = Field(default="", pattern=r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9_\-./]*)?)?$")
    storage_endpoint_url: str = Field(default="", pattern=r"^(https?://.+)?$")
    storage_region: str = Field(default="", max_length=64)
    storage_access_key_id: str = Field(default="", max_length=128)
    storage_secret_access_key: SecretStr = SecretStr("")
    storage_addressing_style: Literal["auto", "path", "virtual"] = "auto"  # MinIO and Ceph usually want path
    storage_multipart_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)  # S3's minimum part
    storage_timeout_s: float = Field(default=10.0, gt=0, le=300)  # connect and read, per request
    # Links. GET /v1/videos/{id}/content redirects to a signed link (object storage or CDN) unless proxied;
    # download_links adds each variant's signed link to the video object. Links expire after link_ttl_s.
    content_delivery: Literal["redirect", "proxy"] = "redirect"
    download_links: bool = False
    link_ttl_s: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    # A CDN in front of the bucket (its origin path the storage prefix): links become
    # {cdn_base_url}/{key}, signed by cdn_signing.
    cdn_base_url: str = Field(default="", pattern=r"^(https?://[^?#]+[^/?#])?$")
    cdn_signing: Literal["none", "cloudfront", "aliyun-a"] = "none"
    cdn_key_id: str = Field(default="", max_length=128)  # CloudFront: the key pair or public key id
    cdn_private_key_file: Path | None = None  # CloudFront: the RSA private key, PEM
    cdn_auth_key: SecretStr = SecretStr("")  # Alibaba Cloud CDN type A: the primary key
    admin_token: str = ""  # default: generated once into data_dir/admin_token
    models_path: Path | None = None  # where wan-tiny is built; default: data_dir/models

    models: list[ModelConfig] = Field(default_factory=default_models)

    # Admission.
    upload_bytes_max: int = 10_000_000  # a request body (JSON or multipart), 413 beyond
    # Reference images decoded at once per API process, in pixels: ~16 bytes each at the decode's peak,
    # so the default bounds decoding to ~512 MiB. At least one largest image (4096²).
    image_decode_pixels_max: int = Field(default=2 * 4096 * 4096, ge=4096 * 4096)
    image_decode_wait_s: float = Field(default=5.0, ge=0)  # for room in that budget, then 429
    uploads_concurrent_max: int = Field(default=2, ge=1)  # a tenant's requests carrying an image, at once
    quotes_concurrent_max: int = Field(default=4, ge=1)  # a tenant's quotes at once
    # OpenAI-compatible clients: a queued or running video tells pollers (the openai SDK's `poll`) to wait
    # this long before asking again (`openai-poll-after-ms`).
    poll_after_ms: int = Field(default=2000, ge=10, le=600_000)
    # Other names for configured models, e.g. {"sora-2": "wan2.1-t2v-1.3b", "sora-2-pro": "wan2.1-t2v-14b"}:
    # a request naming an alias is made (and billed) by its model, and the video names that model.
    model_aliases: dict[Annotated[str, Field(min_length=1, max_length=64)], str] = Field(
        default_factory=dict, max_length=64)
    hold_timeout_s: int = 24 * 3600
    # An Idempotency-Key waits this long for its first request before a retry may take it over: a request
    # whose API process died (a crash, a SIGKILL after the shutdown grace) holds its key no longer. Above
    # the slowest admission; set near the load balancer's request timeout.
    idempotency_reservation_s: float = Field(default=120.0, gt=0)
    # Submissions arriving together in one API process share one write transaction, up to this many
    # (`db/group_commit.py`): the session, the commit and the audit chain are paid once a batch. 1 commits
    # each submission alone.
    admission_batch_max: int = Field(default=32, ge=1, le=256)

    # Queue and worker.
    workers_in_process: int = 1
    lease_s: float = 60.0
    heartbeat_s: float = 5.0
    poll_s: float = 0.5
    attempts_max: int = 3
    retry_backoff_s: float = 2.0
    job_timeout_s: float = 3600.0
    training_timeout_s: float = 12 * 3600.0  # one attempt at a style training (it resumes from checkpoints)
    progress_write_interval_s: float = 0.5
    # A stopping worker (SIGTERM, scale-down) finishes the job in hand within this, else hands it back to
    # the queue without using its attempt; below Kubernetes' default 30 s before SIGKILL.
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    # Circuit breaker per hosted model: open after this many consecutive failures (its jobs wait in the
    # queue), let one probe job through after the cooldown.
    breaker_failures_max: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=60.0, ge=0)
    # Retention: objects in storage that no database row names (an upload whose commit never happened)
    # are deleted once older than the grace period, by a scan every interval (per worker).
    orphan_grace_s: float = Field(default=24 * 3600.0, ge=3600)
    orphan_scan_interval_s: float = Field(default=3600.0, ge=60)
    # An operator alert when, within the window, at least `failure_alert_jobs_min` jobs failed through no
    # fault of their input and they are at least `failure_alert_ratio_min` of the jobs that finished.
    failure_alert_window_s: float = Field(default=600.0, ge=10)
    failure_alert_jobs_min: int = Field(default=5, ge=1)
    failure_alert_ratio_min: float = Field(default=0.2, gt=0, le=1)

    # GPU memory and routing (engines/memory.py, jobs/workers.py).
    # The largest device memory a request may need when no worker has registered (None: no check).
    fleet_memory_bytes_max: int | None = Field(default=None, ge=1)
    worker_memory_bytes: int | None = Field(default=None, ge=1)  # override what a worker detects
    worker_stale_s: float = 120.0  # a worker silent this long no longer counts for admission
    memory_mode: str = Field(default="auto", pattern=r"^(auto|none|vae_tiling|model_cpu_offload|group_offload)$")
    model_switch_after_s: float = 300.0  # another model's oldest job waits at most this long for a switch
    # Aging: a job queued this long ago is claimed before every job queued after it, whatever their plans'
    # priority, by the next free worker that serves its model.
    queue_aging_s: float = Field(default=600.0, gt=0.0, le=7 * 24 * 3600.0)
    models_resident_max: int = Field(default=1, ge=1)  # models a worker keeps loaded at once

    # Speed (engines/speed.py), applied when a model loads; the job records what was applied.
    attention_backend: str = Field(default="auto", pattern=r"^(auto|native|flash3|flash|sage|cudnn)$")
    compile_transformer: bool = False  # regional torch.compile of the transformer blocks (CUDA only)
    fp8_weights: bool = False  # torchao float8 weights (CUDA, compute capability >= 8.9; extra `gpu`)
    # Step caching changes the output: used only where the tenant's plan allows it (step_cache_allowed).
    step_cache: str = Field(default="none", pattern=r"^(none|first_block|mag|taylorseer)$")

    # Result cache: newest entries of one key read per lookup (those deleted since are skipped);
    # shared: any tenant's clip may serve another tenant (off: own clips only).
    cache_candidates_max: int = Field(default=200, ge=1, le=10_000)
    cache_shared: bool = False

    # Prompt screening: a lexicon file (term<TAB>category<TAB>action) replacing the shipped default.
    lexicon_path: Path | None = None

    # Output screening: sampled frames of every clip through the open_nsfw classifier; a frame scoring at
    # or above the threshold holds the clip for review.
    output_screening_enabled: bool = True
    output_nsfw_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    output_frames_sampled: int = Field(default=8, ge=1, le=64)

    # Quality checks (media/qc.py), in each score's units: luma levels 0..255, fractions, ratios.
    # Black and flicker breaches fail a clip (regenerated once); spikes, frozen video and faces flag it.
    qc_black_luma_min: float = Field(default=16.0, ge=0.0, le=255.0)
    qc_black_fraction_max: float = Field(default=0.25, ge=0.0, le=1.0)
    qc_flicker_max: float = Field(default=40.0, ge=0.0, le=255.0)
    qc_flicker_spike_max: float = Field(default=8.0, ge=1.0)
    qc_flicker_spike_floor: float = Field(default=12.0, ge=0.0, le=255.0)
    qc_frozen_motion_min: float = Field(default=0.3, ge=0.0, le=255.0)
    qc_face_distortion_max: float = Field(default=0.6, ge=0.0, le=1.0)

    # Visible AI label (media/label.py); GB 45438-2025 floors: >= 2 s, text >= 5% of the shorter side.
    label_text: str = Field(default="AI生成", min_length=1, max_length=32)
    label_seconds: float = Field(default=2.0, ge=2.0, le=60.0)
    label_height_fraction: float = Field(default=0.05, ge=0.05, le=0.5)
    label_corner: str = Field(default="top-left", pattern=r"^(top|bottom)-(left|right)$")

    # Invisible watermark (media/watermark.py): QIM step in luma levels; changing it orphans old marks.
    watermark_step: float = Field(default=9.0, ge=1.0, le=64.0)

    # Output pipeline. The worker post-processes a clip (label, watermark, encode, sign, store) in a
    # thread while its engine generates the next one.
    overlap_post_processing: bool = True
    # GB 45438-2025 `AIGC` metadata: ContentProducer, the provider's name or code.
    content_producer: str = Field(default="vidfactory", min_length=1, max_length=256)
    # C2PA signing: the signer certificate followed by its issuers (PEM) and its EC private key. Unset:
    # a development CA and signer are generated once under data_dir/c2pa-dev.
    c2pa_cert_chain_path: Path | None = None
    c2pa_key_path: Path | None = None
    # The CA certificate(s) verify trusts (PEM); default: the development CA when it is in use.
    c2pa_trust_anchor_path: Path | None = None
    verify_upload_bytes_max: int = 200_000_000
    training_upload_bytes_max: int = 500_000_000  # a style training's dataset ZIP (the request body)

    # Limits: requests per minute per key and per tenant (the plan's), and active jobs per plan.
    rate_limit_enabled: bool = True
    # Shared by every API replica when set (e.g. redis://127.0.0.1:6379/0); in memory, per process, if not.
    redis_url: str = ""
    redis_prefix: str = Field(default="vidfactory:", max_length=64)
    redis_timeout_s: float = 0.25
    # When Redis cannot be reached: "open" lets requests through (logged), "closed" answers 503. Open by
    # default: request rates protect capacity, not money — balances and the active-jobs limit are
    # enforced by the database, so a Redis outage need not take the API down with it.
    rate_limit_redis_failure: Literal["open", "closed"] = "open"
    # Failed API-key or admin-token attempts per client address per minute; beyond it every attempt from
    # that address is 429 until the window has room. The address is the peer's, or, when the peer is a
    # proxy listed in trusted_proxies (CIDRs), the nearest untrusted hop of X-Forwarded-For.
    failed_auth_per_minute: int = Field(default=20, ge=1)
    trusted_proxies: list[str] = Field(default_factory=list)
    # Retry-After when a tenant has its plan's active jobs already (we cannot know when one finishes).
    active_jobs_retry_after_s: int = 10

    # The web console (accounts/, web/): sessions in a cookie holding a random token (stored hashed),
    # a sign-in locked after this many failures in a row per account (until an operator unlocks it), and
    # every sign-in from a client address refused while it has this many failures in the last minute.
    console_session_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    signin_failures_max: int = Field(default=5, ge=1, le=100)
    signin_address_failures_per_minute: int = Field(default=5, ge=1)
    # Argon2id cost (RFC 9106's second recommended profile by default); lower only for tests.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    # Server-Sent Events: how often the process's one outbox reader looks for new events and for the
    # progress of the videos its open streams follow.
    events_poll_s: float = Field(default=0.5, gt=0, le=30)
    events_heartbeat_s: float = Field(default=15.0, gt=0, le=300)  # a comment line keeps proxies open
    # A stream closes after this long (the client reconnects with Last-Event-ID and misses nothing), so a
    # client that vanished without a close holds its connection and poller for at most this long.
    events_stream_max_s: float = Field(default=600.0, gt=0, le=24 * 3600)

    # Webhooks: a durable outbox delivered by a loop in `serve` and in `worker`.
    webhooks_enabled: bool = True
    webhook_poll_s: float = 1.0
    webhook_batch_max: int = Field(default=20, ge=1)  # rows one run_once claims
    webhook_concurrency_max: int = Field(default=32, ge=1)  # sends at once, per dispatcher
    webhook_endpoint_concurrency_max: int = Field(default=2, ge=1)  # sends at once to one endpoint
    webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    webhook_read_timeout_s: float = Field(default=5.0, gt=0)  # also for writing the body
    webhook_send_deadline_s: float = Field(default=10.0, gt=0)  # one whole send, cut here
    webhook_lease_s: float = 60.0  # a claimed delivery is retried by anyone after this
    # An endpoint failing this many sends in a row gets no sends for webhook_circuit_open_s, doubling
    # while it keeps failing (its deliveries wait without spending attempts).
    webhook_circuit_failures: int = Field(default=3, ge=1)
    webhook_circuit_open_s: float = Field(default=30.0, gt=0)
    webhook_circuit_open_max_s: float = Field(default=600.0, gt=0)
    webhook_attempts_max: int = 8
    webhook_backoff_s: float = 5.0  # first retry; doubles per attempt up to webhook_backoff_max_s
    webhook_backoff_max_s: float = 3600.0
    webhook_secret_overlap_s: int = 24 * 3600  # after a rotation the old secret also signs this long
    webhook_failures_alert: int = 5  # consecutive failures of one endpoint that raise an operator alert
    # Targets resolving to private, loopback, link-local, multicast or reserved addresses are refused;
    # CIDRs listed here are allowed anyway (e.g. ["127.0.0.0/8"] for local development and tests).
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    # Operator alerts (GET /v1/admin/alerts) are also POSTed here, signed with this whsec_ secret. The
    # operator's own URL: no address check applies to it.
    operator_webhook_url: str = ""
    operator_webhook_secret: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _webhook_lease_outlasts_a_send(self) -> Settings:
        # The lease covers one send; twice its deadline leaves room to claim and to record the outcome.
        if self.webhook_lease_s < 2 * self.webhook_send_deadline_s:
            raise ValueError(f"webhook_lease_s ({self.webhook_lease_s:g}) must be at least twice "
                             f"webhook_send_deadline_s ({self.webhook_send_deadline_s:g})")
        return self

    @model_validator(mode="after")
    def _aliases_name_models(self) -> Settings:
        ids = {m.id for m in self.models}
        for alias, target in self.model_aliases.items():
            if alias in ids:
                raise ValueError(f"model_aliases: {alias!r} is a configured model's own id")
            if target not in ids:
                raise ValueError(f"model_aliases: {alias!r} names {target!r}, which is not a configured model "
                                 f"(models: {', '.join(sorted(ids))})")
        return self

    @model_validator(mode="after")
    def _cdn_signing_complete(self) -> Settings:
        if self.cdn_signing != "none" and not self.cdn_base_url:
            raise ValueError("cdn_signing needs cdn_base_url")
        if self.cdn_signing == "cloudfront" and not (self.cdn_key_id and self.cdn_private_key_file):
            raise ValueError("cdn_signing=cloudfront needs cdn_key_id and cdn_private_key_file")
        if self.cdn_signing == "aliyun-a" and not self.cdn_auth_key.get_secret_value():
            raise ValueError("cdn_signing=aliyun-a needs cdn_auth_key")
        return self

    @model_validator(mode="after")
    def _operator_webhook_signed(self) -> Settings:
        if self.operator_webhook_url and not self.operator_webhook_secret.get_secret_value().startswith("whsec_"):
            raise ValueError("operator_webhook_url needs operator_webhook_secret, a whsec_ secret")
        return self

    # Styles (LoRA adapters, vidfactory.styles): what an upload may be, how many a job may name, the scale
    # range, and how many adapters a worker keeps loaded per pipeline (least recently used unloaded first).
    style_upload_bytes_max: int = Field(default=512_000_000, ge=1)
    style_rank_max: int = Field(default=128, ge=1, le=4096)
    styles_per_job_max: int = Field(default=3, ge=1, le=16)
    style_scale_max: float = Field(default=2.0, gt=0, le=16)
    styles_resident_max: int = Field(default=4, ge=1, le=64)
    styles_per_tenant_max: int = Field(default=100, ge=1)

    # Prompts: batches, and enhancement by an OpenAI-compatible chat endpoint (rules when no URL is set).
    batch_items_max: int = Field(default=100, ge=1, le=10_000)
    enhance_llm_url: str = Field(default="", pattern=r"^(https?://.+)?$")  # base URL, e.g. http://host:8001/v1
    enhance_llm_model: str = "qwen-plus"
    enhance_llm_api_key: SecretStr = SecretStr("")
    enhance_llm_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vidfactory.db').resolve()}"

    @cached_property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    @cached_property
    def models_dir(self) -> Path:
        return (self.models_path or self.data_dir / "models").resolve()

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)

    def resolve_model(self, name: str) -> ModelConfig | None:
        """A model by its id or by one of its aliases (`model_aliases`)."""
        return self.model(self.model_aliases.get(name, name))

    def aliases_of(self, model_id: str) -> list[str]:
        return sorted(alias for alias, target in self.model_aliases.items() if target == model_id)


class ConfigurationError(Exception):
    """The environment does not make a valid configuration; the message names the variable and what is
    wrong with it in one line."""


def _env_name(loc: tuple[Any, ...]) -> str:
    return "VIDFACTORY_" + str(loc[0]).upper() + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                                                         for part in loc[1:])


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, or ConfigurationError saying where they are wrong: a JSON value's
    line and column, a field's variable and the rule it breaks (never the value: it may be a secret)."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:
        field = re.search(r'field "([^"]+)"', str(exc))
        name = f"VIDFACTORY_{field[1].upper()}" if field else "a VIDFACTORY_ variable"
        cause = exc.__cause__
        if isinstance(cause, json.JSONDecodeError):
            raise ConfigurationError(f"{name} is not valid JSON: {cause.msg} at line {cause.lineno} column "
                                     f"{cause.colno}") from exc
        raise ConfigurationError(f"{name}: {cause or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = _env_name(first["loc"]) if first["loc"] else "VIDFACTORY_*"
        raise ConfigurationError(f"{where}: {first['msg']}{more}") from exc
