"""Verify a file: which job made it, whether it was altered since, and the evidence for both.

Four findings, each independent of the others:
- hashes: the file's SHA-256 and MD5, and whether they are those of a stored file;
- c2pa: the embedded manifest, valid / trusted / tampered / absent;
- aigc: the GB 45438 `AIGC` metadata tag, present or not;
- watermark: the payload hidden in the pixels, which survives re-encoding and resizing.

The job is named by the strongest evidence first (exact bytes, then the watermark, then a manifest that
still validates). A file no job names (a clip `vidfactory generate` wrote) is still reported by the ID its
manifest gives it, and as unaltered when that manifest is this installation's and intact. A tenant learns
only about its own jobs: everything is looked up within its scope, so another tenant's clip answers
exactly like a foreign one (`video_id` null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vidfactory.db.models import Asset, Job
from vidfactory.media.errors import MediaError
from vidfactory.media.hashes import file_hashes
from vidfactory.media.provenance import C2paFinding, read_aigc, read_c2pa
from vidfactory.media.watermark import WatermarkReading, extract_watermark_from_video

__all__ = ["Scope", "verify_file"]

jpeg_magic = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Scope:
    """Whose jobs the caller may learn about: one tenant's, or (tenant_id None) all, for admins."""

    tenant_id: str | None

    def visible(self, job: Job | None) -> Job | None:
        return job if job is not None and (self.tenant_id is None or job.tenant_id == self.tenant_id) else None


def sniff_mime(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(jpeg_magic):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def verify_file(session: Session, data: bytes, scope: Scope, *, anchors_pem: bytes | None,
                watermark_step: float) -> dict[str, Any]:
    # 1. Gather the evidence the file carries.
    hashes = file_hashes(data)
    mime = sniff_mime(data)
    c2pa = read_c2pa(data, mime, anchors_pem=anchors_pem) if mime else C2paFinding("absent")
    aigc = read_aigc(data) if mime == "video/mp4" else None
    watermark = _read_watermark(data, watermark_step) if mime == "video/mp4" else None
    # 2. Name the job: the exact bytes of a stored file, else the watermark, else a manifest that still
    #    validates.
    stored = _stored_asset(session, hashes.sha256, scope)
    job = session.get(Job, stored.job_id) if stored is not None else None
    if job is None and watermark is not None:
        job = scope.visible(session.scalar(select(Job).where(Job.watermark_id == f"{watermark.payload:08x}")))
    if job is None and c2pa.state in ("valid", "trusted") and c2pa.produce_id:
        job = scope.visible(session.get(Job, c2pa.produce_id))
    # 3. Altered: the bytes are not the ones stored for that job, or the manifest no longer matches them.
    #    With no job of the caller's to compare with, a manifest this installation signed (trusted) still
    #    vouches for the bytes: a clip `vidfactory generate` wrote, or another tenant's, unchanged.
    altered: bool | None = None
    if job is not None:
        altered = stored is None or c2pa.state == "tampered"
    elif c2pa.state in ("tampered", "trusted"):
        altered = c2pa.state == "tampered"
    return {
        "object": "verification",
        "video_id": None if job is None else job.id,
        # The ID the file's intact manifest gives itself (a video id, or a `clip_` id from the CLI).
        "content_id": c2pa.produce_id if c2pa.state in ("valid", "trusted") else None,
        "altered": altered,
        "hashes": {**hashes.as_dict(), "matches_stored": stored is not None,
                   "variant": None if stored is None else stored.variant},
        "c2pa": {"state": c2pa.state, "failures": list(c2pa.failures)},
        "aigc": None if aigc is None else {"label": aigc.label, "content_producer": aigc.content_producer},
        "watermark": {"found": watermark is not None,
                      "payload": None if watermark is None else f"{watermark.payload:08x}",
                      "confidence": None if watermark is None else round(watermark.confidence, 3)},
    }


def _read_watermark(data: bytes, step: float) -> WatermarkReading | None:
    try:
        return extract_watermark_from_video(data, step=step)
    except MediaError:  # no decodable video stream, or frames too small to carry a mark
        return None


def _stored_asset(session: Session, sha256: str, scope: Scope) -> Asset | None:
    statement = select(Asset).where(Asset.sha256 == sha256)
    if scope.tenant_id is not None:
        statement = statement.where(Asset.tenant_id == scope.tenant_id)
    return session.scalars(statement.order_by(Asset.created_at).limit(1)).first()
