"""Policies through the service: applying at vault creation, the trigger's start (the schedule's anchor),
deleting a policy, and the 32-policy limit under concurrent creations."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from opencbr.catalog.models import PolicyBinding
from opencbr.domain.errors import InvalidParameter, QuotaExceeded
from opencbr.services import executions, policies, vaults
from opencbr.services.context import open_context

TRIGGER = {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=3;BYHOUR=14;BYMINUTE=00"]}}


def create(ctx, p, name="p", op="backup", **od):
    if op == "replication":
        od = {"destination_region": "remote-1", "destination_project_id": "proj", **od}
    with ctx.tx() as s:
        return policies.create_policy(s, ctx, p, {"name": name, "operation_type": op, "operation_definition": od,
                                                  "trigger": TRIGGER})


def test_backup_policy_applied_when_the_vault_is_created(ctx, tenant):
    pol = create(ctx, tenant, max_backups=3).policy
    with ctx.tx() as s:
        v = vaults.create_vault(s, ctx, tenant, {"name": "v", "backup_policy_id": pol.id, "billing": {
            "object_type": "disk", "protect_type": "backup", "size": 10}})
    assert v.policy_ids == [pol.id]
    with ctx.read() as s:
        assert [x.policy.id for x in policies.list_policies(s, tenant, vault_id=v.vault.id)] == [pol.id]
    rep = create(ctx, tenant, "r", op="replication").policy
    with pytest.raises(InvalidParameter), ctx.tx() as s:
        vaults.create_vault(s, ctx, tenant, {"name": "v2", "backup_policy_id": rep.id, "billing": {
            "object_type": "server", "protect_type": "backup", "size": 10}})


def test_trigger_start_is_the_anchor_and_restarts_when_the_times_change(ctx, tenant, clock):
    """Guide 5.2: a day-based cycle runs first on the day it is set up (if the time has not passed);
    changing the execution times sets it up again on the day of the change."""
    view = create(ctx, tenant, max_backups=3)  # Monday 10:00, every 3 days at 14:00
    with ctx.tx() as s:
        runs = executions.preview_executions(s, ctx, tenant, view.policy.id, count=3).runs
    assert [r.scheduled_at.strftime("%a %d %H:%M") for r in runs] == ["Mon 05 14:00", "Thu 08 14:00", "Sun 11 14:00"]
    clock.advance(days=1)  # Tuesday: renaming keeps the anchor
    with ctx.tx() as s:
        same = policies.update_policy(s, ctx, tenant, view.policy.id, {"name": "renamed", "enabled": False})
    assert same.policy.trigger_start == view.policy.trigger_start
    with ctx.tx() as s:
        moved = policies.update_policy(s, ctx, tenant, view.policy.id,
                                       {"trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=3;BYHOUR=16"]}}})
    assert moved.policy.trigger_start == clock.now
    with ctx.tx() as s:
        runs = executions.preview_executions(s, ctx, tenant, view.policy.id, count=2).runs
    assert [r.scheduled_at.strftime("%a %d %H:%M") for r in runs] == ["Tue 06 16:00", "Fri 09 16:00"]
    with pytest.raises(InvalidParameter), ctx.tx() as s:
        executions.preview_executions(s, ctx, tenant, view.policy.id, count=0)


def test_deleting_a_policy_removes_it_from_its_vaults(ctx, tenant):
    pol = create(ctx, tenant, max_backups=3).policy
    with ctx.tx() as s:
        v = vaults.create_vault(s, ctx, tenant, {"name": "v", "billing": {
            "object_type": "disk", "protect_type": "backup", "size": 10}}).vault
        policies.associate(s, ctx, tenant, v.id, pol.id)
    with ctx.tx() as s:
        policies.delete_policy(s, tenant, pol.id)
    with ctx.tx() as s:
        assert s.scalars(select(PolicyBinding).where(PolicyBinding.vault_id == v.id)).all() == []
        assert vaults.show_vault(s, tenant, v.id).policy_ids == []


def test_the_32_policy_limit_holds_under_concurrent_creations(ctx, tenant):
    """Guide 1.6, with eight creations racing for the last two places (each on its own connection pool on
    PostgreSQL): exactly two succeed."""
    for i in range(30):
        create(ctx, tenant, f"p{i}")
    others = [open_context(ctx.settings, clock=ctx.clock) for _ in range(8)]
    results: list[str] = []
    barrier = threading.Barrier(len(others))

    def race(c, i):
        barrier.wait(10)
        try:
            create(c, tenant, f"race{i}")
            results.append("ok")
        except QuotaExceeded:
            results.append("quota")

    threads = [threading.Thread(target=race, args=(c, i)) for i, c in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in others:
        c.close()
    assert sorted(results) == ["ok"] * 2 + ["quota"] * 6
    with ctx.read() as s:
        assert len(policies.list_policies(s, tenant, operation_type="backup")) == 32
    assert create(ctx, tenant, "rep", op="replication").policy.id  # counted apart
