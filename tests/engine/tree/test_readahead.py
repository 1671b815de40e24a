"""FileReadahead: the forked helper that starts the kernel reading a first backup's small files a bounded
distance ahead of the walk (instead of the listing threads, where its three system calls per file each
handed the GIL over). It stays within its bound, follows the walk's position, is reaped when the walk
ends and dies with the process that forked it; what it read ahead never stands in for the real read."""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opencbr.engine.tree import backup_tree, restore_tree
from opencbr.engine.tree import walker as walker_mod
from opencbr.engine.tree.backup import backup_tree_from
from opencbr.engine.tree.sources import DirectorySource
from opencbr.engine.tree.walker import FileReadahead, TreeWalker
from tests.support.engine_tree import new_repo

REPO_ROOT = Path(__file__).resolve().parents[3]


def _flat(root: Path, files: int, size: int) -> Path:
    root.mkdir()
    for i in range(files):
        (root / f"f{i:04d}").write_bytes(bytes([i % 251]) * size)
    return root


def _settled(helper: FileReadahead, timeout: float = 10.0) -> int:
    """The helper's position once it stopped moving (it waits at its bound, or has finished)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        pos = helper.position
        if pos != last:
            last, since = pos, time.monotonic()
        elif time.monotonic() - since > 0.3:
            return pos
        time.sleep(0.02)
    raise AssertionError(f"the helper kept moving (at {last})")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def _cached(path: Path) -> bool:
    """Whether the file's first page is in the page cache: ``mincore`` of a mapping of it (looking
    reads nothing, unlike a read with ``RWF_NOWAIT``, which starts the read it declines to wait for)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = ctypes.create_string_buffer(1)
            assert _libc.mincore(addr, 4096, vec) == 0, os.strerror(ctypes.get_errno())
            return bool(vec.raw[0] & 1)
        finally:
            _libc.munmap(addr, 4096)
    finally:
        os.close(fd)


def _evict(paths) -> None:
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def test_it_stays_within_its_entries_bound_and_follows_the_walk(tmp_path, monkeypatch):
    root = _flat(tmp_path / "t", 100, 10)
    monkeypatch.setattr(FileReadahead, "MAX_AHEAD_ENTRIES", 20)
    helper = FileReadahead(os.fsencode(root), None, 1 << 20).start()
    try:
        assert helper.pid > 0
        assert _settled(helper) == 21  # (waits before the 21st entry: 21 ahead of a walk at 0)
        helper.walked(50)
        assert _settled(helper) == 71
        helper.walked(100)
        assert _settled(helper) == 100  # the whole tree
    finally:
        helper.stop()
    with pytest.raises(ChildProcessError):
        os.waitpid(helper.pid or -1, os.WNOHANG)


def test_it_stays_within_its_bytes_bound(tmp_path, monkeypatch):
    root = _flat(tmp_path / "t", 40, 1000)
    monkeypatch.setattr(FileReadahead, "MAX_AHEAD_BYTES", 5000)
    helper = FileReadahead(os.fsencode(root), None, 1 << 20).start()
    try:
        assert _settled(helper) == 7  # 6 files (6,000 bytes) read ahead, the 7th waits
        helper.walked(3)  # the walk took 3 of them: 3,000 bytes ahead, 3 more fit
        assert _settled(helper) == 10
    finally:
        helper.stop()


def test_it_reads_the_small_files_within_its_bound_into_the_page_cache(tmp_path, monkeypatch):
    root = _flat(tmp_path / "t", 40, 8192)
    (root / "zbig").write_bytes(b"b" * 65536)  # not below the limit: left to the real read
    files = sorted(root.iterdir())
    _evict(files)
    if any(_cached(p) for p in files):
        pytest.skip("cannot drop these files from the page cache here (tmpfs?)")
    monkeypatch.setattr(FileReadahead, "MAX_AHEAD_ENTRIES", 10)
    helper = FileReadahead(os.fsencode(root), None, 65536).start()
    try:
        assert _settled(helper) == 11
        deadline = time.monotonic() + 5
        while not all(_cached(p) for p in files[:10]) and time.monotonic() < deadline:
            time.sleep(0.02)  # (WILLNEED reads in the background)
        assert all(_cached(p) for p in files[:10])
        assert not any(_cached(p) for p in files[11:])
        helper.walked(41)
        assert _settled(helper) == 41
        deadline = time.monotonic() + 5
        while not all(_cached(p) for p in files[:40]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(_cached(p) for p in files[:40]) and not _cached(files[40])
    finally:
        helper.stop()


def test_the_walk_reports_its_position_and_reaps_the_helper(tmp_path, monkeypatch):
    root = _flat(tmp_path / "t", 300, 10)
    monkeypatch.setattr(FileReadahead, "MAX_AHEAD_ENTRIES", 8)
    plain = [it.path for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    w = TreeWalker(root, lambda *a: None, prefetch=2, readahead_below=1 << 20)
    got = []
    for it in w:
        got.append(it.path)
        if len(got) == 1 + 100:  # the root and 100 entries: the walk reported 96 (every 32)
            assert w.readahead is not None and w.readahead.pid > 0
            assert w._ra_threads == 0  # (the listing threads read nothing ahead themselves)
            assert _settled(w.readahead) == 96 + 8 + 1
    assert got == plain
    with pytest.raises(ChildProcessError):
        os.waitpid(w.readahead.pid or -1, os.WNOHANG)


def test_without_a_helper_the_listing_threads_read_ahead(tmp_path, monkeypatch):
    root = _flat(tmp_path / "t", 20, 10)

    def no_fork():
        raise OSError("no more processes")

    monkeypatch.setattr(walker_mod.os, "fork", no_fork)
    w = TreeWalker(root, lambda *a: None, prefetch=2, readahead_below=1 << 20)
    assert len(list(w)) == 21
    assert w.readahead.pid == 0 and w._ra_threads == 1 << 20


def test_the_helper_dies_with_its_parent(tmp_path):
    root = _flat(tmp_path / "t", 50, 10)
    script = (
        "import os, sys, time\n"
        "from opencbr.engine.tree.walker import FileReadahead\n"
        "FileReadahead.MAX_AHEAD_ENTRIES = 5\n"  # (waits for a walk that never comes)
        f"h = FileReadahead({os.fsencode(root)!r}, None, 1 << 20).start()\n"
        "print(h.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    try:
        pid = int(p.stdout.readline())
        assert pid > 0 and _alive(pid)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class _ChangingSource(DirectorySource):
    """A directory whose file ``z`` is rewritten once the readahead helper has gone past it, before the
    backup's reader reads it."""

    def walk(self, warn, incremental):
        for item in super().walk(warn, incremental):
            if item.path == b"a":
                helper = self.walker.readahead
                while helper.position < 3:  # a, b, z: read ahead
                    time.sleep(0.01)
                with open(os.path.join(self.root, b"z"), "r+b") as f:
                    f.write(b"NEW!")
            yield item


def test_a_file_changed_after_it_was_read_ahead_is_backed_up_as_it_is_read(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a" * 100)
    (root / "b").write_bytes(b"b" * 100)
    (root / "z").write_bytes(b"old!" + b"z" * 4000)
    repo = new_repo(tmp_path)
    r = backup_tree_from(repo, _ChangingSource(os.fsencode(root)), backup_id="b1", meta={})
    restore_tree(repo, "b1", tmp_path / "out")
    assert (tmp_path / "out" / "z").read_bytes() == b"NEW!" + b"z" * 4000
    assert any(w.path == "/z" and "changed while it was being read" in w.message for w in r.warnings)
    assert backup_tree(repo, root, backup_id="b2", meta={}).files == 3
