"""The route class of every router: sync endpoints render their JSON in the worker thread that ran them.

FastAPI otherwise converts each returned dict with ``jsonable_encoder`` *on the event loop*, so every
response of the process queued behind the others' conversion (a tenth of the API's CPU under load, all
of it on one thread). Here ``json.dumps`` runs where the endpoint ran; anything ``json`` cannot encode
(a datetime, a model) still goes through ``jsonable_encoder``."""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.responses import Response


class RenderedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=jsonable_encoder).encode("utf-8")


class JSONRoute(APIRoute):
    def __init__(self, path: str, endpoint, **kwargs):
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _rendering(endpoint, kwargs.get("status_code") or 200)
        super().__init__(path, endpoint, **kwargs)


def _rendering(endpoint, status_code: int):
    """``endpoint``, returning its dict as a rendered response with the route's status code."""
    signature = inspect.signature(endpoint, eval_str=True)  # FastAPI reads the parameters from it

    @functools.wraps(endpoint)
    def render(*args, **kwargs):
        out = endpoint(*args, **kwargs)
        return out if isinstance(out, Response) else RenderedJSON(out, status_code=status_code)

    render.__signature__ = signature
    return render
