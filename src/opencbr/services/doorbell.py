"""A doorbell for idle workers: queuing a task wakes them at once instead of at their next poll.

- **PostgreSQL**: the transaction that queues a task also says ``NOTIFY opencbr_tasks``; PostgreSQL
  delivers it when (and only if) the transaction commits, to every worker that ``LISTEN``s, on any machine.
- **SQLite**: everyone sharing the catalog file is on this machine. Each idle worker binds a Unix datagram
  socket in Linux's abstract namespace (no path-length limit, nothing left behind when it dies) and leaves
  an empty file of the same name in a directory beside the catalog (``<catalog>.doorbell/``); committing
  a transaction that queued a task sends one byte to each. A name nobody answers any more is removed.
  Abstract names exist per network namespace, so each name starts with its namespace's id and a ring
  reaches (and removes) only names of its own namespace: workers in other containers sharing the
  catalog file are not rung, and not forgotten either (they poll).

Polling stays the fallback: a lost ring (a full socket queue, another network namespace, an unwritable
directory) costs at most one poll interval (``worker_poll_seconds``).
"""

from __future__ import annotations

import os
import socket

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

CHANNEL = "opencbr_tasks"
#: Abstract socket names start with a NUL byte; the rest is this prefix and the marker file's name.
ABSTRACT_PREFIX = "\0opencbr-doorbell-"


def doorbell_dir(catalog_url: str) -> str | None:
    """The marker directory of a file-backed SQLite catalog; None for any other catalog."""
    url = make_url(catalog_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return os.path.abspath(url.database) + ".doorbell"


def ring_on_commit(s: Session) -> None:
    """Have the idle workers woken when the caller's transaction commits (nothing if it rolls back)."""
    if s.info.get("doorbell"):  # once per transaction, however many tasks it queues
        return
    bind = s.get_bind()
    if bind.dialect.name == "postgresql":
        s.info["doorbell"] = True

        def notify(session: Session) -> None:  # (PostgreSQL delivers it when, and if, the commit succeeds)
            session.info.pop("doorbell", None)
            session.execute(text(f"NOTIFY {CHANNEL}"))

        event.listen(s, "before_commit", notify, once=True)
        return
    directory = doorbell_dir(bind.url.render_as_string(hide_password=False))
    if directory is None:
        return
    s.info["doorbell"] = True

    def after_commit(session: Session) -> None:
        session.info.pop("doorbell", None)
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
