"""Screening at admission, decided before anything is priced, held, stored or queued: the prompt (the
platform lexicon plus the tenant's own entries) and any picture sent in (a reference image, a template's
image: the output classifier at the output threshold). Also the one place the tenant lexicon's SQL lives.

Every path that creates a job calls `screen_prompt` on the prompt the model will read (after templates
and enhancement): `block` raises PromptRejected, `review` returns the Review the job is queued with; and
`screens.images.check` on its reference image: a flagged one raises ImageRejected.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from vidfactory.db.models import TenantLexiconEntry
from vidfactory.jobs.queue import Review
from vidfactory.media.reference import ReferenceImage, decode_rgb
from vidfactory.safety.frames import FrameClassifier, nsfw_classifier, screen_image
from vidfactory.safety.lexicon import Entry, default_lexicon, load_lexicon
from vidfactory.safety.screen import Screener, Verdict, decide, prepare
from vidfactory.settings import Settings

__all__ = ["ImageRejected", "ImageScreen", "PromptRejected", "PromptScreens", "add_entry", "list_entries", "remove_entry", "screen_prompt",
           "tenant_lexicon_entries_max"]

log = logging.getLogger(__name__)
tenant_screeners_cached_max = 256
tenant_lexicon_entries_max = 1000
reason_terms_max = 5


class PromptRejected(Exception):
    """The prompt matched a `block` term. Only the category is ever shown to the caller."""

    def __init__(self, category: str) -> None:
        super().__init__(f"the prompt was refused by the content policy (category: {category})")
        self.category = category


class ImageRejected(Exception):
    """A picture sent in scored at or above the output threshold. `param` names the field that brought it;
    the score stays in the server's log (it would help tune an image until it passes)."""

    def __init__(self, param: str) -> None:
        super().__init__(f"the image in {param} was refused by the content policy (category: sexual)")
        self.param = param


class ImageScreen:
    """Pictures sent in, judged like a clip's frames: the same classifier, threshold and on/off setting
    (`output_screening_enabled`, `output_nsfw_threshold`), read at each check. The classifier loads on
    the first picture, not at start-up."""

    def __init__(self, settings: Settings, classifier_loader: Callable[[], FrameClassifier] = nsfw_classifier) -> None:
        self.settings = settings
        self.classifier_loader = classifier_loader

    def check(self, image: ReferenceImage | None, param: str) -> None:
        """Raises ImageRejected; returns when there is no image, or it passes, or screening is off."""
        if image is None or not self.settings.output_screening_enabled:
            return
        verdict = screen_image(decode_rgb(image.data), self.classifier_loader(),
                               threshold=self.settings.output_nsfw_threshold)
        if verdict.flagged:
            log.info("image %s refused: open_nsfw %.3f (threshold %.2f)", image.sha256[:12], verdict.score,
                     self.settings.output_nsfw_threshold)
            raise ImageRejected(param)


class PromptScreens:
    """What a submission is screened with: the platform screener, compiled once, a small cache of compiled
    tenant lexicons keyed by their entries (so an edit is seen by the next request, with no invalidation
    to forget), and the image screen for a reference image."""

    def __init__(self, platform: Screener, images: ImageScreen) -> None:
        self.platform = platform
        self.images = images
        self._lock = threading.Lock()
        self._tenants: OrderedDict[tuple[Entry, ...], Screener] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptScreens:
        path: Path | None = settings.lexicon_path
        return cls(Screener(load_lexicon(path) if path is not None else default_lexicon()), ImageScreen(settings))

    def tenant(self, entries: tuple[Entry, ...]) -> Screener | None:
        if not entries:
            return None
        with self._lock:
            if entries in self._tenants:
                self._tenants.move_to_end(entries)
                return self._tenants[entries]
        screener = Screener(entries, source="tenant")
        with self._lock:
            self._tenants[entries] = screener
            while len(self._tenants) > tenant_screeners_cached_max:
                self._tenants.popitem(last=False)
        return screener

    def verdict(self, session: Session, tenant_id: str, text: str) -> Verdict:
        prepared = prepare(text)
        screeners = [self.platform, self.tenant(tuple(list_entries(session, tenant_id)))]
        return decide(m for s in screeners if s is not None for m in s.matches(prepared))


def screen_prompt(session: Session, screens: PromptScreens, tenant_id: str, text: str) -> Review | None:
    """None when the prompt passes; a prompt Review when it must wait for an admin; raises PromptRejected."""
    verdict = screens.verdict(session, tenant_id, text)
    if verdict.action == "block":
        assert verdict.category is not None
        raise PromptRejected(verdict.category)
    if verdict.action == "review":
        # For admins only: which terms, where, and whether matched by sound.
        found = "; ".join(f"{m.category}: {m.term!r} at {m.start}" + (" (by sound)" if m.score < 1 else "")
                          for m in verdict.matches[:reason_terms_max])
        return Review("prompt", f"prompt matched {found}")
    return None


_tenants_entries = (select(TenantLexiconEntry.term, TenantLexiconEntry.category, TenantLexiconEntry.action)
                    .where(TenantLexiconEntry.tenant_id == bindparam("tenant_id")).order_by(TenantLexiconEntry.term))


def list_entries(session: Session, tenant_id: str) -> list[Entry]:
    rows = session.execute(_tenants_entries, {"tenant_id": tenant_id})
    return [Entry(row.term, row.category, row.action) for row in rows]


def add_entry(session: Session, tenant_id: str, entry: Entry) -> bool:
    """Adds or replaces the tenant's entry for this term; False when the tenant is at its limit."""
    existing = session.scalar(select(TenantLexiconEntry).where(TenantLexiconEntry.tenant_id == tenant_id,
                                                               TenantLexiconEntry.term == entry.term))
    if existing is not None:
        existing.category, existing.action = entry.category, entry.action
        session.flush()
        return True
    count = len(session.scalars(select(TenantLexiconEntry.id).where(TenantLexiconEntry.tenant_id == tenant_id)).all())
    if count >= tenant_lexicon_entries_max:
        return False
    session.add(TenantLexiconEntry(id=f"lex_{uuid.uuid4().hex}", tenant_id=tenant_id, term=entry.term,
                                   category=entry.category, action=entry.action))
    session.flush()
    return True


def remove_entry(session: Session, tenant_id: str, term: str) -> bool:
    """False when the tenant had no entry for this term."""
    result = session.execute(delete(TenantLexiconEntry).where(TenantLexiconEntry.tenant_id == tenant_id,
                                                              TenantLexiconEntry.term == term))
    return result.rowcount == 1
