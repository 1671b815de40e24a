"""Tasks (the guide's chapter 9, the API's operation logs): every long operation is a task row with
type, status, progress, times, the vault and resource it concerns and, when it fails, the cause.

Workers claim waiting tasks with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a compare-and-set
``UPDATE`` on SQLite), renew it with heartbeats while they run, and finish them. A task whose lease
expires (its worker died) is retried when attempts remain, else failed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from opencbr.catalog.db import is_sqlite
from opencbr.catalog.models import Task
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, StateConflict
from opencbr.services import listing
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

WAITING, RUNNING, SUCCESS, FAILED, SKIPPED, TIMEOUT = "waiting", "running", "success", "failed", "skipped", "timeout"
STATUSES = (WAITING, RUNNING, SUCCESS, FAILED, SKIPPED, TIMEOUT)
FINISHED = (SUCCESS, FAILED, SKIPPED, TIMEOUT)
OPERATION_TYPES = ("backup", "copy", "replication", "restore", "delete", "sync", "vault_delete",
                   "remove_resource", "retention", "gc", "verify", "export", "create_disk", "create_fs",
                   "restore_files")

#: Handlers by operation type, registered by the service modules that own them.
Handler = Callable[[ServiceContext, "TaskRun"], None]
HANDLERS: dict[str, Handler] = {}


def handler(operation_type: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[operation_type] = fn
        return fn
    return register


#: What to undo when a task is abandoned because its worker died, by operation type.
AbandonHandler = Callable[[Session, Task], None]
ABANDON_HANDLERS: dict[str, AbandonHandler] = {}


def on_abandon(*operation_types: str) -> Callable[[AbandonHandler], AbandonHandler]:
    def register(fn: AbandonHandler) -> AbandonHandler:
        for op in operation_types:
            ABANDON_HANDLERS[op] = fn
        return fn
    return register


def _abandoned(s: Session, task: Task) -> None:
    fn = ABANDON_HANDLERS.get(task.operation_type)
    if fn is not None:
        fn(s, task)


def new_task(s: Session, *, project_id: str, operation_type: str, now: datetime, params: dict | None = None,
             extra_info: dict | None = None, max_attempts: int = 1, **fields: str) -> Task:
    """Queue a task in the caller's transaction, so it exists exactly when the change that needs it
    is committed."""
    task = Task(project_id=project_id, operation_type=operation_type, status=WAITING, params=params or {},
                extra_info=extra_info or {}, created_at=now, updated_at=now, run_after=now,
                max_attempts=max_attempts, **fields)
    s.add(task)
    s.flush()
    return task


# ------------------------------------------------------------------------------------ claiming
class TaskCancelled(Exception):
    """Raised inside a handler when the user asked to cancel the task."""


class LeaseLost(Exception):
    """The worker's lease on the task was taken over (it stalled too long); it must stop."""


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

    def progress(self, percent: int, extra: dict | None = None) -> None:
        """Report progress (0-100) and renew the lease; raises TaskCancelled when a cancel was asked."""
        percent = max(0, min(100, int(percent)))
        now = self.ctx.now()
        with self.ctx.tx() as s:
            task = s.get(Task, self.task_id)
            if task is None or task.lease_owner != self.worker_id or task.status != RUNNING:
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


def claim_next(ctx: ServiceContext, worker_id: str, types: tuple[str, ...] | None = None) -> TaskRun | None:
    """Claim the oldest runnable task, or return None. Safe with many workers on one catalog."""
    now = ctx.now()
    lease_until = now + timedelta(seconds=ctx.settings.task_lease_seconds)
    sqlite = is_sqlite(ctx.settings.effective_catalog_url)
    with ctx.tx() as s:
        q = select(Task).where(Task.status == WAITING, Task.run_after <= now)
        if types:
            q = q.where(Task.operation_type.in_(types))
        q = q.order_by(Task.run_after, Task.created_at).limit(1)
        if not sqlite:
            q = q.with_for_update(skip_locked=True)
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
        return TaskRun(ctx, task.id, task.operation_type, task.project_id, dict(task.params or {}), worker_id,
                       attempt)


def finish(ctx: ServiceContext, run: TaskRun, status: str, *, error: CBRError | None = None,
           message: str = "", extra: dict | None = None) -> None:
    now = ctx.now()
    with ctx.tx() as s:
        task = s.get(Task, run.task_id)
        if task is None or task.lease_owner != run.worker_id:
            return
        task.status = status
        task.ended_at = now
        task.updated_at = now
        task.lease_expires_at = None
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


def expire_leases(ctx: ServiceContext, on_abandoned: Callable[[Session, Task], None] | None = _abandoned) -> int:
    """Tasks whose worker stopped heartbeating: retry them if attempts remain, else fail them with the
    reason. ``on_abandoned`` (by default the handler the owning service registered with
    :func:`on_abandon`) undoes the state the task left, e.g. a backup in ``protecting`` becomes
    ``error``. Returns how many tasks were handled."""
    now = ctx.now()
    n = 0
    with ctx.tx() as s:
        stale = list(s.scalars(select(Task).where(Task.status == RUNNING, Task.lease_expires_at < now)))
        for task in stale:
            n += 1
            if task.attempts < task.max_attempts and not task.cancel_requested:
                task.status, task.lease_owner, task.lease_expires_at = WAITING, "", None
                task.run_after = now
                task.error_message = f"worker stopped responding; retrying (attempt {task.attempts + 1})"
            else:
                task.status, task.ended_at, task.lease_expires_at = FAILED, now, None
                task.error_code = "BackupService.6901"
                task.error_message = ("the worker running this task stopped responding (it crashed or was "
                                      "killed) and the task was abandoned")
                if on_abandoned is not None:
                    on_abandoned(s, task)
            task.updated_at = now
    return n


def recover_orphans(ctx: ServiceContext, is_dead: Callable[[str], bool],
                    on_abandoned: Callable[[Session, Task], None] | None = _abandoned) -> int:
    """At start-up: running tasks whose worker is known to be gone (``is_dead(lease_owner)``, e.g. a
    process of this host that no longer exists) are expired at once instead of after their lease."""
    with ctx.tx() as s:
        owners = {o for (o,) in s.execute(select(Task.lease_owner).where(Task.status == RUNNING))}
        dead = [o for o in owners if o and is_dead(o)]
        if dead:
            s.execute(update(Task).where(Task.status == RUNNING, Task.lease_owner.in_(dead))
                      .values(lease_expires_at=ctx.now() - timedelta(seconds=1)))
    return expire_leases(ctx, on_abandoned)


def request_cancel(ctx: ServiceContext, p: Principal, task_id: str) -> Task:
    p.require_write()
    with ctx.tx() as s:
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


def show_task(ctx: ServiceContext, p: Principal, task_id: str) -> Task:
    with ctx.read() as s:
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


def list_tasks(ctx: ServiceContext, p: Principal, f: TaskFilter, limit: int = 1000,
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
    with ctx.read() as s:
        total = s.scalar(select(func.count()).select_from(Task).where(and_(*conds))) or 0
        order = listing.order_by(sort, SORT_KEYS, [Task.created_at.desc(), Task.id], Task.id)
        rows = list(s.scalars(select(Task).where(and_(*conds)).order_by(*order).limit(limit).offset(offset)))
    return rows, total


def purge_old(ctx: ServiceContext, days: int = 30) -> int:
    """Guide ch. 9: the task list shows the past 30 days; finished tasks older than that are purged."""
    cutoff = ctx.now() - timedelta(days=days)
    with ctx.tx() as s:
        res = s.execute(delete(Task).where(Task.status.in_(FINISHED), or_(Task.ended_at < cutoff,
                                                                          and_(Task.ended_at.is_(None),
                                                                               Task.created_at < cutoff))))
        return res.rowcount or 0
