"""The task queue: leases, heartbeats, crash recovery, cancellation, listing, purge."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from opencbr.catalog.models import Task
from opencbr.services import tasks
from opencbr.worker.runner import Worker, task_handlers
from tests.support.services import on_each_statement


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
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 0  # still within the lease
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
    tasks.expire_leases(ctx, task_handlers().abandoned)
    assert status(ctx, tid).status == "waiting"
    run = tasks.claim_next(ctx, "w2")
    assert run.task_id == tid and run.attempt == 2


def test_recover_orphans_of_dead_process(ctx, tenant):
    (tid,) = queue(ctx, tenant)
    tasks.claim_next(ctx, "host:999999:0")
    assert tasks.recover_orphans(ctx, lambda owner: owner.startswith("host:999999"),
                                 task_handlers().abandoned) == 1
    assert status(ctx, tid).status == "failed"


def test_cancel(ctx, tenant):
    (tid,) = queue(ctx, tenant)
    run = tasks.claim_next(ctx, "w1")
    with ctx.tx() as s:
        tasks.request_cancel(s, tenant, tid)
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
    with ctx.read() as s:
        rows, total = tasks.list_tasks(s, tenant, tasks.TaskFilter(operation_type="remove_resource"))
    assert total == 1 and rows[0].id == b[0]
    with ctx.read() as s:
        rows, total = tasks.list_tasks(s, tenant, tasks.TaskFilter(vault_name="alp"))
    assert [r.id for r in rows] == a
    with ctx.read() as s:
        rows, total = tasks.list_tasks(s, tenant, tasks.TaskFilter())
    assert [r.id for r in rows] == b + a  # newest first
    run = tasks.claim_next(ctx, "w")
    tasks.finish(ctx, run, tasks.SUCCESS)
    clock.advance(days=31)
    with ctx.tx() as s:
        assert tasks.purge_old(s, ctx) == 1  # only finished tasks older than 30 days go (guide ch. 9)
    with ctx.read() as s:
        assert tasks.list_tasks(s, tenant, tasks.TaskFilter())[1] == 1


# ------------------------------------------------------------------------------------ hardening (issue 11)
def test_finish_of_an_expired_worker_keeps_the_failure_reason(ctx, tenant, clock):
    """Item 19: the original worker of a task that was failed for its lost lease reports late; its report
    ("cancelled at the user's request") must not overwrite the reason."""
    from opencbr.domain.errors import CBRError

    (tid,) = queue(ctx, tenant)
    run = tasks.claim_next(ctx, "slow-worker")
    clock.advance(seconds=31)
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 1
    tasks.finish(ctx, run, tasks.FAILED, error=CBRError("cancelled at the user's request", code="BackupService.6903"))
    tasks.finish(ctx, run, tasks.SUCCESS)
    t = status(ctx, tid)
    assert t.status == "failed" and "stopped responding" in t.error_message and t.error_code == "BackupService.6901"


def test_hand_back_requeues_without_using_an_attempt(ctx, tenant):
    """Item 15: an orderly stop hands the task back: waiting, lease cleared, the attempt not counted."""
    (tid,) = queue(ctx, tenant, op="backup")
    run = tasks.claim_next(ctx, "w1")
    assert tasks.hand_back(ctx, run, "worker w1 stopped (orderly shutdown)")
    t = status(ctx, tid)
    assert (t.status, t.lease_owner, t.lease_expires_at, t.attempts) == ("waiting", "", None, 0)
    assert "handed back" in t.error_message and t.extra_info["attempts"][-1]["outcome"] == "handed back"
    assert not tasks.hand_back(ctx, run, "again")  # no longer ours
    again = tasks.claim_next(ctx, "w2")
    assert again.task_id == tid and again.attempt == 1


def test_lost_backup_is_retried_up_to_the_setting_and_says_so(ctx, tenant, clock):
    """Item 18: a backup whose worker was lost is retried on another worker, task_max_attempts times."""
    assert ctx.settings.task_max_attempts == 3
    (tid,) = queue(ctx, tenant, op="backup")  # created with max_attempts=1, as the backup service does
    for attempt in (1, 2, 3):
        run = tasks.claim_next(ctx, f"w{attempt}")
        assert run.task_id == tid and run.attempt == attempt
        clock.advance(seconds=31)
        tasks.expire_leases(ctx, on_abandoned=None)
        t = status(ctx, tid)
        if attempt < 3:
            assert t.status == "waiting" and f"retrying (attempt {attempt + 1} of 3)" in t.error_message
            assert f"worker w{attempt} stopped responding" in t.error_message
    assert t.status == "failed" and "after 3 of 3 attempt(s)" in t.error_message
    assert [a["outcome"] for a in t.extra_info["attempts"]] == ["lost", "lost", "lost"]


def test_claims_respect_the_required_host(ctx, tenant, clock):
    """Item 16: only a worker of the task's host (group) claims it; others leave it waiting with a message."""
    from opencbr.catalog.models import Resource

    with ctx.tx() as s:
        res = Resource(project_id=tenant.project_id, type="OS::Cinder::Volume", name="d", path="/tmp/x.img",
                       host="host-b", region="local-1", availability_zone="local-1a", status="available")
        s.add(res)
        s.flush()
        tid = tasks.new_task(s, project_id=tenant.project_id, operation_type="backup", now=ctx.now(),
                             resource_id=res.id).id
    assert status(ctx, tid).required_host == "host-b"
    assert tasks.claim_next(ctx, "wa", host="host-a") is None
    clock.advance(seconds=60)
    assert tasks.mark_unserved(ctx, 30) == 1
    assert "waiting for a worker on host host-b" in status(ctx, tid).error_message
    run = tasks.claim_next(ctx, "wb", host="host-b")
    assert run is not None and run.task_id == tid
    assert status(ctx, tid).error_message == ""  # found its worker


def test_no_worker_judges_another_by_its_pid(ctx, tenant):
    """Item 17: a running task whose owner names this host and a pid that does not exist here (another
    PID namespace, a cloned machine) keeps running while its lease is valid when a worker starts."""
    import socket
    import subprocess
    import sys

    from opencbr.worker.runner import WorkerPool

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (tid,) = queue(ctx, tenant)
    tasks.claim_next(ctx, f"{socket.gethostname()}:{p.pid}:0")
    pool = WorkerPool(ctx, 1)
    pool.start()
    pool.shutdown(timeout=5)
    t = status(ctx, tid)
    assert t.status == "running", t.error_message
    a, b = WorkerPool(ctx, 1), WorkerPool(ctx, 1)
    assert a.workers[0].worker_id != b.workers[0].worker_id  # unique per process incarnation, not host:pid


def test_stopping_worker_hands_back_its_running_task(ctx, tenant):
    """Item 15 at the worker: a stop while a handler runs hands the task back instead of failing it."""
    started = threading.Event()

    def slow(ctx_, run):
        started.set()
        for i in range(600):
            run.progress(i % 100)
            threading.Event().wait(0.05)

    (tid,) = queue(ctx, tenant, op="sync")
    w = Worker(ctx, "w-stop", handlers=tasks.TaskHandlers(runs={"sync": slow}))
    t = threading.Thread(target=w.run_once)
    t.start()
    assert started.wait(10)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    task = status(ctx, tid)
    assert task.status == "waiting" and "handed back" in task.error_message and task.attempts == 0


def test_only_tasks_on_local_data_need_the_resources_host(ctx, tenant):
    """Deleting or verifying a backup works on the object store: any worker may do it."""
    from opencbr.catalog.models import Resource

    with ctx.tx() as s:
        res = Resource(project_id=tenant.project_id, type="OS::Cinder::Volume", name="d", path="/tmp/y.img",
                       host="host-b", region="local-1", availability_zone="local-1a", status="available")
        s.add(res)
        s.flush()
        made = {op: tasks.new_task(s, project_id=tenant.project_id, operation_type=op, now=ctx.now(),
                                   resource_id=res.id).required_host
                for op in ("backup", "restore", "delete", "verify")}
    assert made == {"backup": "host-b", "restore": "host-b", "delete": "", "verify": ""}


def _claim_plans(ctx, run) -> list[list[str]]:
    """PostgreSQL's plans of the claim's SELECTs that ``run`` sends, asked on the claim's own connection and
    transaction just before each runs (so with whatever the claim set for itself)."""
    plans: list[list[str]] = []

    def explain(_conn, cursor, statement, parameters, *_args):
        if statement.startswith("SELECT tasks.id") and "FOR UPDATE" in statement:
            with cursor.connection.cursor() as c:
                c.execute("EXPLAIN (COSTS OFF) " + statement, parameters)
                plans.append([row[0] for row in c.fetchall()])

    on_each_statement(ctx, run, explain)
    return plans


def test_a_claim_among_hundreds_waiting_joins_the_vault_counts_by_hash(ctx, tenant, clock):
    """A fleet's fire minute on PostgreSQL: hundreds of tasks waiting in many vaults, which the table's
    statistics (none here, as after a burst no ANALYZE has seen) do not know about. Planned by those, the
    claim joined every waiting task to the per-vault counts in a nested loop that re-aggregated them once
    per waiting task (bench/fleet.py: 150 ms a claim, under the lock all claims take); hash joins do it
    once (10-15 ms)."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite plans its joins its own way (and serialises claims by BEGIN IMMEDIATE)")
    at = clock.now - timedelta(minutes=1)
    with ctx.tx() as s:
        for v in range(40):
            for i in range(10):
                done = i < 2  # each vault already served twice since the backlog began
                s.add(Task(project_id=tenant.project_id, operation_type="backup", vault_id=f"vault-{v}",
                           status=tasks.SUCCESS if done else tasks.WAITING, created_at=at, run_after=at,
                           started_at=at + timedelta(seconds=1) if done else None))
    plans = _claim_plans(ctx, lambda: tasks.claim_next(ctx, "w1"))
    assert plans and not [p for p in plans if any("Nested Loop" in line for line in p)], plans
