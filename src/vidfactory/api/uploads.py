"""What a request carrying an image must pass before its pixels are decoded: the cheap checks first
(the model takes an image; for a submission, the tenant has a balance at all), then a slot among the
tenant's uploads in flight and room in the process's pixel budget, held while it decodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vidfactory.api.body import ImageGate
from vidfactory.api.context import AppContext
from vidfactory.api.errors import ApiError
from vidfactory.api.ratelimit import CapReached
from vidfactory.api.schemas import VideoCreate
from vidfactory.billing import ledger
from vidfactory.tenancy import Caller

__all__ = ["image_gate"]
busy_retry_after_s = 1


def image_gate(ctx: AppContext, caller: Caller, *, needs_balance: bool) -> ImageGate:
    @contextmanager
    def gate(body: VideoCreate, pixels: int) -> Iterator[None]:
        _check_model_takes_images(ctx, body)
        if needs_balance:
            with ctx.sessions() as session:
                available = ledger.balance(session, caller.tenant_id).available
            if available <= 0:
                raise ApiError(402, "insufficient_balance", f"this request needs tokens; {available} are "
                                                            "available")
        try:
            with ctx.caps.hold(f"uploads:{caller.tenant_id}", ctx.settings.uploads_concurrent_max), \
                    ctx.decode_budget.hold(pixels, ctx.settings.image_decode_wait_s):
                yield
        except CapReached as exc:
            raise ApiError(429, "too_many_uploads", f"too many images are being decoded ({exc}); retry shortly",
                           param="input_reference", headers={"Retry-After": str(busy_retry_after_s)}) from exc

    return gate


def _check_model_takes_images(ctx: AppContext, body: VideoCreate) -> None:
    model = ctx.settings.model(body.model or ctx.settings.models[0].id)
    if model is None or model.takes_reference_image:  # an unknown model is reported by pricing, by name
        return
    takers = ", ".join(m.id for m in ctx.settings.models if m.takes_reference_image) or "none is configured"
    raise ApiError(400, "unsupported_parameter", f"model {model.id} generates from text only; image-to-video "
                                                 f"models: {takers}", param="input_reference")
