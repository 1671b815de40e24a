"""Quotas over HTTP (OpenCBR's GET /quotas and the operator's /admin/quotas routes) and their refusals as
the official SDK sees them: a 403 whose CBR error names the quota."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import (
    BillingCreate,
    CreateCheckpointRequest,
    CreatePostPaidVaultRequest,
    CreateVaultRequest,
    PrePaidBillingCreate,
    PrePaidVaultOrder,
    ResourceCreate,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
    VaultOrderCreateReqs,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant, sdk, sdk_wait_backups

# The SDK end to end on one catalog (the suite's time budget); the same rules run on both catalogs in
# tests/services/test_quotas.py.
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)



def vault(c, name: str, size: int = 10, resources=None):
    billing = BillingCreate(consistent_level="crash_consistent", object_type="disk", protect_type="backup", size=size)
    body = VaultCreate(name=name, billing=billing, resources=resources or [])
    return c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=body))).vault


def quota_refusal(call) -> str:
    with pytest.raises(ClientRequestException) as e:
        call()
    assert (e.value.status_code, e.value.error_code) == (403, "BackupService.6970"), e.value.error_msg
    return e.value.error_msg


def by_type(answer: dict) -> dict:
    return {r["type"]: (r["used"], r["quota"], r["overridden"]) for r in answer["quotas"]["resources"]}


def test_tenants_see_and_meet_the_quotas_the_operator_sets(server, tmp_path):
    creds = new_tenant(server, "quota-tenant")
    tenant, operator, c = api(server, creds), api(server), sdk(server, creds)
    assert by_type(tenant.get("/quotas")) == {"vault": (0, -1, False), "backup": (0, -1, False),
                                              "capacity": (0, -1, False), "policy": (0, -1, False)}
    with pytest.raises(ClientError) as e:  # guide ch. 12: tenants cannot raise their own quotas
        tenant.put(f"/admin/quotas/{creds.project_id}", {"quotas": {"vault": 100}})
    assert e.value.status == 403
    out = operator.put(f"/admin/quotas/{creds.project_id}", {"quotas": {"vault": 1, "capacity": 30, "backup": 1}})
    assert by_type(out)["vault"] == (0, 1, True)

    path = tmp_path / "q.img"
    path.write_bytes(b"q" * 65536)
    disk = tenant.post("/inventory/disks", {"name": "q", "path": str(path)})["disk"]["id"]
    v = vault(c, "q1", resources=[ResourceCreate(id=disk, type="OS::Cinder::Volume")])
    assert "vault quota is 1 vaults" in quota_refusal(lambda: vault(c, "q2"))
    order = PrePaidVaultOrder(name="q3", billing=PrePaidBillingCreate(
        consistent_level="crash_consistent", object_type="disk", protect_type="backup", size=10), resources=[])
    quota_refusal(lambda: c.create_post_paid_vault(CreatePostPaidVaultRequest(body=VaultOrderCreateReqs(vault=order))))

    def backup():
        return c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(vault_id=v.id))))

    cp = backup().checkpoint
    sdk_wait_backups(c, [b["id"] for b in tenant.get("/backups", checkpoint_id=cp.id)["backups"]])
    assert "backup quota is 1 backups" in quota_refusal(backup)
    assert by_type(tenant.get("/quotas")) == {"vault": (1, 1, True), "backup": (1, 1, True),
                                              "capacity": (10, 30, True), "policy": (0, -1, False)}
    shown = operator.get(f"/admin/quotas/{creds.project_id}")
    assert shown["quotas"]["project_id"] == creds.project_id and by_type(shown)["vault"] == (1, 1, True)
    out = operator.request("DELETE", f"/admin/quotas/{creds.project_id}", params={"type": ["vault"]})
    assert by_type(out)["vault"] == (1, -1, False) and by_type(out)["backup"] == (1, 1, True)
    vault(c, "q2")  # no limit on vaults again (guide 13.7.1)
    operator.request("DELETE", f"/admin/quotas/{creds.project_id}")
    assert not any(o for _, _, o in by_type(tenant.get("/quotas")).values())


def test_the_operator_names_a_real_project_and_real_quotas(server):
    operator = api(server)
    for path, body, status in ((f"/admin/quotas/{'0' * 32}", {"quotas": {"vault": 1}}, 404),
                               (f"/admin/quotas/{server.admin.project_id}", {"quotas": {"vaults": 1}}, 400),
                               (f"/admin/quotas/{server.admin.project_id}", {"quotas": {"vault": -5}}, 400)):
        with pytest.raises(ClientError) as e:
            operator.put(path, body)
        assert e.value.status == status, (path, body)
