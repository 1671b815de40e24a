"""Policies through the official huaweicloudsdkcbr SDK and signed HTTP, against a real server on SQLite
and on PostgreSQL: create, show, list, update, apply, remove and delete (CBR v3 API 6.4, 6.1), the
response shape of section 5, every 4xx rule of the guide (5.2, 5.3, 1.6), the audit traces (ch. 11), and
the extensions (next execution times, executions, retention dry run)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from huaweicloudsdkcbr.v1 import (
    AssociateVaultPolicyRequest,
    BillingCreate,
    CreatePolicyRequest,
    CreateVaultRequest,
    DeletePolicyRequest,
    DisassociateVaultPolicyRequest,
    ListPoliciesRequest,
    ListVaultRequest,
    PolicyCreate,
    PolicyCreateReq,
    PolicyoODCreate,
    PolicyTriggerPropertiesReq,
    PolicyTriggerPropertiesUpdateReq,
    PolicyTriggerReq,
    PolicyTriggerUpdateReq,
    PolicyUpdate,
    PolicyUpdateReq,
    ShowPolicyRequest,
    ShowVaultRequest,
    UpdatePolicyRequest,
    VaultAssociate,
    VaultCreate,
    VaultCreateReq,
    VaultDissociate,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant, sdk
from tests.support.server import Creds

# An hour far from now, so the server's real-time scheduler never fires during a test.
FAR_HOUR = (datetime.now(timezone.utc).hour + 12) % 24
PATTERN = f"FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR={FAR_HOUR};BYMINUTE=00"


def make_vault(client, name, object_type="disk", protect_type="backup"):
    billing = BillingCreate(consistent_level="crash_consistent", object_type=object_type, protect_type=protect_type,
                            size=10)
    return client.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=name, billing=billing, resources=[])))).vault


def make_policy(client, name, op="backup", pattern=PATTERN, **od):
    body = PolicyCreate(name=name, operation_type=op, enabled=True,
                        operation_definition=PolicyoODCreate(**od),
                        trigger=PolicyTriggerReq(properties=PolicyTriggerPropertiesReq(pattern=[pattern])))
    return client.create_policy(CreatePolicyRequest(body=PolicyCreateReq(policy=body))).policy


def assert_error(exc_info, status: int, *words: str) -> None:
    e = exc_info.value
    status_code = getattr(e, "status_code", None) or getattr(e, "status", None)
    message = getattr(e, "error_msg", None) or getattr(e, "message", "")
    code = getattr(e, "error_code", None) or getattr(e, "code", "")
    assert status_code == status, (status_code, code, message)
    assert code.startswith("BackupService."), code
    for w in words:
        assert w.lower() in message.lower(), (w, message)


def test_policy_lifecycle_through_the_sdk(server):
    c = sdk(server)
    sfx = server.backend
    v = make_vault(c, f"pol-vault-{sfx}")
    pol = make_policy(c, f"daily-{sfx}", max_backups=7, full_backup_interval=-1)
    # the shape of CBR v3 API 5
    assert pol.id and pol.name == f"daily-{sfx}" and pol.enabled is True and pol.operation_type == "backup"
    assert pol.operation_definition.max_backups == 7 and pol.operation_definition.full_backup_interval == -1
    assert pol.trigger.type == "time" and pol.trigger.id and pol.trigger.name
    assert pol.trigger.properties.pattern == [PATTERN]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", pol.trigger.properties.start_time)
    assert pol.associated_vaults == [] and pol.policy_type == "custom_policy"

    shown = c.show_policy(ShowPolicyRequest(policy_id=pol.id)).policy
    assert shown.id == pol.id and shown.trigger.properties.start_time == pol.trigger.properties.start_time

    # apply it to the vault (guide 5.6)
    out = c.associate_vault_policy(AssociateVaultPolicyRequest(vault_id=v.id, body=VaultAssociate(policy_id=pol.id)))
    assert (out.associate_policy.vault_id, out.associate_policy.policy_id) == (v.id, pol.id)
    shown = c.show_policy(ShowPolicyRequest(policy_id=pol.id)).policy
    assert [a.vault_id for a in shown.associated_vaults] == [v.id]
    assert [x.id for x in c.list_vault(ListVaultRequest(policy_id=pol.id)).vaults] == [v.id]
    listed = c.list_policies(ListPoliciesRequest(vault_id=v.id))
    assert listed.count == 1 and listed.policies[0].id == pol.id
    assert pol.id in [p.id for p in c.list_policies(ListPoliciesRequest(operation_type="backup")).policies]
    assert pol.id not in [p.id for p in c.list_policies(ListPoliciesRequest(operation_type="replication")).policies]
    # applying it again changes nothing
    c.associate_vault_policy(AssociateVaultPolicyRequest(vault_id=v.id, body=VaultAssociate(policy_id=pol.id)))
    assert len(c.show_policy(ShowPolicyRequest(policy_id=pol.id)).policy.associated_vaults) == 1

    # update (guide 5.4): rename, retention by time period, keep the trigger; then new execution times
    upd = PolicyUpdate(name=f"daily2-{sfx}", operation_definition=PolicyoODCreate(retention_duration_days=30))
    u = c.update_policy(UpdatePolicyRequest(policy_id=pol.id, body=PolicyUpdateReq(policy=upd))).policy
    assert u.name == f"daily2-{sfx}" and u.operation_definition.retention_duration_days == 30
    assert u.operation_definition.max_backups is None
    assert u.trigger.properties.start_time == pol.trigger.properties.start_time
    new_pattern = f"FREQ=DAILY;INTERVAL=2;BYHOUR={FAR_HOUR};BYMINUTE=30"
    upd = PolicyUpdate(enabled=False, trigger=PolicyTriggerUpdateReq(
        properties=PolicyTriggerPropertiesUpdateReq(pattern=[new_pattern])))
    u = c.update_policy(UpdatePolicyRequest(policy_id=pol.id, body=PolicyUpdateReq(policy=upd))).policy
    assert u.enabled is False and u.trigger.properties.pattern == [new_pattern]

    # remove it from the vault (guide 5.7), then delete it (5.5)
    out = c.disassociate_vault_policy(DisassociateVaultPolicyRequest(vault_id=v.id,
                                                                     body=VaultDissociate(policy_id=pol.id)))
    assert (out.dissociate_policy.vault_id, out.dissociate_policy.policy_id) == (v.id, pol.id)
    assert c.list_policies(ListPoliciesRequest(vault_id=v.id)).count == 0
    c.associate_vault_policy(AssociateVaultPolicyRequest(vault_id=v.id, body=VaultAssociate(policy_id=pol.id)))
    c.delete_policy(DeletePolicyRequest(policy_id=pol.id))
    with pytest.raises(ClientRequestException) as e:
        c.show_policy(ShowPolicyRequest(policy_id=pol.id))
    assert_error(e, 404, "not found")
    assert c.show_vault(ShowVaultRequest(vault_id=v.id)).vault.id == v.id  # the vault stays, unbound
    assert c.list_policies(ListPoliciesRequest(vault_id=v.id)).count == 0

    # the audit trail (guide ch. 11) has every key operation on the policy
    events = api(server).get("/iam/audit-events", limit=100)["events"]
    mine = [ev["trace_name"] for ev in events if ev["resource_id"] in (pol.id, v.id) and ev["outcome"] == "success"]
    for name in ("createPolicy", "updatePolicy", "associatePolicy", "dissociatePolicy", "deletePolicy"):
        assert name in mine, (name, mine)


BAD_POLICIES = [
    ({"name": "has space"}, "name"),
    ({"name": "x" * 65}, "64"),
    ({"name": ""}, "name"),
    ({"operation_type": "archive"}, "operation_type"),
    ({"operation_definition": {"max_backups": 1}}, "max_backups"),
    ({"operation_definition": {"max_backups": 100000}}, "max_backups"),
    ({"operation_definition": {"retention_duration_days": 1}}, "retention_duration_days"),
    ({"operation_definition": {"retention_duration_months": 2}}, "1, 3, 6 or 12"),
    ({"operation_definition": {"max_backups": 5, "retention_duration_days": 10}}, "not both"),
    ({"operation_definition": {"max_backups": 5, "day_backups": 3}}, "timezone"),
    ({"operation_definition": {"max_backups": 5, "day_backups": 101, "timezone": "UTC+08:00"}}, "day_backups"),
    ({"operation_definition": {"max_backups": 5, "timezone": "Europe/Paris"}}, "timezone"),
    ({"trigger": {"properties": {"pattern": ["FREQ=MONTHLY;BYHOUR=2"]}}}, "FREQ"),
    ({"trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=31;BYHOUR=2"]}}}, "INTERVAL"),
    ({"trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2;BYMINUTE=0,30"]}}}, "60 minutes"),
    ({"trigger": {"properties": {"pattern": []}}}, "pattern"),
    ({"trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2"], "start_window_minutes": 10}}}, "start_window"),
    ({"operation_type": "replication", "operation_definition": {"max_backups": 5}}, "destination_region"),
    ({"operation_type": "replication", "operation_definition": {"destination_region": "local-1",
                                                                "destination_project_id": "p"}}, "differ"),
    ({"operation_definition": {"destination_region": "r2", "destination_project_id": "p"}}, "replication"),
]


@pytest.mark.parametrize("change,word", BAD_POLICIES)
def test_invalid_policies_are_rejected_with_400(server, change, word):
    """Guide 5.2 / 5.3 Table 5-1 and 5-2, CBR v3 API 4: every field rule is a 400 that says what."""
    body = {"name": "ok_name", "operation_type": "backup", "operation_definition": {"max_backups": 3},
            "trigger": {"properties": {"pattern": [PATTERN]}}}
    body.update(change)
    with pytest.raises(ClientError) as e:
        api(server).post("/policies", {"policy": body})
    assert_error(e, 400, word)


def test_update_rules(server):
    a = api(server)
    pol = a.post("/policies", {"policy": {"name": f"upd-{server.backend}", "operation_type": "backup",
                                          "operation_definition": {"max_backups": 3},
                                          "trigger": {"properties": {"pattern": [PATTERN]}}}})["policy"]
    for body, word in (({"operation_type": "replication"}, "cannot be changed"), ({"name": "a b"}, "name"),
                       ({"operation_definition": {"max_backups": 1}}, "max_backups"),
                       ({"trigger": {"properties": {"pattern": ["FREQ=HOURLY"]}}}, "FREQ")):
        with pytest.raises(ClientError) as e:
            a.put(f"/policies/{pol['id']}", {"policy": body})
        assert_error(e, 400, word)
    with pytest.raises(ClientError) as e:
        a.put("/policies/no-such-policy", {"policy": {"name": "x"}})
    assert_error(e, 404)
    # changing the execution times restarts the trigger; other changes keep it
    same = a.put(f"/policies/{pol['id']}", {"policy": {"enabled": False}})["policy"]
    assert same["trigger"]["properties"]["start_time"] == pol["trigger"]["properties"]["start_time"]
    assert same["trigger"]["id"] == pol["trigger"]["id"]


def test_at_most_32_backup_and_32_replication_policies(server):
    """Guide 1.6: "A maximum of 32 backup policies and 32 replication policies can be created"."""
    creds = new_tenant(server, f"quota-{server.backend}")
    a = api(server, creds)
    trig = {"properties": {"pattern": [PATTERN]}}
    rep_od = {"destination_region": "remote-1", "destination_project_id": "proj-remote"}
    for i in range(32):
        a.post("/policies", {"policy": {"name": f"b{i}", "operation_type": "backup",
                                        "operation_definition": {"max_backups": 3}, "trigger": trig}})
    with pytest.raises(ClientError) as e:
        a.post("/policies", {"policy": {"name": "b32", "operation_type": "backup",
                                        "operation_definition": {"max_backups": 3}, "trigger": trig}})
    assert_error(e, 400, "32")
    for i in range(32):  # replication policies are counted apart
        a.post("/policies", {"policy": {"name": f"r{i}", "operation_type": "replication",
                                        "operation_definition": rep_od, "trigger": trig}})
    with pytest.raises(ClientError) as e:
        a.post("/policies", {"policy": {"name": "r32", "operation_type": "replication",
                                        "operation_definition": rep_od, "trigger": trig}})
    assert_error(e, 400, "32")
    assert a.get("/policies", operation_type="backup")["count"] == 32
    # another project is not affected
    assert api(server).post("/policies", {"policy": {"name": "other", "operation_type": "backup",
                                                     "operation_definition": {}, "trigger": trig}})["policy"]["id"]


def test_vault_binding_rules(server):
    """Guide 1.6 / 5.6: one backup and one replication policy per vault (409); 5.2: backup policies on
    backup vaults; 5.3 and 1.6: replication policies only on server and SFS Turbo backup vaults, with a
    destination vault (CBR v3 API 6.1); unknown or foreign policies and vaults are 404."""
    c = sdk(server)
    a = api(server)
    sfx = server.backend
    disk_v, srv_v, turbo_v = make_vault(c, f"bd-{sfx}"), make_vault(c, f"bs-{sfx}", "server"), \
        make_vault(c, f"bt-{sfx}", "turbo")
    rep_v = make_vault(c, f"br-{sfx}", "server", "replication")
    b1, b2 = make_policy(c, f"b1-{sfx}", max_backups=3), make_policy(c, f"b2-{sfx}", max_backups=3)
    rep = make_policy(c, f"r1-{sfx}", "replication", destination_region="remote-1",
                      destination_project_id="proj-remote")
    rep2 = make_policy(c, f"r2-{sfx}", "replication", destination_region="remote-1",
                       destination_project_id="proj-remote")

    def apply(vault_id, policy_id, dest=None):
        return c.associate_vault_policy(AssociateVaultPolicyRequest(vault_id=vault_id, body=VaultAssociate(
            policy_id=policy_id, destination_vault_id=dest))).associate_policy

    apply(disk_v.id, b1.id)
    with pytest.raises(ClientRequestException) as e:
        apply(disk_v.id, b2.id)
    assert_error(e, 409, "only one backup policy")
    with pytest.raises(ClientRequestException) as e:
        apply(disk_v.id, rep.id, "remote-vault")
    assert_error(e, 400, "server and SFS Turbo")
    with pytest.raises(ClientRequestException) as e:
        apply(srv_v.id, rep.id)
    assert_error(e, 400, "destination_vault_id")
    with pytest.raises(ClientRequestException) as e:
        apply(srv_v.id, b2.id, "remote-vault")
    assert_error(e, 400, "only to replication policies")
    # a replication vault this installation holds is checked: it is not in the policy's destination region
    to_me = make_policy(c, f"r3-{sfx}", "replication", destination_region="remote-1",
                        destination_project_id=server.admin.project_id)
    with pytest.raises(ClientRequestException) as e:
        apply(srv_v.id, to_me.id, rep_v.id)
    assert_error(e, 400, "region")
    with pytest.raises(ClientRequestException) as e:
        apply(rep_v.id, b2.id)
    assert_error(e, 400, "backup vault")
    out = apply(srv_v.id, rep.id, "remote-vault")
    assert out.destination_vault_id == "remote-vault"
    apply(srv_v.id, b2.id)  # a vault has one backup and one replication policy
    with pytest.raises(ClientRequestException) as e:
        apply(srv_v.id, rep2.id, "remote-vault")
    assert_error(e, 409, "only one replication policy")
    apply(turbo_v.id, rep2.id, "remote-vault")
    shown = c.show_policy(ShowPolicyRequest(policy_id=rep.id)).policy
    assert [(x.vault_id, x.destination_vault_id) for x in shown.associated_vaults] == [(srv_v.id, "remote-vault")]
    assert sorted(a.get(f"/vaults/{srv_v.id}")["vault"]["policy_ids"]) == sorted([rep.id, b2.id])
    # 404s: unknown policy or vault; dissociating a policy that is not applied there
    with pytest.raises(ClientRequestException) as e:
        apply(disk_v.id, "no-such-policy")
    assert_error(e, 404)
    with pytest.raises(ClientRequestException) as e:
        apply("no-such-vault", b1.id)
    assert_error(e, 404)
    with pytest.raises(ClientRequestException) as e:
        c.disassociate_vault_policy(DisassociateVaultPolicyRequest(vault_id=disk_v.id,
                                                                   body=VaultDissociate(policy_id=b2.id)))
    assert_error(e, 404, "not applied")
    with pytest.raises(ClientError) as e:
        a.post(f"/vaults/{disk_v.id}/associatepolicy", {})
    assert_error(e, 400, "policy_id")
    # another tenant sees none of it
    other = api(server, new_tenant(server, f"stranger-{sfx}"))
    for call in (lambda: other.get(f"/policies/{b1.id}"),
                 lambda: other.post(f"/vaults/{disk_v.id}/associatepolicy", {"policy_id": b1.id}),
                 lambda: other.delete(f"/policies/{b1.id}")):
        with pytest.raises(ClientError) as e:
            call()
        assert_error(e, 404)
    assert other.get("/policies")["count"] == 0


def test_readonly_users_cannot_change_policies(server):
    admin = api(server)
    name = f"ro-pol-{server.backend}"
    admin.post("/iam/users", {"name": name, "role": "readonly"})
    cred = admin.post("/iam/credentials", {"user_name": name})["credential"]
    ro = api(server, Creds(cred["access_key"], cred["secret_key"], server.admin.project_id))
    with pytest.raises(ClientError) as e:
        ro.post("/policies", {"policy": {"name": "nope", "operation_type": "backup", "operation_definition": {},
                                         "trigger": {"properties": {"pattern": [PATTERN]}}}})
    assert e.value.status == 403
    assert "policies" in ro.get("/policies")


def test_extensions_preview_executions_and_retention_dry_run(server):
    a = api(server)
    sfx = server.backend
    pol = a.post("/policies", {"policy": {
        "name": f"ext-{sfx}", "operation_type": "backup",
        "operation_definition": {"max_backups": 2, "timezone": "UTC+08:00"},
        "trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=1;BYHOUR=18;BYMINUTE=00"]}}}})["policy"]
    pv = a.get(f"/policies/{pol['id']}/preview", next=5)
    assert pv["timezone"] == "UTC+08:00" and len(pv["executions"]) == 5
    times = [x["scheduled_at"] for x in pv["executions"]]
    assert times == sorted(times) and all(t.endswith("T18:00:00Z") for t in times)
    assert all(x["local_time"].split(" ")[1] == "02:00" for x in pv["executions"])  # 18:00 UTC = 02:00 UTC+8
    for bad in (0, 101):
        with pytest.raises(ClientError) as e:
            a.get(f"/policies/{pol['id']}/preview", next=bad)
        assert_error(e, 400, "next")
    assert a.get(f"/policies/{pol['id']}/executions")["executions"] == []
    vault = a.post("/vaults", {"vault": {"name": f"ext-v-{sfx}", "billing": {
        "object_type": "disk", "protect_type": "backup", "size": 10, "consistent_level": "crash_consistent"}}})["vault"]
    dry = a.get(f"/policies/{pol['id']}/retention-preview", vault_id=vault["id"])
    assert dry == {"policy_id": pol["id"], "prune_count": 0, "resources": []}
    with pytest.raises(ClientError) as e:  # prune applies the vault's own policy only
        a.post(f"/policies/{pol['id']}/prune", {"vault_id": vault["id"]})
    assert_error(e, 409, "not applied")
    a.post(f"/vaults/{vault['id']}/associatepolicy", {"policy_id": pol["id"]})
    assert a.post(f"/policies/{pol['id']}/prune", {"vault_id": vault["id"]})["deleted_count"] == 0
