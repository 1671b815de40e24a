"""The heartbeat of a running service (``opencbr serve``: its scheduler polls every agent): an agent that
enrolled over HTTP turns online, its host, disks and paths become protectables; when it stops answering
it turns offline and its resources say so. The far end is a listener on ``agentlink.Server`` with the
certificate the service issued (the agent program's own tests run the real one)."""

from __future__ import annotations

import time

import pytest

from opencbr import __version__ as VERSION
from opencbr.agentlink import certs, tls
from opencbr.agentlink.server import Server
from tests.api.test_agents_sdk import enrol
from tests.services.test_agents import INVENTORY
from tests.support.clients import api
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess, free_port

POLL_SECONDS = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("heartbeat"))
    srv = ServerProcess(d, sqlite_url(d), workers=0,
                        extra_env={"OPENCBR_AGENT_POLL_SECONDS": str(POLL_SECONDS)}).start()
    yield srv
    srv.stop()


def _until(fn, timeout: float = 20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("not reached in time")


def test_an_enrolled_agent_turns_online_then_offline(server):
    a = api(server)
    port = free_port()
    key, csr = certs.new_key_and_csr("beat-1")
    token = a.post("/agents/tokens")["token"]
    answer = enrol(server, token, "beat-1", endpoint=f"127.0.0.1:{port}", csr=csr)
    assert answer.status_code == 200, answer.text
    cert, ca = answer.json()["certificate"], answer.json()["ca_certificate"]

    def handle(channel, header, payload, peer):
        if header.get("op") == "inventory":
            channel.send({"ok": True, **INVENTORY,
                          "paths": [{"dir_path": p["dir_path"], "exists": True} for p in header["paths"]]})
        else:
            channel.send({"ok": True})

    listener = Server(("127.0.0.1", port), tls.agent_server_context(cert, key, ca), handle).start()
    try:
        a.post("/agents/beat-1/add-path", {"add_path": ["/srv/www"]})
        agent = _until(lambda: (x := a.get("/agents/beat-1")["agent"])["status"] == "online" and x)
        assert agent["agent_version"] == VERSION and agent["last_active_time"]
        servers = a.get("/protectables/OS::Nova::Server/instances")["instances"]
        host = next(i for i in servers if i["name"] == "web1")
        assert host["protectable"]["result"] is True and host["status"] == "ACTIVE"
        assert {c["bootable"] for c in host["children"]} == {True, False} and len(host["children"]) == 3
        fs = _until(lambda: [i for i in a.get("/protectables/OS::Sfs::Turbo/instances")["instances"]
                             if i["detail"]["path"] == "/srv/www" and i["status"] == "available"])
        assert fs[0]["protectable"]["result"] is True
    finally:
        listener.stop()
    _until(lambda: a.get("/agents/beat-1")["agent"]["status"] == "offline", timeout=4 * POLL_SECONDS + 20)
    disk = _until(lambda: [i for i in a.get("/protectables/OS::Cinder::Volume/instances")["instances"]
                           if i["detail"]["path"] == "/dev/sdb" and i["status"] == "error"])[0]
    assert "is offline" in disk["protectable"]["reason"]
