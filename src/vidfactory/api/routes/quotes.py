"""/v1/quotes: what a video would cost, creating nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from vidfactory.api.body import read_video_create, video_create_openapi
from vidfactory.api.context import AppContext
from vidfactory.api.deps import CallerDep, ContextDep
from vidfactory.api.errors import ApiError
from vidfactory.api.ratelimit import CapReached
from vidfactory.api.uploads import image_gate
from vidfactory.api.routes.videos import to_video_request
from vidfactory.api.schemas import AmountPublic, QuotePrompt, QuotePublic
from vidfactory.billing.pricebook import model_price
from vidfactory.jobs.screening import screen_prompt
from vidfactory.jobs.submit import Priced, VideoRequest, price_now
from vidfactory.tenancy import Caller

router = APIRouter(prefix="/v1/quotes", tags=["billing"])

held_for_review_warning = "this prompt will wait for an administrator's review before it runs"


def screened_price(ctx: AppContext, caller: Caller, video_request: VideoRequest) -> Priced:
    """A quote screens like a submission: a blocked prompt is refused here too (PromptRejected)."""
    priced = price_now(ctx.sessions, ctx.settings, ctx.counters, video_request, caller.tenant_id)
    with ctx.sessions() as session:
        review = screen_prompt(session, ctx.screens, caller.tenant_id, priced.prompt)
    if review is not None:
        priced.warnings.append(held_for_review_warning)
    return priced


@router.post("", openapi_extra=video_create_openapi)
async def create_quote(request: Request, ctx: ContextDep, caller: CallerDep) -> QuotePublic:
    """Bills (and screens) the prompt that would be generated: after the template renders and the
    enhancement runs."""
    try:
        with ctx.caps.hold(f"quotes:{caller.tenant_id}", ctx.settings.quotes_concurrent_max):
            sent = await read_video_create(request, ctx.settings.upload_bytes_max,
                                           image_gate(ctx, caller, needs_balance=False))
            video_request = await run_in_threadpool(to_video_request, ctx, caller, sent)
            priced = await run_in_threadpool(screened_price, ctx, caller, video_request)
    except CapReached as exc:
        raise ApiError(429, "too_many_quotes", f"your quotes in flight are capped ({exc}); retry shortly",
                       headers={"Retry-After": "1"}) from exc
    q = priced.quote
    return QuotePublic(model=priced.model.id, price_book_version=priced.price_book_version, method=q.method,
                       input_tokens=q.input_tokens, output_tokens=q.output_tokens, total_tokens=q.total_tokens,
                       amount=AmountPublic(currency=q.currency, value=str(q.amount)),
                       price=model_price(priced.book, priced.price_book_version, priced.model.id),
                       warnings=priced.warnings,
                       prompt=QuotePrompt(billed=priced.prompt, user=video_request.user_prompt or video_request.prompt,
                                          enhancement=video_request.enhancement))
