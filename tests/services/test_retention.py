"""Retention through the service (guide 5.2 Retention Rule notes, 13.2.16, 13.5.2, 13.5.7; GFS beyond the
guide): on catalog rows, without data — what is deleted is queued as ``delete`` tasks that name the
reason, a ``retention`` task records each pruning run, and a dry run deletes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, Task
from opencbr.domain.errors import NotFound, StateConflict
from opencbr.services import policies, retention, vaults

NOW = datetime(2026, 1, 5, 10, 0)


@pytest.fixture()
def setup(ctx, tenant):
    with ctx.tx() as s:
        return vaults.create_vault(s, ctx, tenant, {"name": "ret", "billing": {
            "object_type": "disk", "protect_type": "backup", "size": 100}}).vault


def make_policy(ctx, p, **od):
    with ctx.tx() as s:
        return policies.create_policy(s, ctx, p, {
            "name": "keep", "operation_type": "backup", "operation_definition": od,
            "trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=2"]}}}).policy


def associate(ctx, p, vault_id, policy_id):
    with ctx.tx() as s:
        policies.associate(s, ctx, p, vault_id, policy_id)


def update_policy(ctx, p, policy_id, body):
    with ctx.tx() as s:
        policies.update_policy(s, ctx, p, policy_id, body)


def add_backups(ctx, p, vault, n, *, start=NOW - timedelta(days=40), step=timedelta(days=1), rule="count:3",
                automatic=True, status="available", resource_id="disk-1", **kw) -> list[str]:
    ids = []
    with ctx.tx() as s:
        for i in range(n):
            b = Backup(project_id=p.project_id, vault_id=vault.id, name=f"b{len(ids)}", resource_id=resource_id,
                       resource_name="disk one", resource_type="OS::Cinder::Volume", status=status,
                       auto_trigger=automatic, retention_rule=rule if automatic else "", created_at=start + i * step,
                       updated_at=start + i * step, **kw)
            s.add(b)
            s.flush()
            ids.append(b.id)
    return ids


def statuses(ctx, ids) -> list[str]:
    with ctx.tx() as s:
        rows = {b.id: b.status for b in s.scalars(select(Backup).where(Backup.id.in_(ids)))}
    return [rows[i] for i in ids]


def tasks_of(ctx, op) -> list[Task]:
    with ctx.tx() as s:
        return list(s.scalars(select(Task).where(Task.operation_type == op).order_by(Task.created_at)))


def test_quantity_rule_keeps_the_newest_and_never_manual_or_image_backups(ctx, tenant, setup):
    pol = make_policy(ctx, tenant, max_backups=3)
    associate(ctx, tenant, setup.id, pol.id)
    autos = add_backups(ctx, tenant, setup, 6)
    manual = add_backups(ctx, tenant, setup, 2, automatic=False, start=NOW - timedelta(days=50))
    with ctx.tx() as s:  # the oldest automatic one was used to create an image (guide 5.2)
        s.get(Backup, autos[0]).used_by_image = True
    with ctx.tx() as s:
        r = retention.apply_retention(s, ctx, setup.id, "disk-1", now=NOW)
    assert statuses(ctx, autos) == ["available", "deleting", "deleting", "available", "available", "available"]
    assert statuses(ctx, manual) == ["available", "available"]
    assert sorted(bid for bid, _ in r.deleted) == sorted(autos[1:3])
    assert any(x.code == "image" for x in r.plan.verdict(autos[0]).reasons)
    (ret,) = tasks_of(ctx, "retention")
    assert ret.status == "success" and ret.vault_id == setup.id and ret.resource_id == "disk-1"
    assert ret.policy_id == pol.id and ret.extra_info["retention"]["deleted_count"] == 2
    deletes = tasks_of(ctx, "delete")
    assert len(deletes) == 2 and all("max_backups=3" in t.extra_info["reason"] for t in deletes)
    # idempotent: a second run (another scheduler's sweep) deletes nothing more and records nothing
    again = retention.retention_sweep(ctx, now=NOW)
    assert again == [] and len(tasks_of(ctx, "delete")) == 2 and len(tasks_of(ctx, "retention")) == 1


def test_failed_periodic_backups_at_most_10_for_one_month(ctx, tenant, setup):
    """Guide 5.2: "A maximum of 10 backups are retained for failed periodic backup tasks. They are
    retained for one month"."""
    pol = make_policy(ctx, tenant, retention_duration_days=99999)
    associate(ctx, tenant, setup.id, pol.id)
    failed = add_backups(ctx, tenant, setup, 14, status="error", start=NOW - timedelta(days=14), rule="days:99999")
    retention.retention_sweep(ctx, now=NOW)
    assert statuses(ctx, failed) == ["deleting"] * 4 + ["error"] * 10
    later = NOW + timedelta(days=31)
    retention.retention_sweep(ctx, now=later)
    assert statuses(ctx, failed) == ["deleting"] * 14


def test_disabled_policy_deletes_nothing_13_5_7(ctx, tenant, setup):
    pol = make_policy(ctx, tenant, max_backups=2)
    associate(ctx, tenant, setup.id, pol.id)
    ids = add_backups(ctx, tenant, setup, 5)
    update_policy(ctx, tenant, pol.id, {"enabled": False})
    assert retention.retention_sweep(ctx, now=NOW) == []
    assert statuses(ctx, ids) == ["available"] * 5
    update_policy(ctx, tenant, pol.id, {"enabled": True})
    assert len(retention.retention_sweep(ctx, now=NOW)[0].deleted) == 3


def test_long_term_gfs_retention_and_dry_run(ctx, tenant, setup):
    """Beyond the guide: keep the 2 most recent plus the newest of each of the last 3 days and 2 weeks
    (restic forget --keep-last 2 --keep-daily 3 --keep-weekly 2), listed by a dry run that deletes
    nothing, then applied."""
    pol = make_policy(ctx, tenant, max_backups=2, day_backups=3, week_backups=2, timezone="UTC+08:00")
    associate(ctx, tenant, setup.id, pol.id)
    # two backups a day (02:00 and 14:00 UTC+8 = 18:00 and 06:00 UTC) for 14 days
    ids = add_backups(ctx, tenant, setup, 28, start=datetime(2025, 12, 22, 6, 0), step=timedelta(hours=12))
    with ctx.read() as s:
        preview = retention.retention_preview(s, ctx, tenant, pol.id, vault_id=setup.id, now=NOW)
    (plan,) = preview
    kept = set(plan.plan.keep_ids)
    assert ids[-1] in kept and ids[-2] in kept  # the two most recent
    codes = {c for v in plan.plan.verdicts for c in v.codes}
    assert {"latest", "long_term_daily", "long_term_weekly", "beyond_count"} <= codes
    # days in UTC+08:00: the newest backup of each of the last 3 local days
    daily = [v.backup.id for v in plan.plan.verdicts if "long_term_daily" in v.codes]
    assert len(daily) == 3
    weekly = [v.backup.id for v in plan.plan.verdicts if "long_term_weekly" in v.codes]
    assert len(weekly) == 2
    assert len(kept) == len({ids[-1], ids[-2], *daily, *weekly})
    assert statuses(ctx, ids) == ["available"] * 28  # a dry run deletes nothing
    assert tasks_of(ctx, "delete") == []
    with ctx.tx() as s:
        out = retention.prune_now(s, ctx, tenant, pol.id, setup.id)
    assert sorted(b for r in out for b, _ in r.deleted) == sorted(plan.plan.prune_ids)
    assert {i for i, st in zip(ids, statuses(ctx, ids), strict=True) if st == "available"} == kept


def test_prune_needs_the_vault_s_policy_and_retention_after_backup_never_raises(ctx, tenant, setup):
    pol = make_policy(ctx, tenant, max_backups=2)
    with pytest.raises(StateConflict), ctx.tx() as s:
        retention.prune_now(s, ctx, tenant, pol.id, setup.id)
    with pytest.raises(NotFound), ctx.read() as s:
        retention.retention_preview(s, ctx, tenant, pol.id, vault_id="no-such-vault")
    # the backup task's hook: an unknown vault or any failure is logged, never raised
    retention.apply_retention_after_backup(ctx, "no-such-vault", "disk-1")
    associate(ctx, tenant, setup.id, pol.id)
    ids = add_backups(ctx, tenant, setup, 3)
    retention.apply_retention_after_backup(ctx, setup.id, "disk-1")
    assert statuses(ctx, ids) == ["deleting", "available", "available"]
    (ret,) = tasks_of(ctx, "retention")
    assert ret.extra_info["retention"]["source"] == "after_backup"


def test_time_period_backups_expire_without_a_policy_5_7(ctx, tenant, setup):
    """Guide 5.7: after a policy is removed "backups retained by Time period will expire based on the
    retention rule, but backups retained by Backup quantity will not"."""
    by_days = add_backups(ctx, tenant, setup, 3, rule="days:30", start=NOW - timedelta(days=31))
    by_count = add_backups(ctx, tenant, setup, 3, rule="count:1", start=NOW - timedelta(days=31),
                           resource_id="disk-2")
    retention.retention_sweep(ctx, now=NOW)
    # 31 and 30 days old: expired (30 days after creation is now); 29 days old: kept
    assert statuses(ctx, by_days) == ["deleting", "deleting", "available"]
    assert statuses(ctx, by_count) == ["available"] * 3


def test_manual_backups_made_with_a_retention_expire_then(ctx, tenant, setup):
    """CheckpointParam.retention_duration_days ("manual backups only"): the backup's expired_at. Other
    manual backups are kept forever (13.2.16), and no policy is needed."""
    kept = add_backups(ctx, tenant, setup, 1, automatic=False)
    expiring = add_backups(ctx, tenant, setup, 2, automatic=False, expired_at=NOW - timedelta(minutes=1))
    later = add_backups(ctx, tenant, setup, 1, automatic=False, expired_at=NOW + timedelta(days=1))
    image = add_backups(ctx, tenant, setup, 1, automatic=False, expired_at=NOW - timedelta(days=1),
                        used_by_image=True)
    (r,) = retention.retention_sweep(ctx, now=NOW)
    assert statuses(ctx, kept + expiring + later + image) == ["available", "deleting", "deleting", "available",
                                                               "available"]
    (ret,) = tasks_of(ctx, "retention")
    assert all("retention_duration_days" in d["reason"] for d in ret.extra_info["retention"]["deleted"])
    assert r.policy_id is None
