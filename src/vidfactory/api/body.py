"""Read a video request body: JSON, or multipart/form-data as the official openai SDK sends it."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartParser

from vidfactory.api.errors import ApiError, validation_message
from vidfactory.api.schemas import RemixCreate, TrainingCreate, VideoCreate, data_url_chars_max
from vidfactory.media.reference import (
    ReferenceImage,
    ReferenceRefused,
    peek_pixels,
    read_reference,
    reference_bytes_max,
)

__all__ = ["FormUpload", "VideoInput", "checked_reference", "data_url_reference", "read_form", "read_form_upload",
           "read_remix", "read_upload", "read_video_create", "remix_openapi", "upload_openapi", "validated",
           "video_create_openapi"]

form_fields_max = 32
# ASCII digits only: str.isdigit() also passes "²", which int() then refuses.
form_integer = re.compile(r"-?[0-9]{1,12}")
form_number = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?")  # JSON's grammar, bounded
# The fields a form sends as text that the schemas take as numbers (strictly: JSON's "5" is no number).
form_integer_fields = frozenset({"seed", "steps", "rank"})
form_number_fields = frozenset({"default_scale", "learning_rate"})
# The reference image in JSON (or as a text form field): a base64 data URL of a PNG, JPEG or WebP.
reference_field = "input_reference"
data_url_prefix = re.compile(r"^data:image/(png|jpeg|webp);base64,")


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its `$defs` (nested models: a style and its scale) written in place: this schema
    is embedded in the OpenAPI document, where `#/$defs/...` resolves to nothing."""
    definitions = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("$ref", "").startswith("#/$defs/"):
                return walk(definitions[node["$ref"].removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)


def _with_reference(schema: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "properties": {**schema["properties"], reference_field: reference}}


_reference_description = ("image-to-video: the clip's first frame (PNG, JPEG or WebP; cropped to the "
                          f"video's aspect ratio), at most {reference_bytes_max} bytes")
video_create_openapi: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            # Empty or null: no image, as for the other optional fields.
            "application/json": {"schema": _with_reference(_inlined(VideoCreate.model_json_schema()), {
                "anyOf": [{"type": "string", "maxLength": data_url_chars_max, "pattern": data_url_prefix.pattern},
                          {"type": "string", "maxLength": 0}, {"type": "null"}],
                "description": f"{_reference_description}, as a data URL (data:image/png;base64,...)"})},
            # As the openai SDK sends it: a file part.
            "multipart/form-data": {"schema": _with_reference(_inlined(VideoCreate.model_json_schema()), {
                "type": "string", "format": "binary", "description": _reference_description})},
        },
    }
}


# OpenAI's remix takes its prompt as JSON or as a form, as create does.
remix_openapi: dict[str, Any] = {"requestBody": {"required": True, "content": {
    media_type: {"schema": RemixCreate.model_json_schema()}
    for media_type in ("application/json", "multipart/form-data")}}}


@dataclass(frozen=True)
class VideoInput:
    body: VideoCreate
    fields: dict[str, Any]  # as sent, the image replaced by its SHA-256: the idempotency fingerprint
    reference: ReferenceImage | None  # checked and decodable


def upload_openapi(field: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [field], "properties": {field: {"type": "string", "format": "binary"}}}}}}}


async def _read_capped(request: Request, bytes_max: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > bytes_max:
        raise ApiError(413, "request_too_large", f"request body over {bytes_max} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise ApiError(413, "request_too_large", f"request body over {bytes_max} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(data: bytes):
    yield data
    yield b""


async def _form_fields(request: Request, content_type: str, bytes_max: int,
                       file_field: str | None = reference_field) -> dict[str, Any]:
    data = await _read_capped(request, bytes_max)
    if content_type == "multipart/form-data":
        parser = MultiPartParser(request.headers, _replay(data), max_files=1, max_fields=form_fields_max,
                                 max_part_size=bytes_max)
    else:
        parser = FormParser(request.headers, _replay(data))
    try:
        form = await parser.parse()
    except Exception as exc:  # starlette raises its own parse errors for malformed bodies
        raise ApiError(400, "invalid_form", f"could not parse the form body: {exc}") from exc
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name in fields:
            # Which of two values would win is a guess; the request is ambiguous, so say so.
            raise ApiError(400, "duplicate_parameter", f"{name} is sent more than once", param=name)
        if isinstance(value, UploadFile):
            if name != file_field:
                raise ApiError(400, "unsupported_parameter", f"{name}: no field of this request takes a file"
                               if file_field is None else f"{name}: only {file_field} takes a file", param=name)
            fields[name] = await value.read()
            continue
        fields[name] = _form_value(name, value)
    await form.close()
    return fields


def _form_value(name: str, value: str) -> Any:
    """Form fields arrive as text: metadata, variables and styles are JSON; seed, steps and rank integers;
    default_scale and learning_rate numbers; enhance_prompt a boolean; the rest stay text (a number field
    that does not parse stays text too, for the schema to refuse by name)."""
    if name == "metadata":
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
            raise ApiError(400, "invalid_value", "metadata must be a JSON object", param="metadata") from exc
    if name == "variables":
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_value", "variables must be a JSON object", param="variables") from exc
    if name == "styles":
        try:
            return json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_value", 'styles must be a JSON list ([{"style": ..., "scale": ...}])',
                           param="styles") from exc
    if name in form_integer_fields and form_integer.fullmatch(value.strip()):
        return int(value)
    if name in form_number_fields and form_number.fullmatch(value.strip()):
        return float(value)
    if name == "enhance_prompt" and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


async def read_form(request: Request, bytes_max: int, file_field: str | None) -> dict[str, Any]:
    """A form (multipart or URL-encoded) read as the API reads one: capped at `bytes_max`, each field once,
    a file only in `file_field` (its bytes), seed and enhance_prompt typed. The console's forms use it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data or application/x-www-form-urlencoded")
    return await _form_fields(request, content_type, bytes_max, file_field)


# Entered after the header was read and before the pixels are decoded: (the body, the image's pixels).
ImageGate = Callable[[VideoCreate, int], AbstractContextManager[None]]


async def _json_or_form(request: Request, bytes_max: int, file_field: str | None) -> dict[str, Any]:
    """The body's fields, from JSON or from a form (multipart or URL-encoded)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _form_fields(request, content_type, bytes_max, file_field)
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")
    raw = await _read_capped(request, bytes_max)
    try:
        fields = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # json.loads recurses per nesting level; a 10 MB body can go deeper
        raise ApiError(400, "invalid_json", "body is nested too deeply") from exc
    if not isinstance(fields, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return fields


def validated(schema: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = validation_message(first)
        raise ApiError(400, "invalid_value", f"{param}: {message}" if param else message, param=param) from exc


async def read_remix(request: Request, bytes_max: int) -> RemixCreate:
    """The remix body, from JSON or a form (no file)."""
    return validated(RemixCreate, await _json_or_form(request, bytes_max, file_field=None))


async def read_video_create(request: Request, bytes_max: int, gate: ImageGate | None = None) -> VideoInput:
    """The body, checked. An image is decoded last, inside `gate` (cheap checks and caps first)."""
    fields = await _json_or_form(request, bytes_max, file_field=reference_field)
    sent_reference = fields.pop(reference_field, None)
    # Checked here, not only in the model, so that the error names the field to fix.
    if fields.get("prompt") is None and fields.get("template") is None:
        raise ApiError(400, "invalid_value", "prompt: send a prompt, or a template with its variables",
                       param="prompt")
    if fields.get("prompt") is not None and fields.get("template") is not None:
        raise ApiError(400, "invalid_value", "template: send a prompt or a template, not both", param="template")
    if fields.get("variables") is not None and fields.get("template") is None:
        raise ApiError(400, "invalid_value", "variables: variables belong to a template", param="variables")
    body = validated(VideoCreate, fields)
    # An empty text field is no image (as before images were taken); an empty file is refused.
    # Decoding a large image takes a while: not on the event loop.
    reference = None if sent_reference in (None, "") else await run_in_threadpool(checked_reference, sent_reference,
                                                                                     body, gate)
    if reference is not None:
        # The same image as a file or as a data URL is the same request.
        fields[reference_field] = {"sha256": reference.sha256}
    return VideoInput(body=body, fields=fields, reference=reference)


def checked_reference(sent: Any, body: VideoCreate, gate: ImageGate | None) -> ReferenceImage:
    """A multipart file's bytes, or a data URL (JSON, or a text form field): its header checked, then
    decoded inside `gate`."""
    if isinstance(sent, str):
        sent = _data_url_bytes(sent, reference_field, "as a data URL or a multipart file")
    if not isinstance(sent, bytes):
        raise ApiError(400, "invalid_value", f"{reference_field}: send a data:image/...;base64 URL in JSON, "
                                             "or the image as a multipart file", param=reference_field)
    try:
        pixels = peek_pixels(sent)
    except ReferenceRefused as exc:
        raise ApiError(400, "invalid_image", f"{reference_field}: {exc}", param=reference_field) from exc
    with gate(body, pixels) if gate is not None else nullcontext():
        return _checked(sent, reference_field)


def data_url_reference(text: str, field: str) -> ReferenceImage:
    """A data URL checked exactly as `input_reference` is (same formats and limits); 400 naming `field`."""
    return _checked(_data_url_bytes(text, field, "as a data URL (data:image/png;base64,...)"), field)


def _checked(data: bytes, field: str) -> ReferenceImage:
    try:
        return read_reference(data)
    except ReferenceRefused as exc:
        raise ApiError(400, "invalid_image", f"{field}: {exc}", param=field) from exc


def _data_url_bytes(text: str, field: str, ways: str) -> bytes:
    if text.startswith(("http://", "https://")):
        # Fetching a client's URL from the API would reach wherever it points (and wait on it).
        raise ApiError(400, "invalid_value", f"{field}: image URLs are not fetched; send the image itself, "
                                             f"{ways}", param=field)
    prefix = data_url_prefix.match(text)
    if prefix is None:
        raise ApiError(400, "invalid_value", f"{field}: expected a data URL "
                                             "data:image/png|jpeg|webp;base64,...", param=field)
    if len(text) > data_url_chars_max:
        raise ApiError(400, "invalid_image", f"{field}: the image is over {reference_bytes_max} bytes",
                       param=field)
    try:
        return base64.b64decode(text[prefix.end():], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid_value", f"{field}: the data URL is not valid base64",
                       param=field) from exc


@dataclass(frozen=True)
class FormUpload:
    data: bytes
    filename: str  # as the client named it ("" when it sent none)
    fields: dict[str, Any]  # the form's text fields, numbers typed as `read_form` types them


async def read_upload(request: Request, field: str, bytes_max: int) -> bytes:
    """The one file sent as multipart field `field`, whole (the body is capped at `bytes_max`)."""
    return (await read_form_upload(request, field, bytes_max)).data


async def read_form_upload(request: Request, field: str, bytes_max: int) -> FormUpload:
    """The one file sent as multipart field `field` (whole; the body is capped at `bytes_max`), with the
    form's text fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"send the file as multipart/form-data field {field!r}")
    data = await _read_capped(request, bytes_max)
    parser = MultiPartParser(request.headers, _replay(data), max_files=1, max_fields=form_fields_max,
                             max_part_size=bytes_max)
    try:
        form = await parser.parse()
    except Exception as exc:  # starlette raises its own parse errors for malformed bodies
        raise ApiError(400, "invalid_form", f"could not parse the form body: {exc}") from exc
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "missing_file", f"send the file as multipart field {field!r}", param=field)
    content = await upload.read()
    fields = {name: _form_value(name, value) for name, value in form.items() if isinstance(value, str)}
    await form.close()
    if not content:
        raise ApiError(400, "empty_file", "the file is empty", param=field)
    return FormUpload(data=content, filename=upload.filename or "", fields=fields)


async def read_training_create(request: Request, bytes_max: int) -> tuple[TrainingCreate, bytes | None]:
    """A style training's fields and its dataset ZIP (multipart `dataset`; None when `video_ids` name the
    clips instead). Exactly one of the two."""
    fields = await _json_or_form(request, bytes_max, file_field="dataset")
    dataset = fields.pop("dataset", None)
    if isinstance(fields.get("video_ids"), str):  # a form sends them as one comma-separated field
        fields["video_ids"] = [part.strip() for part in fields["video_ids"].split(",") if part.strip()]
    body = validated(TrainingCreate, fields)
    if (dataset is None) == (body.video_ids is None):
        raise ApiError(400, "invalid_value", "send either a dataset ZIP (multipart field dataset) or video_ids",
                       param="dataset")
    if dataset is not None and not isinstance(dataset, bytes):
        raise ApiError(400, "invalid_value", "dataset must be a file (a ZIP)", param="dataset")
    return body, dataset
