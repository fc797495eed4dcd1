"""The output chain: what happens to a clip between the engine and the customer.

    frames → visible label → tenant brand (if any) → invisible watermark → encode MP4 (with the GB 45438 `AIGC` tag)
           → C2PA manifest → thumbnail and spritesheet → SHA-256 and MD5 → storage

`render` is the one way a clip becomes files: the worker's clips, a cache hit's re-labelled copy of its
source (`delivered_frames`, then `frame_steps(relabelling=True)`) and `vidfactory generate` all go
through it. It is pure (frames in, files out, timed per stage, no database); `store` writes the files and
returns the asset records the worker commits with the job. The quality checks (`check_quality`) run
before it, in the worker, because their verdict decides whether the clip is rendered at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidfactory import __version__
from vidfactory.jobs.queue import AssetRecord
from vidfactory.media.devca import ensure_dev_credentials
from vidfactory.media.encode import decode_mp4, encode_mp4
from vidfactory.media.errors import MediaError
from vidfactory.media.hashes import FileHashes, file_hashes
from vidfactory.media.label import BrandMark, LabelSpec, apply_brand, apply_label
from vidfactory.media.preview import spritesheet_image, thumbnail_image
from vidfactory.media.provenance import AIGC_KEY, AigcLabel, SigningKey, sign_c2pa
from vidfactory.media.qc import QcReport, QcThresholds, run_qc
from vidfactory.media.watermark import embed_watermark
from vidfactory.settings import Settings
from vidfactory.storage import Storage, tenant_key

__all__ = [
    "ClipIdentity",
    "FrameStep",
    "Provenance",
    "RenderedFile",
    "Rendition",
    "check_quality",
    "delivered_frames",
    "frame_steps",
    "load_provenance",
    "qc_summary",
    "render",
    "store",
]

generator_name = f"vidfactory/{__version__}"
delivered_frames_max = 2000  # a 30 s clip at 60 fps is 1,800


@dataclass(frozen=True)
class Provenance:
    """Who signs and what the labels say, resolved from settings once per worker."""

    key: SigningKey
    anchors_pem: bytes | None  # what verify trusts
    producer: str  # AIGC ContentProducer


def load_provenance(settings: Settings) -> Provenance:
    """The configured certificate chain and key, or the development CA made on first run."""
    cert_path, key_path, anchor_path = (settings.c2pa_cert_chain_path, settings.c2pa_key_path,
                                        settings.c2pa_trust_anchor_path)
    if (cert_path is None) != (key_path is None):
        raise MediaError("set both VIDFACTORY_C2PA_CERT_CHAIN_PATH and VIDFACTORY_C2PA_KEY_PATH, or neither")
    if cert_path is None or key_path is None:
        dev = ensure_dev_credentials(settings.data_dir / "c2pa-dev")
        cert_path, key_path, anchor_path = dev.cert_chain_path, dev.key_path, anchor_path or dev.anchor_path
    return Provenance(key=SigningKey(_read(cert_path), _read(key_path)),
                      anchors_pem=None if anchor_path is None else _read(anchor_path),
                      producer=settings.content_producer)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MediaError(f"cannot read signing material {path}: {exc}") from exc


@dataclass(frozen=True)
class ClipIdentity:
    job_id: str  # AIGC ProduceID and the C2PA job assertion
    tenant_id: str
    watermark_id: str  # hex payload of the invisible watermark; AIGC ReservedCode1
    brand: BrandMark | None = None  # the tenant's mark on every frame, when it has one


@dataclass(frozen=True)
class RenderedFile:
    variant: str  # video | thumbnail | spritesheet
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    hashes: FileHashes


@dataclass(frozen=True)
class Rendition:
    files: list[RenderedFile]
    stage_s: dict[str, float]  # wall time of each stage, for the logs and the benchmark


class _Stopwatch:
    def __init__(self, stages: int = 0, on_stage: Callable[[int, int], None] | None = None) -> None:
        self.stage_s: dict[str, float] = {}
        self.stages = stages
        self.done = 0
        self.on_stage = on_stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stage_s[name] = self.stage_s.get(name, 0.0) + time.perf_counter() - start
        self.done += 1
        if self.on_stage is not None:
            self.on_stage(self.done, self.stages)


def check_quality(frames: np.ndarray, settings: Settings) -> QcReport:
    return run_qc(frames, QcThresholds.from_settings(settings))


def qc_summary(report: QcReport) -> str:
    """The checks that did not pass, for the review reason and the failure message."""
    return "; ".join(f"{check.name} {check.verdict}: score {check.score} (threshold {check.threshold})"
                     for check in report.checks if check.verdict in ("flag", "fail"))


FrameStep = Callable[[np.ndarray, int, ClipIdentity], np.ndarray]


def frame_steps(settings: Settings, *, relabelling: bool = False) -> tuple[tuple[str, FrameStep], ...]:
    """(name, step) pairs that change the frames before encoding, in order: the visible label and the
    tenant's brand first, so the watermark is embedded in what viewers see and survives with it.
    `relabelling`: the frames were decoded from a delivered clip (a cache hit's source), which shows the
    label and the brand already; only the watermark is embedded, and it replaces the old one (each
    carrier is moved onto the new payload's lattice, whatever it carried)."""
    spec = LabelSpec.from_settings(settings)

    def label(frames: np.ndarray, fps: int, _clip: ClipIdentity) -> np.ndarray:
        return apply_label(frames, fps, spec)[0]

    def brand(frames: np.ndarray, _fps: int, clip: ClipIdentity) -> np.ndarray:
        return frames if clip.brand is None else apply_brand(frames, clip.brand)[0]

    def watermark(frames: np.ndarray, _fps: int, clip: ClipIdentity) -> np.ndarray:
        return embed_watermark(frames, int(clip.watermark_id, 16), step=settings.watermark_step)

    if relabelling:
        return (("watermark", watermark),)
    return (("label", label), ("brand", brand), ("watermark", watermark))


def delivered_frames(mp4: bytes) -> np.ndarray:
    """The frames of a clip this pipeline delivered, to render them again under another clip's identity."""
    return decode_mp4(mp4, frames_max=delivered_frames_max).frames


def render(frames: np.ndarray, fps: int, clip: ClipIdentity, provenance: Provenance, *,
           steps: tuple[tuple[str, FrameStep], ...], on_stage: Callable[[int, int], None] | None = None
           ) -> Rendition:
    """Every deliverable file of one clip; `steps` (see `frame_steps`) change the frames first.
    `on_stage(done, total)` is told after each stage, for the job's progress."""
    watch = _Stopwatch(len(steps) + 4, on_stage)
    # 1. Frame steps: label, brand, watermark.
    for name, step in steps:
        with watch.stage(name):
            frames = step(frames, fps, clip)
    # 2. Encode, with the implicit label in the container metadata.
    aigc = AigcLabel(content_producer=provenance.producer, produce_id=clip.job_id,
                     reserved_code1=clip.watermark_id)
    with watch.stage("encode"):
        mp4 = encode_mp4(frames, fps, metadata={AIGC_KEY: aigc.to_json()})
    # 3. Sign: the manifest binds itself to every byte written above.
    with watch.stage("c2pa"):
        mp4 = sign_c2pa(mp4, provenance.key, produce_id=clip.job_id, producer=provenance.producer,
                        generator=generator_name)
    # 4. Previews, from the labelled frames.
    with watch.stage("previews"):
        thumbnail, spritesheet = thumbnail_image(frames), spritesheet_image(frames)
    # 5. Hashes of every file that will be stored.
    with watch.stage("hashes"):
        files = [RenderedFile(variant, filename, content_type, data, file_hashes(data))
                 for variant, filename, content_type, data in (
                     ("video", "video.mp4", "video/mp4", mp4),
                     ("thumbnail", "thumbnail.webp", "image/webp", thumbnail),
                     ("spritesheet", "spritesheet.webp", "image/webp", spritesheet))]
    return Rendition(files, watch.stage_s)


def store(rendition: Rendition, clip: ClipIdentity, storage: Storage) -> list[AssetRecord]:
    """Write each file under the tenant's and job's prefix; the records are committed with the job."""
    records = []
    for file in rendition.files:
        key = tenant_key(clip.tenant_id, clip.job_id, file.filename)
        storage.put(key, file.data, content_type=file.content_type)
        records.append(AssetRecord(file.variant, key, file.content_type, len(file.data), file.hashes.sha256,
                                   md5=file.hashes.md5))
    return records
