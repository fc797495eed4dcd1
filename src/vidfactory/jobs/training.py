"""Style trainings on the job queue: submission (checks, quote, hold, the style reserved, the job queued) and
what a worker does with one (resume from its checkpoint, train, store the adapter, a preview clip).

A training is a job of type "training": the same queue, leases, priorities, cancellation and refunds as a
video, never listed among videos. It is quoted at the price book's price per training step and posted once,
when its style is ready. Its dataset, checkpoint and adapter live in the tenant's storage space
(`tenants/<tenant_id>/trainings/<job_id>/...`), so any worker can resume it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import training_quote
from vidfactory.db.models import Asset, Job, Plan, Style, Tenant
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.engines.base import CancelCheck, GeneratedVideo, GenerationRequest, InvalidInput, StyleAdapter
from vidfactory.engines.lora_settings import (
    TrainingResult,
    TrainingSettings,
    check_settings,
    settings_for,
)
from vidfactory.engines.presets import FRAME_STRIDE, WanPreset
from vidfactory.idempotency import Outcome
from vidfactory.jobs import queue
from vidfactory.jobs.lease import Lease
from vidfactory.jobs.screening import ImageScreen
from vidfactory.jobs.spec import InvalidRequest
from vidfactory.jobs.submit import StagedFiles, run_once_staged
from vidfactory.notify.events import billing_event, training_data
from vidfactory.settings import ModelConfig, Settings
from vidfactory.storage import Storage
from vidfactory.styles.adapters import check_adapter
from vidfactory.styles.catalog import adapter_key, name_pattern, new_style_id
from vidfactory.styles.training import DatasetRefused, read_dataset, screen_dataset, training_samples
from vidfactory.tenancy import Caller, check_not_suspended

__all__ = ["TrainingRequest", "TrainingRun", "TrainingsLimit", "dataset_from_videos", "find_training",
           "submit_training", "training_object", "trainings_page"]

seed_max = 2**31 - 1
preview_frames_max = 33  # a short clip: two seconds at 16 fps
progress_events = 20  # `training.progress` events over a whole training (and one at its last step)


@dataclass(frozen=True)
class TrainingRequest:
    name: str
    model: str
    dataset: bytes  # a ZIP (styles/training.py)
    caption: str | None = None  # for files without their own caption
    steps: int | None = None  # None: the preset's default
    rank: int | None = None
    learning_rate: float | None = None
    default_scale: float = 1.0
    description: str = ""
    seed: int | None = None


class TrainingsLimit(Exception):
    """The tenant already has its plan's number of trainings queued or running."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"your plan allows {limit} style trainings queued or running at once; wait for one "
                         f"to finish" if limit else "your plan does not include style training")
        self.limit = limit


def dataset_key(tenant_id: str, job_id: str) -> str:
    return f"tenants/{tenant_id}/trainings/{job_id}/dataset.zip"


def checkpoint_key(tenant_id: str, job_id: str) -> str:
    return f"tenants/{tenant_id}/trainings/{job_id}/checkpoint.pt"


def _trainable(settings: Settings, name: str) -> tuple[ModelConfig, WanPreset]:
    model = settings.resolve_model(name)
    if model is None:
        raise InvalidRequest("model", f"unknown model {name!r}", code="model_not_found")
    preset = model.wan_preset
    if model.is_hosted or preset is None:
        raise InvalidRequest("model", f"model {model.id} cannot train styles: only Wan models run here do",
                             code="unsupported_parameter")
    if preset.experts != 1:
        # Training would have to fit each expert to its own noise range; uploaded styles do work on it.
        raise InvalidRequest("model", f"model {model.id} has two experts (high and low noise): styles are trained "
                                      f"on one-expert Wan models only; upload an adapter for it instead",
                             code="unsupported_parameter")
    return model, preset


def _plan(session: Session, tenant_id: str) -> Plan:
    return session.scalars(select(Plan).join(Tenant, Tenant.plan_id == Plan.id).where(Tenant.id == tenant_id)).one()


def _settings(request: TrainingRequest, preset: WanPreset, plan: Plan) -> TrainingSettings:
    settings = settings_for(preset.training, preset.flow_shift, steps=request.steps, rank=request.rank,
                            learning_rate=request.learning_rate,
                            seed=request.seed if request.seed is not None else secrets.randbelow(seed_max))
    if settings.steps > plan.training_steps_max:
        raise InvalidRequest("steps", f"{settings.steps} training steps; your plan trains at most "
                                      f"{plan.training_steps_max}", code="plan_limit")
    try:
        check_settings(settings)
    except InvalidInput as exc:
        raise InvalidRequest(str(exc).split(" ", 1)[0], str(exc)) from exc
    return settings


def _check_active_trainings(session: Session, tenant_id: str, plan: Plan) -> None:
    """After the hold locked the tenant's ledger: concurrent submissions count one after another."""
    active = session.scalar(select(func.count()).select_from(Job).where(
        Job.tenant_id == tenant_id, Job.job_type == "training", Job.status.in_(("queued", "in_progress"))))
    if active > plan.concurrent_trainings:  # the new one is counted
        raise TrainingsLimit(plan.concurrent_trainings)


def submit_training(sessions: SessionFactory, settings: Settings, caller: Caller, request: TrainingRequest,
                    images: ImageScreen, storage: Storage, idempotency: tuple[str, str] | None = None) -> Outcome:
    """Check everything, then hold the quote, reserve the style's name and queue the job in one
    transaction; the dataset is stored before it commits and removed if it does not. `idempotency` is
    (key, request fingerprint): a retry replays the first outcome, never a second hold. Raises
    InvalidRequest, ImageRejected, InsufficientBalance, TrainingsLimit, TenantSuspended,
    IdempotencyConflict; on any of them nothing is held, queued or stored."""
    # 1. The model, the name, the plan's limits and the settings.
    model, preset = _trainable(settings, request.model)
    if not name_pattern.fullmatch(request.name):
        raise InvalidRequest("name", "a style name is 1-64 letters, digits, '_', '.' or '-', starting with a "
                                     "letter or digit")
    with sessions() as session:
        plan = _plan(session, caller.tenant_id)
        version, book = pricebooks.for_tenant(session, caller.tenant_id)
    if plan.concurrent_trainings == 0:
        raise TrainingsLimit(0)
    train = _settings(request, preset, plan)
    # 2. The dataset: every file decodes, every image passes the reference-image screen.
    try:
        items = read_dataset(request.dataset, samples_max=plan.training_samples_max, caption=request.caption)
    except DatasetRefused as exc:
        raise InvalidRequest("dataset", str(exc), code="invalid_dataset") from exc
    screen_dataset(items, images.check)
    quote = training_quote(book, train.steps)
    job_id, style_id = f"train_{uuid.uuid4().hex}", new_style_id()

    def hold_and_enqueue(session: Session, files: StagedFiles) -> tuple[int, dict[str, Any]]:
        # 3. Hold, then the limits counted under the hold's lock, the style, the job; the dataset last.
        check_not_suspended(session, caller.tenant_id)
        hold = ledger.hold(session, tenant_id=caller.tenant_id, amount=quote.total_tokens, job_id=job_id,
                           expires_at=utcnow() + timedelta(seconds=settings.hold_timeout_s))
        _reserve_style(session, caller.tenant_id, style_id, job_id, request, model)
        job = Job(
            id=job_id, tenant_id=caller.tenant_id, api_key_id=caller.api_key_id, status="queued",
            job_type="training", model=model.id, prompt=f"style {request.name}",
            user_prompt=f"style {request.name}", seed=train.seed, width=train.buckets[0][0],
            height=train.buckets[0][1], seconds=0, num_frames=train.num_frames, fps=preset.fps,
            steps=train.steps, guidance_scale=0.0, priority=caller.priority,
            concurrent_jobs_max=caller.concurrent_jobs, attempts_max=settings.attempts_max,
            price_book_version=version, pricing_method=quote.method, input_tokens=0,
            output_tokens=quote.output_tokens, total_tokens=quote.total_tokens, hold_id=hold.id,
            voucher_hold_id=hold.voucher_id, cache_mode="off", run_after=utcnow(), engine_settings={},
            training={"style_id": style_id, "name": request.name, "step": 0, "loss": None,
                      "caption": request.caption,
                      "settings": asdict(train), "dataset": _dataset_summary(items, request.dataset)})
        session.add(job)
        session.flush()
        _check_active_trainings(session, caller.tenant_id, plan)
        billing_event(session, job, "billing.hold_created", None)
        files.put(dataset_key(caller.tenant_id, job_id), request.dataset)
        return 200, training_object(session, job)

    return run_once_staged(sessions, settings, caller.tenant_id, idempotency, hold_and_enqueue, storage)


def _reserve_style(session: Session, tenant_id: str, style_id: str, job_id: str, request: TrainingRequest,
                   model: ModelConfig) -> None:
    """The style's row, `training` until its adapter exists: the name is the tenant's from now on. Its
    provenance names its job from the start, so deleting the style finds the training's files."""
    assert model.wan_preset is not None
    try:
        with session.begin_nested():
            session.add(Style(id=style_id, tenant_id=tenant_id, name=request.name, base_model=model.wan_preset.id,
                              status="training", source="trained", default_scale=request.default_scale,
                              description=request.description, training={"job_id": job_id}))
    except IntegrityError as exc:
        raise InvalidRequest("name", f"you already have a style named {request.name!r}",
                             code="style_name_taken") from exc


def _dataset_summary(items, data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "samples": len(items),
            "images": sum(item.kind == "image" for item in items),
            "clips": sum(item.kind == "clip" for item in items)}


def dataset_from_videos(session: Session, storage: Storage, tenant_id: str, video_ids: list[str]
                        ) -> bytes:
    """A dataset ZIP of the tenant's own delivered videos, each captioned with the prompt that made it."""
    from vidfactory.styles.training import dataset_zip

    clips = []
    for video_id in video_ids:
        row = session.execute(select(Job.prompt, Asset.storage_key).join(Asset, Asset.job_id == Job.id).where(
            Job.id == video_id, Job.tenant_id == tenant_id, Job.job_type == "video", Job.status == "completed",
            Job.deleted_at.is_(None), Asset.variant == "video")).first()
        if row is None:
            raise InvalidRequest("video_ids", f"no completed video {video_id!r}", code="video_not_found")
        clips.append((video_id, storage.read(row.storage_key), row.prompt))
    return dataset_zip(clips)


def find_training(session: Session, tenant_id: str, training_id: str) -> Job | None:
    """The tenant's training `training_id`; another tenant's is never found."""
    return session.scalar(select(Job).where(Job.id == training_id, Job.tenant_id == tenant_id,
                                            Job.job_type == "training"))


def trainings_page(session: Session, tenant_id: str, after: Job | None, limit: int) -> tuple[list[Job], bool]:
    """Up to `limit` of the tenant's trainings after the cursor, newest first, and whether more follow."""
    assert limit >= 0
    statement = select(Job).where(Job.tenant_id == tenant_id, Job.job_type == "training")
    if after is not None:
        statement = statement.where(tuple_(Job.created_at, Job.id) < tuple_(after.created_at, after.id))
    jobs = list(session.scalars(statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    return jobs[:limit], len(jobs) > limit


def training_object(session: Session, job: Job) -> dict[str, Any]:
    """A training as the API shows it: its state, its style, the step and loss reached, what it costs."""
    training = job.training or {}
    style = session.get(Style, training.get("style_id")) if training.get("style_id") else None
    preview = session.scalar(select(Asset.id).where(Asset.job_id == job.id, Asset.variant == "video"))
    return {**training_data(job), "name": training.get("name"),
            "style": None if style is None else {"id": style.id, "name": style.name, "status": style.status},
            "settings": training.get("settings"), "dataset": training.get("dataset"),
            "price_book_version": job.price_book_version, "preview": preview is not None,
            "created_at": int(job.created_at.timestamp()),
            "completed_at": None if job.completed_at is None else int(job.completed_at.timestamp())}


class TrainingRun:
    """One attempt at a training on a worker: its dataset, its checkpoint, its progress."""

    def __init__(self, job: Job, storage: Storage, lease: Lease, worker_id: str, settings: Settings) -> None:
        self.job, self.storage, self.lease, self.worker_id = job, storage, lease, worker_id
        self.settings = settings
        spec = job.training or {}
        saved = spec["settings"]
        self.train_settings = TrainingSettings(**{**saved, "buckets": tuple(tuple(b) for b in saved["buckets"])})
        self.announce_every = max(1, job.steps // progress_events)
        self.checkpoint_key = checkpoint_key(job.tenant_id, job.id)
        self.resumed_at = 0

    def train(self, engine: Any, is_cancelled: CancelCheck) -> tuple[TrainingResult, str]:
        """From its checkpoint when an earlier attempt left one (the same steps are never run twice).
        Returns the result and the first sample's caption (what the preview shows)."""
        items = read_dataset(self.storage.read(dataset_key(self.job.tenant_id, self.job.id)),
                             samples_max=self.job.training["dataset"]["samples"],
                             caption=self.job.training.get("caption"))
        resume = self._checkpoint()
        result = engine.train_style(training_samples(items), self.train_settings, self._progress, is_cancelled,
                                    self._save_checkpoint, resume)
        return result, items[0].caption

    def _checkpoint(self) -> bytes | None:
        try:
            return self.storage.read(self.checkpoint_key)
        except FileNotFoundError:
            return None

    def _progress(self, step: int, steps: int, loss: float) -> None:
        if self.resumed_at == 0:
            self.resumed_at = step
        announce = step % self.announce_every == 0 or step == steps
        self.lease.best_effort(lambda session: _report(session, self.job.id, self.worker_id, step, loss, announce),
                               "training progress")

    def _save_checkpoint(self, step: int, data: bytes) -> None:
        self.storage.put(self.checkpoint_key, data)

    def preview(self, engine: Any, preset: WanPreset, result: TrainingResult, caption: str,
                is_cancelled: CancelCheck) -> GeneratedVideo:
        """A short clip of `caption` made with the new style at scale 1, the job's seed."""
        frames = min(preset.num_frames, preview_frames_max)
        frames -= (frames - 1) % FRAME_STRIDE
        style = StyleAdapter(sha256=hashlib.sha256(result.adapter).hexdigest(), scale=1.0,
                             read=lambda: result.adapter)
        request = GenerationRequest(prompt=caption, negative_prompt="", width=preset.width, height=preset.height,
                                    num_frames=frames, fps=preset.fps, num_inference_steps=preset.steps,
                                    guidance_scale=preset.guidance_scale, seed=self.job.seed, adapters=(style,))
        return engine.generate(request, lambda *_: None, is_cancelled)

    def store_style(self, preset: WanPreset, result: TrainingResult) -> dict[str, Any]:
        """The adapter checked as an upload would be, stored under its hash; the style's new values."""
        adapter = check_adapter(result.adapter, preset, bytes_max=self.settings.style_upload_bytes_max,
                                rank_max=self.settings.style_rank_max)
        style_id = self.job.training["style_id"]
        key = adapter_key(self.job.tenant_id, style_id, adapter.sha256)
        self.storage.put(key, result.adapter)
        provenance = {"job_id": self.job.id, "dataset": self.job.training["dataset"], "steps": result.steps,
                      "rank": result.rank, "learning_rate": self.train_settings.learning_rate,
                      "loss_curve": [round(loss, 6) for loss in result.losses],
                      "final_loss": round(result.losses[-1], 6), "resumed_at_step": self.resumed_at}
        return {"sha256": adapter.sha256, "rank": adapter.rank, "size_bytes": adapter.size_bytes,
                "storage_key": key, "training": provenance}


def _report(session: Session, job_id: str, worker_id: str, step: int, loss: float, announce: bool) -> None:
    queue.report_training_progress(session, job_id, worker_id, step=step, loss=loss, announce=announce)
