"""How an idle worker notices new tasks quickly without loading the catalog.

On SQLite every transaction of the service takes the write lock up front (``BEGIN IMMEDIATE``, see
``catalog/db.py``), so claiming on every poll would make idle workers compete with the API for it. The
poller instead asks a read-only connection, which never blocks a writer in WAL mode, whether a task this
worker may serve is waiting, and only then does the worker try to claim. On PostgreSQL the claim itself
(``FOR UPDATE SKIP LOCKED``) is already cheap, so the worker always tries.

Between looks an idle worker waits on the doorbell (``services/doorbell.py``): a queued task wakes it at
once; the poll interval is only the fallback.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from sqlalchemy.engine import make_url

from opencbr.catalog.db import is_sqlite
from opencbr.services import doorbell
from opencbr.services.context import ServiceContext

log = logging.getLogger("opencbr.worker")

#: Even when the cheap check says "nothing", try a real claim this often (a safety net).
CLAIM_AT_LEAST_EVERY = 5.0

_WAITING = "SELECT 1 FROM tasks WHERE status = 'waiting' AND required_host IN ('', ?) LIMIT 1"


class TaskPoller:
    def __init__(self, ctx: ServiceContext, host: str):
        url = ctx.settings.effective_catalog_url
        self.host = host
        self.path = url.split("///", 1)[1] if is_sqlite(url) and "///" in url else ""
        self._conn: sqlite3.Connection | None = None
        self._last_claim = 0.0

    def maybe_work(self) -> bool:
        """True when a waiting task for this worker may exist (or when it cannot tell)."""
        if not self.path or self.path == ":memory:":
            return True
        now = time.monotonic()
        if now - self._last_claim >= CLAIM_AT_LEAST_EVERY:
            self._last_claim = now
            return True
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, timeout=5,
                                             isolation_level=None, check_same_thread=False)
            found = self._conn.execute(_WAITING, (self.host,)).fetchone() is not None
        except sqlite3.Error:
            self.close()
            return True
        if found:
            self._last_claim = now
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


#: How often a worker waiting on the doorbell looks whether it should stop.
STOP_CHECK_SECONDS = 0.25
#: After its PostgreSQL connection broke, a listener polls this long before it listens again.
PG_RELISTEN_SECONDS = 5.0


def psycopg_connect(url: str, timeout: int = 10):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=timeout)


class DoorbellListener:
    """Waits until a task is queued (the doorbell rings) or a timeout passes; see ``services/doorbell.py``.
    When it cannot listen (an unwritable directory, PostgreSQL unreachable), ``wait`` just sleeps."""

    def __init__(self, catalog_url: str):
        self._sock: socket.socket | None = None
        self._marker = ""
        self._pg = None
        self._pg_url = ""  # set while listening on PostgreSQL: a broken connection is made again
        self._pg_retry_at = 0.0
        try:
            if make_url(catalog_url).get_backend_name() == "postgresql":
                self._listen_postgresql(catalog_url)
            elif (directory := doorbell.doorbell_dir(catalog_url)) is not None:
                self._listen_socket(directory)
        except Exception as e:  # polling still works (and a PostgreSQL listener tries again later)
            log.warning("the task doorbell is off (%s); idle workers poll", e)
            if self._pg_url:
                self._drop_postgresql()
            else:
                self.close()

    def _listen_postgresql(self, catalog_url: str) -> None:
        self._pg_url = make_url(catalog_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._pg = psycopg_connect(self._pg_url)
        self._pg.execute(f"LISTEN {doorbell.CHANNEL}")

    def _listen_socket(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        name = f"{doorbell.namespace_tag()}-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(doorbell.ABSTRACT_PREFIX + name)
        self._sock.setblocking(False)
        self._marker = os.path.join(directory, name)
        with open(self._marker, "x"):
            pass

    def wait(self, timeout: float, stopping: Callable[[], bool] = lambda: False) -> bool:
        """True when the doorbell rang within ``timeout`` seconds (every ring so far is consumed), or when
        a listener that had lost its connection listens again (it may have missed a ring); the wait also
        ends within a quarter of a second of ``stopping()`` turning true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._wait_once(min(left, STOP_CHECK_SECONDS)):
                return True
            if left <= STOP_CHECK_SECONDS or stopping():
                return False

    def _wait_once(self, timeout: float) -> bool:
        timeout = max(0.0, timeout)
        if self._pg is None and self._pg_url and time.monotonic() >= self._pg_retry_at:
            if self._relisten_postgresql():
                return True  # a task queued while this listener was deaf rang for nobody: look now
        if self._pg is not None:
            return self._wait_postgresql(timeout)
        if self._sock is None:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self._sock], [], [], timeout)
        rang = False
        while ready:
            try:
                self._sock.recv(16)
                rang = True
            except BlockingIOError:
                break
        return rang

    def _wait_postgresql(self, timeout: float) -> bool:
        try:
            rang = any(True for _ in self._pg.notifies(timeout=timeout, stop_after=1))
            while any(True for _ in self._pg.notifies(timeout=0, stop_after=1)):
                pass
            return rang
        except Exception as e:  # the connection broke (the database restarted, the network between
            # machines failed): poll, and listen again a few seconds later
            log.warning("the task doorbell is off (%s); idle workers poll until it is back", e)
            self._drop_postgresql()
            return False

    def _relisten_postgresql(self) -> bool:
        """True when listening again."""
        try:
            self._pg = psycopg_connect(self._pg_url, timeout=2)  # (a wait is short: so is a retry)
            self._pg.execute(f"LISTEN {doorbell.CHANNEL}")
            log.info("the task doorbell is back")
            return True
        except Exception:  # still down: poll, and try again later
            self._drop_postgresql()
            return False

    def _drop_postgresql(self) -> None:
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception:
                pass
            self._pg = None
        self._pg_retry_at = time.monotonic() + PG_RELISTEN_SECONDS

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._marker:
            try:
                os.unlink(self._marker)
            except OSError:
                pass
            self._marker = ""
        self._pg_url = ""
        self._drop_postgresql()
