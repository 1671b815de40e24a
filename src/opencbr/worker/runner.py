"""Workers: claim tasks, run their handlers, report progress, survive crashes.

Many workers may share one catalog (``opencbr serve`` starts worker processes beside the API; ``cbr
worker`` starts more on other machines). A worker's id is ``<host>:<pid>:<random>:<n>``: the random part
makes it unique even between processes of the same host name and pid (containers, cloned machines);
host and pid are there for people reading the operation log. Liveness is judged by the lease alone: a
worker renews the lease of the task it runs on a timer (``task_lease_seconds / 4``), and any worker's
janitor retries or fails tasks whose lease expired. No worker ever judges another by its pid.

Stopping (SIGTERM) is not a crash: :meth:`WorkerPool.shutdown` tells the running handlers to stop (their
next progress report raises ``HandedBack``, which the engines turn into a clean cancel) and hands their
tasks back to the queue, where the next worker runs them again without using up an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback

from opencbr.domain.errors import CBRError
from opencbr.engine import load_operations
from opencbr.engine.errors import OperationCancelled
from opencbr.services import engine_errors, tasks
from opencbr.services.context import ServiceContext
from opencbr.services.doorbell import DoorbellListener
from opencbr.services.handlers import register_handlers
from opencbr.system.heap import collect_task_garbage
from opencbr.worker.wakeup import TaskPoller

log = logging.getLogger("opencbr.worker")

#: Seconds an orderly stop waits for running handlers to notice it before handing their tasks back anyway.
STOP_GRACE_SECONDS = 20.0
#: After a failed claim (the catalog unreachable for a moment) an idle worker tries again this soon, not
#: at its next poll: the doorbell that rang for the missed task does not ring twice.
CLAIM_RETRY_SECONDS = 1.0


#: A task that ran at least this long is followed by a collection of what it left in reference cycles
#: (system/heap.py, ``collect_task_garbage``): a backup of real data leaves tens of MB there. A shorter
#: one leaves little, which Python's own collections take, and is not made to pay for a collection
#: (~20 ms in the bench's process, which holds the engine and little else; a worker process freezes its
#: start-up objects out of it; ~160 ms in a test process).
COLLECT_AFTER_SECONDS = 1.0


#: Tasks a user waits on to get data back: in the worker processes they run at ``restore_nice``,
#: everything else (backups, verification, GC, ...) at ``worker_nice`` (see :class:`TaskPriority`).
RESTORES = frozenset({"restore", "create_fs", "create_disk", "restore_files"})


class TaskPriority:
    """How much a task's thread lowers its CPU (and, derived from it, I/O) priority: by ``restore``
    for restores, by ``other`` for the rest. Each task runs in a thread of its own that lowers itself
    (Linux priorities are per thread, a new thread inherits its creator's, and an unprivileged thread
    can lower its priority but never raise it again), so a worker that ran a backup at nice 10 still
    runs the next restore at full priority; what the task forks (a restore's parts) inherits it."""

    def __init__(self, *, other: int, restore: int):
        self.other = other
        self.restore = restore

    def lower_by(self, operation_type: str) -> int:
        return self.restore if operation_type in RESTORES else self.other


def lower_thread_priority(by: int) -> None:
    """Lower the calling thread's priority (only this thread's: ``setpriority`` on its thread id)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:  # (not Linux-like: the task runs at the worker's priority)
        log.warning("cannot lower the priority of a task thread", exc_info=True)


def new_worker_base() -> str:
    """``<host>:<pid>:<random>``: unique per process, readable by people (ids fit the catalog's 64 chars)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{os.urandom(4).hex()}"


def load_task_modules() -> None:
    """The data plane's modules, which the services import inside the tasks that use them (an API process
    never needs them): a worker process takes them at its start, not in its first task of each kind."""
    load_operations()
    import opencbr.services.tree_source  # noqa: F401 - (a file system's backup)


def task_handlers() -> tasks.TaskHandlers:
    """Every task handler of the services, registered for one worker set-up."""
    return register_handlers(tasks.TaskHandlers())


class Worker:
    def __init__(self, ctx: ServiceContext, worker_id: str, *, poll_interval: float | None = None,
                 types: tuple[str, ...] | None = None, host: str | None = None,
                 handlers: tasks.TaskHandlers | None = None, priority: TaskPriority | None = None):
        self.ctx = ctx
        self.priority = priority  # None: tasks run in this thread, at its priority
        self.worker_id = worker_id
        self.handlers = task_handlers() if handlers is None else handlers
        self.poll_interval = ctx.settings.worker_poll_seconds if poll_interval is None else poll_interval
        self.types = types
        self.host = ctx.settings.host_group if host is None else host
        self.stopping = threading.Event()
        self.current: tasks.TaskRun | None = None
        self._poller = TaskPoller(ctx, self.host)

    def run_once(self) -> bool:
        """Claim and run one task; False when there was nothing to do."""
        if self.stopping.is_set():
            return False
        run = self._claim()
        if run is None:
            return False
        fn = self.handlers.runs.get(run.operation_type)
        if fn is None:
            tasks.finish(self.ctx, run, tasks.FAILED,
                         error=CBRError(f"no worker can run {run.operation_type} tasks", code="BackupService.6902"))
            return True
        log.info("task %s (%s, attempt %d) claimed by %s", run.task_id, run.operation_type, run.attempt,
                 self.worker_id)
        self.current = run
        if self.stopping.is_set():  # the stop came between the claim and now
            run.stopping.set()
        beat = threading.Event()
        beater = threading.Thread(target=self._heartbeat, args=(run, beat), name=f"{self.worker_id}-lease",
                                  daemon=True)
        beater.start()
        started = time.monotonic()
        try:
            self._run_at_priority(fn, run)
        finally:
            beat.set()
            self.current = None
            beater.join(5)
            if time.monotonic() - started >= COLLECT_AFTER_SECONDS:
                collect_task_garbage()  # (system/heap.py: a tree backup's cycles held ~50 MB)
        return True

    def _claim(self) -> tasks.TaskRun | None:
        """Claim at ``worker_nice``, in a thread of its own (this thread must stay able to start a
        restore at ``restore_nice``): the claim's query (fair queuing over every waiting task) costs
        milliseconds of CPU, and while a fleet's queue drained the claims were the workers' only work
        left at the API's priority (bench/README.md, Fleet). A claim preempted while it holds SQLite's
        write lock delays other writers, as a task's own writes at ``worker_nice`` already can; the
        API's reads never wait for it (WAL)."""
        by = self.priority.other if self.priority is not None else 0
        if by <= 0:
            return tasks.claim_next(self.ctx, self.worker_id, self.types, host=self.host)
        out: list = []

        def lowered() -> None:
            lower_thread_priority(by)
            try:
                out.append(tasks.claim_next(self.ctx, self.worker_id, self.types, host=self.host))
            except BaseException as e:  # noqa: BLE001 - raised again in the worker thread
                out.append(e)

        t = threading.Thread(target=lowered, name=f"{self.worker_id}-claim", daemon=True)
        t.start()
        t.join()
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def _run_at_priority(self, fn, run: tasks.TaskRun) -> None:
        by = self.priority.lower_by(run.operation_type) if self.priority is not None else 0
        if by <= 0:
            self._run(fn, run)
            return

        def lowered() -> None:
            lower_thread_priority(by)
            self._run(fn, run)

        t = threading.Thread(target=lowered, name=f"{self.worker_id}-task", daemon=True)
        t.start()
        t.join()

    def _run(self, fn, run: tasks.TaskRun) -> None:
        try:
            fn(self.ctx, run)
        except (tasks.LeaseLost, tasks.TaskCancelled, OperationCancelled) as e:
            if self._hand_back(run):
                return
            if isinstance(e, tasks.LeaseLost):
                log.warning("task %s: lease lost, stopping", run.task_id)
            else:
                tasks.finish(self.ctx, run, tasks.FAILED,
                             error=CBRError("cancelled at the user's request", code="BackupService.6903"))
        except CBRError as e:
            tasks.finish(self.ctx, run, tasks.FAILED, error=e)
        except Exception as e:
            if engine_errors.cbr_error(e) is None:  # a bug or an environment failure: in the log too
                log.error("task %s failed:\n%s", run.task_id, traceback.format_exc())
            tasks.finish(self.ctx, run, tasks.FAILED, error=tasks.error_of(self.ctx, e))
        else:
            tasks.finish(self.ctx, run, tasks.SUCCESS)

    def _hand_back(self, run: tasks.TaskRun) -> bool:
        """After an interruption: if this worker is stopping (and the user did not cancel), the task goes
        back to the queue instead of failing."""
        if not run.stopping.is_set() or run.cancel_requested():
            return False
        if tasks.hand_back(self.ctx, run, f"worker {self.worker_id} stopped (orderly shutdown)"):
            log.warning("task %s (%s) handed back to the queue: worker %s is stopping", run.task_id,
                        run.operation_type, self.worker_id)
        return True

    def _heartbeat(self, run: tasks.TaskRun, done: threading.Event) -> None:
        period = max(0.2, self.ctx.settings.task_lease_seconds / 4)
        while not done.wait(period):
            try:
                if not tasks.heartbeat(self.ctx, run):
                    log.warning("task %s is no longer ours (lease expired); its handler stops", run.task_id)
                    return
            except Exception:  # the catalog hiccuped: the next beat (within the lease) tries again
                log.exception("task %s: cannot renew the lease", run.task_id)

    def stop(self) -> None:
        """Ask the running handler to stop at its next progress report and hand its task back."""
        self.stopping.set()
        run = self.current
        if run is not None:
            run.stopping.set()

    def run_forever(self, stop: threading.Event) -> None:
        bell = DoorbellListener(self.ctx.settings.effective_catalog_url)
        try:
            while not stop.is_set() and not self.stopping.is_set():
                idle = self.poll_interval
                try:
                    busy = self._poller.maybe_work() and self.run_once()
                except Exception:  # the catalog went away for a moment: retry soon, since the doorbell
                    # may already have rung for the task this claim missed
                    log.exception("worker %s: cannot claim tasks", self.worker_id)
                    busy, idle = False, min(idle, CLAIM_RETRY_SECONDS)
                if not busy:  # until a task is queued (the doorbell), or the next poll
                    bell.wait(idle, lambda: stop.is_set() or self.stopping.is_set())
        finally:
            bell.close()
            self._poller.close()

    def hand_back_now(self) -> None:
        """At the end of the stop grace: a handler still running (it reports no progress) loses its task
        to the queue anyway; if it finishes later, its report is refused (the task is no longer its)."""
        run = self.current
        if run is not None and not run.released.is_set():
            run.stopping.set()
            self._hand_back(run)


class WorkerPool:
    """N worker threads and one janitor thread in this process."""

    def __init__(self, ctx: ServiceContext, count: int, *, poll_interval: float | None = None,
                 priority: TaskPriority | None = None):
        self.ctx = ctx
        self.stop = threading.Event()
        base = new_worker_base()
        self.handlers = task_handlers()
        self.workers = [Worker(ctx, f"{base}:{i}", poll_interval=poll_interval, handlers=self.handlers,
                               priority=priority) for i in range(count)]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        # Tasks whose lease already ran out (their worker was killed before this start) are retried now.
        tasks.expire_leases(self.ctx, self.handlers.abandoned)
        for w in self.workers:
            t = threading.Thread(target=w.run_forever, args=(self.stop,), name=w.worker_id, daemon=True)
            t.start()
            self.threads.append(t)
        j = threading.Thread(target=self._janitor, name="janitor", daemon=True)
        j.start()
        self.threads.append(j)

    def _janitor(self) -> None:
        lease = self.ctx.settings.task_lease_seconds
        period = max(0.5, lease / 4)
        while not self.stop.wait(period):
            try:
                tasks.expire_leases(self.ctx, self.handlers.abandoned)
                tasks.mark_unserved(self.ctx, max(10.0, lease))
            except Exception:
                log.exception("janitor: cannot expire leases")

    def shutdown(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """An orderly stop: running tasks are handed back, not failed."""
        for w in self.workers:
            w.stop()
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            if t.name != "janitor":
                t.join(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.hand_back_now()
        for t in self.threads:
            t.join(1)
