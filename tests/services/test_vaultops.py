"""Changing the expiry of a vault's automatic backups (update_expiration_time): retention deletes them at
the new date instead of by the rule they were made under; manual backups are not touched."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opencbr.domain.errors import InvalidParameter
from opencbr.services import vaultops
from tests.support.scheduler import MONDAY, Driver, associate, backup_now, disk, policy, top_backups, vault


def test_automatic_backups_expire_at_the_new_date(ctx, tenant, clock, tmp_path):
    d = disk(ctx, tenant, tmp_path, "d")
    v = vault(ctx, tenant, "expiry", resource_ids=[d.id])
    associate(ctx, tenant, v.id, policy(ctx, tenant, max_backups=-1, retention_duration_days=30).id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=2, hours=3))  # automatic backups on Tuesday and Wednesday 02:00
    backup_now(ctx, tenant, v.id)
    drv.drain()
    automatic = [b.id for b in top_backups(ctx, v.id) if b.auto_trigger]
    assert len(automatic) == 2
    with ctx.tx() as s:
        count, day, task_id = vaultops.update_expiration_time(s, ctx, tenant, v.id, "2026-01-10", "UTC+02:00")
    assert (count, day) == (2, "2026-01-10") and task_id
    # Saturday 2026-01-10 00:00 at UTC+02:00 is Friday 22:00 UTC: still there just before
    drv.run_until(MONDAY + timedelta(days=4, hours=21, minutes=30), every=timedelta(hours=6))
    assert set(automatic) <= {b.id for b in top_backups(ctx, v.id)}
    drv.run_until(MONDAY + timedelta(days=4, hours=23), every=timedelta(minutes=30))
    left = top_backups(ctx, v.id)
    assert not set(automatic) & {b.id for b in left if b.created_at < MONDAY + timedelta(days=3)}
    assert any(not b.auto_trigger for b in left)  # the manual backup stays


@pytest.mark.parametrize("date,tz", [("2026-01-05", "UTC+00:00"), ("2026-13-01", None), ("2099-01-01", "UTC+15:00")])
def test_bad_dates(ctx, tenant, date, tz):
    v = vault(ctx, tenant, "bad-expiry")
    with pytest.raises(InvalidParameter), ctx.tx() as s:
        vaultops.update_expiration_time(s, ctx, tenant, v.id, date, tz)
