"""Every error the server answers is JSON ``{"error": {"type": ..., "message": ...}}``, with the status it deserves.

Library exceptions map through ``api.ERRORS`` (bad values 400, wrong types
422, unknown ids 404, conflicts 409, an unavailable store 503); a request
that does not fit its route's shape is 422 ``ValidationError`` naming the
field; HTTP-level refusals keep their status (404 ``NotFound`` for an unknown
route, 405, 401, 413, 429). Only a bug is a 500 (``InternalError``, logged
with its traceback and the request id).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from ..errors import StoreError, SubjectExistsError
from . import api
from .request_ids import request_id

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def error_body(type_: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message, **extra}}, ensure_ascii=False).encode()


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(error_body(type_, message, **extra), status, headers=headers, media_type="application/json")


async def _library_error(request: Request, exc: Exception) -> Response:
    found = api.error_for(exc)
    if found is None:
        return await _internal(request, exc)
    status, type_ = found
    extra: dict[str, Any] = {}
    if isinstance(exc, SubjectExistsError):
        extra = {"agent_id": exc.agent_id, "subject_id": exc.subject_id}
    headers = {"Retry-After": "1"} if status == 503 else None
    # The server's own paths are not the client's business: a store error names its cause only.
    message = f"the server's store failed: {exc.cause}" if isinstance(exc, StoreError) else str(exc) or type_
    return error_response(status, type_, message, headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'is not valid')}")
    return error_response(422, "ValidationError", "; ".join(problems) or "the request does not fit this route")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "HTTPError")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(_methods(request))
    return error_response(exc.status_code, type_, message, headers)


def _methods(request: Request) -> list[str]:
    """Every method the schema allows on this path (the router names only the first matching route's)."""
    path = request.scope["path"]
    found: set[str] = set()
    for template, methods in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            found.update(m.upper() for m in methods)
    return sorted(found)


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "InternalError", f"the server failed on this request (request id {request_id.get()}); see its log"
    )


def install(app: FastAPI) -> None:
    """Register the handlers: the library's exceptions, shape errors, HTTP refusals, and bugs."""
    for cls, _ in api.ERRORS:
        app.add_exception_handler(cls, _library_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)
