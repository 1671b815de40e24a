"""``cbr serve``: the API, console and scheduler in this process, and the worker processes beside it."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Callable

import uvicorn

from opencbr.api.app import create_app
from opencbr.config import Settings
from opencbr.domain.errors import CBRError
from opencbr.scheduler import Scheduler
from opencbr.server.process import (
    check_installation,
    keep_for_life,
    note_stop_signals,
    opening_catalog,
    start_logging,
)
from opencbr.services import hosts, iam
from opencbr.services.context import ServiceContext, open_context
from opencbr.worker.supervisor import WorkerProcesses

log = logging.getLogger("opencbr")


class ListenError(CBRError):
    code = "OpenCBR.Listen"


def run_service(settings: Settings, *, on_ready: Callable[[iam.BootstrapInfo], None]) -> None:
    """Start the service, call ``on_ready`` with the bootstrap user's credentials once the API answers,
    and serve until SIGINT/SIGTERM. Raises :class:`CBRError` (e.g. the address is taken, the catalog is
    damaged) with a message for the operator."""
    start_logging()
    with opening_catalog(settings):
        service = Service(settings)
        try:
            check_installation(service.ctx)
        except CBRError:
            service.shutdown()
            raise
        info = service.bootstrap()
    try:
        service.run(on_ready=lambda: on_ready(info))
    except CBRError:
        service.shutdown()
        raise


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

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM; then stop the workers in order (they hand their tasks back)."""
        sock = listen_socket(self.settings)
        note_stop_signals()
        if self.workers:
            self.workers.start()
        if self.scheduler:
            self.scheduler.start()
        keep_for_life()
        # No `Server: uvicorn` banner: it tells a prober what to try and costs every client a header to parse.
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                                server_header=False)
        server = uvicorn.Server(config)
        if on_ready is not None:
            threading.Thread(target=self._announce, args=(server, on_ready), daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            self.shutdown()

    def _announce(self, server: uvicorn.Server, on_ready: Callable[[], None]) -> None:
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
