"""The object-store interface every layer above ``storage/`` talks to.

Keys are ``/``-separated relative paths (``vaults/v1/data/ab/abcd...``). Objects are immutable in the
sense that the engine never rewrites a content object; :meth:`ObjectStore.put` with overwrite exists
only for small mutable control objects (lock refreshes).

Durability contract: when ``put``/``put_if_absent`` returns with ``sync=True`` (the default), the
object survives a crash of this machine. With ``sync=False`` the write is atomic (a reader sees the
whole object or nothing) but may be lost on power failure until :meth:`ObjectStore.flush` returns. The
engine writes everything with ``sync=True`` (packs too: an fsync per pack in the uploader threads
overlaps with hashing and compression and measured no slower than one barrier per backup, see
engine/chunks/session.py and bench/README.md) and still calls ``flush()`` before it writes the index
and manifest that make packs reachable, so a store that defers durability stays correct.

What a backend can do beyond this interface, it declares in :attr:`ObjectStore.capabilities`; nothing
above ``storage/`` tests which class it has.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class ObjectInfo:
    """Size and last-modified time (seconds since the epoch, by the *store's* clock) of an object."""

    key: str
    size: int
    mtime: float


@dataclass(frozen=True)
class StoreCapabilities:
    """What a backend offers beyond the interface, for the engine to choose how it works.

    ``local_root``: the objects are files of this machine under this directory (requests cost no
    network round trip, so few upload threads suffice); None for remote stores.
    ``fork_safe``: a forked child process may read through this same store object: true for plain
    files; not for clients with connection pools or sessions shared with the parent (S3)."""

    local_root: Path | None = None
    fork_safe: bool = False


class ObjectStore(abc.ABC):
    """put-if-absent, put (overwrite), get (whole or range), head, list by prefix, delete.

    Implementations must be safe to call from several threads at once.
    """

    capabilities: StoreCapabilities = StoreCapabilities()

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
