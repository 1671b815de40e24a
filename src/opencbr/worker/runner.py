"""Workers: claim tasks, run their handlers, report progress, survive crashes.

Many workers may share one catalog (``make run`` starts some in-process; ``cbr worker`` starts more on
other machines). A worker id is ``<host>:<pid>:<n>``: at start-up a process expires at once the leases of tasks held by
processes of its host that no longer exist, and a janitor expires stale leases of workers that died
anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback

from opencbr.domain.errors import CBRError
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.storage.base import local_process_gone

log = logging.getLogger("opencbr.worker")

def host_prefix() -> str:
    return f"{socket.gethostname()}:"


def owner_is_dead(owner: str) -> bool:
    """A lease owner ``host:pid:n`` of this host whose process no longer exists."""
    prefix = host_prefix()
    if not owner.startswith(prefix):
        return False
    try:
        pid = int(owner[len(prefix):].split(":", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True  # an earlier incarnation with a recycled pid; this process has not claimed yet
    return local_process_gone(socket.gethostname(), pid)


class Worker:
    def __init__(self, ctx: ServiceContext, worker_id: str, *, poll_interval: float = 0.5,
                 types: tuple[str, ...] | None = None):
        self.ctx = ctx
        self.worker_id = worker_id
        self.poll_interval = poll_interval
        self.types = types

    def run_once(self) -> bool:
        """Claim and run one task; False when there was nothing to do."""
        run = tasks.claim_next(self.ctx, self.worker_id, self.types)
        if run is None:
            return False
        fn = tasks.HANDLERS.get(run.operation_type)
        if fn is None:
            tasks.finish(self.ctx, run, tasks.FAILED,
                         error=CBRError(f"no worker can run {run.operation_type} tasks", code="BackupService.6902"))
            return True
        log.info("task %s (%s) claimed by %s", run.task_id, run.operation_type, self.worker_id)
        try:
            fn(self.ctx, run)
        except tasks.LeaseLost:
            log.warning("task %s: lease lost, stopping", run.task_id)
        except tasks.TaskCancelled:
            tasks.finish(self.ctx, run, tasks.FAILED,
                         error=CBRError("cancelled at the user's request", code="BackupService.6903"))
        except CBRError as e:
            tasks.finish(self.ctx, run, tasks.FAILED, error=e)
        except Exception as e:  # a bug or an environment failure: record it in words, keep the worker alive
            log.error("task %s failed:\n%s", run.task_id, traceback.format_exc())
            tasks.finish(self.ctx, run, tasks.FAILED, error=tasks.error_of(self.ctx, e))
        else:
            tasks.finish(self.ctx, run, tasks.SUCCESS)
        return True

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # the catalog went away for a moment: wait and retry
                log.exception("worker %s: cannot claim tasks", self.worker_id)
                busy = False
            if not busy:
                stop.wait(self.poll_interval)


class WorkerPool:
    """N worker threads and one janitor thread in this process."""

    def __init__(self, ctx: ServiceContext, count: int, *, poll_interval: float = 0.5):
        self.ctx = ctx
        self.stop = threading.Event()
        base = f"{host_prefix()}{os.getpid()}"
        self.workers = [Worker(ctx, f"{base}:{i}", poll_interval=poll_interval) for i in range(count)]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        # Tasks this host held before a crash cannot still be running: fail or retry them now.
        tasks.recover_orphans(self.ctx, owner_is_dead)
        for w in self.workers:
            t = threading.Thread(target=w.run_forever, args=(self.stop,), name=w.worker_id, daemon=True)
            t.start()
            self.threads.append(t)
        j = threading.Thread(target=self._janitor, name="janitor", daemon=True)
        j.start()
        self.threads.append(j)

    def _janitor(self) -> None:
        period = max(1.0, self.ctx.settings.task_lease_seconds / 3)
        while not self.stop.wait(period):
            try:
                tasks.expire_leases(self.ctx)
            except Exception:
                log.exception("janitor: cannot expire leases")

    def shutdown(self, timeout: float = 10) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
