"""The heartbeat over real mutual TLS: the poll reaches an enrolled agent's endpoint with the service's
certificate, accepts only the certificate pinned at enrolment, records the inventory, and never calls
an unregistered agent again. The far end here is a minimal listener on ``agentlink.Server`` with the
agent's enrolled certificate (the agent program's own tests run the real one)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opencbr import __version__ as VERSION
from opencbr.agentlink import certs, tls
from opencbr.agentlink.server import Server
from opencbr.catalog.models import Resource
from opencbr.domain.errors import InvalidParameter
from opencbr.providers.agent import link
from opencbr.services import agents
from tests.services.test_agents import INVENTORY
from tests.support.server import free_port


class Listener:
    """An agent's listening end: answers ``inventory`` and ``revoke`` for its project, and notes who
    called with what."""

    def __init__(self, ctx, tenant, agent_id: str, *, cert_for: str | None = None):
        self.calls: list[tuple[str, str, dict]] = []
        self.extra_devices: list[dict] = []
        self.project_id = tenant.project_id
        port = free_port()
        key, csr = certs.new_key_and_csr(agent_id)
        with ctx.tx() as s:
            token = agents.create_token(s, ctx, tenant).token
        _, _, token_id, secret, _ = token.split(".")
        body = {"token_id": token_id, "agent": {"agent_id": agent_id, "host_name": "web1", "host_ip": "127.0.0.1",
                                                "host_os": "Linux"}, "endpoint": f"127.0.0.1:{port}", "csr": csr}
        body["proof"] = agents.proof(secret, body)
        with ctx.tx() as s:
            e = agents.enrol(s, ctx, tenant.project_id, body)
        cert = e.certificate
        if cert_for:  # an impostor: a certificate of the same CA, issued to another name
            with ctx.read() as s:
                row = agents.ca.authority_row(s, ctx)
                cert, key = certs.issue(row.ca_cert, agents.ca.ca_key(ctx, row), cert_for, server=True, client=False)
        self.server = Server(("127.0.0.1", port), tls.agent_server_context(cert, key, e.ca_certificate), self.handle)
        self.server.start()

    def handle(self, channel, header, payload, peer) -> None:
        self.calls.append((header.get("op"), peer.common_name, header))
        if header.get("project_id") != self.project_id:
            channel.send({"ok": False, "error": "wrong_project", "message": "not my project"})
        elif header.get("op") == "inventory":
            paths = [{"dir_path": p["dir_path"], "exists": True, "size_estimate": 4096} for p in header["paths"]]
            ready = {"state": "checked", "hooks": []} if header.get("readiness", True) else {"state": "not_asked"}
            channel.send({"ok": True, **INVENTORY, "block_devices": INVENTORY["block_devices"] + self.extra_devices,
                          "paths": paths, "app_consistency": ready})
        else:
            channel.send({"ok": True})


@pytest.fixture()
def listeners():
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.server.stop()


def test_poll_records_an_online_agent(ctx, tenant, listeners):
    agent = Listener(ctx, tenant, "polled-1")
    listeners.append(agent)
    with ctx.tx() as s:
        agents.add_agent_path(s, ctx, tenant, "polled-1", ["/srv/www"],
                              [{"path_name": "/srv/www", "exclude_path_name": ["/srv/www/cache"]}])
    report = agents.poll_agents(ctx, timeout=5)
    assert report.answered == ["polled-1"] and not report.failed
    op, caller, header = agent.calls[0]
    assert (op, caller) == ("inventory", tls.SERVICE_CN)
    assert header["paths"] == [{"dir_path": "/srv/www", "exclude_paths": ["/srv/www/cache"]}]
    with ctx.read() as s:
        view = agents.show_agent(s, ctx, tenant, "polled-1")
        assert (view.status, view.agent.agent_version) == ("online", VERSION)
        fs = s.scalar(select(Resource).where(Resource.agent_id == "polled-1", Resource.path == "/srv/www"))
        assert (fs.status, fs.size_bytes) == ("available", 4096)
        disk = s.scalar(select(Resource).where(Resource.agent_id == "polled-1", Resource.path == "/dev/sdb"))
        address = agents.require_online(s, ctx, disk)
        check = agents.check_agent(s, ctx, tenant, [{"resource_id": disk.id}])[0]
    assert check == {"resource_id": disk.id, "installed": True, "version": VERSION, "is_old": False, "code": 0,
                     "message": ""}
    # the data path's call reaches the same agent, scoped to the project
    assert link.call(agents.service_identity(ctx), address, "ping")["ok"] is True
    assert agent.calls[-1][2]["project_id"] == tenant.project_id


def test_an_impostor_certificate_is_refused(ctx, tenant, listeners):
    """A certificate from the same CA but for another agent is not the one pinned: no answer counts."""
    listeners.append(Listener(ctx, tenant, "pinned-1", cert_for="someone-else"))
    report = agents.poll_agents(ctx, timeout=5)
    assert "pinned-1" in report.failed and "not the agent" in report.failed["pinned-1"]
    with ctx.read() as s:
        view = agents.show_agent(s, ctx, tenant, "pinned-1")
    assert view.status == "offline" and "not the agent" in view.agent.last_error


def test_unregistered_agent_is_told_and_never_called_again(ctx, tenant, listeners):
    agent = Listener(ctx, tenant, "gone-1")
    listeners.append(agent)
    agents.poll_agents(ctx, timeout=5)
    with ctx.tx() as s:
        address = agents.unregister_agent(s, ctx, tenant, "gone-1")
    assert agents.notify_revoked(ctx, address) is True
    assert agent.calls[-1][0] == "revoke"
    calls = len(agent.calls)
    assert agents.poll_agents(ctx, timeout=5).answered == []
    assert len(agent.calls) == calls


def test_applications_are_checked_only_on_hosts_that_need_it(ctx, tenant, listeners):
    """The heartbeat asks an agent about its databases (each ask connects to them) only for a host in an
    app_consistent vault, or one check_agent asked about lately (docs/app-consistent.md)."""
    from opencbr.services import app_consistency, vaults

    agent = Listener(ctx, tenant, "ready-1")
    listeners.append(agent)

    def asked() -> bool:
        agents.poll_agents(ctx, timeout=5)
        return next(h for op, _, h in reversed(agent.calls) if op == "inventory")["readiness"]

    assert asked() is False
    with ctx.tx() as s:
        server = s.scalar(select(Resource).where(Resource.agent_id == "ready-1", Resource.type == "OS::Nova::Server"))
        assert "checking" in agents.check_agent(s, ctx, tenant, [{"resource_id": server.id}])[0]["message"]
    assert asked() is True and asked() is True  # asked while check_agent's wish lasts
    with ctx.tx() as s:
        a = s.get(agents.registry.Agent, "ready-1")
        a.inventory = {k: v for k, v in a.inventory.items() if k != "readiness_wanted_at"}
    assert asked() is False
    with ctx.tx() as s:  # its host in an app_consistent vault: asked on every heartbeat
        vaults.create_vault(s, ctx, tenant, {"name": "app", "resources": [{"id": server.id, "type": server.type}],
                                             "billing": {"object_type": "server", "consistent_level": "app_consistent",
                                                         "protect_type": "backup", "size": 100}})
    assert asked() is True
    assert app_consistency.READINESS_WANTED_SECONDS >= 60


def test_an_agent_whose_endpoint_cannot_be_connected_to_fails_alone(ctx, tenant, listeners):
    """A host name a connection refuses before any network (an empty label: ``UnicodeError``, not an
    ``OSError``) failed the whole heartbeat, every round: any tenant could take every tenant's agents
    offline with one registration. The API refuses such an endpoint now; a row that has one (an older
    catalog) fails only its own agent, and unregistering it is not a 500."""
    good = Listener(ctx, tenant, "polled-good")
    listeners.append(good)
    with pytest.raises(InvalidParameter, match="not a host name"):
        agents.registry.check_endpoint("a..b:7443")
    bad = Listener(ctx, tenant, "polled-bad")
    listeners.append(bad)
    with ctx.tx() as s:
        s.get(agents.registry.Agent, "polled-bad").endpoint = "a..b:7443"
    report = agents.poll_agents(ctx, timeout=5)
    assert report.answered == ["polled-good"] and list(report.failed) == ["polled-bad"]
    assert "UnicodeError" in report.failed["polled-bad"]
    with ctx.read() as s:
        assert agents.show_agent(s, ctx, tenant, "polled-good").status == "online"
    with ctx.tx() as s:
        address = agents.unregister_agent(s, ctx, tenant, "polled-bad")
    assert agents.notify_revoked(ctx, address, timeout=2) is False


def test_a_name_in_bytes_that_are_not_utf8_is_left_out_of_the_inventory(ctx, tenant, listeners):
    """An image file below a root named ``\\xff.img`` comes as a string with a lone surrogate: storing
    it failed the inventory's transaction every heartbeat, and the agent looked offline until the file
    went. Now that entry is left out, said in the agent's last error, and the rest is recorded."""
    agent = Listener(ctx, tenant, "polled-bytes")
    listeners.append(agent)
    agent.extra_devices = [{"path": "/srv/images/\udcff.img", "kind": "image", "size": 1 << 20, "name": "\udcff.img"},
                           {"path": "/srv/images/b.img", "kind": "image", "size": 1 << 20, "name": "b.img"}]
    report = agents.poll_agents(ctx, timeout=5)
    assert report.answered == ["polled-bytes"] and not report.failed
    with ctx.read() as s:
        view = agents.show_agent(s, ctx, tenant, "polled-bytes")
        assert view.status == "online" and "not UTF-8" in view.agent.last_error
        paths = {r.path for r in s.scalars(select(Resource).where(Resource.agent_id == "polled-bytes"))}
    assert "/srv/images/b.img" in paths and "/dev/sdb" in paths and not any("\udcff" in p for p in paths)


class DrippingListener(Listener):
    """An enrolled agent (a tenant's, malicious or broken) that answers the heartbeat a byte at a time:
    never late for a read, but never done."""

    def handle(self, channel, header, payload, peer) -> None:
        import struct
        import time

        self.calls.append((header.get("op"), peer.common_name, header))
        frame = struct.pack(">I", 200) + b"{" * 200
        try:
            for i in range(60):  # 18 s: the poll waited for all of it
                channel.sock.sendall(frame[i:i + 1])
                time.sleep(0.3)
        except OSError:
            pass


def test_an_agent_answering_a_byte_at_a_time_fails_alone_and_in_time(ctx, tenant, listeners):
    """The read timeout is per read: an agent dripping its answer held its poll thread, and the next
    round of every agent (the poll waits for all), so that the other tenants' agents turned offline.
    A call now ends ``CALL_WITHIN`` times its timeout after it began."""
    import time

    good = Listener(ctx, tenant, "polled-good")
    listeners.append(good)
    drip = DrippingListener(ctx, tenant, "polled-drip")
    listeners.append(drip)
    t0 = time.monotonic()
    report = agents.poll_agents(ctx, timeout=1)
    assert time.monotonic() - t0 < 4  # (CALL_WITHIN x 1 s, and the round)
    assert report.answered == ["polled-good"] and list(report.failed) == ["polled-drip"]
    assert "did not answer within 2 s" in report.failed["polled-drip"]
    with ctx.read() as s:
        assert agents.show_agent(s, ctx, tenant, "polled-good").status == "online"
