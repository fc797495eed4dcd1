"""A worker spanning several devices (launched by torchrun): the leader claims and records jobs like any
worker; the followers only generate, in step with it.

Invariants: every rank loads the one model at start, together (building the device mesh is a collective);
the leader sends each request to the followers before it generates; `None` tells them to stop. A follower
never touches the database, storage or the queue.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

from vidfactory.engines.base import CancelCheck, Engine, EngineError, GeneratedVideo, GenerationRequest, ProgressCallback
from vidfactory.engines.parallel import DevicePlan, leave_group, receive_from_leader, send_to_followers
from vidfactory.engines.registry import load_engine
from vidfactory.engines.speed import SpeedSettings
from vidfactory.settings import ModelConfig

__all__ = ["LeaderEngine", "follow", "stop_followers"]

log = logging.getLogger(__name__)


class LeaderEngine:
    """The leader's engine: hands each request to the followers, then generates its own share."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.model_id = engine.model_id

    def generate(self, request: GenerationRequest, on_progress: ProgressCallback,
                 is_cancelled: CancelCheck) -> GeneratedVideo:
        send_to_followers(_portable(request))
        return self.engine.generate(request, on_progress, is_cancelled)

    def __getattr__(self, name: str):  # load_s, speed_applied...: what the worker reads off an engine
        return getattr(self.engine, name)


def _portable(request: GenerationRequest) -> GenerationRequest:
    """What can travel to the followers: a style's reader reads the leader's storage, so its bytes go."""
    if not request.adapters:
        return request
    adapters = tuple(replace(a, read=functools.partial(bytes, a.read())) for a in request.adapters)
    return replace(request, adapters=adapters)


def stop_followers() -> None:
    send_to_followers(None)


def follow(config: ModelConfig, models_dir: Path, speed: SpeedSettings, plan: DevicePlan) -> None:
    """A follower's whole life: load the model with the others, then generate each request the leader
    sends until it sends None. Cancellation arrives through the engine's per-step agreement."""
    assert not plan.is_leader
    engine = load_engine(config, models_dir, speed, plan)
    try:
        while (request := receive_from_leader()) is not None:
            try:
                engine.generate(request, lambda step, total: None, lambda: False)
            except EngineError as exc:  # the leader meets the same failure and records it
                log.info("rank %d: generation ended: %s", plan.rank, exc)
    finally:
        leave_group()
