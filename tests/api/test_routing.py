"""The catalog-read routes read plain query values themselves and leave every other value to FastAPI
(src/opencbr/api/routing.py): what they take must be exactly what FastAPI would have made of it."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from opencbr.api.routes import backups as backup_routes
from opencbr.api.routes import vaults as vault_routes


def _route(router, path: str):
    return next(r for r in router.routes if r.path == "/v3/{project_id}" + path and "GET" in r.methods)


def _request(pairs: list[tuple[str, str]], **path_params: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                    "query_string": urlencode(pairs).encode(), "path_params": path_params})


def test_plain_values_are_read_as_fastapi_reads_them():
    plain = _route(backup_routes.router, "/backups").plain_parameters
    args = plain.parse(_request([("limit", "20"), ("offset", "0"), ("name", "a b"), ("status", "available"),
                                 ("status", "error"), ("incremental", "false"), ("id", "")]))
    assert args["limit"] == 20 and args["offset"] == 0 and args["name"] == "a b"
    assert args["status"] == ["available", "error"] and args["incremental"] is False and args["id"] == [""]
    assert args["vault_id"] is None and args["dec"] is None and "p" not in args and "ctx" not in args


@pytest.mark.parametrize("pair", [("limit", "007"), ("limit", "+5"), ("limit", "-1"), ("limit", " 5"),
                                  ("limit", "1e3"), ("offset", "99999999999999999999"), ("dec", "True"),
                                  ("incremental", "yes"), ("incremental", "1")])
def test_other_values_are_left_to_fastapi(pair):
    plain = _route(backup_routes.router, "/backups").plain_parameters
    assert plain.parse(_request([pair])) is None


def test_path_parameters_of_a_show_route():
    plain = _route(vault_routes.router, "/vaults/{vault_id}").plain_parameters
    assert plain.parse(_request([("ignored", "x")], project_id="p", vault_id="v-1")) == {"vault_id": "v-1"}


def test_routes_that_write_are_not_plain():
    assert all(r.plain_parameters is None for r in vault_routes.router.routes if "GET" not in r.methods)


def test_answers_render_as_json_renders_them():
    """orjson renders the answers; what it cannot encode itself goes through jsonable_encoder, and what
    it refuses (an integer beyond 64 bits, a key that is not a string) through ``json``: the bytes are
    the ones ``json`` with FastAPI's encoder would give, whichever way they took."""
    import json
    from datetime import datetime
    from enum import Enum

    from fastapi.encoders import jsonable_encoder
    from pydantic import BaseModel

    from opencbr.api.routing import RenderedJSON

    class Color(str, Enum):
        RED = "red"

    class Item(BaseModel):
        name: str
        at: datetime

    for content in ({"name": "sauvegarde é 日本 \u2028", "n": 2**63 - 1, "x": 1.5, "none": None, "l": [True]},
                    {"big": 2**70}, {1: "int key"}, {"color": Color.RED, "at": datetime(2026, 12, 5, 11, 0, 1, 5)},
                    {"model": Item(name="a", at=datetime(2026, 1, 2, 3, 4, 5))}):
        expected = json.dumps(jsonable_encoder(content), ensure_ascii=False, separators=(",", ":")).encode()
        assert RenderedJSON(content).body == expected, content


def test_names_that_are_not_utf8_render_escaped_instead_of_failing():
    """A file name that is not UTF-8 (a backup's warnings, a browsed directory) arrives as a str with
    surrogate escapes (os.fsdecode). It was a 500 for the whole answer: ``cbr task list`` of a project
    failed for good once a backup warned about such a file. Each undecodable byte shows as ``\\xNN``."""
    import json
    import os

    from opencbr.api.routing import RenderedJSON

    content = {"tasks": [{"extra_info": {"backup": {"warnings": [
        {"path": os.fsdecode(b"/log\xff.txt"), "message": "changed while it was being read"}]}}}],
        os.fsdecode(b"k\xe9"): [os.fsdecode(b"caf\xe9 \xc3\xa9")], "n": 2**70}
    body = json.loads(RenderedJSON(content).body)
    assert body["tasks"][0]["extra_info"]["backup"]["warnings"][0]["path"] == "/log\\xff.txt"
    assert body["k\\xe9"] == ["caf\\xe9 é"] and body["n"] == 2**70
    from opencbr.api.routing import shown_name

    assert shown_name("plain é \\x41") == "plain é \\x41"  # only undecodable bytes change
