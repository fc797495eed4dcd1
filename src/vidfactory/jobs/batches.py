"""Batches: one template, many variable sets. Every item is rendered, enhanced, screened and priced
before anything is written; then ONE transaction holds and queues them. `atomic`: any item that cannot
be held (or is blocked) leaves the whole batch uncreated; otherwise such items are reported as
rejected and the rest go ahead. A template's reference image is read once and copied to every item's
job (as POST /v1/videos does for one)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vidfactory.billing import pricebooks
from vidfactory.billing.ledger import InsufficientBalance
from vidfactory.billing.pricebook import money
from vidfactory.billing.tokens import TokenCounter
from vidfactory.db.models import Asset, Batch, Job
from vidfactory.db.session import SessionFactory
from vidfactory.idempotency import Outcome
from vidfactory.jobs.prompting import PromptRequest, find_template, resolve_prompt, template_reference
from vidfactory.jobs.queue import Review
from vidfactory.jobs.screening import PromptRejected, PromptScreens, screen_prompt
from vidfactory.jobs.styling import requested, resolve_styles
from vidfactory.jobs.submit import Priced, StagedFiles, VideoRequest, enqueue, price, run_once_staged
from vidfactory.media.reference import ReferenceImage
from vidfactory.prompts.batch import BatchItem, expand
from vidfactory.settings import ModelConfig, Settings
from vidfactory.storage import Storage
from vidfactory.styles.catalog import StyleRef
from vidfactory.tenancy import Caller

__all__ = ["BatchExpired", "BatchQuote", "BatchSpec", "archive_bytes", "batch_jobs", "batch_quote", "batch_reference",
           "find_batch", "job_states", "manifest_columns", "quote_batch", "status_counts", "submit_batch",
           "tenant_batches"]

job_states = ("queued", "in_progress", "completed", "failed", "cancelled")
manifest_columns = ("item", "video_id", "file", "variables", "ab_group", "prompt", "seed", "status", "sha256")


class BatchExpired(Exception):
    """Every clip of the batch has passed its retention: there is no archive to make."""


@dataclass(frozen=True)
class BatchSpec:
    template: str
    variables: dict[str, str | list[str]]  # a string is shared by every item, a list expands
    mode: str = "cartesian"
    ab_groups: list[str] | None = None
    atomic: bool = False
    enhance: bool = False
    model: str | None = None
    seconds: str | None = None
    size: str | None = None
    negative_prompt: str = ""
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    style: str | None = None  # the tenant's style for every item, or several with scales (none: the
    styles: list[StyleRef] | None = None  # template's default style, if it has one)


@dataclass(frozen=True)
class PreparedItem:
    item: BatchItem
    request: VideoRequest
    priced: Priced
    review: Review | None


def batch_reference(sessions: SessionFactory, storage: Storage, tenant_id: str,
                    template: str) -> ReferenceImage | None:
    """The template's reference image, as every item will carry it (None without one)."""
    with sessions() as session:
        found = find_template(session, tenant_id, template)
    return None if found.reference is None else template_reference(storage, template, found.reference)


def _prepare(sessions: SessionFactory, settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter],
             caller: Caller, spec: BatchSpec, batch_id: str, chars_max: int, screens: PromptScreens,
             reference: ReferenceImage | None) -> tuple[list[PreparedItem], list[dict[str, Any]]]:
    """Render, enhance, screen and price every item: no writes. A request error in any item (a missing
    variable, a bad size) is the whole batch's 400. A prompt the content policy blocks is the whole
    batch's 400 when atomic; otherwise that item is rejected (by category only) and the rest go on."""
    lists = {name: value if isinstance(value, list) else [value] for name, value in spec.variables.items()}
    items = expand(lists, spec.mode, settings.batch_items_max, spec.ab_groups)
    with sessions() as session:
        template = find_template(session, caller.tenant_id, spec.template)
        version, book = pricebooks.for_tenant(session, caller.tenant_id)  # one book for the whole batch
    default = None if template.default_style is None else StyleRef(template.default_style,
                                                                   template.default_style_scale)
    refs, param = requested(spec.style, spec.styles, default)
    styles = resolve_styles(sessions, settings, caller.tenant_id, spec.model or settings.models[0].id, refs, param)
    prepared, blocked = [], []
    for item in items:
        resolved = resolve_prompt(sessions, settings, caller.tenant_id,
                                  PromptRequest(template=spec.template, variables=item.variables,
                                                enhance=spec.enhance), chars_max, template=template)
        request = VideoRequest(
            prompt=resolved.prompt, model=spec.model or settings.models[0].id,
            seconds=spec.seconds or (None if resolved.seconds is None else str(resolved.seconds)),
            size=spec.size or resolved.size, negative_prompt=spec.negative_prompt, seed=spec.seed,
            metadata=dict(spec.metadata), user_prompt=resolved.user_prompt, template=resolved.template,
            variables=resolved.variables, enhancement=resolved.enhancement, warnings=resolved.warnings,
            batch_id=batch_id, batch_item=item.index, ab_group=item.ab_group, reference=reference,
            reference_from_template=reference is not None, styles=styles)
        priced = price(settings, counter_for, request, version, book)
        try:
            with sessions() as session:
                review = screen_prompt(session, screens, caller.tenant_id, priced.prompt)
        except PromptRejected as exc:
            if spec.atomic:
                raise
            blocked.append({"item": item.index, "variables": item.variables, "ab_group": item.ab_group,
                            "code": "content_policy", "message": str(exc), "category": exc.category})
            continue
        prepared.append(PreparedItem(item, request, priced, review))
    return prepared, blocked


@dataclass(frozen=True)
class BatchQuote:
    """What a batch would cost, creating nothing: the items that would be made (each with its prompt and
    group) and those the content policy would refuse (by category only)."""

    items: list[dict[str, Any]]
    blocked: list[dict[str, Any]]
    total_tokens: int
    currency: str
    amount: Decimal
    price_book_version: int | None


def quote_batch(sessions: SessionFactory, settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter],
                caller: Caller, spec: BatchSpec, chars_max: int, *, screens: PromptScreens,
                reference: ReferenceImage | None = None) -> BatchQuote:
    """Rendered, screened and priced exactly as `submit_batch` would (one price book for all), nothing
    written. Raises what `submit_batch` raises before it holds anything."""
    screens.images.check(reference, "template")
    prepared, blocked = _prepare(sessions, settings, counter_for, caller, spec, "batch_quote", chars_max, screens,
                                 reference)
    total_tokens = sum(p.priced.quote.total_tokens for p in prepared)
    if prepared:
        book, version = prepared[0].priced.book, prepared[0].priced.price_book_version
    else:
        with sessions() as session:
            version, book = pricebooks.for_tenant(session, caller.tenant_id)
    items = [{"item": p.item.index, "ab_group": p.item.ab_group, "variables": p.item.variables,
              "prompt": p.priced.prompt, "total_tokens": p.priced.quote.total_tokens, "held": p.review is not None}
             for p in prepared]
    return BatchQuote(items=items, blocked=[{key: b[key] for key in ("item", "ab_group", "category")} for b in blocked],
                      total_tokens=total_tokens, currency=book.currency, amount=money(book, total_tokens),
                      price_book_version=version)


def submit_batch(sessions: SessionFactory, settings: Settings, counter_for: Callable[[ModelConfig], TokenCounter],
                 caller: Caller, spec: BatchSpec, chars_max: int,
                 render: Callable[[Session, Batch], dict[str, Any]],
                 idempotency: tuple[str, str] | None = None, *, screens: PromptScreens,
                 storage: Storage, reference: ReferenceImage | None = None) -> Outcome:
    """`reference`: the template's image (`batch_reference`), copied to each job in `storage`. Raises
    PromptError / InvalidRequest / ImageRejected (nothing created), PromptRejected or InsufficientBalance
    when `atomic` and an item is blocked or the balance cannot hold every item (nothing held), IdempotencyConflict;
    then no file is left stored."""
    screens.images.check(reference, "template")  # one image for every item: screened once, before all else
    batch_id = f"batch_{uuid.uuid4().hex}"
    prepared, blocked = _prepare(sessions, settings, counter_for, caller, spec, batch_id, chars_max, screens,
                                 reference)
    if not prepared:  # every item blocked: the request as a whole is refused, as a single video would be
        raise PromptRejected(blocked[0]["category"])
    assert len({p.priced.price_book_version for p in prepared}) == 1
    total_tokens = sum(p.priced.quote.total_tokens for p in prepared)

    def hold_and_enqueue(session: Session, files: StagedFiles) -> tuple[int, dict[str, Any]]:
        batch = Batch(id=batch_id, tenant_id=caller.tenant_id, template=spec.template, mode=spec.mode,
                      atomic=spec.atomic, items_total=len(prepared) + len(blocked), total_tokens=total_tokens, rejected=[],
                      price_book_version=prepared[0].priced.price_book_version,
                      request_metadata=dict(spec.metadata))
        session.add(batch)
        session.flush()  # the jobs reference it
        rejected = list(blocked)
        for item in prepared:
            if spec.atomic:  # any failure rolls the whole transaction back: no item is held or queued
                files.store_reference(enqueue(session, settings, caller, item.request, item.priced, item.review),
                                      reference)
                continue
            try:
                with session.begin_nested():  # a refused item leaves nothing behind (a voucher leg included)
                    job = enqueue(session, settings, caller, item.request, item.priced, item.review)
            except InsufficientBalance as exc:
                rejected.append({"item": item.item.index, "variables": item.item.variables,
                                 "ab_group": item.item.ab_group, "code": "insufficient_balance",
                                 "message": str(exc)})
                continue
            files.store_reference(job, reference)
        batch.rejected = sorted(rejected, key=lambda r: r["item"])
        session.flush()
        return 202, render(session, batch)

    return run_once_staged(sessions, settings, caller.tenant_id, idempotency, hold_and_enqueue, storage)


def batch_quote(session: Session, batch: Batch) -> dict[str, Any]:
    """The whole batch's price: tokens summed, then money rounded once (never a sum of rounded amounts)."""
    book = pricebooks.get(session, batch.price_book_version)
    return {"items": batch.items_total, "total_tokens": batch.total_tokens, "price_book_version":
            batch.price_book_version, "currency": book.currency, "amount": str(money(book, batch.total_tokens))}


def tenant_batches(session: Session, tenant_id: str, limit: int) -> list[Batch]:
    """The tenant's batches, newest first."""
    return list(session.scalars(select(Batch).where(Batch.tenant_id == tenant_id)
                                .order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)))


def find_batch(session: Session, tenant_id: str, batch_id: str) -> Batch | None:
    """The tenant's batch of that id; another tenant's is None, as a missing one."""
    return session.scalar(select(Batch).where(Batch.id == batch_id, Batch.tenant_id == tenant_id))


def status_counts(session: Session, batches: list[Batch]) -> dict[str, dict[str, int]]:
    """Per batch: its items by job state, every state present, and the items rejected at submission."""
    counts: dict[str, dict[str, int]] = {b.id: dict.fromkeys(job_states, 0) | {"rejected": len(b.rejected)}
                                         for b in batches}
    if batches:
        for batch_id, status, count in session.execute(
                select(Job.batch_id, Job.status, func.count()).where(Job.batch_id.in_(list(counts)))
                .group_by(Job.batch_id, Job.status)):
            counts[batch_id][status] = count
    return counts


def batch_jobs(session: Session, batch: Batch) -> list[Job]:
    """The batch's jobs in item order."""
    return list(session.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.batch_item)))


def _manifest_row(job: Job, file: str, sha256: str, now: datetime) -> dict[str, Any]:
    status = "deleted" if job.deleted_at is not None else "expired" if job.content_expired(now) else job.status
    return {"item": job.batch_item, "video_id": job.id, "file": file,
            "variables": json.dumps(job.variables or {}, ensure_ascii=False, sort_keys=True),
            "ab_group": job.ab_group or "", "prompt": job.prompt, "seed": job.seed, "status": status,
            "sha256": sha256}


def archive_bytes(session: Session, storage: Storage, batch: Batch, now: datetime) -> bytes:
    """A ZIP: each finished clip as item-NNNN.mp4, and manifest.csv with one row per item (finished or
    not, rejected ones too). An expired clip is left out (its status says `expired`); BatchExpired once
    every clip has."""
    jobs = batch_jobs(session, batch)
    if jobs and all(job.content_expired(now) for job in jobs):
        raise BatchExpired(batch.id)
    videos = {asset.job_id: asset for asset in session.scalars(
        select(Asset).where(Asset.job_id.in_([job.id for job in jobs]), Asset.variant == "video"))} if jobs else {}
    buffer, manifest = io.BytesIO(), io.StringIO()
    writer = csv.DictWriter(manifest, fieldnames=manifest_columns, lineterminator="\n")
    writer.writeheader()
    with zipfile.ZipFile(buffer, "w") as archive:
        for job in jobs:
            asset = videos.get(job.id)
            if job.status == "completed" and job.deleted_at is None and not job.content_expired(now) \
                    and asset is not None:
                name = f"item-{job.batch_item:04d}.mp4"
                with storage.open(asset.storage_key) as clip, archive.open(zipfile.ZipInfo(name), "w") as entry:
                    shutil.copyfileobj(clip, entry)  # MP4: stored as is
                writer.writerow(_manifest_row(job, name, asset.sha256, now))
            else:
                writer.writerow(_manifest_row(job, "", "", now))
        for rejected in batch.rejected:
            writer.writerow({"item": rejected["item"], "ab_group": rejected["ab_group"] or "",
                             "variables": json.dumps(rejected["variables"], ensure_ascii=False, sort_keys=True),
                             "status": f"rejected: {rejected['code']}"})
        archive.writestr("manifest.csv", manifest.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
