"""Backups end to end through the official SDK against a real server (SQLite and PostgreSQL
catalogs): disks and a two-disk server built from real files, backed up, changed, backed up again,
each backup restored and compared by SHA-256."""

from __future__ import annotations

import os
import time

import pytest
from huaweicloudsdkcbr.v1 import (
    BackupRestore,
    BackupRestoreReq,
    BillingCreate,
    CheckpointParam,
    CreateCheckpointRequest,
    CreateVaultRequest,
    DeleteBackupRequest,
    ListBackupsRequest,
    ResourceCreate,
    RestoreBackupRequest,
    ShowBackupRequest,
    ShowCheckpointRequest,
    ShowVaultRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.support.clients import api, sdk, sdk_task_ok, sdk_wait_backups
from tests.support.disks import MARKER, MiB, make_image, mutate, sha256


def create_vault(c, name, object_type, resources, size=20):
    billing = BillingCreate(consistent_level="crash_consistent", object_type=object_type, protect_type="backup",
                            size=size)
    body = VaultCreate(name=name, billing=billing, resources=resources)
    return c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=body))).vault


def checkpoint(c, vault_id, **params):
    req = CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
        vault_id=vault_id, parameters=CheckpointParam(**params) if params else None)))
    return c.create_checkpoint(req).checkpoint


def test_disk_backup_restore_roundtrip(server, tmp_path):
    c = sdk(server)
    client = api(server)
    img = make_image(tmp_path / "d.img", 8 * MiB, seed=11)
    disk = client.post("/inventory/disks", {"name": f"e2e-disk-{server.backend}", "path": img})["disk"]
    vault = create_vault(c, f"e2e-disk-{server.backend}", "disk", [ResourceCreate(id=disk["id"], type="OS::Cinder::Volume")])

    cp = checkpoint(c, vault.id, description="first")
    assert cp.status == "protecting" and len(cp.vault.resources) == 1
    b1_id = client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
    (b1,) = sdk_wait_backups(c, [b1_id])
    assert b1.name.startswith("manualbk_") and len(b1.name) == 13 and b1.resource_id == disk["id"]
    assert b1.incremental is False and b1.extend_info.encrypted is True
    assert c.show_checkpoint(ShowCheckpointRequest(checkpoint_id=cp.id)).checkpoint.status == "available"
    h1 = sha256(img)
    raw1 = client.get(f"/backups/{b1_id}")["backup"]
    assert raw1["logical_bytes"] == 8 * MiB and 0 < raw1["added_bytes"] < 8 * MiB  # zeros are not stored

    mutate(img, seed=5)
    h2 = sha256(img)
    assert h2 != h1
    cp2 = checkpoint(c, vault.id, name="second")
    b2_id = client.get("/backups", checkpoint_id=cp2.id)["backups"][0]["id"]
    (b2,) = sdk_wait_backups(c, [b2_id])
    assert b2.name == "second" and b2.incremental is True
    raw2 = client.get(f"/backups/{b2_id}")["backup"]
    assert raw2["added_bytes"] < raw1["added_bytes"] / 4  # only the changed blocks were stored

    used = c.show_vault(ShowVaultRequest(vault_id=vault.id)).vault.billing.used
    assert used >= 1  # MB

    for bid, expected in ((b1_id, h1), (b2_id, h2)):
        mutate(img, seed=99)  # scribble, then restore
        r = c.restore_backup(RestoreBackupRequest(backup_id=bid, body=BackupRestoreReq(
            restore=BackupRestore(volume_id=disk["id"]))))
        assert r is not None
        task = client.get("/operation-logs", operation_type="restore", vault_id=vault.id)["operation_logs"][0]
        sdk_task_ok(c, task["id"])
        assert sha256(img) == expected
        assert c.show_backup(ShowBackupRequest(backup_id=bid)).backup.status == "available"

    # deleting the first backup never breaks the second (guide 13.2.11)
    c.delete_backup(DeleteBackupRequest(backup_id=b1_id))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c.show_backup(ShowBackupRequest(backup_id=b1_id))
            time.sleep(0.2)
        except ClientRequestException as e:
            assert e.status_code == 404
            break
    mutate(img, seed=7)
    c.restore_backup(RestoreBackupRequest(backup_id=b2_id, body=BackupRestoreReq(restore=BackupRestore(volume_id=disk["id"]))))
    sdk_task_ok(c, client.get("/operation-logs", operation_type="restore", vault_id=vault.id)["operation_logs"][0]["id"])
    assert sha256(img) == h2
    listed = c.list_backups(ListBackupsRequest(vault_id=vault.id))
    assert [b.id for b in listed.backups] == [b2_id]

    # the encrypted vault stores no plaintext of the marker anywhere
    objects = os.path.join(server.data_dir, "objects", "vaults", vault.id)
    assert os.path.isdir(objects)
    for dirpath, _, files in os.walk(objects):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert MARKER not in f.read(), f"plaintext marker found in {name}"


def test_server_backup_two_disks(server, tmp_path):
    c = sdk(server)
    client = api(server)
    sys_img = make_image(tmp_path / "sys.img", 6 * MiB, seed=21)
    data_img = make_image(tmp_path / "data.img", 4 * MiB, seed=22)
    sfx = server.backend
    sd = client.post("/inventory/disks", {"name": f"srv-sys-{sfx}", "path": sys_img})["disk"]
    dd = client.post("/inventory/disks", {"name": f"srv-data-{sfx}", "path": data_img})["disk"]
    srv = client.post("/inventory/servers", {"name": f"srv-{sfx}", "system_disk": sd["id"],
                                             "data_disks": [dd["id"]], "status": "stopped"})["server"]
    vault = create_vault(c, f"e2e-srv-{sfx}", "server", [ResourceCreate(id=srv["id"], type="OS::Nova::Server")])
    cp = checkpoint(c, vault.id)
    b1_id = client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
    (b1,) = sdk_wait_backups(c, [b1_id])
    assert b1.resource_type == "OS::Nova::Server" and len(b1.children) == 2
    assert [ch.extend_info.system_disk for ch in b1.children] == [True, False]
    assert b1.extend_info.contain_system_disk is True
    raw = client.get(f"/backups/{b1_id}")["backup"]
    assert raw["consistency"]["method"] == "stopped"
    hashes1 = (sha256(sys_img), sha256(data_img))

    mutate(sys_img, seed=3)
    mutate(data_img, seed=4)
    hashes2 = (sha256(sys_img), sha256(data_img))
    cp2 = checkpoint(c, vault.id, incremental=False)  # a full backup
    b2_id = client.get("/backups", checkpoint_id=cp2.id)["backups"][0]["id"]
    sdk_wait_backups(c, [b2_id])
    assert client.get(f"/backups/{b2_id}")["backup"]["full"] is True

    client.put(f"/inventory/servers/{srv['id']}", {"status": "running"})
    for bid, expected in ((b1_id, hashes1), (b2_id, hashes2)):
        mutate(sys_img, seed=50)
        mutate(data_img, seed=51)
        c.restore_backup(RestoreBackupRequest(backup_id=bid, body=BackupRestoreReq(
            restore=BackupRestore(server_id=srv["id"], power_on=False))))
        task = client.get("/operation-logs", operation_type="restore", vault_id=vault.id)["operation_logs"][0]
        sdk_task_ok(c, task["id"])
        assert (sha256(sys_img), sha256(data_img)) == expected
        # guide 13.4.1: stopped for the restore, left off when power_on is false
        assert client.get(f"/inventory/servers/{srv['id']}")["resource"]["status"] == "stopped"

    # a data-disk backup never goes onto the system disk (guide 6.1)
    kids = client.get(f"/backups/{b1_id}")["backup"]["children"]
    data_child = [k for k in kids if k["disk_role"] == "data"][0]
    with pytest.raises(ClientRequestException) as e:
        c.restore_backup(RestoreBackupRequest(backup_id=b1_id, body=BackupRestoreReq(restore=BackupRestore(
            server_id=srv["id"], mappings=[{"backup_id": data_child["id"], "volume_id": sd["id"]}]))))
    assert e.value.status_code == 400 and "system disk" in e.value.error_msg

    # a new disk from one disk of the server backup (guide 6.4)
    out = client.post(f"/backups/{data_child['id']}/create-disk",
                      {"name": f"copy-{sfx}", "path": str(tmp_path / "copy.img"), "availability_zone": "local-1b"})
    sdk_task_ok(c, out["operation_log_id"])
    new_disk = client.get(f"/inventory/disks/{out['disk_id']}")["resource"]
    assert new_disk["status"] == "available" and new_disk["availability_zone"] == "local-1b"
    assert sha256(tmp_path / "copy.img") == hashes1[1]


def test_backup_rules(server, tmp_path):
    c = sdk(server)
    client = api(server)
    img = make_image(tmp_path / "r.img", 2 * MiB, seed=31)
    disk = client.post("/inventory/disks", {"name": f"rules-{server.backend}", "path": img})["disk"]
    other = make_image(tmp_path / "o.img", 2 * MiB, seed=32)
    odisk = client.post("/inventory/disks", {"name": f"rules-o-{server.backend}", "path": other})["disk"]
    vault = create_vault(c, f"rules-{server.backend}", "disk", [ResourceCreate(id=disk["id"], type="OS::Cinder::Volume")])
    empty = create_vault(c, f"rules-empty-{server.backend}", "disk", [])

    def err(fn):
        with pytest.raises(ClientRequestException) as e:
            fn()
        return e.value

    e = err(lambda: checkpoint(c, empty.id))
    assert e.status_code == 400 and "no resources" in e.error_msg
    e = err(lambda: checkpoint(c, vault.id, resources=[odisk["id"]]))
    assert e.status_code == 400 and "not associated" in e.error_msg
    e = err(lambda: checkpoint(c, vault.id, name="bad name"))
    assert e.status_code == 400 and "backup name" in e.error_msg
    e = err(lambda: checkpoint(c, vault.id, description="x" * 256))
    assert e.status_code == 400 and "255" in e.error_msg
    e = err(lambda: c.delete_backup(DeleteBackupRequest(backup_id="nope")))
    assert e.status_code == 404

    # several resources at once get -0001, -0002 suffixes (guide 2.4.1)
    c2 = create_vault(c, f"rules-two-{server.backend}", "disk", [ResourceCreate(id=odisk["id"], type="OS::Cinder::Volume")])
    third = make_image(tmp_path / "t.img", 1 * MiB, seed=33)
    tdisk = client.post("/inventory/disks", {"name": f"rules-t-{server.backend}", "path": third})["disk"]
    client.post(f"/vaults/{c2.id}/addresources", {"resources": [{"id": tdisk["id"], "type": "OS::Cinder::Volume"}]})
    cp = checkpoint(c, c2.id, name="nightly")
    names = sorted(b["name"] for b in client.get("/backups", checkpoint_id=cp.id)["backups"])
    assert names == ["nightly-0001", "nightly-0002"]
    ids = [b["id"] for b in client.get("/backups", checkpoint_id=cp.id)["backups"]]
    # a protecting backup cannot be deleted (guide 4.3) — try before it finishes, if it has not already
    try:
        c.delete_backup(DeleteBackupRequest(backup_id=ids[0]))
    except ClientRequestException as ex:
        assert ex.status_code == 409 and "available or error" in ex.error_msg
    sdk_wait_backups(c, ids) if all(client.get(f"/backups/{i}")["backup"]["status"] != "deleting" for i in ids) else None

    # capacity (13.3.4): no backup starts once usage exceeds capacity
    import sqlalchemy as sa

    from opencbr.catalog.db import make_engine
    eng = make_engine(server.catalog_url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE vaults SET used_bytes = :u WHERE id = :v"), {"u": 21 * 1024**3, "v": vault.id})
    eng.dispose()
    e = err(lambda: checkpoint(c, vault.id))
    assert e.status_code == 400 and "capacity" in e.error_msg
