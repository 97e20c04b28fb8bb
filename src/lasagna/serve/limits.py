"""What one request may ask of the server, and how the server batches: each a `lasagna serve` flag."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

MAX_LABELLED_CLASSES = 254
"""A label map PNG holds one byte per pixel with 255 for unlabelled, so a class list has at most 254 names (0..253)."""


@dataclass(frozen=True)
class Limits:
    """Past any of these a request gets a 4xx JSON error that names the field (413 for sizes, 422 for values,
    408 for time). Defaults suit the embedded model on a laptop; raise them for a GPU and large photos.

    max_upload_bytes: a request's whole body (a base64 image in JSON is a third larger than the file).
    max_pixels: width x height of the decoded image (masks and logits are kept at the image's size).
    request_timeout: seconds from arrival to answer; a request still queued past it is dropped, one already running
    finishes but its answer is thrown away (a forward pass cannot be interrupted).
    max_queue: requests waiting for the model; more get 429 until the queue drains.
    """

    max_upload_bytes: int = 16 * 2**20
    max_pixels: int = 2048 * 2048
    max_classes: int = 200
    max_name_chars: int = 64
    max_query_chars: int = 512
    max_chunk_size: int = 64
    max_new_tokens: int = 256
    request_timeout: float = 120.0
    max_queue: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"{f.name} must be > 0, got {value}")
        if self.max_classes > MAX_LABELLED_CLASSES:
            raise ValueError(
                f"max_classes must be <= {MAX_LABELLED_CLASSES} (label maps are 8-bit, 255 unlabelled), "
                f"got {self.max_classes}"
            )


@dataclass(frozen=True)
class ServeSettings:
    """max_batch: class-list requests run through the model together (1: no batching); batch_timeout: seconds the
    first waits for others to join; api_key: required on /v1/* (except /v1/health) when set."""

    limits: Limits = field(default_factory=Limits)
    max_batch: int = 8
    batch_timeout: float = 0.01
    api_key: str | None = None
    model_name: str = "embedded:shapeworld-small"
    vocabulary: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.batch_timeout < 0:
            raise ValueError(f"batch_timeout must be >= 0 seconds, got {self.batch_timeout}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; give a key or none")
