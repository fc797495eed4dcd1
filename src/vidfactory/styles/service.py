"""Adding and deleting a tenant's styles: what `POST/DELETE /v1/styles` and `vidfactory admin style` do.

An upload is checked whole before anything is stored; its file is written before the row that names it
commits and removed again when that row does not commit, so no stored adapter is ever unnamed for long
and no row names a missing file.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from vidfactory.db.models import Style
from vidfactory.db.session import SessionFactory
from vidfactory.engines.presets import preset
from vidfactory.jobs import queue
from vidfactory.jobs.maintenance import delete_expiring_content
from vidfactory.settings import Settings
from vidfactory.storage import Storage
from vidfactory.storage.base import StorageError
from vidfactory.styles import catalog
from vidfactory.styles.adapters import check_adapter
from vidfactory.styles.errors import InvalidAdapter, InvalidStyle, StyleError
from vidfactory.tenancy import check_not_suspended

__all__ = ["StyleExists", "delete_style", "describe", "upload_style"]

adapter_suffix = ".safetensors"
log = logging.getLogger(__name__)


class StyleExists(StyleError):
    status = 409

    def __init__(self, name: str) -> None:
        super().__init__("name", f"style {name!r} already exists", "style_exists")


def describe(style: Style) -> dict[str, Any]:
    """The style as the API and the CLI show it (never the adapter's storage key)."""
    return {"object": "style", "id": style.id, "name": style.name, "model": style.base_model,
            "status": style.status, "source": style.source, "default_scale": style.default_scale,
            "description": style.description, "sha256": style.sha256, "rank": style.rank,
            "size_bytes": style.size_bytes, "training": style.training, "created_at": _unix(style.created_at)}


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _base_for_upload(settings: Settings, model_name: str | None) -> str:
    model = settings.resolve_model(model_name or settings.models[0].id)
    if model is None:
        known = ", ".join(m.id for m in settings.models)
        raise InvalidStyle("model", f"unknown model {model_name!r}; available: {known}", code="model_not_found")
    base = catalog.base_of(model)
    if base is None:
        takers = ", ".join(m.id for m in settings.models if catalog.base_of(m) is not None) or "none is configured"
        raise InvalidStyle("model", f"model {model.id} takes no styles (styles are LoRA adapters for a local Wan "
                                    f"model); models that do: {takers}",
                           code="unsupported_parameter")
    return base


def upload_style(sessions: SessionFactory, storage: Storage, settings: Settings, tenant_id: str, *,
                 name: str, model: str | None, data: bytes, filename: str = "", default_scale: float = 1.0,
                 description: str = "") -> dict[str, Any]:
    """Check the adapter against the model's base (StyleError otherwise, nothing stored), store it under
    the tenant, and add the style. StyleExists when the tenant already has a style of that name."""
    # 1. What the request says, before the adapter is parsed.
    if filename and not filename.lower().endswith(adapter_suffix):
        raise InvalidAdapter(f"the file is {filename!r}: only {adapter_suffix} adapters are accepted",
                             code="not_safetensors")
    if catalog.id_pattern.fullmatch(name) or not catalog.name_pattern.fullmatch(name):
        raise InvalidStyle("name", f"a style name is 1-64 letters, digits, '.', '_' or '-' (not an id), got "
                                   f"{name!r}")
    if not 0.0 <= default_scale <= settings.style_scale_max:
        raise InvalidStyle("default_scale", f"default_scale must be between 0 and {settings.style_scale_max:g}")
    base = _base_for_upload(settings, model)
    # 2. The adapter itself: safetensors, a layout diffusers loads, the base model's shapes, the limits.
    adapter = check_adapter(data, preset(base), bytes_max=settings.style_upload_bytes_max,
                            rank_max=settings.style_rank_max)
    # 3. The file, then the row that names it (in one transaction with the tenant's checks).
    style_id = catalog.new_style_id()
    key = catalog.adapter_key(tenant_id, style_id, adapter.sha256)
    try:
        with sessions.begin() as session:
            check_not_suspended(session, tenant_id)
            _check_room(session, tenant_id, settings.styles_per_tenant_max)
            storage.put(key, data)
            style = catalog.add_uploaded(session, tenant_id=tenant_id, style_id=style_id, name=name,
                                         base_model=base, default_scale=default_scale, description=description,
                                         adapter=adapter)
            return describe(style)
    except IntegrityError as exc:  # the (tenant, name) unique constraint: also two racing uploads
        storage.delete(key)
        raise StyleExists(name) from exc
    except BaseException:
        storage.delete(key)
        raise


def _check_room(session, tenant_id: str, styles_max: int) -> None:
    count = session.scalar(select(func.count()).select_from(Style).where(Style.tenant_id == tenant_id))
    if count >= styles_max:
        raise InvalidStyle(None, f"a tenant keeps at most {styles_max} styles; delete one first",
                           code="styles_limit")


def delete_style(sessions: SessionFactory, storage: Storage, tenant_id: str, ref: str) -> dict[str, Any] | None:
    """Delete the tenant's style `ref` (name or id), its adapter file and, for a trained style, its
    training's dataset, checkpoints and preview; None when it has none of that name. StyleInUse (409)
    while queued or running jobs use it."""
    with sessions.begin() as session:
        style = catalog.find(session, tenant_id, ref, lock="update")
        if style is None:
            return None
        deleted = {"object": "style.deleted", "id": style.id, "name": style.name, "deleted": True}
        files = catalog.delete(session, style)
    # After the commit: a rollback must not lose a style's files. A training's content, once marked, is
    # finished by the content sweep should this stop halfway.
    if files.adapter_key is not None:
        storage.delete(files.adapter_key)
    if files.training_job_id is not None:
        try:
            delete_expiring_content(sessions, storage, files.training_job_id)
        except queue.StaleJob:
            pass  # a content sweep finished it meanwhile
        except StorageError as exc:  # it stays marked expiring: the next content sweep retries
            log.error("style %s: its training's files stay for the next sweep: %s", deleted["id"], exc)
    return deleted
