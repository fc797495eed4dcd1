"""/v1/models: what can be generated, and what each model costs under the caller's price book (its contract
pin, else the newest)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.billing import pricebooks
from vidfactory.billing.pricebook import model_price

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(ctx: ContextDep, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    version, book = pricebooks.for_tenant(session, caller.tenant_id)
    price_book = {"version": version, "method": book.method, "currency": book.currency,
                  "unit_price": str(book.unit_price), "prompt_tokens_max": book.prompt_tokens_max}
    data = [{
        "id": m.id, "object": "model", "owned_by": "vidfactory", "engine": m.engine,
        "default_size": m.default_size, "default_seconds": str(m.default_seconds), "fps": m.fps,
        "sizes": {"min_px": m.size_min_px, "max_px": m.size_max_px, "multiple_px": m.size_multiple_px},
        "seconds": {"min": 1, "max": m.seconds_max}, "price_book": price_book,
        "price": model_price(book, version, m.id),
    } for m in ctx.settings.models]
    return {"object": "list", "data": data}
