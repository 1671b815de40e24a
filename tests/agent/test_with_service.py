"""The agent program against the real service: enrolment with a token from the API, the scheduler's poll
seeing the agent online with its inventory (official SDK), and unregistering revoking it at once."""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("opencbr.services.agents", reason="the service's agent routes are not in this tree yet")

from huaweicloudsdkcbr.v1 import ShowAgentRequest, UnregisterAgentRequest  # noqa: E402

from tests.agent.conftest import AgentProcess, agent_cmd  # noqa: E402
from tests.support.clients import api, sdk  # noqa: E402
from tests.support.databases import sqlite_url  # noqa: E402
from tests.support.server import ServerProcess, free_port  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-service"))
    srv = ServerProcess(d, sqlite_url(d), workers=1, extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    yield srv
    srv.stop()


def _wait(predicate, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    return predicate()


def test_enrol_with_a_token_be_polled_online_and_be_revoked_by_unregister(tmp_path, server):
    token = api(server).post("/agents/tokens", {})["token"]
    config, root = tmp_path / "etc" / "agent.json", tmp_path / "srv"
    (root / "www").mkdir(parents=True)
    port = free_port()
    done = agent_cmd(config, "register", "--endpoint", server.url, "--token", token, "--listen", f"127.0.0.1:{port}",
                     "--advertise", f"127.0.0.1:{port}", "--root", str(root), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    agent_id = json.loads(config.read_text())["agent_id"]
    client = sdk(server)
    agent = AgentProcess(config)
    try:
        shown = _wait(lambda: (a := client.show_agent(ShowAgentRequest(agent_id=agent_id)).agent).status == "online" and a)
        assert shown, server.log()[-3000:]
        assert shown.agent_version and shown.host_name

        client.unregister_agent(UnregisterAgentRequest(agent_id=agent_id))
        agent.proc.wait(timeout=20)  # revoked: it forgot its certificate and stopped
        left = json.loads(config.read_text())
        assert left["agent_id"] == agent_id and not left["cert_pem"] and not left["key_pem"]
        assert os.stat(config).st_mode & 0o077 == 0
    finally:
        agent.stop()
