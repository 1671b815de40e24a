"""The rest of the vault API through the official SDK: batch update, suspending a resource's automatic
backups, backup expiry, features, linked-region vaults, the post-paid order, projects and the domain,
and the 4xx (naming why) of billing, domain migration and import."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import (
    BatchUpdateVaultRequest,
    BatchUpdateVaultRequestBody,
    ChangeVaultChargeModeRequest,
    CreatePostPaidVaultRequest,
    ImportCheckpointRequest,
    ListDomainProjectsRequest,
    ListExternalVaultRequest,
    ListFeaturesRequest,
    ListProjectsRequest,
    PrePaidBillingCreate,
    PrePaidVaultOrder,
    ResourceCreate,
    SetVaultResourceRequest,
    ShowDomainRequest,
    ShowFeatureRequest,
    ShowVaultRequest,
    SyncParam,
    SyncReq,
    UpdateExpirationTimeReq,
    UpdateExpirationTimeRequest,
    VaultBatchUpdate,
    VaultOrderCreateReqs,
    VaultSetResourceReq,
)
from huaweicloudsdkcbr.v1.model.change_to_period import ChangeToPeriod
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.api.test_vaults_sdk import create, make_disk
from tests.support.clients import new_tenant, sdk


def refused(call, status=400) -> tuple[str, str]:
    with pytest.raises(ClientRequestException) as e:
        call()
    assert e.value.status_code == status, (e.value.error_code, e.value.error_msg)
    return e.value.error_code, e.value.error_msg


def test_batch_update_and_set_resources(server, tmp_path):
    creds = new_tenant(server, "vaultops-batch")
    c = sdk(server, creds)
    d = make_disk(server, tmp_path, "batch-d1")
    ids = {create(c, f"batch-{i}").id for i in range(3)}
    body = BatchUpdateVaultRequestBody(vault=VaultBatchUpdate(smn_notify=False, threshold=55))
    assert set(c.batch_update_vault(BatchUpdateVaultRequest(body=body)).updated_vaults_id) == ids
    for vid in ids:
        v = c.show_vault(ShowVaultRequest(vault_id=vid)).vault
        assert v.threshold == 55 and v.smn_notify is False
    body = BatchUpdateVaultRequestBody(vault=VaultBatchUpdate(threshold=101))
    refused(lambda: c.batch_update_vault(BatchUpdateVaultRequest(body=body)))

    # the operator's disk in the operator's vault
    admin = sdk(server)
    v = create(admin, "set-resources", resources=[ResourceCreate(id=d, type="OS::Cinder::Volume")]).id
    assert admin.show_vault(ShowVaultRequest(vault_id=v)).vault.resources[0].auto_protect is True

    def set_(action, rids):
        req = SetVaultResourceRequest(vault_id=v, body=VaultSetResourceReq(resource_ids=rids, action=action))
        return admin.set_vault_resource(req).set_resource_ids

    assert set_("suspend", [d]) == [d]
    assert admin.show_vault(ShowVaultRequest(vault_id=v)).vault.resources[0].auto_protect is False
    assert set_("unsuspend", [d]) == [d]
    assert admin.show_vault(ShowVaultRequest(vault_id=v)).vault.resources[0].auto_protect is True
    refused(lambda: set_("pause", [d]))
    refused(lambda: set_("suspend", ["not-associated"]), 404)


def test_expiration_time(server):
    c = sdk(server)
    v = create(c, "expiry").id

    def update(date, tz="UTC+08:00"):
        body = UpdateExpirationTimeReq(expect_expiration_date=date, time_zone=tz)
        return c.update_expiration_time(UpdateExpirationTimeRequest(vault_id=v, body=body))

    r = update("2099-01-31")
    assert r.affected_backups_count == 0 and r.new_expiration_day == "2099-01-31" and r.operation_log_id
    refused(lambda: update("2001-01-01"))
    refused(lambda: update("31/01/2099"))
    refused(lambda: update("2099-01-31", "CET"))


def test_features_external_vaults_and_post_paid_order(server):
    c = sdk(server)
    features = c.list_features(ListFeaturesRequest()).body
    assert features["replication.enable"] is False and features["replication.destination_regions"] == []
    assert c.show_feature(ShowFeatureRequest(feature_key="features.backup_double_az")).body == {
        "features.backup_double_az": False}
    code, msg = refused(lambda: c.show_feature(ShowFeatureRequest(feature_key="features.teleport")))
    assert "replication.enable" in msg
    ext = c.list_external_vault(ListExternalVaultRequest(external_project_id=server.admin.project_id,
                                                         region_id="local-1"))
    assert ext.vaults == [] and ext.count == 0

    billing = PrePaidBillingCreate(consistent_level="crash_consistent", object_type="disk", protect_type="backup",
                                   size=20, charging_mode="post_paid")
    order = c.create_post_paid_vault(CreatePostPaidVaultRequest(body=VaultOrderCreateReqs(
        vault=PrePaidVaultOrder(name="ordered", billing=billing, resources=[]))))
    assert order.ret_code == 0
    made = c.show_vault(ShowVaultRequest(vault_id=order.orders[0].resource_id)).vault
    assert made.name == "ordered" and made.billing.size == 20


def test_projects_and_domain(server):
    creds = new_tenant(server, "vaultops-projects")
    c = sdk(server, creds)
    projects = c.list_projects(ListProjectsRequest()).projects
    assert [p.id for p in projects] == [creds.project_id]
    account = projects[0].domain_id
    dom = c.show_domain(ShowDomainRequest(source_project_id=creds.project_id))
    assert dom.domain_id == account and dom.domain_name == "vaultops-projects" and dom.project_id == creds.project_id
    listed = c.list_domain_projects(ListDomainProjectsRequest(domain_name="vaultops-projects")).projects
    assert [p.project_id for p in listed] == [creds.project_id]
    refused(lambda: c.show_domain(ShowDomainRequest(source_project_id=server.admin.project_id)), 404)
    refused(lambda: c.list_domain_projects(ListDomainProjectsRequest(domain_name="admin")), 404)


def test_what_a_self_hosted_installation_does_not_do(server):
    c = sdk(server)
    code, msg = refused(lambda: c.change_vault_charge_mode(ChangeVaultChargeModeRequest(body=ChangeToPeriod(
        charging_mode="pre_paid", period_type="month", period_num=1, vault_ids=["x"]))))
    assert code == "BackupService.6900" and "no billing" in msg
    code, msg = refused(lambda: c.import_checkpoint(ImportCheckpointRequest(body=SyncReq(
        sync=SyncParam(vault_id="x", auto_trigger=False)))))
    assert code == "BackupService.6900" and "import" in msg


