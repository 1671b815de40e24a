"""A backup killed with SIGKILL leaves its writer lock; a restarted service on the same host must not
wait for the lock to go stale before GC removes what the dead backup wrote (restic's same-host rule)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from opencbr.engine import Repository
from opencbr.engine.locks import LOCKS_DIR
from opencbr.storage import open_store


def test_gc_ignores_the_lock_of_a_dead_local_writer(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    repo = Repository.create(store, "vaults/v/", b"k" * 32, encrypted=True)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = {"kind": "writer", "host": socket.gethostname(), "pid": p.pid, "seen": [], "time": 0}
    alive = {"kind": "writer", "host": "another-host", "pid": 1, "seen": [], "time": 0}
    store.put(f"vaults/v/{LOCKS_DIR}w-dead", json.dumps(dead).encode())
    store.put(f"vaults/v/{LOCKS_DIR}w-elsewhere", json.dumps(alive).encode())
    result = repo.gc()
    assert result.stale_locks_removed == 1
    assert store.head(f"vaults/v/{LOCKS_DIR}w-dead") is None
    assert store.head(f"vaults/v/{LOCKS_DIR}w-elsewhere") is not None  # may be a live backup elsewhere
