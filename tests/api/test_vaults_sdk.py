"""Vault CRUD, resource association and errors through the official huaweicloudsdkcbr SDK, against a
real server on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

import pytest
from huaweicloudsdkcbr.v1 import (
    AddVaultResourceRequest,
    BillingCreate,
    BillingUpdate,
    CreateVaultRequest,
    DeleteVaultRequest,
    ListOpLogsRequest,
    ListProtectableRequest,
    ListVaultRequest,
    RemoveVaultResourceRequest,
    ResourceCreate,
    ShowOpLogRequest,
    ShowProtectableRequest,
    ShowSummaryRequest,
    ShowVaultRequest,
    UpdateVaultRequest,
    VaultAddResourceReq,
    VaultCreate,
    VaultCreateReq,
    VaultRemoveResourceReq,
    VaultUpdate,
    VaultUpdateReq,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.support.clients import api, sdk

GB = 1024**3


def make_disk(server, tmp_path, name, size=GB, **kw) -> str:
    path = tmp_path / f"{name}.img"
    with open(path, "wb") as f:
        f.truncate(size)
    return api(server).post("/inventory/disks", {"name": name, "path": str(path), **kw})["disk"]["id"]


def create(client, name, object_type="disk", size=100, resources=None, level="crash_consistent", **kw):
    billing = BillingCreate(consistent_level=level, object_type=object_type, protect_type="backup", size=size)
    body = VaultCreate(name=name, billing=billing, resources=resources or [], **kw)
    return client.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=body))).vault


def test_vault_crud(server, tmp_path):
    c = sdk(server)
    d1 = make_disk(server, tmp_path, "crud-d1")
    v = create(c, "crud-vault", resources=[ResourceCreate(id=d1, type="OS::Cinder::Volume")], description="mine")
    assert v.name == "crud-vault" and v.billing.size == 100 and v.billing.object_type == "disk"
    assert v.billing.status == "available" and v.billing.spec_code == "vault.backup.volume.normal"
    assert [r.id for r in v.resources] == [d1] and v.resources[0].size == 1
    assert v.billing.allocated == 1 and v.billing.used == 0
    assert v.provider_id == "d1603440-187d-4516-af25-121250c7cc97"

    shown = c.show_vault(ShowVaultRequest(vault_id=v.id)).vault
    assert shown.id == v.id and shown.description == "mine" and shown.project_id == server.admin.project_id

    listed = c.list_vault(ListVaultRequest(object_type="disk", name="crud-vault"))
    assert listed.count >= 1 and v.id in [x.id for x in listed.vaults]
    assert c.list_vault(ListVaultRequest(id=[v.id])).count == 1
    assert c.list_vault(ListVaultRequest(object_type="turbo", name="crud-vault")).count == 0

    upd = VaultUpdate(name="crud-renamed", billing=BillingUpdate(size=150), auto_expand=True, threshold=70)
    u = c.update_vault(UpdateVaultRequest(vault_id=v.id, body=VaultUpdateReq(vault=upd))).vault
    assert (u.name, u.billing.size, u.auto_expand, u.threshold) == ("crud-renamed", 150, True, 70)

    summary = c.show_summary(ShowSummaryRequest())
    assert summary.size >= 150

    c.delete_vault(DeleteVaultRequest(vault_id=v.id))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            c.show_vault(ShowVaultRequest(vault_id=v.id))
        except ClientRequestException as e:
            assert e.status_code == 404
            break
        time.sleep(0.2)
    else:
        pytest.fail("vault was not deleted")
    deadline = time.time() + 20
    while True:  # the task ends just after the vault has gone
        logs = c.list_op_logs(ListOpLogsRequest(vault_id=v.id, operation_type="vault_delete"))
        assert logs.count == 1
        if logs.operation_logs[0].status != "running" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert logs.operation_logs[0].status == "success"
    log = c.show_op_log(ShowOpLogRequest(operation_log_id=logs.operation_logs[0].id)).operation_log
    assert log.extra_info.common.progress == 100


def test_resource_association(server, tmp_path):
    c = sdk(server)
    d1 = make_disk(server, tmp_path, "assoc-d1")
    d2 = make_disk(server, tmp_path, "assoc-d2")
    v = create(c, "assoc-vault")
    added = c.add_vault_resource(AddVaultResourceRequest(vault_id=v.id, body=VaultAddResourceReq(
        resources=[ResourceCreate(id=d1, type="OS::Cinder::Volume"), ResourceCreate(id=d2, type="OS::Cinder::Volume")])))
    assert sorted(added.add_resource_ids) == sorted([d1, d2])
    inst = c.show_protectable(ShowProtectableRequest(protectable_type="OS::Cinder::Volume", instance_id=d1)).instance
    assert inst.protectable.result is False and inst.protectable.vault.id == v.id
    # a resource is in at most one backup vault
    other = create(c, "assoc-other")
    with pytest.raises(ClientRequestException) as e:
        c.add_vault_resource(AddVaultResourceRequest(vault_id=other.id, body=VaultAddResourceReq(
            resources=[ResourceCreate(id=d1, type="OS::Cinder::Volume")])))
    assert e.value.status_code == 409 and "another vault" in e.value.error_msg
    removed = c.remove_vault_resource(RemoveVaultResourceRequest(vault_id=v.id, body=VaultRemoveResourceReq(
        resource_ids=[d1])))
    assert removed.remove_resource_ids == [d1]
    assert [r.id for r in c.show_vault(ShowVaultRequest(vault_id=v.id)).vault.resources] == [d2]
    # by name: the module's other tests may have registered more disks than one page holds
    insts = c.list_protectable(ListProtectableRequest(protectable_type="OS::Cinder::Volume", name="assoc-d")).instances
    by_id = {i.id: i for i in insts}
    assert by_id[d1].protectable.result is True and by_id[d1].status == "available"
    assert by_id[d2].protectable.result is False


def test_errors_have_cbr_body(server, tmp_path):
    c = sdk(server)
    cases = [
        (lambda: create(c, "bad name!"), 400, "vault name"),
        (lambda: create(c, "small", size=9), 400, "capacity"),
        (lambda: create(c, "big", size=10_485_761), 400, "capacity"),
        (lambda: create(c, "appdisk", level="app_consistent"), 400, "application-consistent"),
        (lambda: c.show_vault(ShowVaultRequest(vault_id="00000000-0000-0000-0000-000000000000")), 404, "not found"),
        (lambda: c.delete_vault(DeleteVaultRequest(vault_id="nope")), 404, "not found"),
    ]
    for call, status, text in cases:
        with pytest.raises(ClientRequestException) as e:
            call()
        assert e.value.status_code == status, e.value
        assert e.value.error_code.startswith("BackupService.")
        assert text in e.value.error_msg
        assert e.value.request_id


def test_type_mismatch_and_capacity(server, tmp_path):
    c = sdk(server)
    d = make_disk(server, tmp_path, "mismatch-d", size=11 * GB)
    with pytest.raises(ClientRequestException) as e:
        create(c, "srv-vault", object_type="server", resources=[ResourceCreate(id=d, type="OS::Cinder::Volume")])
    assert e.value.status_code == 400 and "server vault" in e.value.error_msg
    with pytest.raises(ClientRequestException) as e:
        create(c, "tiny", size=10, resources=[ResourceCreate(id=d, type="OS::Cinder::Volume")])
    assert e.value.status_code == 400 and "capacity" in e.value.error_msg
    # nothing was created by the failed requests
    assert c.list_vault(ListVaultRequest(name="tiny")).count == 0


def test_consistency_change_one_way(server):
    c = sdk(server)
    v = create(c, "spec-vault", object_type="server")
    up = VaultUpdate(billing=BillingUpdate(consistent_level="app_consistent"))
    u = c.update_vault(UpdateVaultRequest(vault_id=v.id, body=VaultUpdateReq(vault=up))).vault
    assert u.billing.consistent_level == "app_consistent" and u.billing.spec_code == "vault.backup.database.normal"
    back = VaultUpdate(billing=BillingUpdate(consistent_level="crash_consistent"))
    with pytest.raises(ClientRequestException) as e:
        c.update_vault(UpdateVaultRequest(vault_id=v.id, body=VaultUpdateReq(vault=back)))
    assert e.value.status_code == 400 and "not the other way around" in e.value.error_msg


def test_default_name_and_billing_echo(server):
    c = sdk(server)
    billing = BillingCreate(consistent_level="crash_consistent", object_type="turbo", protect_type="backup", size=50,
                            charging_mode="post_paid", cloud_type="public", is_multi_az=False)
    v = c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=None, billing=billing, resources=[], enterprise_project_id="0", smn_notify=False)))).vault
    assert v.name.startswith("vault_") and len(v.name) == 10
    assert (v.billing.charging_mode, v.billing.cloud_type, v.smn_notify) == ("post_paid", "public", False)
    assert v.billing.spec_code == "vault.backup.turbo.normal"


def test_256_resource_limit(server, tmp_path):
    """Guide 1.6: a vault can be associated with at most 256 resources."""
    client = api(server)
    ids = []
    for i in range(257):
        p = tmp_path / f"many{i}.img"
        with open(p, "wb") as f:
            f.truncate(1024 * 1024)
        ids.append(client.post("/inventory/disks", {"name": f"many{i}", "path": str(p)})["disk"]["id"])
    v = client.post("/vaults", {"vault": {"name": "many", "billing": {"object_type": "disk", "size": 1000,
                                                                      "consistent_level": "crash_consistent",
                                                                      "protect_type": "backup"},
                                          "resources": [{"id": i, "type": "OS::Cinder::Volume"} for i in ids[:256]]}})
    vid = v["vault"]["id"]
    assert len(v["vault"]["resources"]) == 256
    from opencbr.cli.client import ClientError
    with pytest.raises(ClientError) as e:
        client.post(f"/vaults/{vid}/addresources", {"resources": [{"id": ids[256], "type": "OS::Cinder::Volume"}]})
    assert e.value.status == 400 and "256" in e.value.message
    os.sync()


def test_protectables_take_the_official_type_names(server):
    """The SDK documents protectable_type as server, disk or turbo (ShowProtectableRequest): both lists and
    shows answer under those names as under the resource types."""
    c = sdk(server)
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # below the test servers' resource_roots, whatever --basetemp
        d1 = make_disk(server, pathlib.Path(d), "ptype-d1", size=1024**2)
    by_short = c.list_protectable(ListProtectableRequest(protectable_type="disk", name="ptype-d1")).instances
    assert [i.id for i in by_short] == [d1] and by_short[0].type == "OS::Cinder::Volume"
    inst = c.show_protectable(ShowProtectableRequest(protectable_type="disk", instance_id=d1)).instance
    assert inst.id == d1
    for short in ("server", "turbo"):
        assert c.list_protectable(ListProtectableRequest(protectable_type=short, name="ptype-d1")).instances == []
        with pytest.raises(ClientRequestException) as e:
            c.show_protectable(ShowProtectableRequest(protectable_type=short, instance_id=d1))
        assert e.value.status_code == 404
    with pytest.raises(ClientRequestException) as e:
        c.list_protectable(ListProtectableRequest(protectable_type="volume"))
    assert e.value.status_code == 400 and e.value.error_code == "BackupService.6001"
