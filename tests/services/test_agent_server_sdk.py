"""A server backup of an agent's host through the official SDK: the host's disks (two loop devices the
test attaches, the only devices the agent may touch) are its server's disks; a server vault holds the
server, ``create_checkpoint`` backs all its disks up at one point in time, ``restore_backup`` writes
them back through the agent; each disk compared by SHA-256."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time

import pytest
from huaweicloudsdkcbr.v1 import BackupRestore, BackupRestoreReq, RestoreBackupRequest

from tests.services.test_agent_backup_sdk import Agent, _checkpoint, _last_task, _make_disk, _vault
from tests.support.clients import api, sdk, sdk_wait_backups, task_ok
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None,
                                reason="attaching loop devices needs root and losetup")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-server"))
    srv = ServerProcess(d, sqlite_url(d), extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def loops(tmp_path):
    """Two loop devices over image files of 8 and 12 MiB (detached afterwards)."""
    made = []
    try:
        for i, mib in enumerate((8, 12)):
            image = tmp_path / f"disk{i}.raw.backing"
            _make_disk(image, mib, seed=20 + i)
            dev = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True)
            made.append(dev.stdout.strip())
        yield made
    finally:
        for dev in made:
            subprocess.run(["losetup", "-d", dev], check=False)


def _sha(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _server_of(client, disks: list[str], timeout: float = 30) -> dict:
    """The agent host's server, once its inventory shows exactly ``disks`` attached."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i in client.get("/protectables/OS::Nova::Server/instances")["instances"]:
            shown = client.get(f"/inventory/servers/{i['id']}")["resource"]
            if sorted(d["path"] for d in shown.get("disks") or []) == sorted(disks) and i["protectable"]["result"]:
                return i
        time.sleep(0.3)
    raise AssertionError(f"no server with disks {disks}: {client.get('/protectables/OS::Nova::Server/instances')}")


def test_server_backup_of_an_agent_host_through_the_sdk(server, tmp_path, loops):
    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    args = [x for dev in loops for x in ("--device", dev)]
    agent = Agent(server, tmp_path / "agent", root, *args)
    try:
        host = _server_of(client, loops)
        vault = _vault(c, "agent-server", "server", host, "OS::Nova::Server")
        backup = sdk_wait_backups(c, [_checkpoint(c, client, vault.id)])[0]
        want = {dev: _sha(dev) for dev in loops}
        shown = client.get(f"/backups/{backup.id}")["backup"]
        assert shown["resource_type"] == "OS::Nova::Server" and shown["status"] == "available"
        kids = client.get("/backups", parent_id=backup.id)["backups"]
        assert len(kids) == 2, kids
        for dev in loops:  # damage both disks: the restore puts the backup's bytes back
            with open(dev, "r+b") as f:
                f.seek(1 << 20)
                f.write(os.urandom(2 << 20))
                f.flush()
                os.fsync(f.fileno())
        assert all(_sha(dev) != want[dev] for dev in loops)
        c.restore_backup(RestoreBackupRequest(backup_id=backup.id, body=BackupRestoreReq(
            restore=BackupRestore(server_id=host["id"], power_on=True))))
        task_ok(client, _last_task(client, "restore", vault.id)["id"])
        assert {dev: _sha(dev) for dev in loops} == want
    finally:
        agent.stop()
