"""Automatic association (guide 2.2.1): a vault with auto_bind takes, at its next backup period, the
resources of its type that no vault protects yet and that carry one of its bind rules' tags, and backs
them up in that same execution. Under the fake clock, with the real scheduler and worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from opencbr.catalog.models import VaultResource
from opencbr.services import tags, vaults
from tests.support.scheduler import MONDAY, Driver, associate, disk, executions, policy, top_backups, vault


def tagged_disk(ctx, p, tmp_path, name, **tag_pairs):
    d = disk(ctx, p, tmp_path, name)
    if tag_pairs:
        with ctx.tx() as s:
            tags.set_resource_tags(s, ctx, p, d.id, [{"key": k, "value": v} for k, v in tag_pairs.items()])
    return d.id


def bound(ctx, vault_id) -> set[str]:
    with ctx.tx() as s:
        return set(s.scalars(select(VaultResource.resource_id).where(VaultResource.vault_id == vault_id)))


def auto_vault(ctx, p, name, rules=None):
    v = vault(ctx, p, name)
    with ctx.tx() as s:
        vaults.update_vault(s, ctx, p, v.id, {"auto_bind": True, "bind_rules": {"tags": rules or []}})
    return v


def test_matching_unprotected_resources_are_associated_and_backed_up_at_the_next_period(ctx, tenant, clock,
                                                                                       tmp_path):
    web = tagged_disk(ctx, tenant, tmp_path, "web", app="web")
    db = tagged_disk(ctx, tenant, tmp_path, "db", app="db")
    plain = tagged_disk(ctx, tenant, tmp_path, "plain")
    taken = tagged_disk(ctx, tenant, tmp_path, "taken", app="web")
    vault(ctx, tenant, "manual", resource_ids=[taken])
    v = auto_vault(ctx, tenant, "auto", [{"key": "app", "value": "web"}])
    pol = policy(ctx, tenant)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)

    drv.run_until(MONDAY + timedelta(hours=23))  # before the first period: nothing yet
    assert bound(ctx, v.id) == set()
    drv.run_until(MONDAY + timedelta(days=1, hours=3))  # Tuesday 02:00 ran
    assert bound(ctx, v.id) == {web}
    [run] = executions(ctx, pol.id)
    assert run.decision == "fire" and web in run.reason, run.reason
    assert [b.resource_id for b in top_backups(ctx, v.id)] == [web]
    assert top_backups(ctx, v.id)[0].status == "available"

    later = tagged_disk(ctx, tenant, tmp_path, "later", app="web")  # tagged after: picked up next period
    with ctx.tx() as s:
        tags.set_resource_tags(s, ctx, tenant, db, [{"key": "app", "value": "web"}])
    drv.run_until(MONDAY + timedelta(days=2, hours=3))
    assert bound(ctx, v.id) == {web, later, db}
    assert plain not in bound(ctx, v.id) and taken not in bound(ctx, v.id)


def test_without_tag_rules_every_unprotected_resource_of_the_type_is_taken(ctx, tenant, clock, tmp_path):
    a = tagged_disk(ctx, tenant, tmp_path, "a")
    b = tagged_disk(ctx, tenant, tmp_path, "b", team="x")
    v = auto_vault(ctx, tenant, "all")
    pol = policy(ctx, tenant)
    associate(ctx, tenant, v.id, pol.id)
    Driver(ctx, clock, run_worker=False).run_until(MONDAY + timedelta(days=1, hours=3))
    assert bound(ctx, v.id) == {a, b}


def test_a_vault_without_auto_bind_takes_nothing(ctx, tenant, clock, tmp_path):
    tagged_disk(ctx, tenant, tmp_path, "a", app="web")
    v = vault(ctx, tenant, "plain")
    with ctx.tx() as s:
        vaults.update_vault(s, ctx, tenant, v.id, {"bind_rules": {"tags": [{"key": "app", "value": "web"}]}})
    pol = policy(ctx, tenant)
    associate(ctx, tenant, v.id, pol.id)
    Driver(ctx, clock, run_worker=False).run_until(MONDAY + timedelta(days=1, hours=3))
    assert bound(ctx, v.id) == set()


def test_a_suspended_resource_is_left_out_of_automatic_backups(ctx, tenant, clock, tmp_path):
    a = tagged_disk(ctx, tenant, tmp_path, "a")
    b = tagged_disk(ctx, tenant, tmp_path, "b")
    v = vault(ctx, tenant, "suspend", resource_ids=[a, b])
    with ctx.tx() as s:
        assert vaults.set_resources_protection(s, ctx, tenant, v.id, [b], "suspend") == [b]
    pol = policy(ctx, tenant)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=1, hours=3))
    assert [x.resource_id for x in top_backups(ctx, v.id)] == [a]
    with ctx.tx() as s:
        vaults.set_resources_protection(s, ctx, tenant, v.id, [b], "unsuspend")
    drv.run_until(MONDAY + timedelta(days=2, hours=3))
    assert sorted(x.resource_id for x in top_backups(ctx, v.id)) == sorted([a, a, b])
