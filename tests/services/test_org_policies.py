"""Organization policies through the service, on both catalogs: the operator deploys a policy to the
projects of an account, the deployed policy fires under the scheduler's fake clock like any policy, the
project cannot change or delete it, a full project records a failed deployment with the reason, an update
reaches every deployed policy, a change of scope deploys and withdraws, a project created later receives
it, and deleting it deletes the deployed policies (unbinding their vaults)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Policy, PolicyBinding, User
from opencbr.config import load_settings
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound, QuotaExceeded
from opencbr.services import iam, org_policies, policies
from opencbr.services.context import open_context
from tests.support.scheduler import DAILY_0200, MONDAY, Driver, associate, disk, top_backups, vault


@pytest.fixture()
def ctx(catalog_url, tmp_path, clock):
    """The shared fixture's context, with the test's directory as the tenants' resource root (the disks
    of account A live there)."""
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), catalog_url=catalog_url,
                             task_lease_seconds=30, resource_roots=(str(tmp_path),))
    c = open_context(settings, clock=clock)
    yield c
    c.close()


def org_body(**over):
    body = {"name": "org-daily", "operation_type": "backup", "policy_name": "org-daily-policy",
            "policy_enabled": True, "policy_operation_definition": {"max_backups": 3},
            "policy_trigger": {"properties": {"pattern": [DAILY_0200]}}}
    body.update(over)
    return body


def tenant_of(ctx, name):
    """A new account with its admin as a principal."""
    account, project, user, _ = iam.create_account(ctx, name)
    return iam.principal_for_user(ctx, user.id, project.id)


def project_policies(ctx, project_id):
    with ctx.read() as s:
        return list(s.scalars(select(Policy).where(Policy.project_id == project_id)))


def create(ctx, p, **over):
    with ctx.tx() as s:
        return org_policies.create_org_policy(s, ctx, p, org_body(**over))


def test_deployed_to_the_target_account_and_fires_like_any_policy(ctx, tenant, clock, tmp_path):
    a = tenant_of(ctx, "acct-a")
    b = tenant_of(ctx, "acct-b")
    view = create(ctx, tenant, effective_scope="acct-a")
    assert view.effective_scope == a.account_id and view.status == "success"
    assert [(d.project_id, d.status) for d in view.deployments] == [(a.project_id, "success")]
    deployed = project_policies(ctx, a.project_id)
    assert [(x.name, x.operation_type, x.id) for x in deployed] == [("org-daily-policy", "backup",
                                                                     view.deployments[0].policy_id)]
    assert project_policies(ctx, b.project_id) == [] and project_policies(ctx, tenant.project_id) == []

    # the tenant applies it to its vault; the scheduler fires it at 02:00
    d = disk(ctx, a, tmp_path, "orgdisk")
    v = vault(ctx, a, "orgvault", [d.id])
    associate(ctx, a, v.id, deployed[0].id)
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=1, hours=3))
    made = top_backups(ctx, v.id)
    assert [(b.created_at.strftime("%a %H:%M"), b.status) for b in made] == [("Tue 02:00", "available")]


def test_the_project_cannot_change_or_delete_it_and_other_tenants_never_see_it(ctx, tenant):
    a = tenant_of(ctx, "acct-a")
    b = tenant_of(ctx, "acct-b")
    view = create(ctx, tenant, effective_scope=a.account_id)
    pid = view.deployments[0].policy_id
    with pytest.raises(Forbidden) as e, ctx.tx() as s:
        policies.update_policy(s, ctx, a, pid, {"name": "mine-now"})
    assert e.value.status == 403 and view.org.id in e.value.message
    with pytest.raises(Forbidden), ctx.tx() as s:
        policies.delete_policy(s, a, pid)
    assert [x.name for x in project_policies(ctx, a.project_id)] == ["org-daily-policy"]
    # A reads it (and its own deployments), B sees nothing of it
    with ctx.read() as s:
        assert [v.org.id for v in org_policies.list_org_policies(s, a)[0]] == [view.org.id]
        assert [d.project_id for d in org_policies.deployment_status(s, a, view.org.id)] == [a.project_id]
        assert org_policies.list_org_policies(s, b) == ([], 0)
        with pytest.raises(NotFound):
            org_policies.show_org_policy(s, b, view.org.id)
        with pytest.raises(NotFound):
            org_policies.deployment_status(s, b, view.org.id)
    # only the operator creates, changes and deletes them; A's admin is not the operator
    for call in (lambda s: org_policies.create_org_policy(s, ctx, a, org_body()),
                 lambda s: org_policies.update_org_policy(s, ctx, a, view.org.id, {"name": "x"}),
                 lambda s: org_policies.delete_org_policy(s, a, view.org.id)):
        with pytest.raises(Forbidden), ctx.tx() as s:
            call(s)


def test_update_propagates_scope_changes_deploy_and_withdraw_and_delete_unbinds(ctx, tenant, clock):
    a = tenant_of(ctx, "acct-a")
    b = tenant_of(ctx, "acct-b")
    view = create(ctx, tenant, effective_scope="acct-a")
    pid_a = view.deployments[0].policy_id
    v = vault(ctx, a, "va")
    associate(ctx, a, v.id, pid_a)
    clock.advance(days=1)
    with ctx.tx() as s:
        org_policies.update_org_policy(s, ctx, tenant, view.org.id, {
            "policy_name": "renamed", "policy_enabled": False, "policy_operation_definition": {"max_backups": 9},
            "policy_trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=1;BYHOUR=4;BYMINUTE=00"]}},
            "effective_scope": "acct-a,acct-b"})
    with ctx.read() as s:
        pol_a = s.get(Policy, pid_a)
        spec = policies.spec_of(pol_a)
        assert (pol_a.name, pol_a.enabled, spec.max_backups, spec.pattern_texts) == (
            "renamed", False, 9, ["FREQ=DAILY;INTERVAL=1;BYHOUR=4;BYMINUTE=00"])
        assert pol_a.trigger_start == clock.now  # new execution times restart the trigger (guide 5.2)
        assert s.scalar(select(PolicyBinding.vault_id).where(PolicyBinding.policy_id == pid_a)) == v.id
    assert [x.name for x in project_policies(ctx, b.project_id)] == ["renamed"]
    # A leaves the scope: its policy is withdrawn (and taken off its vault); B keeps it
    with ctx.tx() as s:
        after = org_policies.update_org_policy(s, ctx, tenant, view.org.id, {"effective_scope": "acct-b"})
    assert [d.project_id for d in after.deployments] == [b.project_id]
    assert project_policies(ctx, a.project_id) == []
    with ctx.read() as s:
        assert s.scalar(select(PolicyBinding).where(PolicyBinding.vault_id == v.id)) is None
    with ctx.tx() as s:
        org_policies.delete_org_policy(s, tenant, view.org.id)
    assert project_policies(ctx, b.project_id) == []
    with pytest.raises(NotFound), ctx.read() as s:
        org_policies.show_org_policy(s, tenant, view.org.id)


def test_projects_and_accounts_created_later_receive_it(ctx, tenant):
    view = create(ctx, tenant)  # no scope: every account of the installation
    assert view.effective_scope == "all"
    assert [d.project_id for d in view.deployments] == [tenant.project_id]
    later = tenant_of(ctx, "later")
    assert [x.name for x in project_policies(ctx, later.project_id)] == ["org-daily-policy"]
    second = iam.create_project(ctx, later, "second")
    assert [x.name for x in project_policies(ctx, second.id)] == ["org-daily-policy"]
    with ctx.read() as s:
        rows = org_policies.deployment_status(s, tenant, view.org.id)
    assert sorted(d.project_id for d in rows) == sorted([tenant.project_id, later.project_id, second.id])
    assert {d.status for d in rows} == {"success"}


def test_a_full_project_records_a_failed_deployment_with_the_reason_and_a_retry_on_update(ctx, tenant):
    a = tenant_of(ctx, "acct-a")
    trigger = {"properties": {"pattern": [DAILY_0200]}}
    with ctx.tx() as s:
        own = [policies.create_policy(s, ctx, a, {"name": f"own{i}", "operation_type": "backup",
                                                  "operation_definition": {"max_backups": 2}, "trigger": trigger})
               for i in range(32)]
    view = create(ctx, tenant, effective_scope="acct-a")
    assert view.status == "failed"
    [dep] = view.deployments
    assert (dep.status, dep.policy_id) == ("failed", "") and "32" in dep.reason
    with pytest.raises(QuotaExceeded), ctx.tx() as s:  # the same rule the deployment met
        policies.create_policy(s, ctx, a, {"name": "x", "operation_type": "backup",
                                           "operation_definition": {"max_backups": 2}, "trigger": trigger})
    with ctx.tx() as s:
        policies.delete_policy(s, a, own[0].policy.id)
        again = org_policies.update_org_policy(s, ctx, tenant, view.org.id, {"description": "retry"})
    assert again.status == "success" and again.deployments[0].policy_id


def test_bad_bodies_are_refused_before_anything_is_deployed(ctx, tenant):
    tenant_of(ctx, "acct-a")
    for bad in (org_body(effective_scope="nobody"), org_body(operation_type="archive"),
                org_body(policy_trigger={"properties": {"pattern": ["nonsense"]}}), org_body(policy_name=None),
                org_body(name="bad name!")):
        with pytest.raises(InvalidParameter), ctx.tx() as s:
            org_policies.create_org_policy(s, ctx, tenant, bad)
    with ctx.read() as s:
        assert org_policies.list_org_policies(s, tenant) == ([], 0)
        assert list(s.scalars(select(Policy))) == []
        assert s.scalar(select(User).where(User.is_operator.is_(True))).account_id == tenant.account_id


def test_a_replication_organization_policy_deploys_a_replication_policy(ctx, tenant):
    a = tenant_of(ctx, "acct-a")
    view = create(ctx, tenant, name="org-repl", operation_type="replication", policy_name="to-remote",
                  policy_operation_definition={"max_backups": 3, "destination_region": "remote-1",
                                               "destination_project_id": "remote-project"},
                  effective_scope="acct-a")
    [pol] = project_policies(ctx, a.project_id)
    spec = policies.spec_of(pol)
    assert (pol.operation_type, spec.destination_region, spec.destination_project_id) == (
        "replication", "remote-1", "remote-project")
    with ctx.read() as s:
        assert org_policies.list_org_policies(s, tenant, operation_type="replication")[1] == 1
        assert org_policies.list_org_policies(s, tenant, operation_type="backup") == ([], 0)
    with pytest.raises(InvalidParameter), ctx.tx() as s:  # the rules of an ordinary update: not to this region
        org_policies.update_org_policy(s, ctx, tenant, view.org.id, {"policy_operation_definition": {
            "destination_region": ctx.settings.region}})
    assert policies.spec_of(project_policies(ctx, a.project_id)[0]).destination_region == "remote-1"


# SQLite runs one writing transaction at a time, so the race is PostgreSQL's (and so is the test's time)
@pytest.mark.parametrize("catalog_url", ["postgresql"], indirect=True)
def test_an_account_created_while_an_all_scope_policy_is_created_receives_it(ctx, tenant):
    """The race of an account created at the same moment as an ``all``-scope organization policy: neither
    transaction sees the other's new row. Here the policy's transaction is held open (not committed)
    while another thread creates an account; the account must end up with the policy, whichever commits
    first. (Before the fix the account was created at once and missed it.)"""
    created: list = []
    with ctx.tx() as s:
        org_id = org_policies.create_org_policy(s, ctx, tenant, org_body()).org.id
        worker = threading.Thread(target=lambda: created.append(tenant_of(ctx, "born-meanwhile")))
        worker.start()
        worker.join(0.5)  # it waits for this transaction (the fix); without it, it is done by now
    worker.join(30)
    (late,) = created
    with ctx.read() as s:
        (dep,) = [d for d in org_policies.deployment_status(s, tenant, org_id) if d.project_id == late.project_id]
    assert dep.status == "success"
    assert [x.id for x in project_policies(ctx, late.project_id)] == [dep.policy_id]
