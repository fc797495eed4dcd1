"""Training datasets: a ZIP of images and short clips with captions, checked at submission and read again by
the worker that trains on it. No database: plain bytes in, samples out.

Layout (the convention of common LoRA trainers): each image (`.png`, `.jpg`, `.jpeg`, `.webp`) or clip
(`.mp4`, `.webm`, `.mov`) may have a caption in a text file of the same name (`shot1.mp4` + `shot1.txt`);
one without takes the request's caption. Folders are allowed; hidden files and `__MACOSX/` are ignored.
Datasets made from the tenant's own videos are written in the same layout (`dataset_zip`), so the worker
reads one format.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from vidfactory.engines.lora_settings import CAPTION_CHARS_MAX, TrainingSample
from vidfactory.media.encode import MediaError, decode_mp4
from vidfactory.media.reference import ReferenceImage, ReferenceRefused, decode_rgb, read_reference

__all__ = [
    "CLIP_FRAMES_MAX",
    "DATASET_UNPACKED_BYTES_MAX",
    "DatasetItem",
    "DatasetRefused",
    "dataset_zip",
    "read_dataset",
    "screen_dataset",
    "training_samples",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CLIP_SUFFIXES = (".mp4", ".webm", ".mov")
CLIP_FRAMES_MAX = 241  # short clips: ten seconds at 24 fps
DATASET_UNPACKED_BYTES_MAX = 1_000_000_000  # what the entries' headers may claim together (zip bombs)
ENTRIES_MAX = 4_000  # media and captions together


class DatasetRefused(ValueError):
    """A dataset that cannot be trained on; the message names the file and the reason."""


@dataclass(frozen=True)
class DatasetItem:
    name: str  # its path inside the ZIP
    kind: str  # image | clip
    data: bytes
    caption: str


def read_dataset(data: bytes, *, samples_max: int, caption: str | None) -> list[DatasetItem]:
    """The images and clips of a dataset ZIP with their captions, each decoded once to prove it decodes.
    Raises DatasetRefused."""
    # 1. A ZIP whose headers stay within the limits, before anything is decompressed.
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DatasetRefused("the dataset must be a ZIP file of images and clips") from exc
    entries = [info for info in archive.infolist() if not info.is_dir() and not _hidden(info.filename)]
    if len(entries) > ENTRIES_MAX or sum(info.file_size for info in entries) > DATASET_UNPACKED_BYTES_MAX:
        raise DatasetRefused(f"the dataset unpacks to more than {ENTRIES_MAX} files or "
                             f"{DATASET_UNPACKED_BYTES_MAX} bytes")
    media = [info for info in entries if _suffix(info.filename) in IMAGE_SUFFIXES + CLIP_SUFFIXES]
    if not media:
        raise DatasetRefused("the dataset has no images (.png, .jpg, .webp) or clips (.mp4, .webm, .mov)")
    if len(media) > samples_max:
        raise DatasetRefused(f"the dataset has {len(media)} images and clips; your plan trains on at most "
                             f"{samples_max}")
    captions = {_stem(info.filename): info for info in entries if _suffix(info.filename) == ".txt"}
    # 2. Each file decoded, each caption read.
    items = []
    for info in media:
        text = _caption(archive, captions.get(_stem(info.filename)), caption, info.filename)
        content = _read(archive, info)
        kind = "image" if _suffix(info.filename) in IMAGE_SUFFIXES else "clip"
        _frames(kind, content, info.filename)
        items.append(DatasetItem(name=info.filename, kind=kind, data=content, caption=text))
    return items


def screen_dataset(items: list[DatasetItem], check: Callable[[ReferenceImage | None, str], None]) -> None:
    """Every image, and the first frame of every clip, through `check` (the reference-image screen:
    jobs.screening.ImageScreen.check), which raises on the first it refuses."""
    for item in items:
        if item.kind == "image":
            check(read_reference(item.data), "dataset")
            continue
        first = _frames("clip", item.data, item.name)[0]
        buffer = io.BytesIO()
        Image.fromarray(first).save(buffer, format="PNG")
        check(read_reference(buffer.getvalue()), "dataset")


def training_samples(items: list[DatasetItem]) -> list[TrainingSample]:
    return [TrainingSample(frames=_frames(item.kind, item.data, item.name), caption=item.caption)
            for item in items]


def dataset_zip(clips: list[tuple[str, bytes, str]]) -> bytes:
    """A dataset ZIP of (name, MP4, caption): the layout `read_dataset` reads."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, clip, caption in clips:
            archive.writestr(f"{name}.mp4", clip)
            archive.writestr(f"{name}.txt", caption)
    return buffer.getvalue()


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def _stem(name: str) -> str:
    path = PurePosixPath(name)
    return str(path.with_suffix(""))


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:  # corrupt, encrypted
        raise DatasetRefused(f"{info.filename}: cannot be unpacked: {exc}") from exc


def _caption(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None, default: str | None, name: str) -> str:
    if info is None:
        if default is None or not default.strip():
            raise DatasetRefused(f"{name} has no caption: add {_stem(name)}.txt or send a caption for all")
        return default.strip()
    try:
        text = _read(archive, info).decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DatasetRefused(f"{info.filename}: a caption must be UTF-8 text") from exc
    if not text or len(text) > CAPTION_CHARS_MAX:
        raise DatasetRefused(f"{info.filename}: a caption has 1 to {CAPTION_CHARS_MAX} characters")
    return text


def _frames(kind: str, data: bytes, name: str) -> np.ndarray:
    """uint8 [F, H, W, 3]; an image is one frame."""
    try:
        if kind == "image":
            read_reference(data)  # the reference-image rules: format, size, pixel count, one frame
            return decode_rgb(data)[None]
        return decode_mp4(data, frames_max=CLIP_FRAMES_MAX).frames
    except (ReferenceRefused, MediaError) as exc:
        raise DatasetRefused(f"{name}: {exc}") from exc
