"""Doorbells: who waits for a change of the task queue is woken when it is committed, not at its next poll.

Two bells (:class:`Bell`): ``TASKS`` rings when a task is queued, for idle workers; ``TASK_ENDS`` when one
ends, for the API's held ``GET /operation-logs/{id}?wait=`` answers (``cbr ... --wait`` then returns as soon
as its task has ended, instead of within the API's look interval). How a bell rings:

- **PostgreSQL**: the transaction that queues (ends) a task also says ``NOTIFY opencbr_tasks``
  (``opencbr_task_ends``); PostgreSQL delivers it when (and only if) the transaction commits, to every
  listener, on any machine.
- **SQLite**: everyone sharing the catalog file is on this machine. Each listener binds a Unix datagram
  socket in Linux's abstract namespace (no path-length limit, nothing left behind when it dies) and leaves
  an empty file of the same name in the bell's directory beside the catalog (``<catalog>.doorbell/``,
  ``<catalog>.task-ends/``); committing a transaction that rang sends one byte to each. A name nobody
  answers any more is removed.
  Abstract names exist per network namespace, so each name starts with its namespace's id and a ring
  reaches (and removes) only names of its own namespace: workers in other containers sharing the
  catalog file are not rung, and not forgotten either (they poll).

Polling stays the fallback: a lost ring (a full socket queue, another network namespace, an unwritable
directory) costs at most one poll interval (``worker_poll_seconds``; for a held answer, the API's).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger("opencbr")


@dataclass(frozen=True)
class Bell:
    channel: str  # PostgreSQL's NOTIFY channel
    suffix: str  # SQLite: the listeners' directory is the catalog file's path and this


TASKS = Bell("opencbr_tasks", ".doorbell")  # a task was queued: idle workers look for it
TASK_ENDS = Bell("opencbr_task_ends", ".task-ends")  # a task ended: held answers about it look
CHANNEL = TASKS.channel
#: Abstract socket names start with a NUL byte; the rest is this prefix and the marker file's name.
ABSTRACT_PREFIX = "\0opencbr-doorbell-"


def doorbell_dir(catalog_url: str, bell: Bell = TASKS) -> str | None:
    """The marker directory of a file-backed SQLite catalog; None for any other catalog."""
    url = make_url(catalog_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return os.path.abspath(url.database) + bell.suffix


def ring_on_commit(s: Session, bell: Bell = TASKS) -> None:
    """Have ``bell``'s listeners woken when the caller's transaction commits (nothing if it rolls back)."""
    key = f"doorbell:{bell.channel}"
    if s.info.get(key):  # once per transaction, however many tasks it queues
        return
    bind = s.get_bind()
    if bind.dialect.name == "postgresql":
        s.info[key] = True

        def notify(session: Session) -> None:  # (PostgreSQL delivers it when, and if, the commit succeeds)
            session.info.pop(key, None)
            session.execute(text(f"NOTIFY {bell.channel}"))

        event.listen(s, "before_commit", notify, once=True)
        return
    directory = doorbell_dir(bind.url.render_as_string(hide_password=False), bell)
    if directory is None:
        return
    s.info[key] = True

    def after_commit(session: Session) -> None:
        session.info.pop(key, None)
        ring(directory)

    event.listen(s, "after_commit", after_commit, once=True)


def namespace_tag() -> str:
    """The id of this process's network namespace, which starts every listener's name."""
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "0"


def ring(directory: str) -> None:
    """One byte to every worker listening beside this catalog in this network namespace."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    ours = namespace_tag() + "-"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            if not name.startswith(ours):  # another namespace: unreachable from here, maybe alive
                continue
            try:
                sock.sendto(b"!", ABSTRACT_PREFIX + name)
            except BlockingIOError:  # its queue is full: it has been rung already
                pass
            except (ConnectionRefusedError, FileNotFoundError):  # that worker is gone
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
            except OSError:
                pass


#: How often a worker waiting on the doorbell looks whether it should stop.
STOP_CHECK_SECONDS = 0.25
#: After its PostgreSQL connection broke, a listener polls this long before it listens again.
PG_RELISTEN_SECONDS = 5.0


def psycopg_connect(url: str, timeout: int = 10):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=timeout)


class DoorbellListener:
    """Waits until ``bell`` rings (a task is queued; with ``TASK_ENDS``, one ended) or a timeout passes.
    When it cannot listen (an unwritable directory, PostgreSQL unreachable), ``wait`` just sleeps."""

    def __init__(self, catalog_url: str, bell: Bell = TASKS):
        self.bell = bell
        self._sock: socket.socket | None = None
        self._marker = ""
        self._pg = None
        self._pg_url = ""  # set while listening on PostgreSQL: a broken connection is made again
        self._pg_retry_at = 0.0
        try:
            if make_url(catalog_url).get_backend_name() == "postgresql":
                self._listen_postgresql(catalog_url)
            elif (directory := doorbell_dir(catalog_url, bell)) is not None:
                self._listen_socket(directory)
        except Exception as e:  # polling still works (and a PostgreSQL listener tries again later)
            log.warning("the %s doorbell is off (%s); its listeners poll", bell.channel, e)
            if self._pg_url:
                self._drop_postgresql()
            else:
                self.close()

    def _listen_postgresql(self, catalog_url: str) -> None:
        self._pg_url = make_url(catalog_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._pg = psycopg_connect(self._pg_url)
        self._pg.execute(f"LISTEN {self.bell.channel}")

    @property
    def listening(self) -> bool:
        """Whether rings can reach it (or will again: a PostgreSQL listener whose connection broke)."""
        return self._sock is not None or bool(self._pg_url)

    def _listen_socket(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        name = f"{namespace_tag()}-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(ABSTRACT_PREFIX + name)
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
            log.warning("the %s doorbell is off (%s); its listeners poll until it is back", self.bell.channel, e)
            self._drop_postgresql()
            return False

    def _relisten_postgresql(self) -> bool:
        """True when listening again."""
        try:
            self._pg = psycopg_connect(self._pg_url, timeout=2)  # (a wait is short: so is a retry)
            self._pg.execute(f"LISTEN {self.bell.channel}")
            log.info("the %s doorbell is back", self.bell.channel)
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
