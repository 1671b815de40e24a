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


def test_packs_held_back_by_a_dead_writer_are_swept_once_its_lock_is_stale(ctx, tenant, clock, tmp_path):
    """A backup killed with its worker leaves its writer lock and the packs it had written. The GC that
    recovery queues condemns those packs but must not sweep them while the lock looks alive; with no task
    of the vault running, it queues a follow-up for when the lock has gone stale, which sweeps both."""
    _, vault = protected_disk(ctx, tenant, tmp_path, seed=6)
    repo = repository(ctx, vault)
    store, prefix = repo.chunks.store, repo.prefix
    dead = RepoLock(store, prefix, "writer", lock_timing(ctx))  # written once, never refreshed
    dead.seen = []
    assert dead.acquire()
    orphan = f"{prefix}data/ab/ab{'0' * 62}"
    store.put(orphan, os.urandom(4096))  # a pack the dead writer stored before its index

    backups.queue_gc(ctx, tenant.project_id, vault)
    assert Worker(ctx, "w1").run_once()
    first, follow_up = _gc_tasks(ctx, vault.id)
    assert first.status == "success" and "another GC is queued" in first.extra_info["gc"]["pending"]
    assert store.head(orphan) is not None, "swept behind a writer lock that still looked alive"
    stale_after = lock_timing(ctx).stale_after
    assert follow_up.status == tasks.WAITING and follow_up.params["follow_up"] == 1
    assert follow_up.run_after == ctx.now() + timedelta(seconds=stale_after)

    clock.advance(seconds=stale_after + 1)
    root = repo.chunks.store.capabilities.local_root
    then = time.time() - stale_after - 5  # staleness is judged by the store's clock
    os.utime(os.path.join(root, dead.key), (then, then))
    assert Worker(ctx, "w2").run_once()
    assert _gc_tasks(ctx, vault.id)[1].status == "success"
    assert store.head(orphan) is None and not list(store.list(prefix + "locks/"))
    assert len(_gc_tasks(ctx, vault.id)) == 2, "nothing was pending any more: no further GC"


def test_no_follow_up_while_a_task_of_the_vault_runs(ctx, tenant, clock, tmp_path):
    """Packs held back by a running backup's lock are that backup's; its end is no reason to GC again."""
    _, vault = protected_disk(ctx, tenant, tmp_path, seed=7)
    repo = repository(ctx, vault)
    live = RepoLock(repo.chunks.store, repo.prefix, "writer", lock_timing(ctx))
    live.seen = []
    assert live.acquire()
    repo.chunks.store.put(f"{repo.prefix}data/cd/cd{'0' * 62}", os.urandom(4096))
    with ctx.tx() as s:
        running = tasks.new_task(s, project_id=tenant.project_id, operation_type="backup", now=ctx.now(),
                                 vault_id=vault.id)
        running.status = tasks.RUNNING
    backups.queue_gc(ctx, tenant.project_id, vault)
    assert Worker(ctx, "w1").run_once()
    (gc,) = _gc_tasks(ctx, vault.id)
    assert gc.status == "success" and "the next GC sweeps them" in gc.extra_info["gc"]["pending"]


def test_a_dead_writers_lock_alone_is_swept_by_a_follow_up(ctx, tenant, clock, tmp_path):
    """A backup killed after taking its lock and before storing its first pack leaves the lock alone:
    nothing is condemned, yet the lock must not outlive the follow-up GC (the crash campaign found one
    left behind when recovery's GC ran before the lock had gone stale)."""
    _, vault = protected_disk(ctx, tenant, tmp_path, seed=8)
    repo = repository(ctx, vault)
    store, prefix = repo.chunks.store, repo.prefix
    dead = RepoLock(store, prefix, "writer", lock_timing(ctx))
    dead.seen = []
    assert dead.acquire()

    backups.queue_gc(ctx, tenant.project_id, vault)
    assert Worker(ctx, "w1").run_once()
    first, follow_up = _gc_tasks(ctx, vault.id)
    assert first.status == "success" and "another GC is queued" in first.extra_info["gc"]["pending"]
    assert store.head(dead.key) is not None, "a lock that still looked alive was removed"
    assert follow_up.status == tasks.WAITING and follow_up.params["follow_up"] == 1

    stale_after = lock_timing(ctx).stale_after
    clock.advance(seconds=stale_after + 1)
    then = time.time() - stale_after - 5
    os.utime(os.path.join(store.capabilities.local_root, dead.key), (then, then))
    assert Worker(ctx, "w2").run_once()
    assert _gc_tasks(ctx, vault.id)[1].status == "success"
    assert not list(store.list(prefix + "locks/"))
    assert len(_gc_tasks(ctx, vault.id)) == 2, "no lock was left: no further GC"


def test_no_follow_up_when_no_writer_lock_is_left(ctx, tenant, clock, tmp_path):
    _, vault = protected_disk(ctx, tenant, tmp_path, seed=9)
    repository(ctx, vault)
    backups.queue_gc(ctx, tenant.project_id, vault)
    assert Worker(ctx, "w1").run_once()
    (gc,) = _gc_tasks(ctx, vault.id)
    assert gc.status == "success" and "pending" not in gc.extra_info["gc"]
