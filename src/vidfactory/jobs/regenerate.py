"""A new job from an existing video (regenerate with a new seed, or remix with an edited prompt), as the
API's `/v1/videos/{id}/regenerate` and `/remix` and the console's video page make it."""

from __future__ import annotations

from vidfactory.db.models import Job
from vidfactory.db.session import SessionFactory
from vidfactory.db.types import utcnow
from vidfactory.jobs.prompting import PromptRequest, resolve_prompt
from vidfactory.jobs.submit import VideoRequest, regeneration_seed
from vidfactory.media.reference import ReferenceImage, read_reference
from vidfactory.settings import Settings
from vidfactory.storage import Storage
from vidfactory.styles.catalog import job_styles

__all__ = ["ParentExpired", "parent_reference", "regenerated_request"]


class ParentExpired(Exception):
    """The parent's files (its reference image among them) are gone with its retention period."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


def parent_reference(storage: Storage, parent: Job) -> ReferenceImage | None:
    """The parent's reference image, read back from its stored copy (the child stores its own)."""
    if parent.reference_sha256 is None:
        return None
    if parent.content_expired(utcnow()):  # its first frame went with its files
        raise ParentExpired(parent)
    assert parent.reference_key is not None, f"video {parent.id}: its reference copy is not named"
    reference = read_reference(storage.read(parent.reference_key))
    assert reference.sha256 == parent.reference_sha256, f"video {parent.id}: its reference image changed"
    return reference


def regenerated_request(sessions: SessionFactory, settings: Settings, storage: Storage, parent: Job, *,
                        prompt: str | None, seed: int | None, enhance: bool, prompt_chars_max: int) -> VideoRequest:
    """The parent's settings (its reference image and styles too) with a new seed, or with an edited prompt (then the
    parent's seed, unless one is given, so that the prompt is the only change). Without either, the seed is
    one no clip of the family was made with, and the cache is not asked: regenerating makes a new clip."""
    common = dict(model=parent.model, seconds=str(parent.seconds), size=f"{parent.width}x{parent.height}",
                  negative_prompt=parent.negative_prompt, metadata=dict(parent.request_metadata),
                  parent_id=parent.id, reference=parent_reference(storage, parent), styles=job_styles(parent))
    if prompt is None:
        if seed is None:
            with sessions() as session:
                seed, cache = regeneration_seed(session, parent), "off"
        else:
            cache = "exact"
        return VideoRequest(prompt=parent.prompt, user_prompt=parent.user_prompt, template=parent.template,
                            variables=parent.variables, enhancement=parent.enhancement, seed=seed, cache=cache,
                            **common)
    resolved = resolve_prompt(sessions, settings, parent.tenant_id, PromptRequest(prompt=prompt, enhance=enhance),
                              prompt_chars_max)
    return VideoRequest(prompt=resolved.prompt, user_prompt=resolved.user_prompt, enhancement=resolved.enhancement,
                        warnings=resolved.warnings, seed=parent.seed if seed is None else seed, **common)
