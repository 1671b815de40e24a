"""Request-scoped dependencies: the service context and the authenticated principal."""

from __future__ import annotations

import types
import typing
import uuid
from urllib.parse import quote

from fastapi import Path, Request
from starlette.concurrency import run_in_threadpool

from opencbr.domain.errors import CBRError, InvalidParameter
from opencbr.services import iam
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

#: No request body is larger: the biggest legitimate one (256 resources with their details) is ~100 KiB.
MAX_BODY_BYTES = 1 << 20
#: No query value is longer (a path in a backup is at most 4096 bytes on Linux).
MAX_QUERY_VALUE_CHARS = 4096


class PayloadTooLarge(CBRError):
    status = 413
    code = "APIGW.0413"


async def get_ctx(request: Request) -> ServiceContext:
    # async although it awaits nothing: FastAPI runs a plain-def dependency in its thread pool, and that
    # hop (a thread wake-up and the event loop woken back) cost more than the endpoint's own queries.
    return request.app.state.ctx


async def principal(request: Request, project_id: str = Path(description="The caller's project.")) -> Principal:
    """Verify the request's SDK-HMAC-SHA256 signature over the raw bytes received; scope it to the
    project in the path. Then refuse query parameters the signature cannot pin down (below)."""
    ctx: ServiceContext = request.app.state.ctx
    token = request.headers.get("x-auth-token")
    if token:  # the web console's session
        p = await run_in_threadpool(iam.authenticate_token, ctx, token, project_id,
                                    request.client.host if request.client else "",
                                    getattr(request.state, "request_id", ""))
    else:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:  # sent without a Content-Length (chunked)
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        args = dict(method=request.method, path=_raw_path(request),
                    raw_query=request.scope.get("query_string", b"").decode("latin-1"),
                    headers=dict(request.headers), body=body, path_project_id=project_id,
                    source_ip=request.client.host if request.client else "",
                    request_id=getattr(request.state, "request_id", ""))
        try:  # a known key is checked right here (a few HMACs); only the catalog is worth a thread
            p = iam.authenticate(ctx, **args, cached_only=True)
        except iam.CatalogNeeded:
            p = await run_in_threadpool(lambda: iam.authenticate(ctx, **args))
    check_query(request)
    return p


def _raw_path(request: Request) -> str:
    """The path as the client sent it, still percent-encoded: the signature's canonical URI decodes it
    once, as the SDK's signer does with the path it sends (``scope["path"]`` is decoded already, so an
    id with ``%2e`` or ``%20`` in it was decoded twice and its signature never matched)."""
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if raw else quote(request.scope["path"], safe="/")


def check_query(request: Request) -> None:
    """A parameter that takes one value may appear once: the canonical form sorts pairs, so
    ``limit=1&limit=5`` and ``limit=5&limit=1`` sign alike but the framework would act on the last one.
    No value holds a NUL character or is longer than ``MAX_QUERY_VALUE_CHARS``."""
    multi = _list_parameters(request.scope.get("route"))
    seen: set[str] = set()
    for key, value in request.query_params.multi_items():
        if key in seen and key not in multi:
            raise InvalidParameter(f"parameter {key[:64]} is given more than once; it takes one value")
        seen.add(key)
        if len(value) > MAX_QUERY_VALUE_CHARS:
            raise InvalidParameter(f"parameter {key[:64]} is longer than {MAX_QUERY_VALUE_CHARS} characters")
        if "\x00" in key or "\x00" in value:
            raise InvalidParameter(f"parameter {key[:64]!r} contains a NUL character")


_LIST_PARAMETERS: dict[int, frozenset[str]] = {}


def _list_parameters(route) -> frozenset[str]:
    """The query parameters of ``route`` declared as lists (``status``, ``id`` of the backup list)."""
    if route is None or not hasattr(route, "dependant"):
        return frozenset()
    key = id(route)
    if key not in _LIST_PARAMETERS:
        names, todo = set(), [route.dependant]
        while todo:
            dependant = todo.pop()
            names.update(f.alias for f in dependant.query_params if _is_list(f.field_info.annotation))
            todo.extend(dependant.dependencies)
        _LIST_PARAMETERS[key] = frozenset(names)
    return _LIST_PARAMETERS[key]


def _is_list(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset)


def new_request_id() -> str:
    return uuid.uuid4().hex
