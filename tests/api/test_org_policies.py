"""Organization policies through the official SDK against a real server, on SQLite and PostgreSQL (CBR v3
API 6.9): the operator deploys a policy to account A; A's projects have it and may apply it to a vault but
neither change nor delete it; account B never sees it; a non-operator is refused (403); an update reaches
every deployed policy; the deployment status per project; a project created later receives it; deleting
it deletes the deployed policies."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import (
    AssociateVaultPolicyRequest,
    CreateOrganizationPolicyRequest,
    DeleteOrganizationPolicyRequest,
    DeletePolicyRequest,
    ListOrganizationPoliciesRequest,
    ListOrganizationPolicyDetailRequest,
    ListPoliciesRequest,
    ListVaultRequest,
    OrganizationPolicyCreate,
    OrganizationPolicyCreateReq,
    OrganizationPolicyUpdate,
    OrganizationPolicyUpdateReq,
    PolicyoODCreate,
    PolicyTriggerPropertiesReq,
    PolicyTriggerReq,
    PolicyUpdate,
    PolicyUpdateReq,
    ShowOrganizationPolicyRequest,
    UpdateOrganizationPolicyRequest,
    UpdatePolicyRequest,
    VaultAssociate,
)
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.api.test_policies_sdk import PATTERN, make_vault
from tests.support.clients import api, new_tenant, sdk
from tests.support.server import Creds

# The SDK end to end on one catalog (the suite's time budget); the same rules run on both catalogs in
# tests/services/test_org_policies.py.
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)



def org_create(c, name, scope, op="backup"):
    body = OrganizationPolicyCreate(
        name=name, operation_type=op, policy_name=f"{name}-policy", policy_enabled=True, description="from the operator",
        policy_operation_definition=PolicyoODCreate(max_backups=5),
        policy_trigger=PolicyTriggerReq(properties=PolicyTriggerPropertiesReq(pattern=[PATTERN])),
        effective_scope=scope)
    return c.create_organization_policy(CreateOrganizationPolicyRequest(
        body=OrganizationPolicyCreateReq(policy=body))).policy


def refused(call, status: int):
    with pytest.raises(ClientRequestException) as e:
        call()
    assert e.value.status_code == status, (e.value.error_code, e.value.error_msg)
    return e.value


def policies_of(c):
    return c.list_policies(ListPoliciesRequest()).policies


@pytest.fixture(scope="module")
def world(server):
    """The operator, and accounts A and B (each with its project and admin)."""
    sfx = server.backend
    a, b = new_tenant(server, f"org-a-{sfx}"), new_tenant(server, f"org-b-{sfx}")
    a_account = api(server, a).get("/iam/whoami")["account_id"]
    return {"op": sdk(server), "a": sdk(server, a), "b": sdk(server, b), "a_creds": a, "a_account": a_account,
            "b_account": api(server, b).get("/iam/whoami")["account_id"], "sfx": sfx}


def test_deployed_to_a_managed_there_invisible_to_b_and_operator_only(server, world):
    op, a, b, sfx = world["op"], world["a"], world["b"], world["sfx"]
    org = org_create(op, f"org-{sfx}", f"org-a-{sfx}")
    assert (org.name, org.operation_type, org.policy_name, org.policy_enabled, org.status) == (
        f"org-{sfx}", "backup", f"org-{sfx}-policy", True, "success")
    assert org.effective_scope == world["a_account"] and org.domain_name == "admin" and org.domain_id
    assert org.policy_operation_definition.max_backups == 5 and org.policy_trigger.properties.pattern == [PATTERN]

    # A's project has it as an ordinary policy, applies it to a vault, but cannot change or delete it
    [deployed] = [p for p in policies_of(a) if p.name == f"org-{sfx}-policy"]
    raw = api(server, world["a_creds"]).get(f"/policies/{deployed.id}")["policy"]
    assert raw["organization_policy_id"] == org.id  # OpenCBR's field: the tenant sees who manages it
    v = make_vault(a, f"org-vault-{sfx}")
    a.associate_vault_policy(AssociateVaultPolicyRequest(vault_id=v.id, body=VaultAssociate(policy_id=deployed.id)))
    assert [x.id for x in a.list_vault(ListVaultRequest(policy_id=deployed.id)).vaults] == [v.id]
    e = refused(lambda: a.update_policy(UpdatePolicyRequest(policy_id=deployed.id, body=PolicyUpdateReq(
        policy=PolicyUpdate(name="taken")))), 403)
    assert e.error_code == "BackupService.6307" and org.id in e.error_msg
    refused(lambda: a.delete_policy(DeletePolicyRequest(policy_id=deployed.id)), 403)

    # A reads it and its own deployment; B sees nothing of it
    assert [o.id for o in a.list_organization_policies(ListOrganizationPoliciesRequest(
        operation_type="backup")).policies] == [org.id]
    assert a.show_organization_policy(ShowOrganizationPolicyRequest(organization_policy_id=org.id)).policy.id == org.id
    assert not any(p.name == f"org-{sfx}-policy" for p in policies_of(b))
    listed = b.list_organization_policies(ListOrganizationPoliciesRequest(operation_type="backup"))
    assert listed.policies == [] and listed.count == 0
    for call in (lambda: b.show_organization_policy(ShowOrganizationPolicyRequest(organization_policy_id=org.id)),
                 lambda: b.list_organization_policy_detail(ListOrganizationPolicyDetailRequest(
                     organization_policy_id=org.id))):
        assert refused(call, 404).error_code == "BackupService.6310"

    # only the operator changes them: A's admin is refused
    refused(lambda: org_create(a, f"mine-{sfx}", f"org-a-{sfx}"), 403)
    refused(lambda: a.update_organization_policy(UpdateOrganizationPolicyRequest(
        organization_policy_id=org.id, body=OrganizationPolicyUpdateReq(policy=OrganizationPolicyUpdate(
            name="x")))), 403)
    refused(lambda: a.delete_organization_policy(DeleteOrganizationPolicyRequest(organization_policy_id=org.id)), 403)
    # a bad body is a 400 naming the field
    e = refused(lambda: org_create(op, f"bad-{sfx}", "no-such-account"), 400)
    assert "no-such-account" in e.error_msg


def test_update_status_later_projects_and_delete(server, world):
    op, a, b, sfx = world["op"], world["a"], world["b"], world["sfx"]
    org = org_create(op, f"org2-{sfx}", world["a_account"])
    detail = op.list_organization_policy_detail(ListOrganizationPolicyDetailRequest(organization_policy_id=org.id))
    assert [(d.project_id, d.domain_id, d.status) for d in detail.policies] == [
        (world["a_creds"].project_id, world["a_account"], "success")]
    assert detail.count == 1 and detail.policies[0].policy_id

    # a project created later in A receives it
    later = api(server, world["a_creds"]).post("/iam/projects", {"name": f"later-{sfx}"})["project"]
    a_later = sdk(server, Creds(world["a_creds"].ak, world["a_creds"].sk, later["id"]))
    assert f"org2-{sfx}-policy" in [p.name for p in policies_of(a_later)]
    detail = op.list_organization_policy_detail(ListOrganizationPolicyDetailRequest(organization_policy_id=org.id))
    assert sorted(d.project_id for d in detail.policies) == sorted([world["a_creds"].project_id, later["id"]])

    # an update reaches every deployed policy; extending the scope deploys to B
    body = OrganizationPolicyUpdate(name=f"org2-{sfx}-v2", policy_name=f"org2-{sfx}-renamed", policy_enabled=False,
                                    policy_operation_definition=PolicyoODCreate(max_backups=9),
                                    effective_scope=f"{world['a_account']},{world['b_account']}")
    updated = op.update_organization_policy(UpdateOrganizationPolicyRequest(
        organization_policy_id=org.id, body=OrganizationPolicyUpdateReq(policy=body))).policy
    assert (updated.name, updated.policy_name, updated.policy_enabled) == (f"org2-{sfx}-v2", f"org2-{sfx}-renamed", False)
    for c in (a, a_later, b):
        [p] = [p for p in policies_of(c) if p.name == f"org2-{sfx}-renamed"]
        assert p.enabled is False and p.operation_definition.max_backups == 9
    shown = op.show_organization_policy(ShowOrganizationPolicyRequest(organization_policy_id=org.id)).policy
    assert shown.effective_scope == f"{world['a_account']},{world['b_account']}" and shown.status == "success"

    # deleting it deletes the deployed policies everywhere
    op.delete_organization_policy(DeleteOrganizationPolicyRequest(organization_policy_id=org.id))
    for c in (a, a_later, b):
        assert not any(p.name.startswith(f"org2-{sfx}") for p in policies_of(c))
    refused(lambda: op.show_organization_policy(ShowOrganizationPolicyRequest(organization_policy_id=org.id)), 404)
    assert org.id not in [o.id for o in op.list_organization_policies(ListOrganizationPoliciesRequest(
        operation_type="backup")).policies]
    # the operator's audit trail has the three changes (guide ch. 11)
    events = api(server).get("/iam/audit-events", resource_id=org.id)["events"]
    assert sorted(e["trace_name"] for e in events) == [
        "createOrganizationPolicy", "deleteOrganizationPolicy", "updateOrganizationPolicy"]
