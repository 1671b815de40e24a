"""Vault usage series (guide 10.1): sampled every 15 minutes by the scheduler under its fake clock,
folded into hours and days, kept for a bounded time, queried per project."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from opencbr.catalog.models import Vault, VaultMetricPoint
from opencbr.domain.errors import CBRError
from opencbr.scheduler import Scheduler
from opencbr.services import iam, metrics
from tests.support import scheduler as S

GB = 1024**3


def set_used(ctx, vault_id: str, gb: float) -> None:
    """What a backup's accounting writes (services.backups), set directly: the series reads the vault row."""
    with ctx.tx() as s:
        s.get(Vault, vault_id).used_bytes = int(gb * GB)


def query(ctx, p, vault_id, metric, start, end, period=metrics.RAW, filter_="average"):
    with ctx.read() as s:
        return [(d.at, round(d.value, 3)) for d in metrics.series(s, p, vault_id, metric=metric, start=start, end=end,
                                                                 period=period, filter_=filter_)]


def rows(ctx, period) -> int:
    with ctx.read() as s:
        return s.scalar(select(func.count()).select_from(VaultMetricPoint).where(VaultMetricPoint.period == period))


def test_samples_each_quarter_hour_fold_into_hours_and_queries_are_checked_and_scoped(ctx, tenant, clock):
    v = S.vault(ctx, tenant, "v", size=10)
    sched = Scheduler(ctx, "s1")
    clock.now = clock.now.replace(minute=0)
    start = clock.now
    for i, used in enumerate([1, 2, 3, 4, 6, 6, 6, 6]):
        set_used(ctx, v.id, used)
        sched.monitor()
        if i == 0:  # a second round in the same 15 minutes samples nothing (another scheduler's neither)
            assert metrics.sample_vaults(ctx) == [] and Scheduler(ctx, "s2").monitor() == 0
        clock.advance(minutes=15)
    end = clock.now
    raw = query(ctx, tenant, v.id, metrics.USED, start, end)
    assert [value for _, value in raw] == [1, 2, 3, 4, 6, 6, 6, 6]
    assert [at - start for at, _ in raw] == [timedelta(minutes=15 * i) for i in range(8)]
    assert [value for _, value in query(ctx, tenant, v.id, metrics.UTIL, start, end)] == [10, 20, 30, 40, 60, 60, 60, 60]
    hours = {f: [value for _, value in query(ctx, tenant, v.id, metrics.USED, start, end, metrics.HOUR, f)]
             for f in metrics.FILTERS}
    assert hours == {"average": [2.5, 6], "min": [1, 6], "max": [4, 6]}
    day = query(ctx, tenant, v.id, metrics.UTIL, start, end, metrics.DAY, "max")
    assert day == [(start.replace(hour=0), 60)]
    now = clock.now
    cases = [({"metric": "disk_util"}, "BackupService.6601"), ({"period": 300}, "BackupService.6602"),
             ({"filter_": "sum"}, "BackupService.6602"), ({"start": now, "end": now}, "BackupService.6602"),
             ({"start": now - timedelta(days=60)}, "BackupService.6602")]
    for change, code in cases:
        args = {"metric": metrics.USED, "start": now - timedelta(hours=1), "end": now + timedelta(hours=1), **change}
        with ctx.read() as s, pytest.raises(CBRError) as e:
            metrics.series(s, tenant, v.id, **args)
        assert (e.value.status, e.value.code) == (400, code), change
    _, project, user, _ = iam.create_account(ctx, "stranger")
    stranger = iam.principal_for_user(ctx, user.id, project.id)
    with ctx.read() as s, pytest.raises(CBRError) as e:
        metrics.series(s, stranger, v.id, metric=metrics.USED, start=now - timedelta(hours=1), end=now)
    assert e.value.status == 404


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)  # plain deletes by time: one catalog suffices
def test_history_is_bounded_per_resolution(ctx, tenant, clock):
    v = S.vault(ctx, tenant, "v", size=10)
    set_used(ctx, v.id, 5)
    sched = Scheduler(ctx, "s1")
    sched.monitor()
    assert (rows(ctx, metrics.RAW), rows(ctx, metrics.HOUR), rows(ctx, metrics.DAY)) == (1, 1, 1)
    clock.advance(days=8)  # past a week: the first raw point goes, its hour and day stay
    sched.monitor()
    assert (rows(ctx, metrics.RAW), rows(ctx, metrics.HOUR), rows(ctx, metrics.DAY)) == (1, 2, 2)
    clock.advance(days=30)  # past a month: the first hour goes
    sched.monitor()
    assert (rows(ctx, metrics.RAW), rows(ctx, metrics.HOUR), rows(ctx, metrics.DAY)) == (1, 2, 3)
    clock.advance(days=400)
    sched.monitor()
    assert (rows(ctx, metrics.RAW), rows(ctx, metrics.HOUR), rows(ctx, metrics.DAY)) == (1, 1, 1)
