"""Submission: price a request (no database writes), then hold + insert the job in ONE transaction."""

from __future__ import annotations

import html
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import PriceBookBody, Quote, quote
from vidfactory.billing.tokens import TokenCounter
from vidfactory.cache import index as cache_index
from vidfactory.cache.keys import CacheSpec, fingerprint, shape_key
from vidfactory.db.group_commit import GroupCommit
from vidfactory.db.models import Job
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.engines.memory import GIB, frugal_peak_bytes
from vidfactory.idempotency import Outcome, run_once
from vidfactory.jobs import queue
from vidfactory.jobs.queue import Review, review_reason_chars_max
from vidfactory.jobs import workers
from vidfactory.jobs.screening import PromptScreens, screen_prompt
from vidfactory.jobs.spec import InvalidRequest, Shape, shape_for
from vidfactory.media.reference import ReferenceImage
from vidfactory.notify.events import ensure_job_secret, queued_events
from vidfactory.notify.targets import RefusedTarget, parse_networks, resolve_target
from vidfactory.observability.metrics import cache_lookups
from vidfactory.settings import ModelConfig, Settings
from vidfactory.storage import Storage, tenant_key
from vidfactory.styles import catalog as styles_catalog
from vidfactory.styles.catalog import JobStyle
from vidfactory.tenancy import Caller, check_not_suspended

__all__ = ["ActiveJobsLimit", "Priced", "StagedFiles", "VideoRequest", "clean_prompt", "enqueue", "price",
           "price_in", "price_now", "reference_key", "regeneration_seed", "run_once_staged", "submit"]

seed_max = 2**31 - 1
whitespace_run = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """What diffusers' Wan pipeline does to a prompt before tokenizing it (HTML-unescape twice, collapse
    whitespace, strip), so the prompt billed is the prompt the model reads."""
    return whitespace_run.sub(" ", html.unescape(html.unescape(text))).strip()


@dataclass(frozen=True)
class VideoRequest:
    """`prompt` reaches the model (after a template rendered and an enhancement rewrote it);
    `user_prompt` is what the user wrote or the template rendered, when that differs."""

    prompt: str
    model: str
    seconds: str | None = None
    size: str | None = None
    negative_prompt: str = ""
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user_prompt: str | None = None
    template: str | None = None
    variables: dict[str, str] | None = None
    enhancement: str | None = None  # rules | llm
    warnings: tuple[str, ...] = ()  # from preparing the prompt (an enhancement that fell back)
    batch_id: str | None = None
    batch_item: int | None = None
    ab_group: str | None = None
    parent_id: str | None = None
    cache: str = "exact"  # exact | similar | off
    webhook_url: str | None = None
    reference: ReferenceImage | None = None  # image-to-video: the first frame, checked (media/reference.py)
    reference_from_template: bool = False  # the image is the template's, not the request's own
    styles: tuple[JobStyle, ...] = ()  # resolved from the tenant's styles (jobs/styling.py)


class ActiveJobsLimit(Exception):
    """The tenant already has its plan's number of queued and running jobs."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"your plan allows {limit} queued or running videos at once; wait for one to finish")
        self.limit = limit


@dataclass(frozen=True)
class Priced:
    model: ModelConfig
    shape: Shape
    prompt: str  # what is generated and billed
    price_book_version: int
    book: PriceBookBody
    quote: Quote
    warnings: list[str]
    memory_bytes_min: int  # the least device memory that can run it (0: unknown architecture)
    prompt_tokens: int  # before truncation at book.prompt_tokens_max (the quote counts what is kept)


def price(settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter], request: VideoRequest,
          version: int, book: PriceBookBody) -> Priced:
    """1. model, 2. shape, 3. tokens with the model's own tokenizer (truncated at the book's max), 4. quote."""
    model = settings.resolve_model(request.model)
    if model is None:
        known = ", ".join([m.id for m in settings.models] + sorted(settings.model_aliases))
        raise InvalidRequest("model", f"unknown model {request.model!r}; available: {known}", code="model_not_found")
    if request.reference is not None and not model.takes_reference_image:
        takers = ", ".join(m.id for m in settings.models if m.takes_reference_image) or "none is configured"
        if request.reference_from_template:
            raise InvalidRequest("template", f"template {request.template!r} has a reference image; model "
                                             f"{model.id} generates from text only; image-to-video models: "
                                             f"{takers}", code="unsupported_parameter")
        raise InvalidRequest("input_reference", f"model {model.id} generates from text only; image-to-video "
                                                f"models: {takers}", code="unsupported_parameter")
    shape = shape_for(model, request.size, request.seconds)
    truncation = counter_for(model).truncate(clean_prompt(request.prompt), book.prompt_tokens_max)
    warnings = list(request.warnings) + substitutions(request, model, shape)
    if truncation.truncated:
        warnings.append(f"prompt truncated to {book.prompt_tokens_max} tokens "
                        f"(it had {truncation.original_tokens})")
    if not truncation.text.strip():
        raise InvalidRequest("prompt", "prompt is empty")
    try:
        priced_quote = quote(book.for_model(model.id), input_tokens=truncation.tokens, width=shape.width,
                             height=shape.height, seconds=shape.seconds, styled=bool(request.styles))
    except ValueError as exc:
        raise InvalidRequest("size", str(exc)) from exc
    architecture = model.wan_preset
    memory_min = (0 if architecture is None else
                  frugal_peak_bytes(architecture, shape.width, shape.height, shape.num_frames))
    return Priced(model=model, shape=shape, prompt=truncation.text, price_book_version=version, book=book,
                  quote=priced_quote, warnings=warnings, memory_bytes_min=memory_min,
                  prompt_tokens=truncation.original_tokens)


def substitutions(request: VideoRequest, model: ModelConfig, shape: Shape) -> list[str]:
    """What is made other than what was named: an alias's model, the nearest size to one of OpenAI's."""
    said = []
    if request.model != model.id:
        said.append(f"model {request.model} is served by {model.id}")
    made = f"{shape.width}x{shape.height}"
    if request.size is not None and request.size != made:
        said.append(f"size {request.size} is made at {made}, the nearest size model {model.id} supports")
    return said


def price_now(sessions: SessionFactory, settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter],
              request: VideoRequest, tenant_id: str) -> Priced:
    """`price_in` a read session of its own."""
    with sessions() as session:
        return price_in(session, settings, counter_for, request, tenant_id)


def price_in(session: Session, settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter],
             request: VideoRequest, tenant_id: str) -> Priced:
    """Price a request with the price book in force now for the tenant (its contract pin, else the
    newest): what a quote shows and a submission holds; refuse it when no worker could ever hold it in
    memory."""
    version, book = pricebooks.for_tenant(session, tenant_id)
    fleet = workers.fleet_devices(session, request.model, utcnow(), settings.worker_stale_s)
    priced = price(settings, counter_for, request, version, book)
    _check_fits_the_fleet(settings, priced, fleet)
    return priced


def _need_on(priced: Priced, devices: int) -> int:
    """The least memory per device this request needs on a worker spanning `devices` devices."""
    architecture, shape = priced.model.wan_preset, priced.shape
    if devices == 1 or architecture is None:
        return priced.memory_bytes_min
    return frugal_peak_bytes(architecture, shape.width, shape.height, shape.num_frames, devices)


def _check_fits_the_fleet(settings: Settings, priced: Priced, fleet: list[tuple[int, int]]) -> None:
    """Refuse what no live worker serving the model could hold (a multi-device worker splits the
    denoising across its devices); with none live, what exceeds the configured fleet limit."""
    if fleet:
        if any(_need_on(priced, devices) <= memory for memory, devices in fleet):
            return
        limit, source = max(memory for memory, _ in fleet), "the largest live worker serving it has"
    else:
        limit, source = settings.fleet_memory_bytes_max, "the fleet limit (fleet_memory_bytes_max) is"
        if limit is None or priced.memory_bytes_min <= limit:
            return
    shape = priced.shape
    raise InvalidRequest(
        "size", f"model {priced.model.id} at {shape.width}x{shape.height}, {shape.num_frames} frames needs at "
                f"least {priced.memory_bytes_min / GIB:.1f} GiB of GPU memory in its most frugal memory mode; "
                f"{source} {limit / GIB:.1f} GiB: ask for a smaller size or fewer seconds",
        code="exceeds_gpu_memory")


def cache_spec(priced: Priced, request: VideoRequest) -> CacheSpec:
    shape = priced.shape
    return CacheSpec(model=priced.model.id, width=shape.width, height=shape.height, num_frames=shape.num_frames,
                     fps=shape.fps, steps=priced.model.steps, guidance_scale=priced.model.guidance_scale,
                     negative_prompt=request.negative_prompt, seed=request.seed,
                     reference_sha256=None if request.reference is None else request.reference.sha256,
                     styles=tuple((style.sha256, style.scale) for style in request.styles))


def reference_key(tenant_id: str, job_id: str, reference: ReferenceImage) -> str:
    """Each job keeps its own copy: deleting one video never takes another's first frame."""
    return tenant_key(tenant_id, job_id, f"reference.{reference.extension}")


def _new_job(settings: Settings, caller: Caller, request: VideoRequest, priced: Priced, hold: ledger.Hold,
             job_id: str, review: Review | None, step_cache_allowed: bool) -> Job:
    shape, q = priced.shape, priced.quote
    spec = cache_spec(priced, request)
    reference = request.reference
    return Job(
        id=job_id, tenant_id=caller.tenant_id, api_key_id=caller.api_key_id, status="queued",
        model=priced.model.id, prompt=priced.prompt,
        user_prompt=request.prompt if request.user_prompt is None else request.user_prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed if request.seed is not None else secrets.randbelow(seed_max),
        width=shape.width, height=shape.height, seconds=shape.seconds, num_frames=shape.num_frames,
        fps=shape.fps, steps=priced.model.steps, guidance_scale=priced.model.guidance_scale,
        priority=caller.priority, concurrent_jobs_max=caller.concurrent_jobs, attempts_max=settings.attempts_max,
        price_book_version=priced.price_book_version, pricing_method=q.method, input_tokens=q.input_tokens,
        output_tokens=q.output_tokens, total_tokens=q.total_tokens, hold_id=hold.id,
        voucher_hold_id=hold.voucher_id, warnings=priced.warnings, cache_mode=request.cache,
        cache_fingerprint=fingerprint(spec, priced.prompt), cache_shape_key=shape_key(spec),
        request_metadata=dict(request.metadata), webhook_url=request.webhook_url, run_after=utcnow(),
        review_status=None if review is None else "pending",
        review_source=None if review is None else review.source,
        review_reason=None if review is None else review.reason[:review_reason_chars_max],
        memory_bytes_min=priced.memory_bytes_min, engine_settings={"step_cache_allowed": step_cache_allowed},
        template=request.template, variables=request.variables, enhancement=request.enhancement,
        batch_id=request.batch_id, batch_item=request.batch_item, ab_group=request.ab_group,
        parent_id=request.parent_id,
        reference_key=None if reference is None else reference_key(caller.tenant_id, job_id, reference),
        reference_sha256=None if reference is None else reference.sha256,
        reference_width=None if reference is None else reference.width,
        reference_height=None if reference is None else reference.height,
        reference_content_type=None if reference is None else reference.content_type,
        styles=[style.as_json() for style in request.styles] or None)


def enqueue(session: Session, settings: Settings, caller: Caller, request: VideoRequest, priced: Priced,
            review: Review | None = None, *, limit_active_jobs: bool = False) -> Job:
    """Hold the quote and insert the queued job, in the caller's transaction: every path that creates
    a job goes through here, so each job has exactly one hold. With `limit_active_jobs`, the caller's
    active-jobs limit refuses it (ActiveJobsLimit). Every refusal comes before the first write, so a
    refused submission leaves its transaction as it found it (a batch of them goes on without it)."""
    assert priced.quote.total_tokens > 0
    terms = check_not_suspended(session, caller.tenant_id)
    styles_catalog.confirm(session, caller.tenant_id, request.styles)
    # Counted under the tenant's lock: concurrent submissions of one tenant count one after another, so the
    # limit is exact (PostgreSQL: the account rows' lock; SQLite: the write transaction).
    accounts = ledger.lock_for_hold(session, caller.tenant_id)
    if limit_active_jobs:
        _check_active_jobs(session, caller)
    job_id = f"video_{uuid.uuid4().hex}"
    hold = ledger.hold(session, tenant_id=caller.tenant_id, amount=priced.quote.total_tokens, job_id=job_id,
                       expires_at=utcnow() + timedelta(seconds=settings.hold_timeout_s), accounts=accounts)
    job = _new_job(settings, caller, request, priced, hold, job_id, review, terms.step_cache_allowed)
    session.add(job)
    session.flush()
    if job.webhook_url is not None:
        ensure_job_secret(session, caller.tenant_id)
    queued_events(session, job)
    if review is not None:
        queue.require_review(session, job.id)
    return job


def regeneration_seed(session: Session, parent: Job) -> int:
    """A seed that made none of the clips of this family (the parent, the videos regenerated from it): a
    regeneration is a new clip, never one the caller already has."""
    taken = {parent.seed, *session.scalars(select(Job.seed).where(Job.tenant_id == parent.tenant_id,
                                                                 Job.parent_id == parent.id))}
    seed = secrets.randbelow(seed_max)
    while seed in taken:
        seed = secrets.randbelow(seed_max)
    return seed


_active_jobs = select(func.count()).select_from(Job).where(
    Job.tenant_id == bindparam("tenant_id"), Job.status.in_(("queued", "in_progress")))


def _check_active_jobs(session: Session, caller: Caller) -> None:
    active = session.scalar(_active_jobs, {"tenant_id": caller.tenant_id})
    if active >= caller.active_jobs_max:  # the new job would be one more
        raise ActiveJobsLimit(caller.active_jobs_max)


def submit(
    sessions: SessionFactory,
    settings: Settings,
    counter_for: Callable[[ModelConfig], TokenCounter],
    caller: Caller,
    request: VideoRequest,
    render: Callable[[Session, Job], dict[str, Any]],
    idempotency: tuple[str, str] | None = None,
    review: Review | None = None,
    *,
    screens: PromptScreens,
    storage: Storage | None = None,
    admissions: GroupCommit | None = None,
) -> Outcome:
    """`idempotency` is (key, request fingerprint); `review` queues the job held for an admin's decision.
    The prompt the model will read is screened first (`screens`): a `review` match holds the job too.
    A result-cache hit (not for a job held for review) queues the job to re-label the source's clip (see
    `queue.serve_from_cache`), posted at the price book's cache rate when a worker delivers it. A reference
    image is written to `storage` inside that transaction and removed again when it does not commit.
    Raises PromptRejected, ImageRejected, InvalidRequest, InsufficientBalance, ActiveJobsLimit,
    IdempotencyConflict; on any of them nothing is held, queued or stored.
    With `admissions`, a submission without a reference image shares its write transaction with those
    arriving together (group commit); one with a reference image keeps one of its own: its file is written
    during the transaction, which a batch may run twice."""
    assert request.reference is None or storage is not None, "a reference image needs the storage"
    if request.webhook_url is not None:
        try:
            resolve_target(request.webhook_url, parse_networks(settings.webhook_allowed_networks))
        except RefusedTarget as exc:
            raise InvalidRequest("webhook_url", str(exc), code="webhook_url_refused") from exc
    with sessions() as session:  # one read transaction for the price book, the fleet and the lexicon
        priced = price_in(session, settings, counter_for, request, caller.tenant_id)
        review = screen_prompt(session, screens, caller.tenant_id, priced.prompt) or review
    screens.images.check(request.reference, "template" if request.reference_from_template else "input_reference")
    # The cache lookup's result in the run of the effect that committed: a batch may run it more than once.
    looked_up: str | None = None

    def hold_and_enqueue(session: Session, files: StagedFiles) -> tuple[int, dict[str, Any]]:
        nonlocal looked_up
        looked_up = None
        job = enqueue(session, settings, caller, request, priced, review, limit_active_jobs=True)
        hit = None if review is not None else cache_index.lookup(
            session, tenant_id=caller.tenant_id, mode=request.cache, fingerprint=job.cache_fingerprint,
            shape_key=job.cache_shape_key, prompt=job.prompt, candidates_max=settings.cache_candidates_max,
            shared=settings.cache_shared)
        if request.cache != "off":
            looked_up = "miss" if hit is None else "hit"
        if hit is not None:  # a worker re-labels the source's clip as this job's own (no media work here)
            queue.serve_from_cache(session, job, hit.job_id, hit.score)
            session.refresh(job)
        # Last, once nothing above refused: the file exists before the job that names it commits.
        files.store_reference(job, request.reference)
        return 200, render(session, job)

    if admissions is not None and request.reference is None:
        outcome = run_once(sessions, caller.tenant_id, idempotency,
                           lambda session: hold_and_enqueue(session, StagedFiles(None)),
                           reservation_s=settings.idempotency_reservation_s, admissions=admissions)
    else:
        outcome = run_once_staged(sessions, settings, caller.tenant_id, idempotency, hold_and_enqueue, storage)
    if looked_up is not None:
        cache_lookups.labels(result=looked_up).inc()
    return outcome


class StagedFiles:
    """Files a submission writes inside its transaction for the jobs it creates. Each key names its job,
    so nobody else reads it; `forget` deletes them when that transaction was not this request's own."""

    def __init__(self, storage: Storage | None) -> None:
        self.storage = storage
        self.keys: list[str] = []

    def store_reference(self, job: Job, reference: ReferenceImage | None) -> None:
        """The job's own copy of its first frame (none without a reference image)."""
        if reference is None:
            return
        assert self.storage is not None and job.reference_key is not None, "a reference needs the storage"
        self.keys.append(job.reference_key)
        self.storage.put(job.reference_key, reference.data, content_type=reference.content_type)

    def put(self, key: str, data: bytes) -> None:
        """Another file of a job being created (a training's dataset)."""
        assert self.storage is not None, "staging a file needs the storage"
        self.keys.append(key)
        self.storage.put(key, data)

    def forget(self) -> None:
        for key in self.keys:
            assert self.storage is not None
            self.storage.delete(key)


def run_once_staged(sessions: SessionFactory, settings: Settings, tenant_id: str,
                    idempotency: tuple[str, str] | None,
                    effect: Callable[[Session, StagedFiles], tuple[int, dict[str, Any]]],
                    storage: Storage | None) -> Outcome:
    """`run_once`, with the files `effect` stores removed again unless its transaction commits as ours:
    on any error, and on a replay (a concurrent request with the key won: its jobs, not ours, exist)."""
    files = StagedFiles(storage)
    try:
        outcome = run_once(sessions, tenant_id, idempotency, lambda session: effect(session, files),
                           reservation_s=settings.idempotency_reservation_s)
    except BaseException:
        files.forget()
        raise
    if outcome.replayed:
        files.forget()
    return outcome
