"""Idle workers notice new tasks with a cheap read, not a write-locking claim (SQLite)."""

from __future__ import annotations

import time

from opencbr.catalog.db import is_sqlite
from opencbr.services import tasks
from opencbr.worker import wakeup
from opencbr.worker.wakeup import TaskPoller


def test_poller_sees_waiting_tasks_for_its_host_only(ctx, tenant, monkeypatch):  # noqa: F811
    poller = TaskPoller(ctx, "host-a")
    if not is_sqlite(ctx.settings.effective_catalog_url):
        assert poller.maybe_work()  # PostgreSQL: the claim itself is cheap, always try
        return
    monkeypatch.setattr(wakeup, "CLAIM_AT_LEAST_EVERY", 3600.0)
    poller._last_claim = time.monotonic()  # (the safety-net claim is not due)
    assert not poller.maybe_work()
    with ctx.tx() as s:
        tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now(), required_host="host-b")
    assert not poller.maybe_work()  # another host's task
    with ctx.tx() as s:
        tasks.new_task(s, project_id=tenant.project_id, operation_type="gc", now=ctx.now())
    assert poller.maybe_work()
    poller.close()
