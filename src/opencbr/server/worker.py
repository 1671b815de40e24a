"""``cbr worker``: workers only, beside ``cbr serve`` (one of its worker processes) or on another machine
sharing the catalog and the object store."""

from __future__ import annotations

import logging
import os
import threading

from opencbr.config import Settings
from opencbr.server.process import (
    check_installation,
    keep_for_life,
    note_stop_signals,
    opening_catalog,
    start_logging,
    stop_with_parent,
    wait_for_stop,
)
from opencbr.server.receiver import start_receiver
from opencbr.services import hosts
from opencbr.services.context import ServiceContext, open_context
from opencbr.worker.runner import TaskPriority, WorkerPool, load_task_modules

log = logging.getLogger("opencbr")


def worker_pool(ctx: ServiceContext, count: int) -> WorkerPool:
    """``count`` workers whose tasks run at a lower CPU (and, as Linux derives it from the nice value,
    I/O) priority than an API on the same machine: a backup can wait a few milliseconds, a request
    cannot (``worker_nice``, default 10; bench/README.md, API under load and Fleet). Standalone workers
    (``cbr worker``) too: beside an API they took the cores from its requests while a fleet's queue
    drained; on a machine of their own, nice costs them nothing. Restores, which a user waits on, by
    ``restore_nice`` (default 0). Per task (and per claim) thread: the worker threads keep their priority."""
    settings = ctx.settings
    return WorkerPool(ctx, count, priority=TaskPriority(other=settings.worker_nice, restore=settings.restore_nice))


def run_workers(settings: Settings, count: int, *, supervised: bool = False) -> None:
    """Run ``count`` worker threads until SIGTERM/SIGINT, then stop in order (running tasks are handed
    back to the queue). ``supervised``: a worker process of ``cbr serve``, which stops when it stops and
    leaves the catalog's migration to it."""
    start_logging()
    if supervised:
        stop_with_parent()
    hosts.set_local_group(settings.host_group)
    with opening_catalog(settings):
        ctx = open_context(settings, migrate=not supervised)
        check_installation(ctx)
        pool = worker_pool(ctx, count)
        stopping = note_stop_signals()
        load_task_modules()
        keep_for_life()
        pool.start()
        if settings.worker_nice:
            os.nice(settings.worker_nice)  # this thread and the ones it starts from now on (the receiver)
        # the line an operator (and the scale-out test) looks for: this machine takes tasks now
        log.info("workers %s running (host group %s)", ", ".join(w.worker_id for w in pool.workers),
                 settings.host_group)
        receiving = threading.Event()
        start_receiver(ctx, receiving)
    log.info("worker stopping (%s): running tasks are handed back to the queue", wait_for_stop(stopping))
    receiving.set()
    pool.shutdown()
    ctx.close()
