"""The composition root: one process with the API (and console), the scheduler and workers."""

from __future__ import annotations

import logging
import os
import signal
import threading

import uvicorn

from opencbr.api.app import create_app
from opencbr.config import Settings
from opencbr.scheduler import Scheduler
from opencbr.services import iam
from opencbr.services.context import ServiceContext, open_context
from opencbr.worker.runner import WorkerPool

log = logging.getLogger("opencbr")

# Importing the service modules registers their task handlers.
from opencbr.services import backups as _backups  # noqa: E402,F401
from opencbr.services import files as _files  # noqa: E402,F401
from opencbr.services import restore as _restore  # noqa: E402,F401
from opencbr.services import vaults as _vaults  # noqa: E402,F401


class Service:
    """API + workers (+ scheduler) over one catalog, started and stopped together."""

    def __init__(self, settings: Settings, *, with_workers: bool = True):
        self.settings = settings
        os.makedirs(settings.data_dir, exist_ok=True)
        self.ctx: ServiceContext = open_context(settings)
        self.app = create_app(self.ctx)
        self.pool = WorkerPool(self.ctx, settings.workers) if with_workers and settings.workers > 0 else None
        self.scheduler = Scheduler(self.ctx) if settings.scheduler else None
        self.stop_event = threading.Event()

    def bootstrap(self) -> iam.BootstrapInfo:
        return iam.bootstrap(self.ctx)

    def run(self, on_ready=None) -> None:
        """Serve until SIGINT/SIGTERM."""
        if self.pool:
            self.pool.start()
        if self.scheduler:
            self.scheduler.start()
        config = uvicorn.Config(self.app, host=self.settings.host, port=self.settings.port, log_level="warning",
                                access_log=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        if on_ready is not None:
            threading.Thread(target=self._announce, args=(server, on_ready), daemon=True).start()
        try:
            server.run()
        finally:
            self.shutdown()

    def _announce(self, server: uvicorn.Server, on_ready) -> None:
        while not server.started and not server.should_exit:
            self.stop_event.wait(0.05)
        if server.started:
            on_ready()

    def shutdown(self) -> None:
        self.stop_event.set()
        if self.scheduler:
            self.scheduler.shutdown()
        if self.pool:
            self.pool.shutdown()
        self.ctx.close()


def run_workers(settings: Settings, count: int) -> None:
    """``cbr worker``: workers only, for other machines sharing the catalog and the object store."""
    ctx = open_context(settings)
    pool = WorkerPool(ctx, count)
    pool.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    pool.shutdown()
    ctx.close()
