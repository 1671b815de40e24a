"""Storing and reading a large disk's refs holds a bounded, small part of them at a time.

The commit of a 64 GiB disk backup (1 Mi blocks, 32 MiB of refs) used to add 41 MB to the backup's peak
RSS: each 8 MiB segment was held four or five times over (the refs, compressed, sealed, the object).
Measured in a fresh process, so that nothing else of the test session counts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, os, pathlib, sys
    from opencbr.engine import Repository
    from opencbr.engine.chunks.manifests import Manifest
    from opencbr.engine.disk.fixed_index import SpooledDigests
    from opencbr.storage import open_store

    root, blocks = sys.argv[1], int(sys.argv[2])
    repo = Repository.create(open_store(pathlib.Path(root).as_uri()), "v/", bytes(range(32)), encrypted=True)
    refs = SpooledDigests(blocks, spill_dir=root)
    for first in range(0, blocks, 1 << 15):
        refs.write(first, os.urandom(32 * min(1 << 15, blocks - first)))
    def peak():  # VmHWM: ru_maxrss would count the parent's RSS at fork (it survives exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) >> 10  # MiB
    before = peak()
    repo.chunks.put_manifest(Manifest("m", {"type": "disk", "block_size": 65536}, refs, b""))
    stored = peak()
    _header, pieces = repo.chunks.manifest_refs_streamed("m")
    same = refs.changed_from(pieces) == 0
    print(json.dumps({"before": before, "stored": stored, "read": peak(), "same": same}))
""")


def test_a_large_disks_refs_are_stored_and_read_in_small_segments(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(1 << 20)], capture_output=True,
                         text=True, check=True, timeout=300)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["same"]  # read back identical
    assert m["stored"] - m["before"] <= 20, m  # 8 MiB segments: +41 MiB; 2 MiB segments: +12 MiB
    assert m["read"] - m["before"] <= 20, m
