"""The FastAPI application: routers, error envelope, and (for `serve`) in-process workers."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from vidfactory import __version__, web
from vidfactory.api.context import AppContext
from vidfactory.api.errors import error_responses, install_error_handlers
from vidfactory.api.ratelimit import QuotaHeaders
from vidfactory.api.routes import (
    admin,
    audit,
    balance,
    batches,
    brand,
    events,
    lexicon,
    models,
    ops,
    plans,
    preferences,
    price_books,
    prompts,
    quotes,
    reviews,
    statements,
    styles,
    templates,
    trainings,
    verify,
    videos,
    vouchers,
    webhook_deliveries,
    webhook_endpoints,
    webhook_secret,
)
from vidfactory.api.routes import workers as workers_routes
from vidfactory.bootstrap import register_models, upgrade_and_seed
from vidfactory.notify.delivery import start_dispatcher
from vidfactory.observability.requests import RequestIdMiddleware
from vidfactory.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)
worker_join_s = 30.0


def start_workers(ctx: AppContext, count: int, stop: threading.Event) -> list[threading.Thread]:
    if count == 0:
        return []
    # Imported here: the worker brings the engines (torch, diffusers: seconds of CPU), which an API-only
    # process (`serve --workers 0`, every test app) never needs.
    from vidfactory.jobs.worker import Worker

    threads = []
    for index in range(count):
        worker = Worker(ctx.settings, ctx.sessions, ctx.storage)
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"worker-{index}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def with_bearer_auth(app: FastAPI) -> dict:
    """The OpenAPI document with one bearer scheme (an API key, or the admin token on admin routes), so the
    docs page's "Authorize" button sends it on every request. Built once, as FastAPI does."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key (vf_...) or the admin token"}}
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None, *, workers: int | None = None) -> FastAPI:
    """`workers` in-process worker threads (default: settings.workers_in_process; 0 for API-only)."""
    settings = settings or Settings()
    worker_count = settings.workers_in_process if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = AppContext.from_settings(settings)
        upgrade_and_seed(ctx.engine)
        register_models(ctx.sessions, [model.id for model in settings.models])
        app.state.ctx = ctx
        # The tokenizers (and torch, which transformers brings) load before the first request is taken,
        # which would otherwise wait seconds for them.
        _warm_tokenizers(ctx)
        stop = threading.Event()
        threads = start_workers(ctx, worker_count, stop) + start_dispatcher(settings, ctx.sessions, stop)
        _freeze_startup_heap()
        yield
        gc.unfreeze()
        stop.set()
        for thread in threads:  # a job outliving the grace is handed back, then its worker leaves
            thread.join(settings.shutdown_grace_s + worker_join_s)
        ctx.engine.dispose()

    # /docs is served by the console from vendored assets (no CDN); ReDoc would need one, so there is none.
    app = FastAPI(title="vidfactory", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted text-to-video with token metering; OpenAI-compatible /v1/videos.")
    install_error_handlers(app)
    app.add_middleware(QuotaHeaders)
    app.add_middleware(RequestIdMiddleware)
    # Trainings before styles: /v1/styles/train is not a style named "train".
    routers = (videos.router, trainings.router, quotes.router, balance.router, models.router, admin.router, plans.router,
               reviews.router,
               price_books.router, vouchers.router, statements.router, audit.router, lexicon.router, brand.router,
               verify.router, events.router, templates.router, styles.router, prompts.router, batches.router,
               preferences.router,
               workers_routes.router, webhook_endpoints.router, webhook_deliveries.router, webhook_secret.router)
    for router in routers:
        app.include_router(router, responses=error_responses)
    app.include_router(ops.router)
    web.mount(app)
    app.openapi = lambda: with_bearer_auth(app)  # type: ignore[method-assign]
    return app


def _freeze_startup_heap() -> None:
    """Keep what start-up built (modules, models' tokenizers, torch: about 600,000 objects, nearly all kept
    for good) out of the collector's full passes: each of those scanned all of it, a pause of 0.2-0.35 s
    that every request in flight waited out, the largest part of the tail (bench/RESULTS.md). No collection
    first: it would take 0.3 s at every start (every test's app too) to free a few hundred objects."""
    gc.freeze()


def _warm_tokenizers(ctx: AppContext) -> None:
    for model in ctx.settings.models:
        try:
            ctx.counters(model)
        except Exception:  # a missing or broken tokenizer is reported again by the request that needs it
            logging.getLogger(__name__).exception("could not load the tokenizer of %s ahead of requests", model.id)
