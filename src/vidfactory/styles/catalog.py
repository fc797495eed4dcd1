"""A tenant's styles in the database: lookup by name or id, uploaded styles, deletion, and the styles a
job is made with (resolved when it is submitted, confirmed inside the transaction that queues it).

Storage keys are tenant-scoped: `tenants/<tenant_id>/styles/<style_id>/<sha256>.safetensors`. A job records
each adapter's key, hash and scale, so it runs what was priced and cached even if the style changes later.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vidfactory.db.models import Job, Style, Template
from vidfactory.db.types import utcnow
from vidfactory.jobs import queue
from vidfactory.settings import ModelConfig
from vidfactory.styles.adapters import Adapter
from vidfactory.styles.errors import InvalidStyle, StyleInUse

__all__ = ["Deleted", "JobStyle", "StyleRef", "adapter_key", "add_uploaded", "base_of", "confirm", "delete", "find", "job_styles",
           "name_pattern", "new_style_id", "resolve", "users"]

name_pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
id_pattern = re.compile(r"^style_[0-9a-f]{32}$")
active_states = ("queued", "in_progress")
users_listed_max = 5


@dataclass(frozen=True)
class StyleRef:
    """A style as a request names it: its name or id, and a scale (None: the style's default_scale)."""

    style: str
    scale: float | None = None


@dataclass(frozen=True)
class Deleted:
    """What a deleted style leaves to remove from storage once its deletion commits."""

    adapter_key: str | None  # None: a style whose training failed has no adapter
    training_job_id: str | None  # a trained style's job, its content marked expiring (dataset, checkpoints, preview)


@dataclass(frozen=True)
class JobStyle:
    """A style as a job uses it: what the worker loads, and what the cache and fingerprints include."""

    id: str
    name: str
    sha256: str
    scale: float
    key: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def base_of(model: ModelConfig) -> str | None:
    """The Wan preset a model's styles are made for; None when it takes none (hosted, or an unknown
    architecture). A two-expert model's styles adapt both its experts (engines/lora.py)."""
    architecture = model.wan_preset
    if model.is_hosted or architecture is None:
        return None
    return architecture.id


def new_style_id() -> str:
    return f"style_{uuid.uuid4().hex}"


def adapter_key(tenant_id: str, style_id: str, sha256: str) -> str:
    """Named by its hash: a job reading a style never finds other bytes under the name it recorded."""
    return f"tenants/{tenant_id}/styles/{style_id}/{sha256}.safetensors"


def find(session: Session, tenant_id: str, ref: str, *, lock: str | None = None) -> Style | None:
    """The tenant's style named `ref` (or with id `ref`); another tenant's is never found. `lock`: "share"
    (a submission using it) or "update" (its deletion): the two exclude each other until commit."""
    if id_pattern.fullmatch(ref):
        statement = select(Style).where(Style.tenant_id == tenant_id, Style.id == ref)
    elif name_pattern.fullmatch(ref):
        statement = select(Style).where(Style.tenant_id == tenant_id, Style.name == ref)
    else:
        return None
    if lock is not None:
        statement = statement.with_for_update(read=lock == "share")
    return session.scalar(statement)


def add_uploaded(session: Session, *, tenant_id: str, style_id: str, name: str, base_model: str,
                 default_scale: float, description: str, adapter: Adapter) -> Style:
    """The row of an adapter already checked and stored under `adapter_key` (IntegrityError: name taken)."""
    style = Style(id=style_id, tenant_id=tenant_id, name=name, base_model=base_model, status="ready",
                  source="uploaded", default_scale=default_scale, description=description, sha256=adapter.sha256,
                  rank=adapter.rank, size_bytes=adapter.size_bytes,
                  storage_key=adapter_key(tenant_id, style_id, adapter.sha256))
    session.add(style)
    session.flush()
    return style


def users(session: Session, style: Style) -> list[str]:
    """The tenant's queued and running jobs made with `style` (the first few)."""
    jobs = session.execute(select(Job.id, Job.styles).where(
        Job.tenant_id == style.tenant_id, Job.status.in_(active_states), Job.styles.is_not(None)))
    return [job_id for job_id, styles in jobs if any(s["id"] == style.id for s in styles)][:users_listed_max]


def delete(session: Session, locked: Style) -> Deleted:
    """Delete `locked` (found with lock="update") unless queued or running jobs use it, or it is being
    trained (StyleInUse); templates naming it lose their default style; a trained style's training job has
    its content marked going. The caller removes the files named in the result once this commits."""
    if locked.status == "training":
        raise StyleInUse(f"style {locked.name!r} is being trained; cancel its training first")
    in_use = users(session, locked)
    if in_use:
        raise StyleInUse(f"style {locked.name!r} is used by queued or running videos ({', '.join(in_use)}); "
                         f"delete it once they finish or are cancelled")
    session.execute(update(Template).where(Template.tenant_id == locked.tenant_id, Template.style_id == locked.id)
                    .values(style_id=None, style_scale=None, updated_at=utcnow()))
    training_job = (locked.training or {}).get("job_id")
    withdrawn = training_job is not None and queue.withdraw_content(session, training_job)
    deleted = Deleted(adapter_key=locked.storage_key, training_job_id=training_job if withdrawn else None)
    session.delete(locked)
    session.flush()
    return deleted


def resolve(session: Session, tenant_id: str, refs: list[StyleRef], base_model: str | None, *,
            scale_max: float, param: str = "styles") -> tuple[JobStyle, ...]:
    """The styles a job of a model built on `base_model` (a Wan preset id; None: not a local Wan model) is
    made with, or InvalidStyle naming the first that cannot be used."""
    used: list[JobStyle] = []
    for ref in refs:
        style = find(session, tenant_id, ref.style)
        if style is None:
            raise InvalidStyle(param, f"no style {ref.style!r}", code="style_not_found")
        if style.status != "ready" or style.sha256 is None or style.storage_key is None:
            raise InvalidStyle(param, f"style {style.name!r} is {style.status}; only ready styles can be used",
                               code="style_not_ready")
        if base_model != style.base_model:
            made_for = "a hosted or unknown architecture" if base_model is None else base_model
            raise InvalidStyle(param, f"style {style.name!r} is an adapter for {style.base_model}; this model is "
                                      f"{made_for}", code="style_model_mismatch")
        scale = style.default_scale if ref.scale is None else ref.scale
        if not 0.0 <= scale <= scale_max:
            raise InvalidStyle(param, f"a style's scale must be between 0 and {scale_max:g}, got {scale:g}")
        if any(other.id == style.id for other in used):
            raise InvalidStyle(param, f"style {style.name!r} is named twice")
        used.append(JobStyle(id=style.id, name=style.name, sha256=style.sha256, scale=float(scale),
                             key=style.storage_key))
    return tuple(used)


def confirm(session: Session, tenant_id: str, styles: tuple[JobStyle, ...]) -> None:
    """Inside the transaction that queues the job: each style still exists with the adapter resolved (its
    row locked against deletion until that transaction ends)."""
    for used in styles:
        style = find(session, tenant_id, used.id, lock="share")
        if style is None or style.sha256 != used.sha256:
            raise InvalidStyle("styles", f"style {used.name!r} was deleted or replaced while the video was "
                                         f"submitted; send it again", code="style_not_found")


def job_styles(job: Job) -> tuple[JobStyle, ...]:
    return tuple(JobStyle(**s) for s in job.styles or ())
