"""The object-store interface every layer above ``storage/`` talks to.

Keys are ``/``-separated relative paths (``vaults/v1/data/ab/abcd...``). Objects are immutable in the
sense that the engine never rewrites a content object; :meth:`ObjectStore.put` with overwrite exists
only for small mutable control objects (lock refreshes).

Durability contract: when ``put``/``put_if_absent`` returns with ``sync=True`` (the default), the
object survives a crash of this machine. With ``sync=False`` the write is atomic (a reader sees the
whole object or nothing) but may be lost on power failure until :meth:`ObjectStore.flush` returns; the
engine writes pack objects that way and calls ``flush()`` once before it writes the index and manifest
that make them reachable (see ``LocalStore`` for why: one fsync barrier per backup instead of one per
pack measured faster, see bench/README.md).
"""

from __future__ import annotations

import abc
import os
import socket
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class ObjectInfo:
    """Size and last-modified time (seconds since the epoch, by the *store's* clock) of an object."""

    key: str
    size: int
    mtime: float


class ObjectStore(abc.ABC):
    """put-if-absent, put (overwrite), get (whole or range), head, list by prefix, delete.

    Implementations must be safe to call from several threads at once.
    """

    # Whether a forked child process may read through this (same) object: true for plain files;
    # not for clients with connection pools or sessions shared with the parent (S3).
    fork_safe: bool = False

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> bool:
        """Create ``key`` with ``data`` unless it exists. Returns True if this call wrote it.

        Atomic: two concurrent callers never both get True, and readers never see a partial object.
        """

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        """Create or replace ``key`` atomically (readers see the old or the new object, never a mix)."""

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Whole object, or bytes ``[start, end)`` of it (``end`` None = to the end).

        Raises :class:`KeyError` if the object does not exist.
        """

    def read_view(self, key: str, start: int, end: int) -> memoryview:
        """Bytes ``[start, end)`` of ``key`` (shorter at its end) as a view that stays valid only until
        the calling thread's next ``read_view``: stores may reuse one buffer per thread for bulk reads.
        Raises :class:`KeyError` if the object does not exist."""
        return memoryview(self.get(key, start, end))

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime of ``key``, or None if it does not exist."""

    def head(self, key: str) -> int | None:
        """Size of ``key`` in bytes, or None if it does not exist."""
        info = self.stat(key)
        return None if info is None else info.size

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every object whose key starts with ``prefix`` (any order)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error (idempotent)."""

    def flush(self) -> None:  # noqa: B027 - a no-op by default, on purpose
        """Make every earlier ``sync=False`` write durable. A no-op where writes are durable anyway."""

    def remove_abandoned_writes(self, prefix: str, older_than: float) -> int:
        """Remove what writers that died mid-write left under ``prefix`` (never a finished object):
        those of dead processes of this host at once, others after ``older_than`` seconds. Returns the
        count. A no-op where writes are atomic and leave nothing behind (S3 single PUTs)."""
        return 0

    def close(self) -> None:  # noqa: B027 - a no-op by default, on purpose
        """Release connections/handles. The store must not be used afterwards."""

    def url(self) -> str:
        """A URL that :func:`opencbr.storage.open_store` turns back into an equivalent store
        (credentials excluded)."""
        raise NotImplementedError


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_namespace() -> str:
    """Where a pid means something: this machine's host name, boot and PID namespace, as one token
    (letters, digits, ``_`` and ``.``). Two containers sharing a host name, or two clones of one VM,
    get different tokens, so a pid recorded under one is never looked up in another."""
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = "0"
    boot = _read("/proc/sys/kernel/random/boot_id").replace("-", "")[:12] or "0"
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    return f"{host}.{boot}.{pidns}"


def local_process_gone(namespace: str, pid: int) -> bool:
    """True when ``namespace`` (a :func:`process_namespace` token) is this process's own — same host,
    boot and PID namespace — and process ``pid`` no longer exists (and is not us). A bare host name never
    matches: the same pid in another PID namespace is another process."""
    if not pid or namespace != process_namespace() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
