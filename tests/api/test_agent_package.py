"""The agent's installation files, served by a running service (public: no secret in them)."""

from __future__ import annotations

import io
import urllib.request
import zipfile

from opencbr.agentlink import package
from tests.support.server import sqlite_server_fixture

server = sqlite_server_fixture("agent-package")  # nothing here touches the catalog


def _get(url: str) -> tuple[bytes, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        return resp.read(), dict(resp.headers)


def test_the_service_serves_the_install_script_and_the_packages_unsigned(server):
    script, headers = _get(f"{server.url}/agent/install.sh")
    text = script.decode()
    assert text.startswith("#!/bin/sh") and f"ENDPOINT={server.url.rstrip('/')}" in text
    assert "--token" not in text.split("register --endpoint")[1].split("\n")[0]  # the token comes as an argument
    wheel, headers = _get(f"{server.url}/agent/package.whl")
    assert package.wheel_name() in headers["content-disposition"]
    assert "opencbr/agent/cli.py" in zipfile.ZipFile(io.BytesIO(wheel)).namelist()
    sdist, headers = _get(f"{server.url}/agent/package")
    assert package.sdist_name() in headers["content-disposition"] and sdist[:2] == b"\x1f\x8b"
