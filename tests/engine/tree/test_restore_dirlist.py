"""The directories a restore finishes last (restore/metadata.py: DirList) move to an unlinked file past
a bound, and come back deepest first with all their metadata."""

from __future__ import annotations

import os

from opencbr.engine.tree import backup_tree, restore_tree
from opencbr.engine.tree.entry import DIR, Entry
from opencbr.engine.tree.restore.metadata import DirList
from tests.support.engine_tree import SMALL_CHUNKS, assert_same_tree, build_tree


def _dir(i: int) -> tuple[bytes, Entry]:
    rel = b"d/" + b"x" * (i % 300) + b"%d" % i
    e = Entry(rel, DIR, 0o40000 | (0o700 + i % 77), 1000 + i, 2000 + i, 0, 10**18 + i, 0, 10**17 + i)
    if i % 7 == 0:
        e.xattrs = [(b"user.n%d" % i, os.urandom(i % 50)), (b"user.b", b"")]
    return rel, e


def test_spilled_directories_come_back_deepest_first(tmp_path):
    dirs = DirList(str(tmp_path), spill_bytes=4096)
    dirs.READ_BLOCK = 1000  # (smaller than some records: a record across blocks)
    want = [_dir(i) for i in range(3000)]
    for rel, e in want:
        dirs.append(rel, e)
    assert dirs._file is not None and os.listdir(tmp_path) == []  # spilled, and nothing left with a name
    got = list(dirs.deepest_first())
    assert len(got) == len(want) == len(dirs)
    for (rel, meta), (wrel, e) in zip(got, reversed(want), strict=True):
        assert rel == wrel
        assert (meta.mode, meta.uid, meta.gid, meta.atime_ns, meta.mtime_ns) == (e.mode, e.uid, e.gid, e.atime_ns,
                                                                                 e.mtime_ns)
        assert meta.xattrs == e.xattrs


def test_restore_with_directories_spilled(enc_repo, tmp_path, monkeypatch):
    monkeypatch.setattr(DirList, "SPILL_BYTES", 64)
    monkeypatch.setattr(DirList, "READ_BLOCK", 100)
    src = build_tree(tmp_path / "src")
    for i in range(200):
        (src / "many" / f"sub{i:03d}" / "deeper").mkdir(parents=True)
        os.chmod(src / "many" / f"sub{i:03d}", 0o750)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    out = tmp_path / "out"
    restore_tree(enc_repo, "b1", out)
    assert_same_tree(src, out)
