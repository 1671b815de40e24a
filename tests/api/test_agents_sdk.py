"""The agents API through the official SDK (register / list / show / update / unregister, paths,
check_agent), enrolment with a token over plain HTTP (the proof made here as an agent makes it), and
tenant isolation: another project's agent is not found, and its tokens enrol nothing here."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest
from huaweicloudsdkcbr.v1 import (
    AddAgentPathRequest,
    AgentAddPathReq,
    AgentRegister,
    AgentRegisterReq,
    AgentRemovePathReq,
    AgentUpdate,
    AgentUpdateReq,
    CheckAgentRequest,
    ExcludePath,
    ListAgentRequest,
    ProtectableAgentReq,
    ProtectableAgentStatusResource,
    RegisterAgentRequest,
    RemoveAgentPathRequest,
    ShowAgentRequest,
    UnregisterAgentRequest,
    UpdateAgentRequest,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.agentlink import certs
from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant, sdk, signed


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _proof(secret: str, value: dict) -> str:
    return hmac.new(secret.encode(), _canonical({k: v for k, v in value.items() if k != "proof"}),
                    hashlib.sha256).hexdigest()


def enrol(server, token: str, agent_id: str, *, endpoint: str = "127.0.0.1:7443", csr: str | None = None,
          tamper: dict | None = None) -> httpx.Response:
    """POST /agents/enrol as ``opencbr-agent register --token`` does: unsigned, with the HMAC proof
    (``tamper``: fields changed after the proof was made)."""
    _, project_id, token_id, secret, _ = token.split(".")
    body = {"token_id": token_id, "endpoint": endpoint, "csr": csr or certs.new_key_and_csr(agent_id)[1],
            "agent": {"agent_id": agent_id, "host_name": "web1", "host_ip": "127.0.0.1", "host_os": "Linux"}}
    body["proof"] = _proof(secret, body)
    body.update(tamper or {})
    return httpx.post(f"{server.url}/v3/{project_id}/agents/enrol", json=body, timeout=10, trust_env=False)


@pytest.fixture(scope="module")
def tenants(server):
    a, b = new_tenant(server, f"agents-a-{server.backend}"), new_tenant(server, f"agents-b-{server.backend}")
    return a, b


def test_register_list_show_update_unregister(server, tenants):
    c = sdk(server, tenants[0])
    reg = AgentRegister(agent_id="sdk-agent-1", host_name="db1", host_ip="10.0.0.7", host_os="Linux 6.1",
                        host_nickname="the database", agent_version="0.1.0", agent_type="native")
    agent = c.register_agent(RegisterAgentRequest(body=AgentRegisterReq(agent=reg))).agent
    assert (agent.agent_id, agent.host_name, agent.status) == ("sdk-agent-1", "db1", "offline")  # not enrolled
    listed = c.list_agent(ListAgentRequest(limit="10", offset=0, agent_id=["sdk-agent-1"]))
    assert listed.count == 1 and listed.agents[0].host_nickname == "the database" and listed.limit == 10
    assert c.list_agent(ListAgentRequest(status="online")).count == 0
    assert c.show_agent(ShowAgentRequest(agent_id="sdk-agent-1")).agent.host_ip == "10.0.0.7"
    added = c.add_agent_path(AddAgentPathRequest(agent_id="sdk-agent-1", body=AgentAddPathReq(
        add_path=["/srv/db/", "/etc"], exclude_path=[ExcludePath(path_name="/srv/db",
                                                                 exclude_path_name=["/srv/db/tmp"])])))
    assert (added.added, added.existed) == (["/srv/db", "/etc"], [])
    again = c.add_agent_path(AddAgentPathRequest(agent_id="sdk-agent-1", body=AgentAddPathReq(add_path=["/etc"])))
    assert (again.added, again.existed) == ([], ["/etc"])
    paths = c.show_agent(ShowAgentRequest(agent_id="sdk-agent-1")).agent.paths
    assert {(p.dir_path, p.status, p.exclude_paths) for p in paths} == {("/srv/db", "available", "/srv/db/tmp"),
                                                                       ("/etc", "available", "")}
    shown = {p["dir_path"]: p for p in api(server, tenants[0]).get("/agents/sdk-agent-1")["agent"]["paths"]}
    assert shown["/etc"]["file_system_status"] == "error" and "not enrolled" in shown["/etc"]["file_system_status_reason"]
    fs = api(server, tenants[0]).get("/protectables/OS::Sfs::Turbo/instances")["instances"]
    etc = next(i for i in fs if i["detail"]["path"] == "/etc")
    assert etc["protectable"]["result"] is False and "not enrolled" in etc["protectable"]["reason"]
    checked = c.check_agent(CheckAgentRequest(body=ProtectableAgentReq(agent_status=[
        ProtectableAgentStatusResource(resource_id=etc["id"], resource_type="OS::Sfs::Turbo")]))).agent_status
    # (registered as 0.1.0: older than this service's agent, 0.2.0 and on)
    assert (checked[0].installed, checked[0].version, checked[0].is_old, checked[0].code) == (False, "0.1.0", True, 3)
    removed = c.remove_agent_path(RemoveAgentPathRequest(agent_id="sdk-agent-1", body=AgentRemovePathReq(
        remove_path=["/etc", "/nope"])))
    assert (removed.removed, removed.not_existed) == (["/etc"], ["/nope"])
    updated = c.update_agent(UpdateAgentRequest(agent_id="sdk-agent-1", body=AgentUpdateReq(
        agent=AgentUpdate(status="uninstall")))).agent
    assert updated.status == "uninstalled"
    c.unregister_agent(UnregisterAgentRequest(agent_id="sdk-agent-1"))
    with pytest.raises(ClientRequestException) as e:
        c.show_agent(ShowAgentRequest(agent_id="sdk-agent-1"))
    assert e.value.status_code == 404


def test_bad_input_is_a_400(server, tenants):
    c = sdk(server, tenants[0])
    for reg in (AgentRegister(agent_id="bad id!", host_name="h", host_ip="10.0.0.1", host_os="L"),
                AgentRegister(agent_id="ok", host_name="h" * 300, host_ip="10.0.0.1", host_os="L"),
                AgentRegister(agent_id="ok", host_name="h", host_ip="not-an-ip", host_os="L")):
        with pytest.raises(ClientRequestException) as e:
            c.register_agent(RegisterAgentRequest(body=AgentRegisterReq(agent=reg)))
        assert e.value.status_code == 400 and e.value.error_code.startswith("BackupService.")
    a = api(server, tenants[0])
    a.post("/agents", {"agent": {"agent_id": "bounds", "host_name": "h", "host_ip": "10.0.0.1", "host_os": "L"}})
    for body in ({"add_path": ["relative/dir"]}, {"add_path": ["/x"] * 65}, {"add_path": ["/" + "a" * 5000]},
                 {"add_path": ["/x"], "exclude_path": [{"path_name": "/x", "exclude_path_name": ["/elsewhere"]}]}):
        r = signed(a, "POST", "/agents/bounds/add-path", body=body)
        assert r.status_code == 400, (body, r.text)
    assert signed(a, "GET", "/agents", params={"limit": "x"}).status_code == 400
    # digits to str.isdigit that int() refuses: a 500 (BackupService.9999) before
    for limit in ("\u00b2", "\u0661"):
        with pytest.raises(ClientRequestException) as e:
            c.list_agent(ListAgentRequest(limit=limit))
        assert e.value.status_code == 400 and e.value.error_code == "BackupService.6001", e.value.error_msg
    assert signed(a, "GET", "/agents", params={"status": "sleeping"}).status_code == 400
    # an update that changes nothing, a check of nothing or of no known type: said, not answered "ready"
    for call in (lambda: c.update_agent(UpdateAgentRequest(agent_id="bounds", body=AgentUpdateReq(agent=AgentUpdate()))),
                 lambda: c.check_agent(CheckAgentRequest(body=ProtectableAgentReq(agent_status=[]))),
                 lambda: c.check_agent(CheckAgentRequest(body=ProtectableAgentReq(agent_status=[
                     ProtectableAgentStatusResource(resource_id="x", resource_type="OS::Bogus")])))):
        with pytest.raises(ClientRequestException) as e:
            call()
        assert e.value.status_code == 400 and e.value.error_code.startswith("BackupService."), e.value.error_msg


def test_enrol_with_a_token(server, tenants):
    a = api(server, tenants[0])
    out = a.post("/agents/tokens")
    token = out["token"]
    assert token.startswith(f"ocbr1.{tenants[0].project_id}.") and out["expires_at"]
    assert "--token " + token in out["install_command"]["register"]
    r = enrol(server, token, "enrolled-1")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert hmac.compare_digest(answer["proof"], _proof(token.split(".")[3], answer))
    ca_digest = certs.fingerprint(answer["ca_certificate"]).split(":")[1]
    assert ca_digest == token.split(".")[4]  # the agent pins the CA the token named
    assert certs.common_name(answer["certificate"]) == "enrolled-1"
    assert answer["agent"]["enrolled"] is True and answer["agent"]["endpoint"] == "127.0.0.1:7443"
    assert a.get("/agents/enrolled-1")["agent"]["status"] == "offline"  # until the poll hears from it
    reused = enrol(server, token, "enrolled-2")
    assert reused.status_code == 401 and "already used" in reused.json()["error_msg"]
    forged = enrol(server, a.post("/agents/tokens")["token"], "enrolled-3", tamper={"endpoint": "10.6.6.6:7443"})
    assert forged.status_code == 401 and forged.json()["error_code"] == "APIGW.0310"
    garbage = httpx.post(f"{server.url}/v3/{tenants[0].project_id}/agents/enrol", content=b"{", timeout=10,
                         trust_env=False)
    assert garbage.status_code == 400
    deep = httpx.post(f"{server.url}/v3/{tenants[0].project_id}/agents/enrol", content=b'{"a":' * 5000 + b"1" +
                      b"}" * 5000, timeout=10, trust_env=False)  # (json.loads: RecursionError, a 500 before)
    assert deep.status_code == 400 and deep.json()["error_code"].startswith("BackupService."), deep.text


def test_register_with_a_csr_answers_certificates(server, tenants):
    """The AK/SK way: register_agent with the extension fields csr and endpoint."""
    key, csr = certs.new_key_and_csr("aksk-agent")
    out = api(server, tenants[0]).post("/agents", {
        "agent": {"agent_id": "aksk-agent", "host_name": "h", "host_ip": "10.0.0.9", "host_os": "Linux"},
        "csr": csr, "endpoint": "0.0.0.0:7443"})["agent"]
    assert certs.common_name(out["certificate"]) == "aksk-agent" and "BEGIN CERTIFICATE" in out["ca_certificate"]
    assert out["endpoint"] == "127.0.0.1:7443"  # an unspecified host is where the agent called from


def test_tenant_isolation(server, tenants):
    a, b = api(server, tenants[0]), api(server, tenants[1])
    a.post("/agents", {"agent": {"agent_id": "iso-agent", "host_name": "h", "host_ip": "10.0.0.1", "host_os": "L"}})
    assert b.get("/agents")["count"] == 0 and b.get("/agents", agent_id="iso-agent")["count"] == 0
    for method, path, body in (("GET", "/agents/iso-agent", None), ("PUT", "/agents/iso-agent",
                                                                     {"agent": {"status": "uninstall"}}),
                               ("DELETE", "/agents/iso-agent", None),
                               ("POST", "/agents/iso-agent/add-path", {"add_path": ["/etc"]}),
                               ("POST", "/agents/iso-agent/remove-path", {"remove_path": ["/etc"]})):
        r = signed(b, method, path, body=body)
        assert r.status_code == 404, (method, path, r.text)
    # B cannot take A's agent id either way, nor enrol with A's token into its own project
    with pytest.raises(ClientError) as e:
        b.post("/agents", {"agent": {"agent_id": "iso-agent", "host_name": "h", "host_ip": "10.0.0.1", "host_os": "L"}})
    assert e.value.status == 409
    token = a.post("/agents/tokens")["token"]
    parts = token.split(".")
    parts[1] = tenants[1].project_id
    assert enrol(server, ".".join(parts), "iso-thief").status_code == 401
    assert a.get("/agents/iso-agent")["agent"]["status"] == "offline"


def test_inventory_names_the_agent_of_a_file_system(server, tenants):
    """GET /inventory/file-systems/{id} of an agent's path names its agent (``agent_id``; null once the
    agent is unregistered): the CLI's hint for restoring such a backup needs ``--agent`` with it, or the new
    directory is made on the service's machine."""
    a = api(server, tenants[0])
    a.post("/agents", {"agent": {"agent_id": "inv-agent", "host_name": "inv1", "host_ip": "10.0.0.9",
                                 "host_os": "Linux"}})
    a.post("/agents/inv-agent/add-path", {"add_path": ["/srv/inv"]})
    fs = next(r for r in a.get("/inventory/file-systems")["resources"] if r["path"] == "/srv/inv")
    assert a.get(f"/inventory/file-systems/{fs['id']}")["resource"]["agent_id"] == "inv-agent"
    a.delete("/agents/inv-agent")
    shown = a.get(f"/inventory/file-systems/{fs['id']}")["resource"]
    assert "agent_id" in shown and shown["agent_id"] is None and "unregistered" in shown["status_reason"]
