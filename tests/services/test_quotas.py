"""Per-project quotas (guide ch. 12): defaults from the settings, the operator's own limits per project,
enforced where vaults, backups, capacity and policies grow, also for automatic backups and under
concurrent creations."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from opencbr.domain.errors import CBRError, Forbidden
from opencbr.services import iam, quotas, vaults
from tests.support import scheduler as S


def limits(ctx, p, project_id=None, **values):
    with ctx.tx() as s:
        return quotas.admin_set(s, ctx, p, project_id or p.project_id, values)


def shown(ctx, p) -> dict:
    with ctx.read() as s:
        return {q.type: (q.used, q.limit) for q in quotas.show_quotas(s, ctx, p)}


def test_defaults_are_no_limit_and_usage_is_counted(ctx, tenant, tmp_path):
    d = S.disk(ctx, tenant, tmp_path, "d1")
    S.vault(ctx, tenant, "v1", [d.id], size=17)
    S.vault(ctx, tenant, "v2", size=13)
    S.policy(ctx, tenant)
    assert shown(ctx, tenant) == {"vault": (2, -1), "backup": (0, -1), "capacity": (30, -1), "policy": (1, -1)}


def test_settings_give_every_project_its_default(ctx, tenant):
    ctx.settings = replace(ctx.settings, quota_vaults=1)
    S.vault(ctx, tenant, "v1")
    with pytest.raises(quotas.ProjectQuotaExceeded) as e:
        S.vault(ctx, tenant, "v2")
    assert e.value.code == "BackupService.6970" and e.value.status == 403
    assert "vault quota is 1 vaults" in e.value.message and "it has 1" in e.value.message


def test_vault_and_policy_quotas_of_one_project_and_reset(ctx, tenant):
    assert limits(ctx, tenant, vault=2)
    S.vault(ctx, tenant, "v1")
    S.vault(ctx, tenant, "v2")
    with pytest.raises(quotas.ProjectQuotaExceeded, match="vault quota is 2"):
        S.vault(ctx, tenant, "v3")
    assert shown(ctx, tenant)["vault"] == (2, 2)
    with ctx.tx() as s:
        quotas.admin_reset(s, ctx, tenant, tenant.project_id, ["vault"])
    S.vault(ctx, tenant, "v3")
    assert shown(ctx, tenant)["vault"] == (3, -1)
    limits(ctx, tenant, policy=1)
    S.policy(ctx, tenant, "p1")
    with pytest.raises(quotas.ProjectQuotaExceeded, match="policy quota is 1 policies"):
        S.policy(ctx, tenant, "p2")


def test_capacity_quota_covers_creation_and_expansion(ctx, tenant):
    limits(ctx, tenant, capacity=25)
    v = S.vault(ctx, tenant, "v1", size=10)
    with pytest.raises(quotas.ProjectQuotaExceeded, match="capacity quota is 25 GB"):
        S.vault(ctx, tenant, "v2", size=16)
    with ctx.tx() as s, pytest.raises(quotas.ProjectQuotaExceeded, match="needs 16 more"):
        vaults.update_vault(s, ctx, tenant, v.id, {"billing": {"size": 26}})
    with ctx.tx() as s:
        vaults.update_vault(s, ctx, tenant, v.id, {"billing": {"size": 25}})
    assert shown(ctx, tenant)["capacity"] == (25, 25)


def test_backup_quota_refuses_manual_and_fails_policy_backups(ctx, tenant, tmp_path, clock):
    d1, d2 = S.disk(ctx, tenant, tmp_path, "d1"), S.disk(ctx, tenant, tmp_path, "d2")
    v = S.vault(ctx, tenant, "v", [d1.id, d2.id])
    limits(ctx, tenant, backup=1)
    with pytest.raises(quotas.ProjectQuotaExceeded, match="backup quota is 1 backups; it has 0 and this needs 2"):
        S.backup_now(ctx, tenant, v.id)  # one backup per resource: both or none
    S.backup_now(ctx, tenant, v.id, {"resources": [d1.id]})
    with pytest.raises(quotas.ProjectQuotaExceeded):
        S.backup_now(ctx, tenant, v.id, {"resources": [d2.id]})
    pol = S.policy(ctx, tenant)
    S.associate(ctx, tenant, v.id, pol.id)
    driver = S.Driver(ctx, clock)
    driver.drain()
    driver.run_until(clock.now + timedelta(days=1))
    failed = [t for t in S.task_rows(ctx, operation_type="backup", policy_id=pol.id)]
    assert failed and all(t.status == "failed" and t.error_code == "BackupService.6970" for t in failed)
    assert "backup quota is 1" in failed[0].error_message
    assert len(S.top_backups(ctx, v.id)) == 1


def test_auto_expansion_stops_at_the_capacity_quota(ctx, tenant, tmp_path):
    d = S.disk(ctx, tenant, tmp_path, "d1")
    v = S.vault(ctx, tenant, "v", [d.id], size=10)
    S.vault(ctx, tenant, "other", size=10)
    limits(ctx, tenant, capacity=30)
    from opencbr.catalog.models import Vault
    from opencbr.services import backups

    with ctx.tx() as s:
        row = s.get(Vault, v.id)
        row.auto_expand = True
        backups.auto_expand(s, ctx, row, 30 * 1024**3)  # to 38 GB, but the quota leaves room for 10 more
        assert row.size_gb == 20
        backups.auto_expand(s, ctx, row, 30 * 1024**3)
        assert row.size_gb == 20


def test_only_the_operator_sets_quotas(ctx, tenant):
    _account, project, user, _cred = iam.create_account(ctx, "other")
    other = iam.principal_for_user(ctx, user.id, project.id)
    with ctx.tx() as s, pytest.raises(Forbidden):
        quotas.admin_set(s, ctx, other, other.project_id, {"vault": 100})
    with ctx.tx() as s, pytest.raises(Forbidden):
        quotas.admin_show(s, ctx, other, tenant.project_id)
    limits(ctx, tenant, other.project_id, vault=0)  # the operator limits another account's project
    assert shown(ctx, other)["vault"] == (0, 0)
    assert shown(ctx, tenant)["vault"] == (0, -1)
    with pytest.raises(quotas.ProjectQuotaExceeded):
        S.vault(ctx, other, "v")


def test_limits_are_checked():
    for bad in ({}, [], {"vaults": 1}, {"vault": -2}, {"vault": True}, {"vault": "3"},
                {"capacity": quotas.MAX_LIMIT + 1}):
        with pytest.raises(CBRError) as e:
            quotas.check_limits(bad)
        assert e.value.status == 400, bad
    assert quotas.check_limits({"vault": -1, "capacity": 0}) == {"vault": -1, "capacity": 0}


def test_concurrent_creations_never_pass_the_quota(ctx, tenant):
    """Eight creations at once against a quota of three: the count is taken under the project's lock in
    the creating transaction, so exactly three succeed."""
    limits(ctx, tenant, vault=3)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def create(i: int) -> None:
        start.wait()
        try:
            S.vault(ctx, tenant, f"v{i}")
            outcomes.append("ok")
        except quotas.ProjectQuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    assert shown(ctx, tenant)["vault"] == (3, 3)


def test_a_replica_arriving_counts_as_a_backup(ctx, tenant):
    """The replication receiver (services/replication.py) refuses a replica over the backup quota before
    it records anything."""
    from opencbr.catalog.models import Account, Backup, RegionCredential
    from opencbr.services import replication

    dest = S.vault(ctx, tenant, "replicas", protect_type="replication")
    limits(ctx, tenant, backup=0)
    with ctx.tx() as s:
        account = s.get(Account, tenant.account_id).name
        header = {"destination_project_id": tenant.project_id, "destination_vault_id": dest.id,
                  "source_account": account, "source_region": "far-1", "source_backup_id": "b1", "name": "r",
                  "resource": {"id": "d1", "name": "d1", "type": "OS::Cinder::Volume", "size_bytes": 1}}
        with pytest.raises(quotas.ProjectQuotaExceeded, match="backup quota is 0"):
            replication._accept(s, ctx, RegionCredential(name="far-1", secret_sealed="", account_map={}), header)
    with ctx.read() as s:
        assert s.query(Backup).count() == 0
