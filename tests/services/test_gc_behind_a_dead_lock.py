"""A GC that finds the vault's GC lock taken skips, and queues another GC for when that lock would have
gone stale: a GC killed mid-run (SIGKILL) leaves its lock behind, and without the follow-up nothing would
sweep what it left until the next delete."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import select

from opencbr.catalog.models import Task
from opencbr.engine.chunks.gc import GC_LOCK_NAME
from opencbr.engine.chunks.locks import RepoLock
from opencbr.services import backups, tasks
from opencbr.services.repositories import lock_timing, repository
from opencbr.worker.runner import Worker
from tests.support.services import protected_disk


def _gc_tasks(ctx, vault_id: str) -> list[Task]:
    with ctx.read() as s:
        return list(s.scalars(select(Task).where(Task.operation_type == "gc", Task.vault_id == vault_id)
                              .order_by(Task.run_after, Task.created_at)))


def test_a_gc_behind_a_dead_gc_lock_comes_back_when_the_lock_is_stale(ctx, tenant, clock, tmp_path):
    _, vault = protected_disk(ctx, tenant, tmp_path, seed=5)
    repo = repository(ctx, vault)
    # the lock of a GC killed mid-run: written, never refreshed, never released
    assert RepoLock(repo.chunks.store, repo.prefix, "gc", lock_timing(ctx), name=GC_LOCK_NAME).acquire(exclusive=True)

    backups.queue_gc(ctx, tenant.project_id, vault)
    assert Worker(ctx, "w1").run_once()
    first, follow_up = _gc_tasks(ctx, vault.id)
    assert first.status == "success" and "skipped" in first.extra_info["gc"]
    assert follow_up.status == tasks.WAITING
    stale_after = lock_timing(ctx).stale_after
    assert follow_up.run_after == ctx.now() + timedelta(seconds=stale_after)
    assert not Worker(ctx, "w2").run_once()  # not due yet

    backups.queue_gc(ctx, tenant.project_id, vault)  # a delete's request joins the waiting one
    assert len(_gc_tasks(ctx, vault.id)) == 2
    clock.advance(seconds=stale_after + 1)
    lock_file = os.path.join(repo.chunks.store.capabilities.local_root, repo.prefix + "locks/" + GC_LOCK_NAME)
    then = time.time() - stale_after - 5  # (staleness is judged by the store's clock)
    os.utime(lock_file, (then, then))
    assert Worker(ctx, "w3").run_once()
    done = _gc_tasks(ctx, vault.id)[1]
    assert done.status == "success" and "skipped" not in done.extra_info["gc"], done.extra_info
    assert not list(repo.chunks.store.list(repo.prefix + "locks/")), "the dead GC's lock was swept"
