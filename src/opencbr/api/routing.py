"""The route class of every router: sync endpoints render their JSON in the worker thread that ran them,
and the hot catalog reads run on the event loop itself.

FastAPI otherwise converts each returned dict with ``jsonable_encoder`` *on the event loop*, so every
response of the process queued behind the others' conversion (a tenth of the API's CPU under load, all
of it on one thread). Here the JSON is rendered where the endpoint ran, by orjson (a vault page of 2,000
resources, 430 kB: ~0.3 ms of CPU against ~4 ms with ``json``); anything it cannot encode natively (a
model) still goes through ``jsonable_encoder``, and what orjson refuses outright (an integer beyond 64
bits, a key that is not a string) is rendered by ``json`` as before.

An endpoint marked :func:`catalog_read` (a list or show that only runs a few indexed queries) runs
directly on the event loop when the catalog is SQLite: in WAL mode a read neither waits for a writer nor
makes one wait, so it never blocks for long, and the hop to a worker thread and back (a thread wake-up,
the loop woken back, twenty threads taking turns at the interpreter lock) cost more CPU than the queries
and made the latency tail. With PostgreSQL each query is a network round trip: those still go to a
worker thread, so that the loop serves other requests meanwhile.

Such an endpoint also skips FastAPI's parameter machinery when every query value is plainly valid (a
digit string for an integer, ``true``/``false`` for a flag, any text for a text): FastAPI resolves and
validates each declared parameter one by one with pydantic, which cost a fifth of a list request (the
backup list declares 25). Any other value goes through FastAPI unchanged, so what is refused, and how,
stays FastAPI's; the parameters and the schema stay declared on the endpoint as usual."""

from __future__ import annotations

import functools
import inspect
import json
import re
import types
import typing
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from opencbr.api.deps import get_ctx, principal
from opencbr.domain.names import shown_name

_CATALOG_READ = "_opencbr_catalog_read"


def catalog_read(endpoint):
    """Mark a sync endpoint whose only blocking work is a short read of the catalog (through the
    ``ctx`` parameter it takes): it may run on the event loop (module docstring)."""
    setattr(endpoint, _CATALOG_READ, True)
    return endpoint


class RenderedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, default=jsonable_encoder)
        except orjson.JSONEncodeError:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                              default=jsonable_encoder)
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:  # a name that is not UTF-8: shown as \\xNN (domain/names.py), never a 500
                return json.dumps(_shown(jsonable_encoder(content)), ensure_ascii=False, allow_nan=False,
                                  separators=(",", ":")).encode("utf-8")


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return shown_name(value)
    if isinstance(value, dict):
        return {_shown(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


class JSONRoute(APIRoute):
    def __init__(self, path: str, endpoint, **kwargs):
        self.plain_parameters: PlainParameters | None = None
        if not inspect.iscoroutinefunction(endpoint):
            status_code = kwargs.get("status_code") or 200
            if getattr(endpoint, _CATALOG_READ, False):
                endpoint = _on_loop_if_local(endpoint, status_code)
                self.plain_parameters = PlainParameters(endpoint)
            else:
                endpoint = _rendering(endpoint, status_code)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self):
        handler = super().get_route_handler()
        plain, endpoint = self.plain_parameters, self.endpoint
        if plain is None:
            return handler

        async def handle_plain(request: Request) -> Response:
            kwargs = plain.parse(request)
            if kwargs is None:  # a value FastAPI must judge
                return await handler(request)
            if plain.principal:
                kwargs[plain.principal] = await principal(request, request.path_params["project_id"])
            if plain.ctx:
                kwargs[plain.ctx] = request.app.state.ctx
            return await endpoint(**kwargs)

        return handle_plain


def _rendering(endpoint, status_code: int):
    """``endpoint``, returning its dict as a rendered response with the route's status code."""
    signature = inspect.signature(endpoint, eval_str=True)  # FastAPI reads the parameters from it

    @functools.wraps(endpoint)
    def render(*args, **kwargs):
        out = endpoint(*args, **kwargs)
        return out if isinstance(out, Response) else RenderedJSON(out, status_code=status_code)

    render.__signature__ = signature
    return render


def _on_loop_if_local(endpoint, status_code: int):
    """``endpoint`` as a coroutine: run right here when its ``ctx`` has a SQLite catalog, in a worker
    thread otherwise."""
    render = _rendering(endpoint, status_code)

    async def run(*args, **kwargs):
        if kwargs["ctx"].engine.dialect.name == "sqlite":
            return render(*args, **kwargs)
        return await run_in_threadpool(render, *args, **kwargs)

    run.__name__, run.__qualname__, run.__doc__ = endpoint.__name__, endpoint.__qualname__, endpoint.__doc__
    run.__module__ = endpoint.__module__
    run.__signature__ = render.__signature__
    return run


_DIGITS = re.compile(r"0|[1-9][0-9]{0,17}")
_FLAGS = {"true": True, "false": False}


class PlainParameters:
    """The parameters of a :func:`catalog_read` endpoint, read straight from the request when every
    value is one FastAPI would take as it is (module docstring)."""

    def __init__(self, endpoint):
        self.path: list[str] = []
        self.query: list[tuple[str, str]] = []  # (name, kind): "text", "int", "flag" or "list"
        self.principal = self.ctx = ""
        for name, param in inspect.signature(endpoint).parameters.items():
            dependency = getattr(param.default, "dependency", None)
            if dependency is principal:
                self.principal = name
            elif dependency is get_ctx:
                self.ctx = name
            elif dependency is not None:
                raise TypeError(f"{endpoint.__name__}: a catalog_read endpoint may depend on principal and get_ctx only")
            elif param.default is inspect.Parameter.empty:
                self.path.append(name)
            else:
                self.query.append((name, _kind(endpoint.__name__, name, param.annotation)))

    def parse(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's arguments but the dependencies, or None when a value needs FastAPI's rules."""
        kwargs: dict[str, Any] = {name: request.path_params[name] for name in self.path}
        query = request.query_params
        for name, kind in self.query:
            if kind == "list":
                values = query.getlist(name)
                kwargs[name] = values or None
                continue
            value = query.get(name)
            if value is None:
                kwargs[name] = None
            elif kind == "text":
                kwargs[name] = value
            elif kind == "int" and _DIGITS.fullmatch(value):
                kwargs[name] = int(value)
            elif kind == "flag" and value in _FLAGS:
                kwargs[name] = _FLAGS[value]
            else:
                return None
        return kwargs


def _kind(endpoint: str, name: str, annotation) -> str:
    """What a query parameter declared ``X | None = None`` holds."""
    args = set(typing.get_args(annotation)) - {type(None)}
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType) or len(args) != 1:
        raise TypeError(f"{endpoint}: query parameter {name} must be declared as X | None")
    (arg,) = args
    kinds = {str: "text", int: "int", bool: "flag", list[str]: "list"}
    if arg not in kinds:
        raise TypeError(f"{endpoint}: query parameter {name} has a type catalog_read does not read: {arg}")
    return kinds[arg]
