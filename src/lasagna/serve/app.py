"""The FastAPI app: /v1 endpoints, API-key check, body-size limit, batching lifespan, the static page at /."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..api import Lasagna
from . import errors
from .batching import Batcher, QueueFull
from .describe import class_lists, describe
from .errors import RequestError, body_error
from .inputs import ChatOptions, SegmentOptions, check_segment, check_text, decode_image, json_schema, read_body
from .limits import ServeSettings
from .worker import ChatJob, ModelWorker, SegmentJob, segment_response

STATIC = Path(str(resources.files("lasagna") / "serve" / "static"))

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")


async def require_key(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008 (FastAPI's way to declare it)
    header: str | None = Security(_key_header),
) -> None:
    """401 unless the server has no key or the request carries it (as a Bearer token or in X-API-Key)."""
    expected: str | None = request.app.state.settings.api_key
    if expected is None:
        return
    given = header or (bearer.credentials if bearer else None)
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        msg = "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`"
        raise RequestError(401, ("header", "Authorization"), msg, "unauthorized", {"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, from Content-Length before reading, or while reading."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _error(self) -> RequestError:
        msg = f"the request body is over {self.max_bytes} bytes (--max-upload-mb)"
        return RequestError(413, ("body",), msg, "too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            err = self._error()
            return await errors.error_json(err.status, list(err.loc), err.msg, err.kind)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._error()  # why: inside the endpoint's body read, so the app's handler answers 413
            return message

        await self.app(scope, counted, send)


async def run_job(request: Request, job):
    """Queue a job for the model and wait for its result, within the request time limit."""
    state = request.app.state
    try:
        future = state.batcher.submit(state.worker.key(job), job)
    except QueueFull as err:
        raise RequestError(429, ("request",), f"the server is busy ({err}); retry shortly", "busy") from err
    timeout = state.settings.limits.request_timeout
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError as err:
        msg = f"the request took longer than {timeout:g} s (--request-timeout); send fewer classes or a smaller image"
        raise RequestError(408, ("request",), msg, "timeout") from err


def create_app(model: Lasagna, settings: ServeSettings | None = None) -> FastAPI:
    """The app around a loaded model; its lifespan starts and stops the batcher (TestClient as a context manager,
    or uvicorn, runs it)."""
    settings = settings or ServeSettings()
    worker = ModelWorker(model)
    batcher = Batcher(worker.run, settings.max_batch, settings.batch_timeout, settings.limits.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="lasagna",
        version=__version__,
        summary="Language-driven segmentation: an image and a class list (present or absent) or a query -> masks",
        lifespan=lifespan,
    )
    app.state.settings, app.state.worker, app.state.batcher, app.state.model = settings, worker, batcher, model
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_upload_bytes)
    errors.install(app)
    app.include_router(_routes(), prefix="/v1")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _routes():
    from fastapi import APIRouter

    router = APIRouter()
    keyed = [Depends(require_key)]

    @router.get("/health", summary="Liveness and queue length (no key needed)")
    async def health(request: Request) -> dict:
        batcher = request.app.state.batcher
        return {"status": "ok", "waiting": batcher.waiting, "batches": len(batcher.batch_sizes)}

    @router.get("/model", dependencies=keyed, summary="The loaded model: sizes, decoder, tokenizer, vocabulary")
    async def model_info(request: Request) -> dict:
        state = request.app.state
        return describe(state.model, state.settings)

    @router.get("/classlists", dependencies=keyed, summary="Class lists to pick from: the model's, ADE20K, COCO-Stuff")
    async def lists(request: Request) -> dict:
        return {"lists": class_lists(request.app.state.settings)}

    @router.post(
        "/segment",
        dependencies=keyed,
        summary="Segment an image with a class list or a query",
        description="The answer is `lasagna segment`'s result.json (masks as COCO RLE) plus `warnings` and `colors`.",
        openapi_extra=json_schema(SegmentOptions),
    )
    async def segment(request: Request) -> dict:
        state = request.app.state
        data, name, options = await read_body(request, SegmentOptions)
        check_segment(options, state.settings.limits)
        image = await run_in_threadpool(decode_image, data, state.settings.limits)
        job = SegmentJob(image, options.classes, options.query, options.chunk_size, options.decoder)
        pred = await run_job(request, job)
        threshold = state.model.config.mask_threshold
        query = options.query is not None
        return await run_in_threadpool(
            segment_response, pred, image, name, query, options.return_overlay, options.return_label_map, threshold
        )

    @router.post(
        "/chat",
        dependencies=keyed,
        summary="Ask about an image in words",
        openapi_extra=json_schema(ChatOptions),
    )
    async def chat(request: Request) -> dict:
        limits = request.app.state.settings.limits
        data, _, options = await read_body(request, ChatOptions)
        text = check_text(options.text, "text", limits)
        if options.max_new_tokens > limits.max_new_tokens:
            raise body_error("max_new_tokens", f"must be <= {limits.max_new_tokens} (--max-new-tokens)")
        image = await run_in_threadpool(decode_image, data, limits)
        return {"answer": await run_job(request, ChatJob(image, text, options.max_new_tokens))}

    return router
