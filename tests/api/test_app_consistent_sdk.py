"""Application-consistent backups end to end, through the official SDK: an agent host whose disk (a loop
device with ext4) holds a running PostgreSQL cluster, a server vault with ``consistent_level=app_consistent``,
``check_agent`` saying the cluster can be quiesced, a checkpoint taken while a writer commits numbered rows,
and the backup's metadata (``extend_info.app_consistency``) saying the consistency actually achieved. The
restore material (PostgreSQL's backup label and WAL) is an object of the vault, not a catalog row's field."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

import pytest
import sqlalchemy as sa
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

from opencbr.catalog.db import make_engine
from tests.agent.conftest import AgentProcess, agent_cmd
from tests.agent.hooks.servers import PG_BIN, Postgres, Writer, _user, log_text, scratch_dir, unmount
from tests.support.clients import api, cli, sdk, sdk_task_ok, sdk_wait_backups, task_ok
from tests.support.databases import make_catalog_url, release_catalog_url
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


class LoopDisk:
    """An image file behind a loop device (``size`` bytes), detached at ``close``."""

    def __init__(self, image, size: int):
        with open(image, "wb") as f:
            f.truncate(size)
        done = _run("losetup", "-f", "--show", str(image))
        if done.returncode != 0:
            pytest.skip(f"no loop device here: {done.stderr.strip()}")
        self.dev = done.stdout.strip()

    def close(self) -> None:
        _run("losetup", "-d", self.dev)


def _start(pg: Postgres) -> None:
    """Started with fsync on (unlike the hook tests' servers): the agent reads the disk's blocks, not the
    page cache, so what a commit wrote must have reached the device."""
    opts = f"-p {pg.port} -k {pg.socket_dir} -c listen_addresses='' -c max_wal_senders=0"
    out = pg._run([os.path.join(pg.bin, "pg_ctl"), "-D", pg.data_dir, "-o", opts, "-l", pg.log, "-w", "-t", "60",
                   "start"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr + log_text(pg.log)


@pytest.fixture(scope="module")
def pg_on_disk(tmp_path_factory):
    """(loop device, PostgreSQL cluster whose data directory is on it, an empty loop device of the same
    size to restore to): ext4 on a 96 MiB loop device, mounted in a short directory (socket paths)."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    if not PG_BIN:
        pytest.skip("PostgreSQL server binaries are not installed")
    work = tmp_path_factory.mktemp("appdisk")
    disk, spare = LoopDisk(work / "disk.img", 96 << 20), LoopDisk(work / "spare.img", 96 << 20)
    owner = _user("postgres")
    mnt = scratch_dir(owner, "ocbr-appdisk-")
    pg = None
    try:
        if _run("mkfs.ext4", "-q", disk.dev).returncode or _run("mount", disk.dev, mnt).returncode:
            pytest.skip("cannot make and mount an ext4 file system here")
        if owner:
            os.chown(mnt, owner.pw_uid, owner.pw_gid)
        pg = Postgres(os.path.join(mnt, "data"), owner, 5451)
        pg._run([os.path.join(pg.bin, "initdb"), "-D", pg.data_dir, "-A", "trust", "-U", "postgres",
                 "--wal-segsize=1", "--no-instructions"])
        _start(pg)
        pg.sql("CREATE TABLE numbered (id bigint PRIMARY KEY, pad text NOT NULL)")
        yield disk.dev, pg, spare.dev
    finally:
        if pg is not None:
            pg.stop()
        unmount(mnt)
        disk.close()
        spare.close()
        os.rmdir(mnt)


# One catalog (the suite's time budget: a real database on a loop device, backed up and restored); the
# catalog side of app consistency runs on both in tests/services/test_app_consistency.py.
@pytest.fixture(scope="module", params=["sqlite"])
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
    dev, pg, spare = pg_on_disk
    work = tmp_path_factory.mktemp("appagent")
    config, port = work / "agent.json", free_port()
    token = api(service).post("/agents/tokens", {})["token"]
    done = agent_cmd(config, "register", "--endpoint", service.url, "--token", token, "--listen", f"127.0.0.1:{port}",
                     "--advertise", f"127.0.0.1:{port}", "--root", str(work), "--device", dev, "--device", spare,
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
            disks = {d["detail"].get("path"): d for d in c.get("/protectables/OS::Cinder::Volume/instances")["instances"]}
            if all(disks.get(p, {}).get("detail", {}).get("server_id") for p in (dev, spare)):
                server = c.get(f"/protectables/OS::Nova::Server/instances/{disks[dev]['detail']['server_id']}")
            time.sleep(0.5)
        assert server is not None, service.log()[-3000:]
        yield {"server": server["instance"], "disk": disks[dev]["id"], "spare": disks[spare]["id"]}
    finally:
        agent.stop()


def _rows(pg: Postgres) -> tuple[int, int]:
    return pg.sql("SELECT count(*), coalesce(max(id), 0) FROM numbered")[0]


def test_check_agent_says_the_cluster_can_be_quiesced(service, host, pg_on_disk):
    c = sdk(service)
    ask = CheckAgentRequest(body=ProtectableAgentReq(agent_status=[
        ProtectableAgentStatusResource(resource_id=host["server"]["id"], resource_type="OS::Nova::Server")]))
    end = time.monotonic() + 30  # the agent checks in the background; the heartbeat brings the result
    while "checking" in (answer := c.check_agent(ask)).agent_status[0].message and time.monotonic() < end:
        time.sleep(0.5)
    (status,) = answer.agent_status
    assert (status.installed, status.code) == (True, 0), status.message
    assert "can be quiesced" in status.message and pg_on_disk[1].data_dir in status.message, status.message
    raw = json.loads(answer.raw_content)["agent_status"][0]
    (pg_check,) = [h for h in raw["app_consistency"] if h["kind"] == "postgresql"]
    assert pg_check["ok"] is True, pg_check


def _backup(service, vault_id: str, disk_id: str, pg: Postgres, *, writing: bool) -> tuple[str, str, int, int]:
    """A checkpoint of the vault through the SDK (``writing``: while a writer commits numbered rows):
    (server backup id, the disk's backup id, rows committed before it was asked, and after it ended)."""
    c = sdk(service)
    with Writer(pg, _rows(pg)[1] + 1) if writing else contextlib.nullcontext() as writer:
        time.sleep(0.5)
        before = writer.committed if writer else _rows(pg)[1]
        cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
            vault_id=vault_id, parameters=CheckpointParam(description="app-consistent"))))).checkpoint
        backup_id = api(service).get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
        (backup,) = sdk_wait_backups(c, [backup_id], timeout=180)
        after = writer.committed if writer else _rows(pg)[1]
    (disk_backup,) = [k.id for k in backup.children if k.resource_id == disk_id]
    return backup_id, disk_backup, before, after


@pytest.fixture(scope="module")
def app_backup(service, host, pg_on_disk):
    """An app-consistent server backup taken while a writer commits numbered rows:
    (vault id, server backup id, the disk's backup id, rows committed before it was asked, and after)."""
    _dev, pg, _spare = pg_on_disk
    c = sdk(service)
    vault = c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=f"app-sdk-{service.backend}", resources=[ResourceCreate(id=host["server"]["id"], type="OS::Nova::Server")],
        billing=BillingCreate(consistent_level="app_consistent", object_type="server", protect_type="backup",
                              size=10))))).vault
    assert vault.billing.consistent_level == "app_consistent"
    return (vault.id, *_backup(service, vault.id, host["disk"], pg, writing=True))


@pytest.fixture(scope="module")
def as_made(service, app_backup):
    """What the service says of the backup as it was made: its SDK answer, its task id and its disk
    backup's catalog details, read before any test of this module rebuilds the vault's rows (the rebuild
    test depends on this fixture, so whatever order the tests run in, this comes first)."""
    _vault, backup_id, disk_backup, _before, _after = app_backup
    shown = sdk(service).show_backup(ShowBackupRequest(backup_id=backup_id))
    task_id = api(service).get(f"/backups/{backup_id}")["backup"]["task_id"]
    eng = make_engine(service.catalog_url)
    try:
        with eng.connect() as conn:
            details = conn.execute(sa.text("SELECT details FROM backups WHERE id = :b"), {"b": disk_backup}).scalar()
    finally:
        eng.dispose()
    return shown, task_id, json.loads(details) if isinstance(details, str) else details


def test_the_backup_says_the_consistency_it_achieved(service, as_made):
    c = sdk(service)
    shown, task_id, _details = as_made
    assert shown.backup.status == "available" and shown.backup.extend_info.encrypted is not None
    said = json.loads(shown.raw_content)["backup"]["extend_info"]["app_consistency"]
    assert said == {"achieved": "app_consistent", "reason": ""}, said
    assert sdk_task_ok(c, task_id).status == "success"
    assert api(service).get(f"/operation-logs/{task_id}")["operation_log"]["extra_info"]["app_consistency"] == said


def test_the_restore_material_is_a_sealed_object_of_the_vault(service, app_backup, as_made):
    vault_id, _backup, disk_backup, _before, _after = app_backup
    path = os.path.join(service.data_dir, "objects", "vaults", vault_id, "attachments", disk_backup, "app-consistency")
    with open(path, "rb") as f:
        blob = f.read()
    assert b"START WAL LOCATION" not in blob and b"backup_label" not in blob  # encrypted like the rest
    details = as_made[2]
    assert details["app_consistency"] == {"attachment": "app-consistency", "stored_bytes": len(blob)}
    (hook,) = details["consistency"]["app"]["hooks"]
    assert hook["details"]["backup_label"] and "wal" not in hook["details"]  # the row keeps the summary only


def test_a_restored_disk_holds_a_cluster_that_starts_with_the_committed_rows(service, host, app_backup, pg_on_disk):
    """The disk is read live (no LVM here: this kernel has no device-mapper), so its file system is
    whole only if nothing writes it during the read: the rows are committed before the checkpoint (a
    live read under writes can tear ext4's journal; docs/app-consistent.md says what to do then)."""
    _dev, pg, spare = pg_on_disk
    with Writer(pg, _rows(pg)[1] + 1):
        time.sleep(0.5)
    backup_id, disk_backup, before, after = _backup(service, app_backup[0], host["disk"], pg, writing=False)
    c = api(service)
    task_id = c.post(f"/backups/{backup_id}/restore", {"restore": {
        "power_on": False, "mappings": [{"backup_id": disk_backup, "volume_id": host["spare"]}]}})["operation_log_id"]
    prepared = task_ok(c, task_id, timeout=180)["extra_info"]["app_consistency"]["prepared"]
    assert any(line.endswith("wrote backup_label") for line in prepared), prepared
    mnt = scratch_dir(pg.owner, "ocbr-restored-")
    assert _run("mount", spare, mnt).returncode == 0
    copy = Postgres(os.path.join(mnt, "data"), pg.owner, 5452)
    try:
        _start(copy)
        count, top = _rows(copy)
        log = log_text(copy.log)
        checked = copy.amcheck()
    finally:
        copy.stop()
        unmount(mnt)
        os.rmdir(mnt)
    # every row committed before the backup was asked for is there, none the writer had not committed at its end
    assert before <= top <= after and count == top, (before, top, after, count)
    assert "starting backup recovery" in log and "completed backup recovery" in log, log
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_catalog_rebuild_finds_the_consistency_and_the_material(service, app_backup, as_made):
    vault_id, backup_id, disk_backup, _before, _after = app_backup
    eng = make_engine(service.catalog_url)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("DELETE FROM backups WHERE vault_id = :v AND parent_id IS NOT NULL"), {"v": vault_id})
            conn.execute(sa.text("DELETE FROM backups WHERE vault_id = :v"), {"v": vault_id})
        r = cli(service, "admin", "vault", "rebuild", vault_id, "--json")
        assert r.code == 0, r.err
        assert disk_backup in r.json()["backups_added"]
        with eng.connect() as conn:
            details = conn.execute(sa.text("SELECT details FROM backups WHERE id = :b"), {"b": disk_backup}).scalar()
    finally:
        eng.dispose()
    details = json.loads(details) if isinstance(details, str) else details
    assert details["app_consistency"] == {"attachment": "app-consistency"}
    assert details["consistency"]["app"]["achieved"] == "app_consistent"
    shown = api(service).get(f"/backups/{backup_id}")["backup"]
    assert shown["children"][0]["extend_info"]["app_consistency"]["achieved"] == "app_consistent"
