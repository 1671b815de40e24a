"""A tree backup's and restore's memory does not grow with the number of files (issue 18): the peak RSS
of each operation on a tree of 4 N small files stays within 15 % of the same on N files. Each operation
runs in its own process (its peak is its own: ``VmHWM``) through the real path: walk, read,
bundle, catalog, manifest; catalog stream, create, fetch, write, directory metadata.

Long names make every walked entry cost ~1 KB, so what is held per entry shows: the listing threads
of a first backup ran up to 512 directories ahead of the walk (held whole: every entry's paths and
``stat_result``), whatever the tree's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHILD = """
import json, sys
from opencbr.engine import Repository
from opencbr.storage import open_store
from opencbr.engine.tree import backup, walker
from opencbr.engine.tree.restore.metadata import DirList
store, op, src, dst = sys.argv[1:5]
# small bounds (the defaults hold up to ~60 k entries, which would need far bigger trees to show;
# the store's spill_dir is unset: the system's temporary directory)
walker.TreeWalker.MAX_PREFETCH_ENTRIES = 1024
backup.MAX_HELD = 256
DirList.SPILL_BYTES = 4096
if op == "backup":
    repo = Repository.create(open_store(store), "v/", bytes(32))
    res = repo.backup_tree(src, backup_id="t1", meta={})
else:
    repo = Repository.open(open_store(store), "v/", bytes(32))
    res = repo.restore("t1", dst)
# VmHWM: this process image's own peak (wait4's ru_maxrss also holds what the process had before its
# exec: the forking parent's resident size, here the test runner's)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"files": res.files, "hwm_kib": hwm}))
"""

PER_DIR = 100
NAME = "n" * 180  # + the file number


def _make_tree(root, files: int) -> None:
    for i in range(files):
        d = root / f"d{i // PER_DIR:05d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        (d / f"{NAME}{i:07d}").write_bytes(b"file %d\n" % i)


def _run(store, op: str, src, dst) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, store.as_uri(), op, str(src), str(dst)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ":".join(sys.path)}).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def peaks(tmp_path_factory):
    """{files: {op: peak RSS KiB}} for N and 4 N files."""
    out = {}
    for files in (10_000, 40_000):
        work = tmp_path_factory.mktemp(f"tree{files}")
        src, store, dst = work / "src", work / "store", work / "out"
        _make_tree(src, files)
        out[files] = {}
        for op in ("backup", "restore"):
            res = _run(store, op, src, dst)
            assert res["files"] == files
            out[files][op] = res["hwm_kib"]
    print("peak RSS KiB by files and op:", out)
    return out


@pytest.mark.parametrize("op", ["backup", "restore"])
def test_peak_rss_for_4n_files_is_within_15_percent_of_n(peaks, op):
    small, large = peaks[10_000][op], peaks[40_000][op]
    assert large <= small * 1.15, (op, small, large)
