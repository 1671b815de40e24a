"""The web console: static HTML, CSS and JavaScript modules served at ``/console/`` (no build step).

The pages talk to the same REST API as every other client, with the ``X-Auth-Token`` of a console
session (``POST /v3/auth/console-tokens``). This module only serves files; it holds no logic.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).resolve().parent / "static"

# Some systems map .js to text/plain; browsers refuse ES modules served so.
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".svg": "image/svg+xml", ".json": "application/json"}

#: Revalidate on every load, so a restarted server never leaves stale modules in a browser.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

router = APIRouter(include_in_schema=False)


def _file(rel: str) -> Path:
    """The static file for a URL path below /console/, never outside the static directory."""
    target = (STATIC / rel).resolve() if rel else STATIC / "index.html"
    if target.is_dir():
        target = target / "index.html"
    if STATIC not in target.parents or not target.is_file():
        if "." not in rel.rsplit("/", 1)[-1]:
            return STATIC / "index.html"  # a page address: the single-page app routes it
        raise HTTPException(status_code=404, detail="not found")
    return target


def _response(path: Path) -> FileResponse:
    media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = dict(_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                              "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
    return FileResponse(path, media_type=media, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
def root():
    return RedirectResponse("/console/", status_code=307)


@router.api_route("/console", methods=["GET", "HEAD"])
def console_no_slash():
    return RedirectResponse("/console/", status_code=307)


@router.api_route("/console/{rel:path}", methods=["GET", "HEAD"])
def console_file(rel: str):
    return _response(_file(rel))
