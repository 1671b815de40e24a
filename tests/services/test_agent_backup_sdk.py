"""Agents' resources end to end through the official SDK, with a real agent: ``opencbr-agent register``
with a token against a running server, ``opencbr-agent run`` in its own process, its image file and a
directory (add_agent_path) found by the heartbeat; then vaults, backups (read on the agent's host, only
what the vault lacks sent), restores onto the original disk and into a new directory on that host, and
restore-files there, compared by SHA-256 and file by file. An offline agent's backup fails at once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huaweicloudsdkcbr.v1 import (
    AddAgentPathRequest,
    AgentAddPathReq,
    BackupRestore,
    BackupRestoreReq,
    BillingCreate,
    CreateCheckpointRequest,
    CreateVaultRequest,
    ResourceCreate,
    RestoreBackupRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.catalog.models import Resource
from opencbr.cli.client import ClientError
from opencbr.domain import resource as R
from opencbr.services.context import open_context
from tests.support.clients import api, sdk, sdk_wait_backups, task_ok, wait_task
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess, free_port
from tests.support.trees import build_tree, snapshot

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-sdk"))
    srv = ServerProcess(d, sqlite_url(d), extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    yield srv
    srv.stop()


def _agent_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "opencbr.agent", "--config", str(config), *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost"}


class Agent:
    """An enrolled agent (token) running as its own process, rooted at ``root``."""

    def __init__(self, server, tmp: Path, root: Path, *register_args: str):
        client = api(server)
        token = client.post("/agents/tokens")["token"]
        self.config = tmp / "etc" / "agent.json"
        port = free_port()
        done = subprocess.run(_agent_cmd(self.config, "register", "--endpoint", server.url, "--token", token,
                                         "--listen", f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{port}",
                                         "--root", str(root), "--state-dir", str(tmp / "state"), *register_args),
                              capture_output=True, text=True, env=_env(), timeout=60)
        assert done.returncode == 0, done.stderr
        self.agent_id = json.loads(self.config.read_text())["agent_id"]
        self.log = open(tmp / "agent.log", "ab")  # noqa: SIM115
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(_agent_cmd(self.config, "run"), stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=_env())
        assert self.proc.stdout.readline().startswith("listening on")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _make_disk(path: Path, mib: int, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(mib << 20)
        for off in range(0, mib << 20, 1 << 20):
            if rnd.random() < 0.6:
                f.seek(off)
                f.write(rnd.randbytes(256 << 10) + b"log line\n" * 20000)


def _protectable(client, rtype: str, path: str, timeout: float = 90) -> dict:
    # (90 s: a new agent's inventory reaches the catalog in a few seconds alone, but the whole suite on
    # two loaded cores once took over 30 s)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i in client.get(f"/protectables/{rtype}/instances")["instances"]:
            if i["detail"]["path"] == path and i["protectable"]["result"]:
                return i
        time.sleep(0.3)
    raise AssertionError(f"{path} never became protectable: {client.get(f'/protectables/{rtype}/instances')}")


def _vault(c, name: str, object_type: str, resource: dict, rtype: str):
    billing = BillingCreate(consistent_level="crash_consistent", object_type=object_type, protect_type="backup",
                            size=10)
    return c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=name, billing=billing, resources=[ResourceCreate(id=resource["id"], type=rtype)])))).vault


def _checkpoint(c, client, vault_id: str) -> str:
    cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
        vault_id=vault_id)))).checkpoint
    return client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]


def _last_task(client, operation_type: str, vault_id: str) -> dict:
    return client.get("/operation-logs", operation_type=operation_type, vault_id=vault_id)["operation_logs"][0]


def test_agent_disk_and_directory_through_the_sdk(server, tmp_path):
    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    _make_disk(root / "data.img", 24, seed=1)
    www = Path(build_tree(root / "www", seed=3))
    agent = Agent(server, tmp_path / "agent", root)
    try:
        c.add_agent_path(AddAgentPathRequest(agent_id=agent.agent_id, body=AgentAddPathReq(add_path=[str(www)])))
        disk = _protectable(client, "OS::Cinder::Volume", str(root / "data.img"))
        fs = _protectable(client, "OS::Sfs::Turbo", str(www))

        # a disk: full, then an incremental that sends only what changed; restore over the original
        dv = _vault(c, "agent-disk", "disk", disk, "OS::Cinder::Volume")
        b1 = sdk_wait_backups(c, [_checkpoint(c, client, dv.id)])[0]
        raw1 = client.get(f"/backups/{b1.id}")["backup"]
        assert raw1["added_bytes"] > 0 and raw1["consistency"]["method"] in ("live", "lvm-snapshot")
        want = _sha(root / "data.img")
        with open(root / "data.img", "r+b") as f:
            f.seek(3 << 20)
            f.write(os.urandom(128 << 10))
        b2 = sdk_wait_backups(c, [_checkpoint(c, client, dv.id)])[0]
        raw2 = client.get(f"/backups/{b2.id}")["backup"]
        assert raw2["incremental"] and 0 < raw2["added_bytes"] < 300 << 10
        changed = _sha(root / "data.img")
        with open(root / "data.img", "r+b") as f:  # damage it: the restore of b1 puts b1 back
            f.write(os.urandom(1 << 20))
        c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
            restore=BackupRestore(volume_id=disk["id"]))))
        task_ok(client, _last_task(client, "restore", dv.id)["id"])
        assert _sha(root / "data.img") == want
        c.restore_backup(RestoreBackupRequest(backup_id=b2.id, body=BackupRestoreReq(
            restore=BackupRestore(volume_id=disk["id"]))))
        task_ok(client, _last_task(client, "restore", dv.id)["id"])
        assert _sha(root / "data.img") == changed

        # a directory: backup, restore into a new directory on the host, single files beside it
        before = snapshot(www)
        fv = _vault(c, "agent-fs", "turbo", fs, "OS::Sfs::Turbo")
        t1 = sdk_wait_backups(c, [_checkpoint(c, client, fv.id)])[0]
        new_dir = root / "restored"
        c.add_agent_path(AddAgentPathRequest(agent_id=agent.agent_id, body=AgentAddPathReq(add_path=[str(new_dir)])))
        new_fs = _protectable(client, "OS::Sfs::Turbo", str(new_dir))
        c.restore_backup(RestoreBackupRequest(backup_id=t1.id, body=BackupRestoreReq(
            restore=BackupRestore(resource_id=new_fs["id"]))))
        task_ok(client, _last_task(client, "restore", fv.id)["id"])
        assert snapshot(new_dir) == before
        out = client.post(f"/backups/{t1.id}/restore-files", {"paths": ["/docs"],
                                                               "destination_path": str(root / "picked")})
        task_ok(client, out.get("task_id") or _last_task(client, "restore_files", fv.id)["id"])
        assert snapshot(root / "picked" / "docs") == {k[len("docs/"):]: v for k, v in before.items()
                                                       if k.startswith("docs/")}

        # every data connection the workers opened was sealed once authenticated (agentlink/seal.py)
        logged = (tmp_path / "agent" / "agent.log").read_text()
        assert logged.count(": sealed (") >= 7, logged[-3000:]  # 2 + 2 disk tasks, 3 directory tasks

        # the agent gone: a backup fails with that reason, nothing is published
        agent.kill()
        time.sleep(3.5)  # missed polls
        bid = None
        try:
            bid = _checkpoint(c, client, dv.id)
        except ClientRequestException as e:  # refused at once: the heartbeat marked its resources
            assert e.status_code == 409 and "error" in e.error_msg
        if bid is not None:
            task = wait_task(client, client.get(f"/backups/{bid}")["backup"]["task_id"])
            assert task["status"] == "failed" and "agent" in task["error_info"]["message"], task

        # unregistered: its backups' files can go onto another host, and a restore-files without one says so
        # at once (it queued a task that failed on "was unregistered", naming no way out)
        client.delete(f"/agents/{agent.agent_id}")
        with pytest.raises(ClientError) as e:
            client.post(f"/backups/{t1.id}/restore-files", {"paths": ["/docs"], "destination_path": str(root / "x")})
        assert e.value.status == 409 and "was unregistered" in str(e.value) and "--agent" in str(e.value), e.value
    finally:
        agent.stop()


def test_an_agent_killed_mid_restore_leaves_the_disk_in_error_and_the_next_restore_repairs_it(server, tmp_path):
    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    _make_disk(root / "big.img", 32, seed=5)
    agent = Agent(server, tmp_path / "agent", root)
    try:
        disk = _protectable(client, "OS::Cinder::Volume", str(root / "big.img"))
        vault = _vault(c, "agent-restore-fault", "disk", disk, "OS::Cinder::Volume")
        b1 = sdk_wait_backups(c, [_checkpoint(c, client, vault.id)])[0]
        want = _sha(root / "big.img")
        with open(root / "big.img", "wb") as f:  # every block differs: the restore rewrites them all
            f.write(os.urandom(32 << 20))
        # 0.5 MB/s for this agent (its row's bandwidth_limit): the restore takes long enough to cut it
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 500_000}})
        c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
            restore=BackupRestore(volume_id=disk["id"]))))
        task = _last_task(client, "restore", vault.id)
        started = time.time()
        time.sleep(2.5)
        agent.kill()
        done = wait_task(client, task["id"], timeout=60)
        assert done["status"] == "failed" and "agent" in done["error_info"]["message"], done
        assert time.time() - started < 30  # failed at once, not after a long timeout
        assert _sha(root / "big.img") != want
        ctx = open_context(server.settings)
        try:
            with ctx.read() as s:
                row = s.get(Resource, disk["id"])  # (a heartbeat saying "offline" keeps this reason)
                assert row.status == "error" and R.UNFINISHED_RESTORE in row.status_reason, row.status_reason
        finally:
            ctx.close()
        row = client.get("/backups", resource_id=disk["id"])  # the backup is usable again
        assert all(b["status"] == "available" for b in row["backups"])
        # the agent back (and no limit): the next restore repairs the disk
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 0}})
        agent.start()  # (returns once it listens)
        deadline = time.time() + 30  # and the service knows it is back, as a user would wait to see
        while client.get(f"/agents/{agent.agent_id}")["agent"]["status"] != "online":
            assert time.time() < deadline, client.get(f"/agents/{agent.agent_id}")
            time.sleep(0.2)
        c.restore_backup(RestoreBackupRequest(backup_id=b1.id, body=BackupRestoreReq(
            restore=BackupRestore(volume_id=disk["id"]))))
        task_ok(client, _last_task(client, "restore", vault.id)["id"])
        assert _sha(root / "big.img") == want
    finally:
        agent.stop()


def test_an_agent_unregistered_mid_backup_makes_no_backup(server, tmp_path):
    """Unregistering revokes at once, even when the agent cannot hear it (paused here, as a host under
    load or behind a cut link would be): the worker asks the catalog while it moves the data, ends the
    task with the reason within seconds, and nothing of it becomes a backup. (It went on, and was
    published available 16 s after the unregister was answered.)"""
    import signal

    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    (root / "big.img").write_bytes(os.urandom(24 << 20))  # (incompressible: 24 MB to send at 0.5 MB/s)
    agent = Agent(server, tmp_path / "agent", root)
    try:
        disk = _protectable(client, "OS::Cinder::Volume", str(root / "big.img"))
        vault = _vault(c, "agent-revoked", "disk", disk, "OS::Cinder::Volume")
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 500_000}})
        backup_id = _checkpoint(c, client, vault.id)
        task = _last_task(client, "backup", vault.id)
        deadline = time.time() + 30
        while client.get(f"/operation-logs/{task['id']}")["operation_log"]["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(2)  # data on its way
        agent.proc.send_signal(signal.SIGSTOP)  # it cannot hear the revocation
        try:
            client.delete(f"/agents/{agent.agent_id}")
            unregistered = time.time()
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        done = wait_task(client, task["id"], timeout=60)
        assert time.time() - unregistered < 20, "the task went on after its agent was revoked"
        assert done["status"] == "failed" and "unregistered" in done["error_info"]["message"], done
        assert client.get(f"/backups/{backup_id}")["backup"]["status"] == "error"
        assert not [b for b in client.get("/backups", vault_id=vault.id)["backups"] if b["status"] == "available"]
    finally:
        agent.stop()


def test_three_agents_back_up_at_once_on_two_workers(server, tmp_path):
    c, client = sdk(server), api(server)
    agents, disks, vaults = [], [], []
    try:
        for i in range(3):
            root = tmp_path / f"host{i}"
            root.mkdir()
            _make_disk(root / f"d{i}.img", 24, seed=20 + i)
            agents.append(Agent(server, tmp_path / f"agent{i}", root))
            disks.append(_protectable(client, "OS::Cinder::Volume", str(root / f"d{i}.img")))
            vaults.append(_vault(c, f"three-{i}", "disk", disks[-1], "OS::Cinder::Volume"))
        ids = [_checkpoint(c, client, v.id) for v in vaults]  # queued together: 2 workers serve 3 agents
        backups = sdk_wait_backups(c, ids, timeout=180)
        assert all(b.status == "available" for b in backups)
        task_ids = [client.get(f"/backups/{b.id}")["backup"]["task_id"] for b in backups]
        for t in task_ids:  # (a backup is published before its task is closed)
            task_ok(client, t)
        _two_worker_processes_ran_them(server, task_ids)
        for i, (b, d) in enumerate(zip(backups, disks, strict=True)):
            want = _sha(tmp_path / f"host{i}" / f"d{i}.img")
            with open(tmp_path / f"host{i}" / f"d{i}.img", "r+b") as f:
                f.write(os.urandom(1 << 20))
            c.restore_backup(RestoreBackupRequest(backup_id=b.id, body=BackupRestoreReq(
                restore=BackupRestore(volume_id=d["id"]))))
            task_ok(client, _last_task(client, "restore", vaults[i].id)["id"])
            assert _sha(tmp_path / f"host{i}" / f"d{i}.img") == want
    finally:
        for a in agents:
            a.stop()


def _two_worker_processes_ran_them(server, task_ids: list[str]) -> None:
    """Issue 14 item 8: the server's two worker processes (one task at a time each: the per-worker bound)
    ran the agents' tasks, any worker any agent's: never more than two at once, and not all on one."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from opencbr.catalog.models import Task

    engine = create_engine(server.catalog_url)
    try:
        with Session(engine) as s:
            rows = list(s.scalars(select(Task).where(Task.id.in_(task_ids))))
    finally:
        engine.dispose()
    assert len(rows) == 3 and all(r.started_at and r.ended_at for r in rows)
    for r in rows:  # at any task's start, at most two were running (itself included)
        running = [o for o in rows if o.started_at <= r.started_at < o.ended_at]
        assert len(running) <= 2, [(o.lease_owner, o.started_at, o.ended_at) for o in rows]
    processes = {r.lease_owner.rsplit(":", 1)[0] for r in rows}  # <host>:<pid>:<random>:<thread>
    assert len(processes) == 2, [r.lease_owner for r in rows]


def test_an_agent_killed_mid_new_file_system_then_restoring_again_to_the_same_path_repairs_it(server, tmp_path):
    """A new file system from a backup onto the agent's host (guide 6.5) whose agent is killed half-way:
    the task fails and names the directory left on the host. The agent back, the same restore to the same
    path used to fail ("exists and is not empty") until someone removed it by hand; now the service asks
    the agent to remove what the failed task made there (the agent's own record), and it succeeds."""
    c, client = sdk(server), api(server)
    root = tmp_path / "host"
    root.mkdir()
    www = Path(build_tree(root / "www", seed=7))
    (www / "big.bin").write_bytes(os.urandom(4 << 20))  # long enough to be killed in, at 0.5 MB/s
    agent = Agent(server, tmp_path / "agent", root)
    try:
        c.add_agent_path(AddAgentPathRequest(agent_id=agent.agent_id, body=AgentAddPathReq(add_path=[str(www)])))
        fs = _protectable(client, "OS::Sfs::Turbo", str(www))
        fv = _vault(c, "agent-new-fs-fault", "turbo", fs, "OS::Sfs::Turbo")
        t1 = sdk_wait_backups(c, [_checkpoint(c, client, fv.id)])[0]
        before = snapshot(www)
        target = root / "copy"
        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 500_000}})
        out = client.post(f"/backups/{t1.id}/create-file-system", {"name": "copy", "path": str(target),
                                                                   "agent_id": agent.agent_id})
        time.sleep(2.5)
        agent.kill()
        done = wait_task(client, out["operation_log_id"], timeout=90)
        assert done["status"] == "failed", done
        assert done["extra_info"]["left_on_host"]["path"] == str(target), done
        assert target.is_dir() and any(target.iterdir())  # half filled, left there

        client.put(f"/agents/{agent.agent_id}", {"agent": {"bandwidth_limit": 0}})
        agent.start()
        deadline = time.time() + 30
        while client.get(f"/agents/{agent.agent_id}")["agent"]["status"] != "online":
            assert time.time() < deadline, client.get(f"/agents/{agent.agent_id}")
            time.sleep(0.2)
        again = client.post(f"/backups/{t1.id}/create-file-system", {"name": "copy", "path": str(target),
                                                                     "agent_id": agent.agent_id})
        task_ok(client, again["operation_log_id"])
        assert snapshot(target) == before
        first = client.get(f"/operation-logs/{out['operation_log_id']}")["operation_log"]
        assert first["extra_info"]["left_on_host"]["removed_by"] == again["operation_log_id"], first
    finally:
        agent.stop()
