"""What every answer says about the server: an id and a date, no software banner (server/serve.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.clients import api


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_answers_carry_no_server_banner(server):
    c = api(server)
    url, headers, _ = c._prepare("GET", "/vaults", {"limit": 1}, None)
    with httpx.Client(base_url=c.cfg.endpoint, trust_env=False) as http:
        resp = http.get(url, headers=headers)
    assert resp.status_code == 200
    assert "server" not in resp.headers
    assert resp.headers["date"] and resp.headers["x-request-id"]
