"""Requests -> checked jobs: the image (multipart upload or base64 in JSON), the options, every limit.

Everything is checked here, before a request joins a batch, so a bad one is refused on its own with a 4xx that names
its field. Nothing a client sends is taken as a URL to fetch or a path to read: the image is the bytes it sent.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import PurePosixPath, PureWindowsPath
from types import SimpleNamespace
from typing import Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile

from ..api import to_rgb
from ..infer.cli import read_classes
from ..infer.engine import check_classes
from ..tokens import check_user_text
from .errors import RequestError, body_error
from .limits import Limits


class SegmentOptions(BaseModel):
    """Everything of a `POST /v1/segment` but the image."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] | None = Field(
        None, description="class names; in a multipart form one comma-separated string, as `lasagna segment --classes`"
    )
    query: str | None = Field(None, description="a referring or reasoning query instead of classes")
    chunk_size: int = Field(16, ge=1, description="classes per chunk of the LLM pass")
    decoder: Literal["free", "template"] | None = Field(None, description="default: the model's")
    return_overlay: bool = Field(False, description="add `overlay_png`, the picture `lasagna segment` draws")
    return_label_map: bool = Field(False, description="add `label_map_png`: class index per pixel, 255 unlabelled")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.classes is None) == (self.query is None):
            raise ValueError("give exactly one of `classes` or `query`")
        return self


class ChatOptions(BaseModel):
    """Everything of a `POST /v1/chat` but the image."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="the question or instruction about the image")
    max_new_tokens: int = Field(128, ge=1, description="longest answer, in tokens")


def json_schema(options: type[BaseModel]) -> dict:
    """The request body of an endpoint taking `options` and an image, as JSON or as a multipart form (for /docs)."""
    base = options.model_json_schema()
    as_json = {**base, "properties": {"image": {"type": "string", "description": "the image file, base64"}}}
    as_json["properties"]["filename"] = {"type": "string", "description": "a name for the image in the result"}
    as_json["properties"].update(base["properties"])
    as_json["required"] = ["image", *base.get("required", [])]
    form = {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
    for name, prop in base["properties"].items():
        form["properties"][name] = {"type": "string", "description": prop.get("description", "")}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": as_json}, "multipart/form-data": {"schema": form}},
        }
    }


async def read_body(request: Request, options: type[BaseModel]) -> tuple[bytes, str, BaseModel]:
    """(image bytes, a display name for it, the validated options) from a JSON or multipart request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            fields = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise RequestError(422, ("body",), f"the body is not valid JSON: {err}", "json_invalid") from err
        if not isinstance(fields, dict):
            raise RequestError(422, ("body",), "the JSON body must be an object", "json_invalid")
        data = _base64_image(fields.pop("image", None))
        name = fields.pop("filename", None) or "upload"
    elif kind == "multipart/form-data":
        async with request.form(max_files=2, max_fields=32) as form:  # why `with`: uploads spool to temp files
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                msg = "missing: send the image file as the multipart field `image`"
                raise body_error("image", msg, kind="missing")
            data, name = await upload.read(), upload.filename or "upload"
            fields = {k: v for k, v in form.multi_items() if k != "image"}
        if isinstance(fields.get("classes"), str):
            try:  # why: the same parsing as `lasagna segment --classes`, so one string means one list everywhere
                fields["classes"] = read_classes(SimpleNamespace(classes=fields["classes"], classes_file=None))
            except ValueError as err:
                raise body_error("classes", str(err)) from err
    else:
        raise RequestError(
            415, ("header", "Content-Type"), "send application/json or multipart/form-data", "unsupported_media"
        )
    try:
        parsed = options.model_validate(fields)
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_input=False)]
        ) from None
    return data, _display_name(str(name)), parsed


def _base64_image(value) -> bytes:
    if value is None:
        raise body_error("image", "missing: give the image file as a base64 string", kind="missing")
    if not isinstance(value, str):
        raise body_error("image", f"must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:  # a data URL, as a browser's FileReader gives it
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise body_error("image", f"is not valid base64: {err}") from err


def _display_name(name: str) -> str:
    """The client's file name as a label in the result (only its last part: it never names a server path)."""
    return PureWindowsPath(PurePosixPath(name).name).name[:200] or "upload"


def check_segment(options: SegmentOptions, limits: Limits) -> None:
    """Limits and the library's own checks of class names and queries, each failure naming its field."""
    if options.query is not None:
        check_text(options.query, "query", limits)
        return
    if options.chunk_size > limits.max_chunk_size:
        msg = f"must be <= {limits.max_chunk_size} (--max-chunk-size), got {options.chunk_size}"
        raise body_error("chunk_size", msg)
    if len(options.classes) > limits.max_classes:
        msg = f"{len(options.classes)} classes, more than the server's limit of {limits.max_classes} (--max-classes)"
        raise body_error("classes", msg)
    for name in options.classes:
        if len(name) > limits.max_name_chars:
            msg = f"class name {name[:40]!r} is {len(name)} characters, over {limits.max_name_chars} (--max-name-chars)"
            raise body_error("classes", msg)
    try:
        options.classes = check_classes(options.classes)
    except ValueError as err:
        raise body_error("classes", str(err)) from err


def check_text(text: str, field: str, limits: Limits) -> str:
    if len(text) > limits.max_query_chars:
        raise body_error(field, f"is {len(text)} characters, over {limits.max_query_chars} (--max-query-chars)")
    if not text.strip():
        raise body_error(field, "is empty")
    try:
        return check_user_text(text, field)
    except ValueError as err:
        raise body_error(field, str(err)) from err


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
"""Formats the server decodes. Pillow would open more, some by running other programs (EPS through Ghostscript),
which untrusted bytes should never reach."""


def decode_image(data: bytes, limits: Limits):
    """Image bytes -> (H, W, 3) uint8 RGB, EXIF orientation applied; 413 past `max_pixels` (read from the header,
    before any pixel is decoded), 422 for bytes that are not an image."""
    if not data:
        raise body_error("image", "is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                msg = f"is {width}x{height} = {width * height} pixels, over {limits.max_pixels} (--max-pixels)"
                raise body_error("image", msg, 413, "too_large")
            image.load()
            return to_rgb(image)
    except RequestError:
        raise
    except Image.DecompressionBombError as err:
        raise body_error("image", f"is too large to decode: {err}", 413, "too_large") from err
    except Image.UnidentifiedImageError as err:
        raise body_error("image", f"is not an image in a format the server reads ({', '.join(IMAGE_FORMATS)})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise body_error("image", f"cannot be decoded (damaged or truncated?): {err}") from err
