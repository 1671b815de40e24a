"""Vault locks over HTTP (docs/vault-lock.md): set with the CLI, the official SDK's deletes refused with
the CBR error body, the lock's own routes, tenant isolation, and every attempt in the audit trail."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import DeleteBackupRequest, DeleteVaultRequest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.support.clients import api, cli, new_tenant, sdk, signed, task_ok
from tests.support.disks import MiB, make_image

# end to end on one catalog (the suite's time budget); the rules run on both in tests/services/test_vault_locks.py
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


def refused(call, status: int, code: str) -> None:
    with pytest.raises(ClientRequestException) as e:
        call()
    assert (e.value.status_code, e.value.error_code) == (status, code), e.value.error_msg


def test_a_compliance_lock_over_the_api(server, tmp_path):
    creds = new_tenant(server, "lock-tenant")
    admin, c = api(server, creds), sdk(server, creds)
    img = make_image(tmp_path / "l.img", MiB, seed=7)
    disk = admin.post("/inventory/disks", {"name": "lock-disk", "path": img})["disk"]
    vault = admin.post("/vaults", {"vault": {"name": "lock-vault", "billing": {"object_type": "disk", "size": 10},
                                             "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = admin.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    backup_id = cp["vault"]["resources"][0]["backup_id"]
    task_ok(admin, admin.get(f"/backups/{backup_id}")["backup"]["task_id"])

    out = cli(server, "vault", "lock", "set", "lock-vault", "--mode", "compliance", "--retention-days", "30",
              "--lock-days", "60", "--yes", "--json", creds=creds)
    assert out.code == 0, out.err
    assert out.json()["active"] and out.json()["mode"] == "compliance"

    refused(lambda: c.delete_backup(DeleteBackupRequest(backup_id=backup_id)), 409, "BackupService.6660")
    refused(lambda: c.delete_vault(DeleteVaultRequest(vault_id=vault["id"])), 409, "BackupService.6661")
    r = signed(admin, "DELETE", f"/vaults/{vault['id']}/lock")
    assert r.status_code == 403 and r.json()["error_code"] == "BackupService.6664" and r.json()["error_msg"]
    r = signed(admin, "PUT", f"/vaults/{vault['id']}/lock",
               body={"lock": {"mode": "compliance", "retention_days": 30, "lock_days": 10}})
    assert r.status_code == 403 and r.json()["error_code"] == "BackupService.6664"
    r = signed(admin, "PUT", f"/vaults/{vault['id']}/lock", body={"lock": {"mode": "strict"}})
    assert r.status_code == 400 and r.json()["error_code"] == "BackupService.6666"
    assert admin.get(f"/backups/{backup_id}")["backup"]["status"] == "available"

    other = api(server, new_tenant(server, "lock-other"))  # another tenant sees no such vault
    for method, body in (("GET", None), ("DELETE", None),
                         ("PUT", {"lock": {"mode": "governance", "retention_days": 1, "lock_days": 1}})):
        r = signed(other, method, f"/vaults/{vault['id']}/lock", body=body)
        assert r.status_code == 404 and r.json()["error_code"] == "BackupService.6101", (method, r.text)

    events = admin.get("/iam/audit-events", limit=100)["events"]
    seen = {(e["trace_name"], e["outcome"]) for e in events if e["resource_id"] in (vault["id"], backup_id)}
    assert {("setVaultLock", "success"), ("setVaultLock", "failure"), ("deleteVaultLock", "failure"),
            ("deleteBackup", "failure"), ("deleteVault", "failure")} <= seen, seen

    shown = admin.get(f"/vaults/{vault['id']}/lock")["lock"]
    assert (shown["mode"], shown["retention_days"], shown["active"]) == ("compliance", 30, True)
