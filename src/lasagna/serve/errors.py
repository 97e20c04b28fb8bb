"""Errors as JSON in one shape, FastAPI's own: `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.

`loc` names the field (`["body", "classes"]`, `["header", "Authorization"]`), so a client can point at it. Input the
library rejects (a `ValueError` with a message) is 422 with that message; anything else is a 500 that is logged and
leaves the server running.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("lasagna.serve")


class RequestError(ValueError):
    """A request the server refuses: HTTP `status`, `loc` of the field at fault, a message for the user."""

    def __init__(self, status: int, loc: tuple[str, ...], msg: str, kind: str = "value_error", headers=None):
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind, self.headers = status, loc, msg, kind, headers


def body_error(field: str, msg: str, status: int = 422, kind: str = "value_error") -> RequestError:
    return RequestError(status, ("body", field), msg, kind)


def error_json(status: int, loc: list, msg: str, kind: str, headers=None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every refusal into the shape above."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return error_json(err.status, list(err.loc), err.msg, err.kind, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        # why not FastAPI's default: it echoes each bad value back, which for an image is megabytes of base64
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error_json(err.status_code, [], str(err.detail), "http_error", getattr(err, "headers", None))

    @app.exception_handler(ValueError)
    async def library_value_error(request: Request, err: ValueError) -> JSONResponse:
        return error_json(422, ["body"], str(err), "value_error")

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=err)
        return error_json(500, [], "internal server error (logged on the server)", "internal_error")
