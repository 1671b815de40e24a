"""Task priorities in ``opencbr serve``'s workers: restores at ``restore_nice``, the rest at ``worker_nice``,
whatever ran before on the same worker thread (an unprivileged thread can lower its priority, never raise it)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event

from opencbr.server.worker import worker_pool
from opencbr.services import tasks
from opencbr.worker.runner import TaskPriority, Worker


def _thread_nice() -> int:
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[16])


def _room_below(by: int) -> int:
    """This thread's nice value, skipping the test when it cannot be lowered by ``by`` (a run under
    ``nice -n 19`` could not tell a lowered thread from another)."""
    base = _thread_nice()
    if base + by > 19:
        pytest.skip(f"running at nice {base}: no room to lower a thread by {by}")
    return base


def _queue(ctx, tenant, op: str) -> str:
    with ctx.tx() as s:
        return tasks.new_task(s, project_id=tenant.project_id, operation_type=op, now=ctx.now()).id


def test_restores_run_at_restore_nice_after_a_backup_ran_at_worker_nice(ctx, tenant):
    seen: dict[str, int] = {}

    def note(ctx_, run):
        seen[run.operation_type] = _thread_nice()

    handlers = tasks.TaskHandlers(runs={op: note for op in ("backup", "create_fs", "restore", "verify")})
    w = Worker(ctx, "w-nice", handlers=handlers, priority=TaskPriority(other=7, restore=2))
    base = _room_below(7)
    for op in ("backup", "create_fs", "verify", "restore"):  # one after another on this one worker
        _queue(ctx, tenant, op)
        assert w.run_once()
    assert seen == {"backup": base + 7, "create_fs": base + 2, "verify": base + 7, "restore": base + 2}
    assert _thread_nice() == base  # the worker's own thread is never lowered


def test_restore_nice_0_runs_restores_at_the_workers_priority(ctx, tenant):
    seen: dict[str, int] = {}

    def note(ctx_, run):
        seen[run.operation_type] = _thread_nice()

    handlers = tasks.TaskHandlers(runs={"backup": note, "create_fs": note})
    w = Worker(ctx, "w-nice0", handlers=handlers, priority=TaskPriority(other=10, restore=0))
    base = _room_below(10)
    for op in ("backup", "create_fs"):
        _queue(ctx, tenant, op)
        assert w.run_once()
    assert seen == {"backup": base + 10, "create_fs": base}


def test_every_worker_pool_runs_tasks_at_worker_nice(ctx, tenant):
    # The pool `cbr worker` runs, standalone or under `cbr serve`: standalone workers ran their backups
    # at full priority and, beside an API, took its cores while a fleet's queue drained (bench/fleet.py).
    seen: dict[str, int] = {}

    def note(ctx_, run):
        seen[run.operation_type] = _thread_nice()

    pool = worker_pool(ctx, 1)
    w = pool.workers[0]
    w.handlers = tasks.TaskHandlers(runs={"backup": note, "restore": note})
    base = _room_below(ctx.settings.worker_nice)
    for op in ("backup", "restore"):
        _queue(ctx, tenant, op)
        assert w.run_once()
    assert seen == {"backup": base + ctx.settings.worker_nice, "restore": base + ctx.settings.restore_nice}
    assert ctx.settings.worker_nice > ctx.settings.restore_nice  # (the defaults, 10 and 0: a difference seen)


def test_a_worker_claims_at_worker_nice_and_stays_able_to_restore_at_restore_nice(ctx, tenant):
    # A claim's query (fair queuing over every waiting task) costs milliseconds of CPU; while a fleet's
    # queue drained, the claims were the workers' only work left at the API's priority.
    claims: list[int] = []
    seen: dict[str, int] = {}

    def note_claim(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "ORDER BY" in statement and "served" in statement:
            claims.append(_thread_nice())

    def note(ctx_, run):
        seen[run.operation_type] = _thread_nice()

    w = Worker(ctx, "w-claim", handlers=tasks.TaskHandlers(runs={"backup": note, "restore": note}),
               priority=TaskPriority(other=10, restore=0))
    base = _room_below(10)
    event.listen(ctx.engine, "before_cursor_execute", note_claim)
    try:
        for op in ("backup", "restore"):
            _queue(ctx, tenant, op)
            assert w.run_once()
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note_claim)
    assert claims == [base + 10, base + 10]
    assert seen == {"backup": base + 10, "restore": base}
    assert _thread_nice() == base
