"""Tasks (the guide's chapter 9, the API's operation logs): every long operation is a task row with
type, status, progress, times, the vault and resource it concerns and, when it fails, the cause.

Workers claim waiting tasks with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a compare-and-set
``UPDATE`` on SQLite), renew it with heartbeats while they run, and finish them. Liveness is judged by
the lease alone, never by a process id (a pid means nothing across PID namespaces or machines):

- a task whose lease expires (its worker was killed, or hung) is retried when attempts remain (backups:
  setting ``task_max_attempts``), else failed with the reason;
- a worker that stops in order (SIGTERM) *hands back* its running tasks: they wait again, lease cleared,
  the attempt not counted, and the next worker (or the next start) runs them again;
- a task that reads or writes a machine's local data carries ``required_host`` (the resource's host or
  host group): only workers of that host claim it, and the others leave it waiting with a message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from opencbr.catalog.db import is_sqlite
from opencbr.catalog.models import Resource, Task, new_id
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, StateConflict
from opencbr.services import doorbell, engine_errors, listing, space
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

WAITING, RUNNING, SUCCESS, FAILED, SKIPPED, TIMEOUT = "waiting", "running", "success", "failed", "skipped", "timeout"
STATUSES = (WAITING, RUNNING, SUCCESS, FAILED, SKIPPED, TIMEOUT)
FINISHED = (SUCCESS, FAILED, SKIPPED, TIMEOUT)
OPERATION_TYPES = ("backup", "copy", "replication", "restore", "delete", "sync", "vault_delete",
                   "remove_resource", "retention", "gc", "verify", "export", "create_disk", "create_fs",
                   "restore_files", "probe", "measure", "migrate", "create_server", "restore_test")
#: Operations that run again safely after their worker was lost: a backup publishes nothing until its
#: manifest and index are written, and its re-run deduplicates against what the vault holds; a restore
#: rewrites its target whole. They get ``task_max_attempts`` attempts; the others the count they were
#: created with.
RESUMABLE = ("backup", "restore", "create_disk", "verify", "gc", "delete")
#: Operations that read or write the data of the task's resource (``resource_id``) on its machine: only
#: a worker of the resource's host group may run them. The others work on the object store alone.
LOCAL_DATA = ("backup", "restore", "create_disk", "create_fs", "probe", "measure")

#: Runs one claimed task; it opens the short transactions it needs itself.
Handler = Callable[[ServiceContext, "TaskRun"], None]
#: Undoes what a task left when its worker died, in the transaction that abandons it.
AbandonHandler = Callable[[Session, Task], None]


@dataclass
class TaskHandlers:
    """Which function runs the tasks of each operation type, and which undoes what an abandoned one left.
    ``services.handlers.register_handlers`` fills it when a worker is set up."""

    runs: dict[str, Handler] = field(default_factory=dict)
    abandons: dict[str, AbandonHandler] = field(default_factory=dict)

    def register(self, operation_type: str, run: Handler, *, abandon: AbandonHandler | None = None) -> None:
        self.runs[operation_type] = run
        if abandon is not None:
            self.abandons[operation_type] = abandon

    def abandoned(self, s: Session, task: Task) -> None:
        """Undo the state an abandoned task left, e.g. a backup in ``protecting`` becomes ``error``."""
        fn = self.abandons.get(task.operation_type)
        if fn is not None:
            fn(s, task)


def new_task(s: Session, *, project_id: str, operation_type: str, now: datetime, params: dict | None = None,
             extra_info: dict | None = None, max_attempts: int = 1, flush: bool = True, **fields: str) -> Task:
    """Queue a task in the caller's transaction, so it exists exactly when the change that needs it
    is committed. ``flush=False``: the caller flushes (one flush for many tasks inserts them in batches);
    the task's id is set either way."""
    if "required_host" not in fields and operation_type in LOCAL_DATA and fields.get("resource_id"):
        fields["required_host"] = resource_host(s, fields["resource_id"])
    task = Task(id=new_id(), project_id=project_id, operation_type=operation_type, status=WAITING,
                params=params or {}, extra_info=extra_info or {}, created_at=now, updated_at=now, run_after=now,
                max_attempts=max_attempts, **fields)
    s.add(task)
    if flush:
        s.flush()
    doorbell.ring_on_commit(s)
    return task


def resource_host(s: Session, resource_id: str) -> str:
    """The host (or host group) whose workers can reach a resource's data; "" when any worker can."""
    res = s.get(Resource, resource_id)
    return (res.host or "") if res is not None else ""


# ------------------------------------------------------------------------------------ claiming
class TaskCancelled(Exception):
    """Raised inside a handler when the user asked to cancel the task."""


class LeaseLost(Exception):
    """The worker no longer owns the task (it stalled past its lease, and another worker may have it);
    it must stop and leave the task's state alone: whoever runs the task next owns it."""


class HandedBack(LeaseLost):
    """The worker is stopping in order (SIGTERM): it stops the task and hands it back to the queue,
    leaving its state for the next run, exactly as after a lost lease."""


@dataclass
class TaskRun:
    """A claimed task as its handler sees it: parameters, and ways to report progress."""

    ctx: ServiceContext
    task_id: str
    operation_type: str
    project_id: str
    params: dict
    worker_id: str
    attempt: int
    _last_progress: int = -1
    #: Set by the worker when it stops in order: the next progress report raises HandedBack.
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Set when the worker learns it no longer owns the task (lease lost, or handed back).
    released: threading.Event = field(default_factory=threading.Event)

    def progress(self, percent: int, extra: dict | None = None) -> None:
        """Report progress (0-100) and renew the lease; raises TaskCancelled when a cancel was asked,
        HandedBack when the worker is stopping, LeaseLost when the task is no longer ours."""
        if self.stopping.is_set():
            self.released.set()
            raise HandedBack(self.task_id)
        percent = max(0, min(100, int(percent)))
        now = self.ctx.now()
        with self.ctx.tx() as s:
            task = s.get(Task, self.task_id)
            if task is None or task.lease_owner != self.worker_id or task.status != RUNNING:
                self.released.set()
                raise LeaseLost(self.task_id)
            if percent != self._last_progress:
                task.progress = percent
                common = dict((task.extra_info or {}).get("common", {}))
                common["progress"] = percent
                task.extra_info = {**(task.extra_info or {}), "common": common, **(extra or {})}
            elif extra:
                task.extra_info = {**(task.extra_info or {}), **extra}
            task.lease_expires_at = now + timedelta(seconds=self.ctx.settings.task_lease_seconds)
            task.updated_at = now
            cancel = task.cancel_requested
        self._last_progress = percent
        if cancel:
            raise TaskCancelled(self.task_id)

    def cancel_requested(self) -> bool:
        with self.ctx.tx() as s:
            task = s.get(Task, self.task_id)
            return bool(task and task.cancel_requested)

    def set_extra(self, **extra: object) -> None:
        with self.ctx.tx() as s:
            task = s.get(Task, self.task_id)
            if task is not None:
                task.extra_info = {**(task.extra_info or {}), **extra}


#: Operations that read or write a resource's data through its vault's repository: at most
#: ``max_tasks_per_vault`` of them run at once on one vault and ``max_tasks_per_agent`` on one agent's host
#: (a fleet's policies firing at the same minute queue thousands; the rest wait their turn in order).
CAPPED = ("backup", "restore", "create_disk", "create_fs", "verify")
#: Claims take this PostgreSQL transaction lock, so two workers never both see room under a cap and both
#: take it (on SQLite, BEGIN IMMEDIATE already serialises them). A claim holds it for a few milliseconds.
_CLAIM_LOCK = 0x0C8C1A1


def claim_next(ctx: ServiceContext, worker_id: str, types: tuple[str, ...] | None = None,
               host: str | None = None) -> TaskRun | None:
    """Claim the next runnable task, or return None. Safe with many workers on one catalog.
    ``host``: the worker's host (group); it claims only tasks that need no host or need that one.

    Order: the task of the vault that has started the fewest tasks since the oldest waiting task was
    queued, then the oldest (fair queuing by vault). A fleet's policies queue thousands of tasks at one
    minute, vault after vault; taken oldest first, the first vaults would hold every worker while the
    last ones wait. Taken this way the vaults take turns, and no task starves: every vault served before
    it is served again only after its own turn. A task whose vault or agent is at its cap (``_room``) is
    passed over until room frees."""
    now = ctx.now()
    lease_until = now + timedelta(seconds=ctx.settings.task_lease_seconds)
    sqlite = is_sqlite(ctx.settings.effective_catalog_url)
    with ctx.tx() as s:
        if not sqlite:
            s.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK)))
            # The planner's statistics say what the table usually holds, almost no waiting task (and with
            # no ANALYZE since the tasks were queued, nothing): it then joins each waiting task to the
            # per-vault counts in a nested loop, which re-aggregates the counts once per waiting task. At a
            # fleet's fire minute (2,000 waiting in 200 vaults) a claim took 150 ms under the lock that
            # serialises claims; with hash joins 10-15 ms whatever the statistics say (bench/README.md).
            s.execute(text("SET LOCAL enable_nestloop = off"))
        busy = (select(Task.vault_id, func.count().label("n"))
                .where(Task.status == RUNNING, Task.operation_type.in_(CAPPED)).group_by(Task.vault_id)
                .subquery("busy"))
        running_in_vault = func.coalesce(busy.c.n, 0)
        backlog_since = select(func.min(Task.created_at)).where(Task.status == WAITING).scalar_subquery()
        served = (select(Task.vault_id, func.count().label("n"))
                  .where(Task.started_at >= backlog_since, Task.operation_type.in_(CAPPED)).group_by(Task.vault_id)
                  .subquery("served"))
        q = (select(Task).outerjoin(busy, busy.c.vault_id == Task.vault_id)
             .outerjoin(served, served.c.vault_id == Task.vault_id)
             .where(Task.status == WAITING, Task.run_after <= now, *_room(ctx, running_in_vault)))
        if types:
            q = q.where(Task.operation_type.in_(types))
        if host is not None:
            q = q.where(Task.required_host.in_(("", host)))
        q = q.order_by(func.coalesce(served.c.n, 0), Task.run_after, Task.created_at, Task.id).limit(1)
        if not sqlite:
            q = q.with_for_update(of=Task, skip_locked=True)
        task = s.scalar(q)
        if task is None:
            return None
        attempt = task.attempts + 1
        # On SQLite the transaction already holds the write lock (BEGIN IMMEDIATE); the status guard
        # keeps the claim correct even if that ever changes.
        res = s.execute(update(Task).where(Task.id == task.id, Task.status == WAITING).values(
            status=RUNNING, lease_owner=worker_id, lease_expires_at=lease_until, attempts=Task.attempts + 1,
            started_at=task.started_at or now, updated_at=now))
        if res.rowcount != 1:
            return None
        if (task.error_message or "").startswith(WAITING_FOR_HOST):  # it has found its worker now
            s.execute(update(Task).where(Task.id == task.id).values(error_message=""))
        return TaskRun(ctx, task.id, task.operation_type, task.project_id, dict(task.params or {}), worker_id,
                       attempt)


def _room(ctx: ServiceContext, running_in_vault) -> list:
    """Conditions on a waiting task: its vault, its project and its agent are below their caps of running
    CAPPED tasks (``running_in_vault``: the count of the task's vault)."""
    capped = Task.operation_type.in_(CAPPED)
    conds = []
    per_vault, per_agent = ctx.settings.max_tasks_per_vault, ctx.settings.max_tasks_per_agent
    per_project = ctx.settings.max_tasks_per_project
    if per_vault > 0:
        conds.append(or_(~capped, Task.vault_id == "", running_in_vault < per_vault))
    if per_project > 0:  # (one project's many or slow tasks never hold every worker: docs/catalog-scale.md)
        mine = aliased(Task)
        full = (select(mine.project_id).where(mine.status == RUNNING, mine.operation_type.in_(CAPPED))
                .group_by(mine.project_id).having(func.count() >= per_project))
        conds.append(or_(~capped, Task.project_id.not_in(full)))
    if per_agent > 0:
        held, running = aliased(Resource), aliased(Task)
        busy = (select(held.agent_id).join(running, running.resource_id == held.id)
                .where(running.status == RUNNING, running.operation_type.in_(CAPPED), held.agent_id.is_not(None))
                .group_by(held.agent_id).having(func.count() >= per_agent))
        on_busy_agent = (select(Resource.id).where(Resource.id == Task.resource_id, Resource.agent_id.in_(busy))
                         .correlate(Task))
        conds.append(or_(~capped, ~on_busy_agent.exists()))
    return conds


def _owned(s: Session, run: TaskRun) -> Task | None:
    """The task row if ``run``'s worker still holds it: running, under its lease. A worker whose lease
    expired must not touch a task another worker (or the janitor) has since taken over."""
    task = s.get(Task, run.task_id, with_for_update=True)
    if task is None or task.lease_owner != run.worker_id or task.status != RUNNING:
        return None
    return task


def still_owned(s: Session, run: TaskRun) -> bool:
    """In the caller's transaction: does ``run``'s worker still hold the task? (Publish results only then.)"""
    if _owned(s, run) is None:
        run.released.set()
        return False
    return True


def heartbeat(ctx: ServiceContext, run: TaskRun) -> bool:
    """Renew the lease of a running task (the worker does this on a timer, so a handler that reports no
    progress for a while keeps its task). False when the task is no longer ours."""
    now = ctx.now()
    with ctx.tx() as s:
        task = _owned(s, run)
        if task is None:
            run.released.set()
            return False
        task.lease_expires_at = now + timedelta(seconds=ctx.settings.task_lease_seconds)
        return True


def finish(ctx: ServiceContext, run: TaskRun, status: str, *, error: CBRError | None = None,
           message: str = "", extra: dict | None = None) -> None:
    now = ctx.now()
    with ctx.tx() as s:
        task = _owned(s, run)
        if task is None:
            return
        task.status = status
        task.ended_at = now
        task.updated_at = now
        task.lease_expires_at = None
        doorbell.ring_on_commit(s, doorbell.TASK_ENDS)  # (held ``?wait`` answers learn of it at once)
        if status == SUCCESS:
            task.progress = 100
            common = dict((task.extra_info or {}).get("common", {}))
            common["progress"] = 100
            task.extra_info = {**(task.extra_info or {}), "common": common}
        if extra:
            task.extra_info = {**(task.extra_info or {}), **extra}
        if error is not None:
            task.error_code, task.error_message = error.code, error.message
        elif message:
            task.error_message = message


def hand_back(ctx: ServiceContext, run: TaskRun, reason: str) -> bool:
    """An orderly stop: the task waits again for the next worker, its lease cleared and this attempt not
    counted; what it had done stays for the next run to pick up (``HandedBack``). False when the task
    was no longer ours."""
    now = ctx.now()
    with ctx.tx() as s:
        task = _owned(s, run)
        if task is None:
            return False
        task.status, task.lease_owner, task.lease_expires_at = WAITING, "", None
        task.attempts = max(0, task.attempts - 1)
        task.run_after = task.updated_at = now
        task.error_message = f"handed back to the queue: {reason}; it runs again on the next worker"
        _record_attempt(task, "handed back", reason, now)
        return True


def _record_attempt(task: Task, outcome: str, reason: str, now: datetime) -> None:
    """What happened to each attempt, for the operation log (``extra_info.attempts``)."""
    history = list((task.extra_info or {}).get("attempts", []))[-19:]
    history.append({"attempt": task.attempts + (outcome == "handed back"), "outcome": outcome,
                    "reason": reason, "at": now.isoformat()})
    task.extra_info = {**(task.extra_info or {}), "attempts": history}


def attempts_allowed(ctx: ServiceContext, task: Task) -> int:
    if task.operation_type in RESUMABLE:
        return max(task.max_attempts, ctx.settings.task_max_attempts)
    return task.max_attempts
def error_of(ctx: ServiceContext, exc: BaseException) -> CBRError:
    """What a task that raised ``exc`` failed with: its CBR error (an engine error's from the table in
    engine_errors.py); storage that ran out, saying which (``StorageFull``); else an internal error in words."""
    if isinstance(exc, CBRError):
        return exc
    return (engine_errors.cbr_error(exc) or space.storage_full(ctx, exc)
            or CBRError(f"internal error: {type(exc).__name__}: {exc}", code="BackupService.9999"))


def expire_leases(ctx: ServiceContext, on_abandoned: AbandonHandler | None) -> int:
    """Tasks whose worker stopped heartbeating: retry them if attempts remain (on any worker that can
    serve them), else fail them with the reason. ``on_abandoned`` (the workers':
    :meth:`TaskHandlers.abandoned`) undoes the state the task left, e.g. a backup in ``protecting``
    becomes ``error``. Returns how many tasks were handled."""
    now = ctx.now()
    n = 0
    with ctx.tx() as s:
        stale = list(s.scalars(select(Task).where(Task.status == RUNNING, Task.lease_expires_at < now)))
        for task in stale:
            n += 1
            allowed = attempts_allowed(ctx, task)
            lost = f"worker {task.lease_owner} stopped responding (killed, crashed or hung)"
            _record_attempt(task, "lost", lost, now)
            if task.attempts < allowed and not task.cancel_requested:
                task.status, task.lease_owner, task.lease_expires_at = WAITING, "", None
                task.run_after = now
                task.error_message = f"{lost}; retrying (attempt {task.attempts + 1} of {allowed})"
            else:
                task.status, task.ended_at, task.lease_expires_at = FAILED, now, None
                doorbell.ring_on_commit(s, doorbell.TASK_ENDS)
                task.error_code = "BackupService.6901"
                task.error_message = (f"the worker running this task stopped responding (it crashed or was "
                                      f"killed) and the task was abandoned after {task.attempts} of {allowed} "
                                      f"attempt(s)")
                if on_abandoned is not None:
                    on_abandoned(s, task)
            task.updated_at = now
    return n


WAITING_FOR_HOST = "waiting for a worker on host "


def mark_unserved(ctx: ServiceContext, after_seconds: float) -> int:
    """Tasks that need a host whose workers have not taken them for ``after_seconds`` say so in their
    message (a worker of that host may be down, or none was ever started there)."""
    now = ctx.now()
    cutoff = now - timedelta(seconds=after_seconds)
    with ctx.tx() as s:
        rows = list(s.scalars(select(Task).where(Task.status == WAITING, Task.required_host != "",
                                                 Task.run_after < cutoff, Task.error_message == "")))
        for task in rows:
            task.error_message = (f"{WAITING_FOR_HOST}{task.required_host}: none has taken it yet (start "
                                  f"`cbr worker` on that host, with host_group = \"{task.required_host}\")")
    return len(rows)


def recover_orphans(ctx: ServiceContext, is_dead: Callable[[str], bool], on_abandoned: AbandonHandler | None) -> int:
    """Running tasks whose worker is *known* to be gone (``is_dead(lease_owner)``) are expired at once
    instead of after their lease. Only for owners whose end is certain, e.g. this process's own earlier
    incarnation; never guess from a pid (another PID namespace may run the same pid)."""
    with ctx.tx() as s:
        owners = {o for (o,) in s.execute(select(Task.lease_owner).where(Task.status == RUNNING))}
        dead = [o for o in owners if o and is_dead(o)]
        if dead:
            s.execute(update(Task).where(Task.status == RUNNING, Task.lease_owner.in_(dead))
                      .values(lease_expires_at=ctx.now() - timedelta(seconds=1)))
    return expire_leases(ctx, on_abandoned)


def request_cancel(s: Session, p: Principal, task_id: str) -> Task:
    p.require_write()
    task = _get(s, p.project_id, task_id)
    if task.status in FINISHED:
        raise StateConflict(f"task {task_id} has already finished ({task.status})")
    task.cancel_requested = True
    return task


# ------------------------------------------------------------------------------------ listing
def _get(s: Session, project_id: str, task_id: str) -> Task:
    task = s.get(Task, task_id) if isinstance(task_id, str) else None
    if task is None or task.project_id != project_id:
        raise NotFound(f"operation log {task_id} not found", code="BackupService.6109")
    return task


def show_task(s: Session, p: Principal, task_id: str) -> Task:
    return _get(s, p.project_id, task_id)


@dataclass
class TaskFilter:
    operation_type: str | None = None
    status: str | None = None
    vault_id: str | None = None
    vault_name: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    provider_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    task_id: str | None = None


SORT_KEYS = {"created_at": Task.created_at, "updated_at": Task.updated_at, "started_at": Task.started_at,
             "ended_at": Task.ended_at, "status": Task.status, "operation_type": Task.operation_type}


def list_tasks(s: Session, p: Principal, f: TaskFilter, *, limit: int = 1000,
               offset: int = 0, sort: listing.Sort | None = None) -> tuple[list[Task], int]:
    """Operation logs of the project, newest first, filtered as guide chapter 9 describes (type, status,
    task id, resource id/name, vault id/name, time)."""
    if f.operation_type and f.operation_type not in OPERATION_TYPES:
        raise InvalidParameter(f"operation_type must be one of {', '.join(OPERATION_TYPES)}")
    if f.status and f.status not in STATUSES:
        raise InvalidParameter(f"status must be one of {', '.join(STATUSES)}")
    conds = [Task.project_id == p.project_id]
    for col, val in ((Task.operation_type, f.operation_type), (Task.status, f.status), (Task.vault_id, f.vault_id),
                     (Task.resource_id, f.resource_id), (Task.provider_id, f.provider_id), (Task.id, f.task_id)):
        if val:
            conds.append(col == val)
    if f.vault_name:
        conds.append(listing.contains(Task.vault_name, f.vault_name))
    if f.resource_name:
        conds.append(listing.contains(Task.resource_name, f.resource_name))
    if f.start_time:
        conds.append(Task.created_at >= f.start_time)
    if f.end_time:
        conds.append(Task.created_at <= f.end_time)
    total = s.scalar(select(func.count()).select_from(Task).where(and_(*conds))) or 0
    order = listing.order_by(sort, SORT_KEYS, [Task.created_at.desc(), Task.id], Task.id)
    rows = list(s.scalars(select(Task).where(and_(*conds)).order_by(*order).limit(limit).offset(offset)))
    return rows, total


def purge_old(s: Session, ctx: ServiceContext, *, days: int = 30) -> int:
    """Guide ch. 9: the task list shows the past 30 days; finished tasks older than that are purged."""
    cutoff = ctx.now() - timedelta(days=days)
    res = s.execute(delete(Task).where(Task.status.in_(FINISHED), or_(Task.ended_at < cutoff,
                                                                      and_(Task.ended_at.is_(None),
                                                                           Task.created_at < cutoff))))
    return res.rowcount or 0
