"""What every request handler needs, built once per app (no module globals)."""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from vidfactory.api.ratelimit import ConcurrencyCaps, Limiter, Network, PixelBudget, make_limiter
from vidfactory.billing.tokens import TokenCounter
from vidfactory.db.group_commit import GroupCommit
from vidfactory.db.session import SessionFactory, database_engine, make_session_factory
from vidfactory.jobs.output import Provenance, load_provenance
from vidfactory.jobs.screening import PromptScreens
from vidfactory.notify.hub import EventHub
from vidfactory.observability.metrics import admission_batch_size
from vidfactory.settings import ModelConfig, Settings
from vidfactory.storage import Storage, make_storage
from vidfactory.storage.links import Links
from vidfactory.tenancy import ensure_admin_token

__all__ = ["AppContext", "TokenCounters"]


class TokenCounters:
    """Each model's own tokenizer, loaded once from the model directory on first use."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._counters: dict[str, TokenCounter] = {}

    def __call__(self, model: ModelConfig) -> TokenCounter:
        # Imported on first use, like the tokenizer: the registry brings the engines (torch, diffusers).
        from vidfactory.engines.checkpoints import model_path

        with self._lock:
            if model.id not in self._counters:
                self._counters[model.id] = TokenCounter.from_model_path(model_path(model, self.models_dir))
            return self._counters[model.id]


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: SessionFactory
    storage: Storage
    links: Links  # signed links to stored objects (the storage's own or the CDN's)
    counters: TokenCounters
    admin_token: str
    provenance: Provenance  # the C2PA signing identity and what verify trusts
    screens: PromptScreens
    limiter: Limiter
    caps: ConcurrencyCaps
    decode_budget: PixelBudget
    trusted_proxies: list[Network]
    hub: EventHub  # one outbox reader for the process's open event streams
    admissions: GroupCommit  # submissions' write transactions, shared by those arriving together

    @classmethod
    def from_settings(cls, settings: Settings) -> AppContext:
        engine = database_engine(settings)
        storage = make_storage(settings)
        sessions = make_session_factory(engine)
        return cls(settings=settings, engine=engine, sessions=sessions,
                   storage=storage, links=Links(settings, storage), counters=TokenCounters(settings.models_dir),
                   admin_token=ensure_admin_token(settings), provenance=load_provenance(settings),
                   screens=PromptScreens.from_settings(settings),
                   limiter=make_limiter(settings.redis_url, prefix=settings.redis_prefix,
                                        failure_mode=settings.rate_limit_redis_failure,
                                        timeout_s=settings.redis_timeout_s),
                   caps=ConcurrencyCaps(), decode_budget=PixelBudget(settings.image_decode_pixels_max),
                   trusted_proxies=[ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies],
                   hub=EventHub(sessions, settings.events_poll_s),
                   admissions=GroupCommit(sessions, settings.admission_batch_max, admission_batch_size.observe))
