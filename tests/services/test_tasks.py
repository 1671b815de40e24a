"""The task queue: leases, heartbeats, crash recovery, cancellation, listing, purge."""

from __future__ import annotations

import threading

from opencbr.catalog.models import Task
from opencbr.services import tasks
from opencbr.worker.runner import Worker


def queue(ctx, tenant, n=1, op="vault_delete", **kw):
    ids = []
    with ctx.tx() as s:
        for _ in range(n):
            ids.append(tasks.new_task(s, project_id=tenant.project_id, operation_type=op, now=ctx.now(),
                                      params={"vault_id": "none"}, **kw).id)
    return ids


def status(ctx, tid):
    with ctx.tx() as s:
        return s.get(Task, tid)


def test_claim_run_finish(ctx, tenant):
    (tid,) = queue(ctx, tenant)
    run = tasks.claim_next(ctx, "w1")
    assert run is not None and run.task_id == tid and run.attempt == 1
    assert tasks.claim_next(ctx, "w2") is None  # nothing else to claim
    run.progress(40)
    t = status(ctx, tid)
    assert (t.status, t.progress, t.lease_owner) == ("running", 40, "w1")
    assert t.extra_info["common"]["progress"] == 40
    tasks.finish(ctx, run, tasks.SUCCESS)
    t = status(ctx, tid)
    assert (t.status, t.progress) == ("success", 100) and t.ended_at is not None


def test_each_task_claimed_once_by_concurrent_workers(ctx, tenant):
    ids = queue(ctx, tenant, n=40)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(wid):
        while True:
            run = tasks.claim_next(ctx, wid)
            if run is None:
                return
            with lock:
                claimed.append(run.task_id)
            tasks.finish(ctx, run, tasks.SUCCESS)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # every task once, none twice


def test_dead_worker_loses_lease_and_task_fails_with_reason(ctx, tenant, clock):
    (tid,) = queue(ctx, tenant)
    run = tasks.claim_next(ctx, "dead-worker")
    assert run is not None
    clock.advance(seconds=10)
    assert tasks.expire_leases(ctx) == 0  # still within the lease
    clock.advance(seconds=30)
    abandoned = []
    assert tasks.expire_leases(ctx, lambda s, t: abandoned.append(t.id)) == 1
    t = status(ctx, tid)
    assert t.status == "failed" and "stopped responding" in t.error_message and abandoned == [tid]
    # the dead worker's late report is refused
    try:
        run.progress(50)
        raise AssertionError("progress after losing the lease must fail")
    except tasks.LeaseLost:
        pass


def test_retry_when_attempts_remain(ctx, tenant, clock):
    (tid,) = queue(ctx, tenant, max_attempts=2)
    tasks.claim_next(ctx, "w1")
    clock.advance(seconds=31)
    tasks.expire_leases(ctx)
    assert status(ctx, tid).status == "waiting"
    run = tasks.claim_next(ctx, "w2")
    assert run.task_id == tid and run.attempt == 2


def test_recover_orphans_of_dead_process(ctx, tenant):
    (tid,) = queue(ctx, tenant)
    tasks.claim_next(ctx, "host:999999:0")
    assert tasks.recover_orphans(ctx, lambda owner: owner.startswith("host:999999")) == 1
    assert status(ctx, tid).status == "failed"


def test_cancel(ctx, tenant):
    (tid,) = queue(ctx, tenant)
    run = tasks.claim_next(ctx, "w1")
    tasks.request_cancel(ctx, tenant, tid)
    try:
        run.progress(10)
        raise AssertionError("expected TaskCancelled")
    except tasks.TaskCancelled:
        pass


def test_worker_records_failures_in_words(ctx, tenant):
    (tid,) = queue(ctx, tenant, op="sync")  # no handler is registered for sync tasks

    Worker(ctx, "w1").run_once()
    t = status(ctx, tid)
    assert t.status == "failed" and "no worker can run" in t.error_message


def test_list_filters_and_purge(ctx, tenant, clock):
    a = queue(ctx, tenant, op="vault_delete", vault_id="v1", vault_name="alpha")
    clock.advance(days=1)
    b = queue(ctx, tenant, op="remove_resource", vault_id="v2", vault_name="beta")
    rows, total = tasks.list_tasks(ctx, tenant, tasks.TaskFilter(operation_type="remove_resource"))
    assert total == 1 and rows[0].id == b[0]
    rows, total = tasks.list_tasks(ctx, tenant, tasks.TaskFilter(vault_name="alp"))
    assert [r.id for r in rows] == a
    rows, total = tasks.list_tasks(ctx, tenant, tasks.TaskFilter())
    assert [r.id for r in rows] == b + a  # newest first
    run = tasks.claim_next(ctx, "w")
    tasks.finish(ctx, run, tasks.SUCCESS)
    clock.advance(days=31)
    assert tasks.purge_old(ctx) == 1  # only finished tasks older than 30 days go (guide ch. 9)
    assert tasks.list_tasks(ctx, tenant, tasks.TaskFilter())[1] == 1
