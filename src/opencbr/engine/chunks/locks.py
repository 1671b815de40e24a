"""Lock objects in the store: how writers and GC coordinate without any other shared service.

Every backup (writer) owns ``locks/w-<time>-<rand>``; a GC owns the single ``locks/gc`` (created with
put-if-absent, so two GCs never run at once). Owners rewrite their lock every ``refresh_interval``
(a heartbeat); a lock whose last write is older than ``stale_after`` by the *store's* clock (the mtime
the store gave the object, compared with the mtime it gives a lock we just wrote) belongs to a dead
process. Comparing store timestamps with store timestamps keeps machine clock skew out of the decision.

Staleness is judged by that heartbeat alone. A lock records its owner (a random id per process, with
host and pid for people), but a pid is never checked: restic's rule "same host name and the pid is
gone" took a live writer's lock for stale when two workers share a host name in different PID
namespaces (containers, cloned machines), and a GC then deleted the packs it was writing. A writer
killed with SIGKILL therefore holds back the sweeping of newer condemned packs for ``stale_after``.

A writer lock also records which GC "condemned lists" the writer had seen when it loaded the index
(``seen``): GC may only sweep a condemned list once every live writer has seen it (see ``gc.py``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass

from ...storage import ObjectStore

#: This process's owner id in lock objects: unique per process (pids repeat across PID namespaces).
PROCESS_OWNER = f"{socket.gethostname()[:32]}:{os.getpid()}:{os.urandom(6).hex()}"

LOCKS_DIR = "locks/"
GC_LOCK_NAME = "gc"


@dataclass(frozen=True)
class LockTiming:
    refresh_interval: float = 15.0
    stale_after: float = 120.0


@dataclass
class LockInfo:
    key: str
    kind: str
    owner: str
    host: str
    pid: int
    seen: list[str] | None
    mtime: float


class RepoLock:
    """A lock object owned by this process, refreshed by a daemon thread until :meth:`release`."""

    def __init__(self, store: ObjectStore, prefix: str, kind: str, timing: LockTiming, *, name: str | None = None):
        self.store = store
        self.kind = kind
        self.timing = timing
        self.name = name or f"w-{time.time_ns():020d}-{os.urandom(6).hex()}"
        self.key = f"{prefix}{LOCKS_DIR}{self.name}"
        self.seen: list[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = 0.0
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({"kind": self.kind, "owner": PROCESS_OWNER, "host": socket.gethostname(),
                           "pid": os.getpid(), "seen": self.seen, "time": time.time()}).encode()

    def acquire(self, exclusive: bool = False) -> bool:
        """Write the lock. ``exclusive``: only if no such object exists (returns False if it does)."""
        if exclusive:
            if not self.store.put_if_absent(self.key, self._body()):
                return False
        else:
            self.store.put(self.key, self._body())
        self._last_ok = time.monotonic()
        return True

    def refresh(self) -> None:
        if self.store.head(self.key) is None:  # removed by a GC that judged us stale
            self.lost = True
            return
        self.store.put(self.key, self._body())
        self._last_ok = time.monotonic()

    def set_seen(self, gens: list[str]) -> None:
        self.seen = list(gens)
        self.refresh()

    def start_refresh(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.timing.refresh_interval):
                try:
                    self.refresh()
                except Exception:  # transient store error: retry at the next tick; still_held() judges
                    pass

        self._thread = threading.Thread(target=loop, name=f"lock-refresh-{self.name}", daemon=True)
        self._thread.start()

    def still_held(self) -> bool:
        """True if our lock object still exists and was refreshed recently enough that no GC can
        have judged it stale."""
        if self.lost:
            return False
        margin = self.timing.stale_after - self.timing.refresh_interval
        if time.monotonic() - self._last_ok > max(margin, self.timing.stale_after / 2):
            return False
        return self.store.head(self.key) is not None

    def store_now(self) -> float:
        """The store's current time: refresh our lock and read back the mtime the store gave it."""
        self.store.put(self.key, self._body())
        self._last_ok = time.monotonic()
        info = self.store.stat(self.key)
        return info.mtime if info else time.time()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.delete(self.key)
        except Exception:
            pass


def list_locks(store: ObjectStore, prefix: str) -> list[LockInfo]:
    out = []
    for key, _size in store.list(prefix + LOCKS_DIR):
        info = store.stat(key)
        if info is None:
            continue
        try:
            body = json.loads(store.get(key))
        except (KeyError, ValueError):
            # vanished between list and get, or half-written by a non-atomic store: treat as live
            body = {"kind": "unknown", "host": "", "pid": 0, "seen": None}
        out.append(LockInfo(key, body.get("kind", "unknown"), str(body.get("owner", "")), body.get("host", ""),
                            int(body.get("pid", 0)), body.get("seen"), info.mtime))
    return out


def is_stale(lock_mtime: float, store_now: float, timing: LockTiming) -> bool:
    """The only staleness rule: the owner has not refreshed the lock for ``stale_after`` (store clock)."""
    return store_now - lock_mtime > timing.stale_after
