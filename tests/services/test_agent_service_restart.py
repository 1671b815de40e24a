"""The service restarted mid-transfer of an agent's backup (an orderly restart, SIGTERM; and a crash,
SIGKILL of every process): the service reaches the agent again (it is online, its task runs again or
fails), no backup is ever ``available`` with part of its data (one that becomes available restores to the
disk's exact bytes), and the next backup sends only what the vault lacks."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from huaweicloudsdkcbr.v1 import CreateCheckpointRequest, VaultBackup, VaultBackupReq

from opencbr.catalog.models import Backup
from opencbr.services.context import open_context
from tests.services.test_agent_backup_sdk import Agent, _protectable, _vault
from tests.support.clients import api, sdk, task_ok, wait_running
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess

MIB = 16
LIMIT = 2_000_000  # the agent's bytes per second: the backup takes about 8 s, long enough to cut


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-restart"))
    srv = ServerProcess(d, sqlite_url(d), extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1",
                                                     "OPENCBR_TASK_LEASE_SECONDS": "4"}).start()
    yield srv
    srv.stop()


def _backup(c, client, vault_id: str) -> dict:
    cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
        vault_id=vault_id)))).checkpoint
    return client.get("/backups", checkpoint_id=cp.id)["backups"][0]


def _task_end(client, task_id: str, backup_id: str, timeout: float = 120) -> dict:
    """The task's end; a backup seen ``available`` before it must end in success (its data is checked
    whole afterwards), and stays available."""
    deadline, seen_available = time.time() + timeout, False
    while time.time() < deadline:
        status = client.get(f"/backups/{backup_id}")["backup"]["status"]
        task = client.get(f"/operation-logs/{task_id}")["operation_log"]
        assert not (seen_available and status != "available"), (status, task)
        seen_available = seen_available or status == "available"
        if task["status"] in ("success", "failed", "timeout", "skipped"):
            assert task["status"] == "success" or not seen_available, task
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not end")


def _wire(server, backup_id: str) -> int:
    ctx = open_context(server.settings)
    try:
        with ctx.read() as s:
            return int(s.get(Backup, backup_id).details["stats"]["task_wire_bytes"])
    finally:
        ctx.close()


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_service_restarted_mid_transfer(server, tmp_path, how):
    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    (root / "data.img").write_bytes(os.urandom(MIB << 20))
    want = hashlib.sha256((root / "data.img").read_bytes()).hexdigest()
    agent = Agent(server, tmp_path / "agent", root)
    try:
        disk = _protectable(client, "OS::Cinder::Volume", str(root / "data.img"))
        vault = _vault(c, f"restart-{how}", "disk", disk, "OS::Cinder::Volume")
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": LIMIT}})
        first = _backup(c, client, vault.id)
        wait_running(client, first["task_id"], min_progress=5)
        if how == "restart":
            server.stop()
        else:
            server.kill()
        server.start()
        # the cut is made: the run after the restart need not crawl (a task takes the agent's limit when it
        # starts; one started before this still passes, only slower)
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 0}})
        task = _task_end(client, first["task_id"], first["id"])
        status = client.get(f"/backups/{first['id']}")["backup"]["status"]
        assert (task["status"] == "success") == (status == "available"), (task, status)
        assert client.get(f"/agents/{agent.agent_id}")["agent"]["status"] == "online"  # reached again
        if status == "available":  # resumed: the whole disk, exactly
            out = client.post(f"/backups/{first['id']}/create-disk", {"name": "check", "agent_id": agent.agent_id,
                                                                      "path": str(root / "check.img")})
            task_ok(client, out["operation_log_id"])
            assert hashlib.sha256((root / "check.img").read_bytes()).hexdigest() == want
            (root / "check.img").unlink()
        # the next backup: nothing the vault holds is sent again
        second = _backup(c, client, vault.id)
        task_ok(client, second["task_id"])
        done = client.get(f"/backups/{second['id']}")["backup"]
        assert done["status"] == "available"
        if status == "available":
            assert done["added_bytes"] == 0 and _wire(server, second["id"]) < 1 << 20
        else:
            assert done["added_bytes"] <= (MIB << 20) * 1.01
            assert _wire(server, second["id"]) < (MIB << 20) * 1.05 + (1 << 20)
    finally:
        agent.stop()
