"""A writer killed mid-write leaves a temporary file; it is removed by the next GC, never a finished
object or a write still in progress."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from opencbr.storage import open_store


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_abandoned_writes(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    store.put("vaults/v1/data/ab/finished", b"x" * 10)
    d = tmp_path / "s" / "vaults" / "v1" / "data" / "ab"
    host = socket.gethostname().replace("-", "_")
    dead = d / f".tmp-{host}-{dead_pid()}-aaaa"
    mine = d / f".tmp-{host}-{os.getpid()}-bbbb"
    foreign_old = d / ".tmp-otherhost-123-cccc"
    foreign_new = d / ".tmp-otherhost-124-dddd"
    for f in (dead, mine, foreign_old, foreign_new):
        f.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(foreign_old, (old, old))
    assert store.remove_abandoned_writes("vaults/v1/", older_than=600) == 2
    assert not dead.exists() and not foreign_old.exists()
    assert mine.exists() and foreign_new.exists()  # a write in progress, here or elsewhere
    assert store.get("vaults/v1/data/ab/finished") == b"x" * 10
    assert store.remove_abandoned_writes("vaults/nothing/", older_than=600) == 0
