"""A writer lock is stale only when its owner stopped refreshing it (heartbeat), never because its pid
is not running here: two workers may share a host name in different PID namespaces (containers with
host networking, cloned machines), and a GC that took a live writer's lock for stale would delete the
packs it is writing (issue 11, item 17)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from opencbr.engine import LockTiming, Repository
from opencbr.engine.chunks.locks import LOCKS_DIR
from opencbr.storage import open_store


def gone_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_gc_keeps_a_refreshed_lock_whose_pid_is_not_running_here(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    timing = LockTiming(refresh_interval=0.2, stale_after=2.0)
    repo = Repository.create(store, "vaults/v/", b"k" * 32, encrypted=True, lock_timing=timing)
    same_host_other_ns = {"kind": "writer", "owner": "x", "host": socket.gethostname(), "pid": gone_pid(),
                          "seen": [], "time": 0}
    store.put(f"vaults/v/{LOCKS_DIR}w-other-namespace", json.dumps(same_host_other_ns).encode())
    result = repo.gc()
    assert result.stale_locks_removed == 0
    assert store.head(f"vaults/v/{LOCKS_DIR}w-other-namespace") is not None  # a live backup, maybe
    # ... until it is not refreshed for stale_after: then it is stale, whoever wrote it
    time.sleep(timing.stale_after + 0.5)
    result = repo.gc()
    assert result.stale_locks_removed == 1
    assert store.head(f"vaults/v/{LOCKS_DIR}w-other-namespace") is None


def test_lock_names_a_unique_owner(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    repo = Repository.create(store, "vaults/v/", b"k" * 32, encrypted=True)
    from opencbr.engine.chunks.locks import RepoLock, list_locks

    lock = RepoLock(store, "vaults/v/", "writer", repo.chunks.lock_timing)
    lock.acquire()
    (info,) = list_locks(store, "vaults/v/")
    assert info.pid == os.getpid() and len(info.owner.rsplit(":", 1)[-1]) == 12
    lock.release()
