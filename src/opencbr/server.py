"""The composition root: the API process (API, console, scheduler) and its worker processes."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time

import uvicorn

from opencbr.api.app import create_app
from opencbr.config import Settings
from opencbr.domain.errors import CBRError
from opencbr.scheduler import Scheduler
from opencbr.services import iam
from opencbr.services.context import ServiceContext, open_context
from opencbr.worker.runner import WorkerPool
from opencbr.worker.supervisor import WorkerProcesses

log = logging.getLogger("opencbr")

# Importing the service modules registers their task handlers.
from opencbr.services import backups as _backups  # noqa: E402,F401
from opencbr.services import files as _files  # noqa: E402,F401
from opencbr.services import hosts  # noqa: E402
from opencbr.services import restore as _restore  # noqa: E402,F401
from opencbr.services import vaults as _vaults  # noqa: E402,F401

#: The worker processes ``opencbr serve`` starts beside the API run at this lower CPU priority (and, as
#: Linux derives it from the nice value, a lower I/O priority): a backup can wait a few milliseconds, a
#: request cannot. Measured in bench/README.md (API under load).
WORKER_NICE = 10


class ListenError(CBRError):
    code = "OpenCBR.Listen"


def listen_socket(settings: Settings) -> socket.socket:
    """Bind the API's address before anything else starts, and say which setting moves it if it is taken."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says it is TCP. Without it every keep-alive answer (headers, then body, in two
    # writes) waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        why = ("it is in use (another OpenCBR, or another program, listens there)" if e.errno == errno.EADDRINUSE
               else e.strerror or str(e))
        raise ListenError(f"cannot listen on {settings.listen}: {why}. Choose another address with the setting "
                          f"`listen` (environment OPENCBR_LISTEN=host:port, `listen = \"host:port\"` in "
                          f"opencbr.toml, or `opencbr serve --listen host:port`)") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


class Service:
    """The API (+ scheduler) over one catalog, with ``settings.workers`` worker processes beside it,
    started and stopped together. ``with_workers=False``: the API alone (workers run elsewhere)."""

    def __init__(self, settings: Settings, *, with_workers: bool = True):
        self.settings = settings
        os.makedirs(settings.data_dir, exist_ok=True)
        hosts.set_local_group(settings.host_group)
        self.ctx: ServiceContext = open_context(settings)
        self.app = create_app(self.ctx)
        self.workers = (WorkerProcesses(settings, settings.workers)
                        if with_workers and settings.workers > 0 else None)
        self.scheduler = Scheduler(self.ctx) if settings.scheduler else None
        self.stop_event = threading.Event()

    def bootstrap(self) -> iam.BootstrapInfo:
        return iam.bootstrap(self.ctx)

    def run(self, on_ready=None) -> None:
        """Serve until SIGINT/SIGTERM; then stop the workers in order (they hand their tasks back)."""
        sock = listen_socket(self.settings)
        _note_stop_signals()
        if self.workers:
            self.workers.start()
        if self.scheduler:
            self.scheduler.start()
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        if on_ready is not None:
            threading.Thread(target=self._announce, args=(server, on_ready), daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
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
        if self.workers:
            if self.workers.pids():
                log.info("stopping the worker processes (running tasks are handed back to the queue)")
            self.workers.shutdown()
        self.ctx.close()


def run_workers(settings: Settings, count: int, *, supervised: bool = False) -> None:
    """``cbr worker``: workers only (a worker process of ``opencbr serve``, or more workers on other
    machines sharing the catalog and the object store). SIGTERM/SIGINT stop it in order."""
    if supervised:
        _stop_with_parent()
        os.nice(WORKER_NICE)
    hosts.set_local_group(settings.host_group)
    ctx = open_context(settings, migrate=not supervised)
    pool = WorkerPool(ctx, count)
    stopping = _note_stop_signals()
    pool.start()
    while not stopping:  # (no Event.wait here: setting an Event from a signal handler can deadlock)
        time.sleep(0.2)
    log.info("worker stopping (%s): running tasks are handed back to the queue", stopping[0])
    pool.shutdown()
    ctx.close()


def _note_stop_signals() -> list[str]:
    """SIGINT and SIGTERM only note that a stop was asked (the list gets the signal's name), so that the
    process stops in order. uvicorn re-raises the signal it caught when it exits: with these handlers in
    place that re-raise lands here instead of killing the process before its workers are stopped."""
    stopping: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signal.Signals(signum).name))
    return stopping


def _stop_with_parent() -> None:
    """A worker process of ``opencbr serve`` stops in order (SIGTERM) when the API process dies."""
    import ctypes

    parent = os.getppid()
    try:  # PR_SET_PDEATHSIG = 1 (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
