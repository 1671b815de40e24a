"""Setting ``agent_project_bandwidth``: two agents of one project backing up at the same time, driven by
the server's two worker processes, move together no more than the project's limit (each task's share is
recomputed from the catalog while it runs)."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from huaweicloudsdkcbr.v1 import CreateCheckpointRequest, VaultBackup, VaultBackupReq

from tests.services.test_agent_backup_sdk import Agent, _protectable, _vault
from tests.support.clients import api, sdk, task_ok
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess

LIMIT = 1_000_000  # bytes per second, the whole project
MIB_EACH = 5  # random (incompressible) data per agent: 10 s for both at the limit, 5 s if each took all of it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-bw"))
    srv = ServerProcess(d, sqlite_url(d), workers=2, extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1",
                                                                 "OPENCBR_AGENT_PROJECT_BANDWIDTH": str(LIMIT)}).start()
    yield srv
    srv.stop()


def _when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_two_agents_of_one_project_share_its_limit(server, tmp_path):
    c, client = sdk(server), api(server)
    agents, vaults = [], []
    try:
        for i in range(2):
            root = tmp_path / f"host{i}"
            root.mkdir()
            (root / "data.img").write_bytes(os.urandom(MIB_EACH << 20))
            agents.append(Agent(server, tmp_path / f"agent{i}", root))
            disk = _protectable(client, "OS::Cinder::Volume", str(root / "data.img"))
            vaults.append(_vault(c, f"bw-{i}", "disk", disk, "OS::Cinder::Volume"))
        checkpoints = [c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(
            checkpoint=VaultBackup(vault_id=v.id)))).checkpoint.id for v in vaults]
        backups = [client.get("/backups", checkpoint_id=cp)["backups"][0] for cp in checkpoints]
        tasks = [task_ok(client, b["task_id"], timeout=180) for b in backups]
        added = sum(client.get(f"/backups/{b['id']}")["backup"]["added_bytes"] for b in backups)
        starts = [_when(t["started_at"]) for t in tasks]
        ends = [_when(t["ended_at"]) for t in tasks]
        span = max(ends) - min(starts)
        overlap = min(ends) - max(starts)
        assert added >= 2 * (MIB_EACH << 20) * 0.99  # the data did cross
        assert overlap > 0.5 * span, (starts, ends)  # they ran at the same time, on the two workers
        # together at most the limit (allowing each channel's one-second burst and the sockets' buffers);
        # the operation log's times are whole seconds, so the span may be a second longer than they say
        # (8.0 s read for ~8.7 s once: 1.31 MB/s). Both at 1 MB/s each, unshared, would be ~5 s: still refused.
        assert added / (span + 1) <= 1.3 * LIMIT, (added, span, added / (span + 1))
    finally:
        for a in agents:
            a.stop()
