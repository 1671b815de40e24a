"""A writer killed mid-write leaves a temporary file; it is removed by the next GC, never a finished
object or a write still in progress."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from opencbr.storage import open_store
from opencbr.system.processes import process_namespace


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_abandoned_writes(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    store.put("vaults/v1/data/ab/finished", b"x" * 10)
    d = tmp_path / "s" / "vaults" / "v1" / "data" / "ab"
    ns = process_namespace()
    dead = d / f".tmp-{ns}-{dead_pid()}-aaaa"
    mine = d / f".tmp-{ns}-{os.getpid()}-bbbb"
    foreign_old = d / ".tmp-otherhost-123-cccc"
    foreign_new = d / ".tmp-otherhost-124-dddd"
    # the same host name, another PID namespace: that pid is not ours to look up (issue 11, item 17)
    same_name = d / f".tmp-{socket.gethostname().replace('-', '_')}-{dead_pid()}-eeee"
    for f in (dead, mine, foreign_old, foreign_new, same_name):
        f.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(foreign_old, (old, old))
    assert store.remove_abandoned_writes("vaults/v1/", older_than=600) == 2
    assert not dead.exists() and not foreign_old.exists()
    assert mine.exists() and foreign_new.exists() and same_name.exists()  # writes in progress, maybe
    assert store.get("vaults/v1/data/ab/finished") == b"x" * 10
    assert store.remove_abandoned_writes("vaults/nothing/", older_than=600) == 0
