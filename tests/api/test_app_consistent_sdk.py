"""Application-consistent backups end to end, through the official SDK: an agent host whose disk (a loop
device with ext4) holds a running PostgreSQL cluster, a server vault with ``consistent_level=app_consistent``,
``check_agent`` saying the cluster can be quiesced, a checkpoint taken while a writer commits numbered rows,
and the backup's metadata (``extend_info.app_consistency``) saying the consistency actually achieved. The
restore material (PostgreSQL's backup label and WAL) is an object of the vault, not a catalog row's field."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from huaweicloudsdkcbr.v1 import (
    BillingCreate,
    CheckAgentRequest,
    CheckpointParam,
    CreateCheckpointRequest,
    CreateVaultRequest,
    ProtectableAgentReq,
    ProtectableAgentStatusResource,
    ResourceCreate,
    ShowBackupRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)

from tests.agent.conftest import AgentProcess, agent_cmd
from tests.agent.hooks.servers import PG_BIN, Postgres, Writer, _user, scratch_dir
from tests.support.clients import api, sdk, sdk_task_ok, sdk_wait_backups
from tests.support.databases import BACKENDS, make_catalog_url, release_catalog_url
from tests.support.server import ServerProcess, free_port, store_bytes

pytestmark = pytest.mark.timeout(300)


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def pg_on_disk(tmp_path_factory):
    """(loop device, PostgreSQL cluster whose data directory is on it): ext4 on a 96 MiB loop device."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    if not PG_BIN:
        pytest.skip("PostgreSQL server binaries are not installed")
    image = tmp_path_factory.mktemp("appdisk") / "disk.img"
    with open(image, "wb") as f:
        f.truncate(96 << 20)
    done = _run("losetup", "-f", "--show", str(image))
    if done.returncode != 0:
        pytest.skip(f"no loop device here: {done.stderr.strip()}")
    dev = done.stdout.strip()
    owner = _user("postgres")
    mnt = scratch_dir(owner, "ocbr-appdisk-")
    pg = None
    try:
        if _run("mkfs.ext4", "-q", dev).returncode or _run("mount", dev, mnt).returncode:
            pytest.skip("cannot make and mount an ext4 file system here")
        if owner:
            os.chown(mnt, owner.pw_uid, owner.pw_gid)
        pg = Postgres(os.path.join(mnt, "data"), owner, 5451)
        pg._run([os.path.join(pg.bin, "initdb"), "-D", pg.data_dir, "-A", "trust", "-U", "postgres", "--no-sync",
                 "--wal-segsize=1", "--no-instructions"])
        pg.start()
        pg.sql("CREATE TABLE numbered (id bigint PRIMARY KEY, pad text NOT NULL)")
        yield dev, pg
    finally:
        if pg is not None:
            pg.stop()
        _run("umount", mnt)
        _run("losetup", "-d", dev)
        os.rmdir(mnt)


@pytest.fixture(scope="module", params=BACKENDS)
def service(request, tmp_path_factory):
    d = str(tmp_path_factory.mktemp(f"appsdk-{request.param}"))
    url = make_catalog_url(request.param, d)
    srv = ServerProcess(d, url, workers=1, extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    srv.backend = request.param
    yield srv
    srv.stop()
    release_catalog_url(url)


@pytest.fixture(scope="module")
def host(service, pg_on_disk, tmp_path_factory):
    """An enrolled agent allowed the loop device, its hooks configured with the cluster; the host's server
    resource once the service's poll has seen the disk."""
    dev, pg = pg_on_disk
    work = tmp_path_factory.mktemp("appagent")
    config, port = work / "agent.json", free_port()
    token = api(service).post("/agents/tokens", {})["token"]
    done = agent_cmd(config, "register", "--endpoint", service.url, "--token", token, "--listen", f"127.0.0.1:{port}",
                     "--advertise", f"127.0.0.1:{port}", "--root", str(work), "--device", dev,
                     "--state-dir", str(work / "state"))
    assert done.returncode == 0, done.stderr
    cfg = json.loads(config.read_text())
    cfg["hooks"] = {"discover": False, "postgresql": [pg.target()]}
    config.write_text(json.dumps(cfg))
    agent = AgentProcess(config)
    try:
        c = api(service)
        end = time.monotonic() + 60
        server = None
        while time.monotonic() < end and server is None:
            for disk in c.get("/protectables/OS::Cinder::Volume/instances")["instances"]:
                if disk["detail"].get("path") == dev and disk["detail"].get("server_id"):
                    server = c.get(f"/protectables/OS::Nova::Server/instances/{disk['detail']['server_id']}")["instance"]
            time.sleep(0.5)
        assert server is not None, service.log()[-3000:]
        yield server
    finally:
        agent.stop()


def _rows(pg: Postgres) -> tuple[int, int]:
    return pg.sql("SELECT count(*), coalesce(max(id), 0) FROM numbered")[0]


def test_check_agent_says_the_cluster_can_be_quiesced(service, host, pg_on_disk):
    c = sdk(service)
    answer = c.check_agent(CheckAgentRequest(body=ProtectableAgentReq(agent_status=[
        ProtectableAgentStatusResource(resource_id=host["id"], resource_type="OS::Nova::Server")])))
    (status,) = answer.agent_status
    assert (status.installed, status.code) == (True, 0), status.message
    assert "postgresql" in status.message and "can be quiesced" in status.message, status.message
    raw = json.loads(answer.raw_content)["agent_status"][0]
    (pg_check,) = [h for h in raw["app_consistency"] if h["kind"] == "postgresql"]
    assert pg_check["ok"] is True and pg_check["name"].endswith(pg_on_disk[1].data_dir), pg_check


def test_an_app_consistent_server_backup_says_what_it_achieved(service, host, pg_on_disk):
    _dev, pg = pg_on_disk
    c = sdk(service)
    vault = c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=f"app-sdk-{service.backend}", resources=[ResourceCreate(id=host["id"], type="OS::Nova::Server")],
        billing=BillingCreate(consistent_level="app_consistent", object_type="server", protect_type="backup",
                              size=10))))).vault
    assert vault.billing.consistent_level == "app_consistent"
    with Writer(pg, _rows(pg)[1] + 1) as writer:
        cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
            vault_id=vault.id, parameters=CheckpointParam(description="app-consistent"))))).checkpoint
        backup_id = api(service).get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
        (backup,) = sdk_wait_backups(c, [backup_id], timeout=180)
    assert writer.committed > 0
    shown = c.show_backup(ShowBackupRequest(backup_id=backup_id))
    assert shown.backup.status == "available" and shown.backup.extend_info.encrypted is not None
    said = json.loads(shown.raw_content)["backup"]["extend_info"]["app_consistency"]
    assert said == {"achieved": "app_consistent", "reason": ""}, said
    task = api(service).get("/backups", checkpoint_id=cp.id)["backups"][0]["task_id"]
    assert sdk_task_ok(c, task).extra_info  # the task carries it too (checked in detail below)
    assert api(service).get(f"/operation-logs/{task}")["operation_log"]["extra_info"]["app_consistency"] == said
    # the restore material is an object of the vault (counted in its size); the row keeps a reference
    disk = backup.children[0]
    raw = api(service).get(f"/backups/{disk.id}")["backup"]
    assert "app_consistency" not in json.dumps(raw.get("consistency") or {}).replace('"app"', "")
    assert store_bytes(service, vault.id) > 0
