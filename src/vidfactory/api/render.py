"""Database rows to public JSON objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from vidfactory.billing import ledger
from vidfactory.db.models import Asset, Job, Transfer, WebhookDelivery
from vidfactory.failures import failure_object
from vidfactory.notify.events import review_data

__all__ = ["billing_object", "delivery_object", "engine_settings_object", "file_hashes_by_job", "new_video_object",
           "timestamp", "transfer_object", "video_object"]

# Entries of job.engine_settings that say what the job may do, not how its clip was made: kept internal.
internal_engine_settings = frozenset({"step_cache_allowed"})


def timestamp(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def billing_object(job: Job, resolutions: list[Transfer | None]) -> dict[str, Any]:
    """`resolutions`: the post or void of each leg of the job's hold (None while it is pending). Legs
    resolve together, in one transaction."""
    held = job.total_tokens
    if any(r is None for r in resolutions):
        return {"price_book_version": job.price_book_version, "held": held, "settled": None, "released": None,
                "status": "held"}
    settled = sum(r.amount for r in resolutions if r.kind == "post")
    posted = any(r.kind == "post" for r in resolutions)
    return {"price_book_version": job.price_book_version, "held": held, "settled": settled,
            "released": held - settled, "status": "settled" if posted else "voided"}


FileHashes = dict[str, dict[str, str | None]]  # variant → {"sha256", "md5"}


_file_hashes = (select(Asset.job_id, Asset.variant, Asset.sha256, Asset.md5)
                .where(Asset.job_id.in_(bindparam("job_ids", expanding=True))).order_by(Asset.id))


def file_hashes_by_job(session: Session, job_ids: list[str]) -> dict[str, FileHashes]:
    """The hashes of every stored file of these jobs, in one query (built once: every poll of a video
    reads them)."""
    found: dict[str, FileHashes] = {job_id: {} for job_id in job_ids}
    rows = session.execute(_file_hashes, {"job_ids": job_ids})
    for row in rows:
        found[row.job_id][row.variant] = {"sha256": row.sha256, "md5": row.md5}
    return found


def engine_settings_object(job: Job) -> dict[str, str | bool | int | float] | None:
    """How the clip was made (memory mode, step cache, attention backend, compile, FP8...): what the last
    attempt that ran recorded; None until a worker ran the job (a cache hit never runs)."""
    ran = {key: value for key, value in (job.engine_settings or {}).items()
           if key not in internal_engine_settings and isinstance(value, str | bool | int | float)}
    return ran or None


def video_object(session: Session, job: Job, resolutions: dict[str, Transfer] | None = None,
                 hashes: dict[str, FileHashes] | None = None) -> dict[str, Any]:
    """`resolutions` (hold id → post/void) and `hashes` (job id → files), when a caller already fetched
    them for a page of jobs."""
    if resolutions is None:
        resolutions = ledger.hold_resolutions(session, job.hold_leg_ids)
    leg_resolutions = [resolutions.get(leg) for leg in job.hold_leg_ids]
    files = (hashes if hashes is not None else file_hashes_by_job(session, [job.id])).get(job.id, {})
    error = failure_object(job.error_type, job.error_message) if job.status == "failed" else None
    return {
        "id": job.id,
        "object": "video",
        "created_at": timestamp(job.created_at),
        "completed_at": timestamp(job.completed_at),
        # When its stored files (clip, previews, reference image) are deleted; set as the job ends.
        "expires_at": timestamp(job.expires_at),
        "model": job.model,
        "status": job.status,
        "progress": job.progress,
        "prompt": job.prompt,
        "seconds": str(job.seconds),
        "size": f"{job.width}x{job.height}",
        "error": error,
        "remixed_from_video_id": job.parent_id,
        # Image-to-video: the first frame the clip starts from (the bytes' SHA-256, as uploaded).
        "input_reference": None if job.reference_sha256 is None else {
            "sha256": job.reference_sha256, "width": job.reference_width, "height": job.reference_height,
            "content_type": job.reference_content_type},
        # The styles (LoRA adapters) it is made with, as resolved when it was submitted.
        "styles": [{"id": s["id"], "name": s["name"], "sha256": s["sha256"], "scale": s["scale"]}
                   for s in job.styles or ()],
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "metadata": job.request_metadata,
        "webhook_url": job.webhook_url,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
                  "total_tokens": job.total_tokens},
        "billing": billing_object(job, leg_resolutions),
        "cache_hit": None if job.cache_hit_job_id is None else {"video_id": job.cache_hit_job_id,
                                                                 "score": job.cache_hit_score},
        "warnings": list(job.warnings),
        # Where the prompt came from: what the user wrote (or the template rendered), and how.
        "user_prompt": job.user_prompt,
        "template": job.template,
        "variables": job.variables,
        "enhancement": job.enhancement,
        "batch": None if job.batch_id is None else {"id": job.batch_id, "item": job.batch_item,
                                                    "ab_group": job.ab_group},
        # SHA-256 and MD5 of each stored file (video, thumbnail, spritesheet), as POST /v1/verify checks.
        "hashes": files,
        # A hosted service that rewrote the prompt (DashScope prompt_extend) says what it really ran.
        "actual_prompt": (job.engine_metadata or {}).get("actual_prompt"),
        # How the clip was made, and the seconds this job waited for its model to load (null: none).
        "engine_settings": engine_settings_object(job),
        "model_load_s": job.model_load_s,
        # The reason stays with the admins: it may name the matched terms or the failed check.
        # Held for review: until when (deadline_at), and what happens then (on_deadline: approve|refund).
        "review": review_data(job),
    }


def new_video_object(session: Session, job: Job) -> dict[str, Any]:
    """`video_object` of a job created in this transaction, without reading what cannot exist yet: its
    hold is resolved and its files are recorded only by a worker that claimed it, after it committed."""
    return video_object(session, job, resolutions={}, hashes={job.id: {}})


def transfer_object(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.id,
        "object": "ledger.transfer",
        "kind": transfer.kind,
        "amount": transfer.amount,
        "debit_account": transfer.debit_account_id,
        "credit_account": transfer.credit_account_id,
        "pending_id": transfer.pending_id,
        "job_id": transfer.job_id,
        "memo": transfer.memo,
        "created_at": timestamp(transfer.created_at),
    }


def delivery_object(delivery: WebhookDelivery, event_type: str) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "event_id": delivery.event_id,
        "event_type": event_type,
        "endpoint_id": delivery.endpoint_id,
        "video_id": delivery.job_id,
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": timestamp(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "last_attempt_at": timestamp(delivery.last_attempt_at),
        "delivered_at": timestamp(delivery.delivered_at),
        "created_at": timestamp(delivery.created_at),
    }
