"""Every error leaves the API as a CBR error body ``{"error_code", "error_msg"}`` with a 4xx status, or
503 ``BackupService.6012`` when storage ran out. A 500 is a bug; it still gets the body and never a
traceback."""

from __future__ import annotations

import logging

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from opencbr.domain.errors import CBRError
from opencbr.services import engine_errors, space

log = logging.getLogger("opencbr.api")


def error_response(status: int, code: str, message: str, request: Request | None = None) -> JSONResponse:
    headers = {}
    rid = getattr(request.state, "request_id", None) if request is not None else None
    if rid:
        headers["X-Request-Id"] = rid
    return JSONResponse({"error_code": code, "error_msg": message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):  # where it was, not what: drop it
            loc = loc[1:]
        where = ".".join(loc) or "request"
        if err.get("type") == "json_invalid":
            parts.append("the request body is not valid JSON")
        elif err.get("type") == "missing":
            parts.append(f"{where} is required")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(CBRError)
    async def _cbr(request: Request, exc: CBRError):
        return error_response(exc.status, exc.code, exc.message, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(400, "BackupService.6001", _describe_validation(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(404, "APIGW.0101", f"no such API: {request.method} {request.url.path}", request)
        if exc.status_code == 405:
            return error_response(405, "APIGW.0102", f"method {request.method} is not allowed on {request.url.path}",
                                  request)
        return error_response(exc.status_code, f"APIGW.{exc.status_code:04d}", str(exc.detail), request)

    @app.exception_handler(sqlalchemy.exc.DataError)
    async def _data(request: Request, exc: sqlalchemy.exc.DataError):
        # A value the database cannot store (a NUL character, an over-long id) came from the client.
        log.info("rejected data on %s %s: %s", request.method, request.url.path, exc.orig)
        return error_response(400, "BackupService.6001", "invalid request: a value has characters or a length the "
                              "service cannot accept", request)

    @app.exception_handler(OSError)
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _environment(request: Request, exc: Exception):
        # A full object store or catalog is the operator's to fix, and the client's to retry: 503.
        full = space.storage_full(request.app.state.ctx, exc)
        if full is not None:
            log.warning("%s %s: %s", request.method, request.url.path, full.message)
            return error_response(full.status, full.code, full.message, request)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        if (known := engine_errors.cbr_error(exc)) is not None:  # an engine error no service turned into a CBR one
            return error_response(known.status, known.code, known.message, request)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "BackupService.9999", "internal error; see the server log", request)
