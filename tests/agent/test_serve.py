"""``opencbr-agent run`` as its own process: who it serves, what it answers, revocation."""

from __future__ import annotations

import json
import os

import pytest

from opencbr.agentlink import certs, tls
from opencbr.agentlink.channel import LinkError, RemoteError
from opencbr.agentlink.client import connect
from opencbr.agentlink.seal import SealedStream
from tests.agent.conftest import AgentProcess, agent_cmd


@pytest.fixture
def enrolled(tmp_path, enrol_service):
    config, root = tmp_path / "etc" / "agent.json", tmp_path / "root"
    (root / "www").mkdir(parents=True)
    (root / "www" / "index.html").write_bytes(b"x" * 5000)
    (root / "disk.img").write_bytes(b"\0" * 4096)
    (root / "vm.qcow2").write_bytes(b"QFI\xfb")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    done = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token(),
                     "--listen", "127.0.0.1:0", "--root", str(root), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    cfg = json.loads(config.read_text())
    agent = AgentProcess(config)
    yield {"config": config, "cfg": cfg, "root": root, "outside": outside, "agent": agent}
    agent.stop()


def _connect(enrolled, context, seal: dict | None = None):
    cfg = enrolled["cfg"]
    return connect(enrolled["agent"].endpoint, context, expect_common_name=cfg["agent_id"],
                   expect_fingerprint=certs.fingerprint(cfg["cert_pem"]), timeout=5, seal=seal)


def test_a_data_connection_is_sealed_and_its_requests_are_checked_as_before(enrolled, service_context, enrol_service):
    """The agent takes a worker's offer to seal (agentlink/seal.py); who may drive it is still decided
    by the request that follows: the service's certificate and the agent's project."""
    project = enrolled["cfg"]["project_id"]
    with _connect(enrolled, service_context, seal={"project_id": project}) as ch:
        assert isinstance(ch.sock, SealedStream)
        pong, _ = ch.request({"op": "ping", "project_id": project})
        assert pong["agent_id"] == enrolled["cfg"]["agent_id"]
    with _connect(enrolled, service_context, seal={"project_id": project}) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "inventory", "project_id": "another-project"})
    assert isinstance(ch.sock, SealedStream) and e.value.code == "wrong_project"
    cert, key = certs.issue(enrol_service.ca, enrol_service.ca_key, "another-agent", server=True, client=True)
    ctx = tls.service_client_context(cert, key, enrol_service.ca)
    with _connect(enrolled, ctx, seal={"project_id": project}) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "ping", "project_id": project})
    assert isinstance(ch.sock, SealedStream) and e.value.code == "forbidden"


def test_the_service_pings_and_takes_the_inventory(enrolled, service_context):
    cfg, root = enrolled["cfg"], str(enrolled["root"])
    with _connect(enrolled, service_context) as ch:
        pong, _ = ch.request({"op": "ping", "project_id": cfg["project_id"]})
    assert pong["agent_id"] == cfg["agent_id"] and pong["version"]
    paths = [{"dir_path": f"{root}/www", "exclude_paths": []}, {"dir_path": f"{root}/missing"},
             {"dir_path": str(enrolled["outside"])}, {"dir_path": f"{root}/escape"}]
    with _connect(enrolled, service_context) as ch:
        inv, _ = ch.request({"op": "inventory", "project_id": cfg["project_id"], "paths": paths})
    assert inv["host"]["host_name"] and inv["roots"] == [root]
    images = {d["path"]: d for d in inv["block_devices"] if d["kind"] == "image"}
    assert images[f"{root}/disk.img"]["size"] == 4096 and f"{root}/vm.qcow2" not in images
    assert [r["path"] for r in inv["refused"]] == [f"{root}/vm.qcow2"]
    www, missing, outside, escape = inv["paths"]
    assert www["exists"] and www["size_estimate"] == 5000
    assert not missing["exists"] and "error" not in missing
    assert "outside this agent's roots" in outside["error"]
    assert "symbolic link" in escape["error"]  # the symlink out of the root is not followed
    assert inv["app_consistency"]["state"] in ("checking", "checked")  # (asked, as an older service does)
    with _connect(enrolled, service_context) as ch:  # not asked: no database is connected to
        inv, _ = ch.request({"op": "inventory", "project_id": cfg["project_id"], "readiness": False})
    assert inv["app_consistency"] == {"state": "not_asked"}


def test_a_client_of_another_ca_is_refused(enrolled):
    other_ca, other_key = certs.new_authority()
    cert, key = certs.issue(other_ca, other_key, tls.SERVICE_CN, server=False, client=True)
    ctx = tls.service_client_context(cert, key, enrolled["cfg"]["ca_pem"])
    with pytest.raises(LinkError):
        with _connect(enrolled, ctx) as ch:
            ch.request({"op": "ping", "project_id": enrolled["cfg"]["project_id"]})


def test_a_certificate_that_is_not_the_service_s_is_refused(enrolled, enrol_service):
    # another agent's certificate (same CA, server usage): it may not drive this agent
    cert, key = certs.issue(enrol_service.ca, enrol_service.ca_key, "another-agent", server=True, client=True)
    ctx = tls.service_client_context(cert, key, enrol_service.ca)
    with _connect(enrolled, ctx) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "ping", "project_id": enrolled["cfg"]["project_id"]})
    assert e.value.code == "forbidden"


def test_what_another_enrolled_host_holds_cannot_drive_this_agent(tmp_path, enrolled, enrol_service):
    """A compromised host has its own key and certificate (docs/roles.md, "Agents"): same CA, but issued for
    serving only, so no agent accepts it as a client, whatever name it bears."""
    other = tmp_path / "other" / "agent.json"
    done = agent_cmd(other, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token())
    assert done.returncode == 0, done.stderr
    held = json.loads(other.read_text())
    ctx = tls.service_client_context(held["cert_pem"], held["key_pem"], held["ca_pem"])
    with pytest.raises(LinkError):
        with _connect(enrolled, ctx) as ch:
            ch.request({"op": "inventory", "project_id": enrolled["cfg"]["project_id"]})


def test_another_project_and_unknown_ops_are_refused(enrolled, service_context):
    with _connect(enrolled, service_context) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "inventory", "project_id": "another-project"})
    assert e.value.code == "wrong_project"
    with _connect(enrolled, service_context) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "inventory"})
    assert e.value.code == "wrong_project"
    with _connect(enrolled, service_context) as ch, pytest.raises(RemoteError) as e:
        ch.request({"op": "format_everything", "project_id": enrolled["cfg"]["project_id"]})
    assert e.value.code == "unknown_op" and "Traceback" not in e.value.message


def test_revoke_forgets_the_certificate_and_stops_serving(enrolled, service_context):
    cfg = enrolled["cfg"]
    with _connect(enrolled, service_context) as ch:
        answer, _ = ch.request({"op": "revoke", "project_id": cfg["project_id"]})
    assert answer["ok"] is True
    enrolled["agent"].proc.wait(timeout=20)
    left = json.loads(enrolled["config"].read_text())
    assert left["agent_id"] == cfg["agent_id"] and not left["key_pem"] and not left["cert_pem"]
    assert os.stat(enrolled["config"]).st_mode & 0o077 == 0
    with pytest.raises(LinkError):
        _connect(enrolled, service_context)
    again = agent_cmd(enrolled["config"], "run")
    assert again.returncode == 2 and "enrol it again" in again.stderr


def test_an_agent_in_its_own_network_namespace_serves_across_the_link(tmp_path, enrol_service, service_context, netns):
    name, _here, there = netns
    config, root = tmp_path / "agent.json", tmp_path / "root"
    root.mkdir()
    done = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token(),
                     "--listen", "0.0.0.0:7443", "--advertise", f"{there}:7443", "--root", str(root),
                     "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    cfg = json.loads(config.read_text())
    agent = AgentProcess(config, prefix=("ip", "netns", "exec", name))
    try:
        with connect(f"{there}:7443", service_context, expect_common_name=cfg["agent_id"],
                     expect_fingerprint=certs.fingerprint(cfg["cert_pem"]), timeout=5) as ch:
            inv, _ = ch.request({"op": "inventory", "project_id": cfg["project_id"]})
        assert inv["roots"] == [str(root)] and inv["host"]["host_name"]
    finally:
        agent.stop()


def test_the_engine_is_loaded_before_the_agent_listens(enrolled):
    """A backup's code is imported at start, not by the first task (whose wall time it was)."""
    with open(f"/proc/{enrolled['agent'].proc.pid}/maps") as f:
        maps = f.read()
    assert "zstandard" in maps and "pyfastcdc" in maps  # (the engine's codec and chunker, mapped)
