"""A tenant's brand mark: stored on the tenant row as plain JSON, turned into a media BrandMark for the
worker. The mark is checked by rendering it once on a probe frame, so what is saved always renders."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from vidfactory.billing import audit
from vidfactory.cache import index as cache_index
from vidfactory.db.models import Tenant
from vidfactory.media.errors import MediaError
from vidfactory.media.label import BrandMark, apply_brand

__all__ = [
    "BrandError",
    "brand_logo_bytes_max",
    "brand_mark",
    "brand_text_chars_max",
    "clear_brand",
    "load_brand",
    "set_brand",
]

brand_logo_bytes_max = 200_000  # decoded PNG; it lives in the tenants row, read for every clip
brand_text_chars_max = 24
probe_frame_px = 256  # the brand is rendered once on a probe frame this size when it is saved


class BrandError(ValueError):
    """The brand cannot be stored: it names the field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def brand_mark(stored: dict[str, Any]) -> BrandMark:
    """The media mark for a stored brand (the JSON in tenants.brand)."""
    logo = stored.get("logo_png_base64")
    return BrandMark(text=stored.get("text") or "",
                     logo_png=None if logo is None else base64.b64decode(logo, validate=True),
                     corner=stored["corner"], opacity=stored["opacity"])


def _checked(text: str | None, logo_png_base64: str | None, corner: str, opacity: float) -> dict[str, Any]:
    if (text is None) == (logo_png_base64 is None):
        raise BrandError("give exactly one of text and logo_png_base64", "text")
    if logo_png_base64 is not None:
        try:
            logo = base64.b64decode(logo_png_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BrandError(f"logo_png_base64 is not base64: {exc}", "logo_png_base64") from exc
        if len(logo) > brand_logo_bytes_max:
            raise BrandError(f"the logo must be at most {brand_logo_bytes_max} bytes", "logo_png_base64")
    stored = {"text": text, "logo_png_base64": logo_png_base64, "corner": corner, "opacity": opacity}
    try:
        apply_brand(np.zeros((1, probe_frame_px, probe_frame_px, 3), np.uint8), brand_mark(stored))
    except MediaError as exc:
        raise BrandError(str(exc), "text" if text is not None else "logo_png_base64") from exc
    return stored


def set_brand(session: Session, tenant: Tenant, *, text: str | None, logo_png_base64: str | None, corner: str,
              opacity: float, actor: str) -> dict[str, Any]:
    """Store the tenant's brand (replacing any); BrandError, and nothing changes, when it cannot render.
    The tenant's cached clips carry the old mark, so they leave the result cache."""
    tenant.brand = _checked(text, logo_png_base64, corner, opacity)
    cache_index.forget_tenant(session, tenant.id)
    audit.append(session, "tenant.brand_set", f"tenant:{tenant.id}",
                 {"kind": "text" if text is not None else "logo", "corner": corner, "opacity": opacity}, actor)
    return tenant.brand


def clear_brand(session: Session, tenant: Tenant, *, actor: str) -> bool:
    """Remove the tenant's brand; False when it had none."""
    if tenant.brand is None:
        return False
    tenant.brand = None
    cache_index.forget_tenant(session, tenant.id)
    audit.append(session, "tenant.brand_cleared", f"tenant:{tenant.id}", {}, actor)
    return True


def load_brand(session: Session, tenant_id: str) -> BrandMark | None:
    """The mark the worker burns into this tenant's clips, or None."""
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None, f"no tenant {tenant_id}"
    return None if tenant.brand is None else brand_mark(tenant.brand)
