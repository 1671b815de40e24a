"""Servers made from an image on an agent's host, with a real agent process: the agent creates and writes
the disk files (bit-exact), the server is registered as the agent's, and the agent's heartbeats keep it
as it is; a creation that fails on the second disk leaves nothing on the host; an offline or unknown
agent is refused before anything is queued."""

from __future__ import annotations

import time

import pytest

from opencbr.cli.client import ClientError
from tests.services.test_agent_backup_sdk import Agent, _protectable, server  # noqa: F401 - the module's server
from tests.support.clients import api, task_ok, wait_task
from tests.support.disks import MiB, make_image, sha256


def _image(client, tmp_path) -> tuple[dict, list[str]]:
    """An image of a local server backup (system 2 MiB, data 1 MiB), with the source hashes."""
    sys_img = make_image(tmp_path / "sys.img", 2 * MiB, seed=101)
    data_img = make_image(tmp_path / "data.img", MiB, seed=102)
    sd = client.post("/inventory/disks", {"name": "ah-sys", "path": sys_img})["disk"]
    dd = client.post("/inventory/disks", {"name": "ah-data", "path": data_img})["disk"]
    srv = client.post("/inventory/servers", {"name": "ah-srv", "system_disk": sd["id"], "data_disks": [dd["id"]],
                                             "status": "stopped"})["server"]
    vault = client.post("/vaults", {"vault": {"name": "ah-vault", "billing": {
        "object_type": "server", "protect_type": "backup", "size": 10, "consistent_level": "crash_consistent"},
        "resources": [{"id": srv["id"], "type": "OS::Nova::Server"}]}})["vault"]
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    backup = client.get("/backups", checkpoint_id=cp["id"])["backups"][0]
    task_ok(client, client.get(f"/backups/{backup['id']}")["backup"]["task_id"])
    image = client.post("/images", {"image": {"backup_id": backup["id"], "name": "agent-host-image"}})["image"]
    return image, [sha256(sys_img), sha256(data_img)]


def test_a_server_from_an_image_on_an_agent_host(server, tmp_path):  # noqa: F811
    client = api(server)
    image, hashes = _image(client, tmp_path)
    root = tmp_path / "host"
    (root / "vms").mkdir(parents=True)
    make_image(root / "marker.img", MiB, seed=103)
    with pytest.raises(ClientError) as e:
        client.post(f"/images/{image['id']}/servers", {"server": {"name": "nowhere", "agent_id": "no-such-agent",
                                                                   "directory": str(root / "vms")}})
    assert e.value.status == 404
    agent = Agent(server, tmp_path / "agent", root)
    try:
        _protectable(client, "OS::Cinder::Volume", str(root / "marker.img"))  # the agent is online
        out = client.post(f"/images/{image['id']}/servers", {"server": {
            "name": "on-host", "agent_id": agent.agent_id, "directory": str(root / "vms")}})
        task_ok(client, out["operation_log_id"])
        files = [root / "vms" / "on-host-1.img", root / "vms" / "on-host-2.img"]
        assert [sha256(f) for f in files] == hashes
        time.sleep(2.5)  # heartbeats (every second here) find the files and leave the server as it is
        got = client.get(f"/inventory/servers/{out['server_id']}")["resource"]
        assert got["status"] == "stopped" and [d["id"] for d in got["disks"]] == out["disk_ids"]
        assert all(client.get(f"/inventory/disks/{d}")["resource"]["status"] == "in-use" for d in out["disk_ids"])

        # the second disk's path is outside the agent's roots: the agent refuses it, and the first disk
        # it had already written is removed from the host again; no server, no disk rows
        bad = client.post(f"/images/{image['id']}/servers", {"server": {
            "name": "half", "agent_id": agent.agent_id,
            "paths": [str(root / "vms" / "half-1.img"), str(tmp_path / "outside.img")]}})
        log = wait_task(client, bad["operation_log_id"])
        assert log["status"] == "failed", log
        assert not (root / "vms" / "half-1.img").exists() and not (tmp_path / "outside.img").exists()
        for d in bad["disk_ids"]:
            assert d not in [r["id"] for r in client.get("/inventory/disks")["resources"]]
        servers = [r["name"] for r in client.get("/inventory/servers")["resources"]]
        assert "half" not in servers and "on-host" in servers
    finally:
        agent.stop()
