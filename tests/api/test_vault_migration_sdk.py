"""migrate_vault_resource through the official SDK: a disk and its backups move to another vault; each
backup restores bit-exact from its new vault, and both vaults' capacity is accounted again. The rules
and the catalog on both backends are tested in tests/services/test_vault_migration.py."""

from __future__ import annotations

from huaweicloudsdkcbr.v1 import (
    BillingCreate,
    CreateCheckpointRequest,
    CreateVaultRequest,
    MigrateVaultResourceRequest,
    ResourceCreate,
    ShowVaultRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
    VaultMigrateResourceReq,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.support.clients import api, new_tenant, restore_and_check, sdk, sdk_wait_backups, task_ok
from tests.support.disks import MiB, make_image, mutate, sha256
from tests.support.server import sqlite_server_fixture

server = sqlite_server_fixture("vault-migration")


def vault(c, name: str, resources=()):
    billing = BillingCreate(consistent_level="crash_consistent", object_type="disk", protect_type="backup", size=10)
    body = VaultCreate(name=name, billing=billing, resources=list(resources))
    return c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=body))).vault


def backup(c, client, vault_id: str) -> str:
    cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(vault_id=vault_id))))
    ids = [b["id"] for b in client.get("/backups", checkpoint_id=cp.checkpoint.id)["backups"]]
    return sdk_wait_backups(c, ids)[0].id


def test_migrated_backups_restore_bit_exact_from_the_new_vault(server, tmp_path):
    creds = new_tenant(server, "migrator")
    c, client = sdk(server, creds), api(server, creds)
    img = make_image(tmp_path / "m.img", 4 * MiB, seed=21)
    disk = client.post("/inventory/disks", {"name": "m", "path": img})["disk"]["id"]
    a = vault(c, "from", [ResourceCreate(id=disk, type="OS::Cinder::Volume")])
    b = vault(c, "to")
    expected = {backup(c, client, a.id): sha256(img)}
    mutate(img, seed=4)
    expected[backup(c, client, a.id)] = sha256(img)
    used_a = client.get(f"/vaults/{a.id}")["vault"]["used_bytes"]
    assert used_a > 0

    out = c.migrate_vault_resource(MigrateVaultResourceRequest(
        vault_id=a.id, body=VaultMigrateResourceReq(destination_vault_id=b.id, resource_ids=[disk])))
    assert out.migrated_resources == [disk]
    log = next(t for t in client.get("/operation-logs", vault_id=a.id, operation_type="migrate")["operation_logs"])
    task_ok(client, log["id"])

    assert [r.id for r in c.show_vault(ShowVaultRequest(vault_id=b.id)).vault.resources] == [disk]
    assert c.show_vault(ShowVaultRequest(vault_id=a.id)).vault.resources == []
    moved = client.get("/backups", vault_id=b.id)["backups"]
    assert sorted(x["id"] for x in moved) == sorted(expected)
    assert client.get("/backups", vault_id=a.id)["count"] == 0
    assert client.get(f"/vaults/{a.id}")["vault"]["used_bytes"] == 0
    used_b = client.get(f"/vaults/{b.id}")["vault"]["used_bytes"]
    assert 0 < used_b <= used_a * 1.1  # the same data, re-encrypted under the destination's key
    for backup_id, digest in expected.items():
        restore_and_check(client, backup_id, disk, img, digest)


def test_another_projects_vaults_are_unknown(server, tmp_path):
    owner, intruder = new_tenant(server, "migrate-owner"), new_tenant(server, "migrate-intruder")
    mine = api(server, owner)
    img = make_image(tmp_path / "o.img", MiB, seed=22)
    disk = mine.post("/inventory/disks", {"name": "o", "path": img})["disk"]["id"]
    theirs = vault(sdk(server, owner), "owned", [ResourceCreate(id=disk, type="OS::Cinder::Volume")])
    own = vault(sdk(server, intruder), "intruder")
    c = sdk(server, intruder)
    for source, destination in ((theirs.id, own.id), (own.id, theirs.id)):
        try:
            c.migrate_vault_resource(MigrateVaultResourceRequest(
                vault_id=source, body=VaultMigrateResourceReq(destination_vault_id=destination, resource_ids=[disk])))
        except ClientRequestException as e:
            assert (e.status_code, e.error_code) == (404, "BackupService.6101"), e.error_msg
        else:
            raise AssertionError("another project's vault was used")
    assert [r["id"] for r in mine.get(f"/vaults/{theirs.id}")["vault"]["resources"]] == [disk]
