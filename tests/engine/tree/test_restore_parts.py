"""Restores in several processes (``TreeRestore._restore_parts``): the same tree as one process gives,
whatever group each entry falls in (hard links across groups included); damage found in a child, a
cancel and a child that dies all reach the caller; stores that must not be forked restore in one."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

import pytest

from opencbr.engine import RestoreCancelled
from opencbr.engine.errors import Damaged
from opencbr.engine.tree import backup_tree, restore_tree
from opencbr.engine.tree.restore import parts as parts_mod
from opencbr.engine.tree.restore import restorer as restore_mod
from opencbr.providers.local.opened import tree_size
from tests.support.engine_tree import SMALL_CHUNKS, assert_same_tree, build_tree, flip_byte_in_chunk_of


@pytest.fixture
def tiny_groups(monkeypatch):
    """Every restore forks, and groups are a few entries: every kind of entry lands in both parts."""
    monkeypatch.setattr(parts_mod, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parts_mod, "GROUP_BYTES", 64 << 10)
    monkeypatch.setattr(parts_mod, "GROUP_FILES", 3)
    forks = []
    real = os.fork

    def fork():
        pid = real()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(restore_mod.os, "fork", fork)
    return forks


def _no_children_left(pids):
    """Every part was reaped (other children of the test process, e.g. a local S3 server, may exist)."""
    assert pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _tree(tmp_path):
    src = build_tree(tmp_path / "src")
    for i in range(30):  # more groups, and hard links whose names fall in different groups
        (src / "many" / f"g{i:02d}.bin").write_bytes(os.urandom(i * 5000))
    os.link(src / "many" / "g05.bin", src / "zz-late-link-to-g05")
    return src


def _claims(monkeypatch, who: str) -> None:
    """Who restores the groups: whoever reaches them first ("race", the real rule), or all of them
    the forked child(ren) / this process (so each side's path is certainly taken)."""
    if who != "race":
        monkeypatch.setattr(restore_mod.TreeRestore, "_claim", lambda self, g: self._in_child == (who == "child"))


@pytest.mark.parametrize("processes,who", [(2, "race"), (3, "race"), (2, "child"), (2, "parent")])
def test_parts_restore_the_same_tree(enc_repo, tmp_path, tiny_groups, monkeypatch, processes, who):
    src = _tree(tmp_path)
    res = backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    one = restore_tree(enc_repo, "b1", tmp_path / "one", processes=1)
    assert tiny_groups == []
    seen = []
    _claims(monkeypatch, who)
    many = restore_tree(enc_repo, "b1", tmp_path / "many", processes=processes,
                        progress=lambda done, total: seen.append((done, total)))
    assert len(tiny_groups) == processes - 1  # (this process restores one part itself)
    _no_children_left(tiny_groups)
    assert many.processes == processes and one.processes == 1 and one.parts_peak_rss == []
    assert len(many.parts_peak_rss) == processes - 1 and all(r > 1 << 20 for r in many.parts_peak_rss)
    assert_same_tree(src, tmp_path / "many", atime=True)
    for k in ("files", "dirs", "symlinks", "specials", "hardlinks", "bytes_written"):
        assert getattr(many, k) == getattr(one, k), k
    assert many.files + many.hardlinks == res.files and many.warnings == []
    assert seen[-1] == (res.total_bytes, res.total_bytes)
    assert os.stat(tmp_path / "many" / "zz-late-link-to-g05").st_ino == os.stat(tmp_path / "many" / "many" / "g05.bin").st_ino
    # what a walk of the restored tree counts (a new file system's size), known without the walk
    assert many.file_bytes == one.file_bytes == tree_size(str(tmp_path / "many"))[0] > 0


@pytest.mark.parametrize("who", ["child", "parent"])
def test_damage_found_by_a_part_names_the_file(repo, tmp_path, tiny_groups, monkeypatch, who):
    src = build_tree(tmp_path / "src")
    backup_tree(repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    _claims(monkeypatch, who)
    flip_byte_in_chunk_of(repo, "/bin/random.bin", "b1", tmp_path / "store")
    with pytest.raises(Damaged) as ei:
        restore_tree(repo, "b1", tmp_path / "out", processes=2)
    assert "/bin/random.bin" in str(ei.value)
    assert len(tiny_groups) == 1
    _no_children_left(tiny_groups)
    assert (tmp_path / "out" / "docs" / "text.md").read_bytes() == (src / "docs" / "text.md").read_bytes()


def test_cancel_kills_the_parts(enc_repo, tmp_path, tiny_groups, monkeypatch):
    src = _tree(tmp_path)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    started = threading.Event()
    real_child = restore_mod.TreeRestore._child

    def slow_child(self, *a):
        # the parts hang on, so the cancel finds them running
        restore_mod.TreeRestore._restore_part = lambda *_a, **_k: threading.Event().wait(60)
        real_child(self, *a)

    monkeypatch.setattr(restore_mod.TreeRestore, "_child", slow_child)
    cancel = threading.Event()

    def progress(done, total):
        started.set()
        cancel.set()

    with pytest.raises(RestoreCancelled):
        restore_tree(enc_repo, "b1", tmp_path / "out", processes=2, cancel=cancel, progress=progress)
    assert started.is_set() and len(tiny_groups) == 1
    _no_children_left(tiny_groups)


def test_a_part_that_dies_is_an_error_not_a_hang(enc_repo, tmp_path, tiny_groups, monkeypatch):
    src = _tree(tmp_path)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)

    def dying_child(self, root_fd, part, parts, shared, w):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(restore_mod.TreeRestore, "_child", dying_child)
    with pytest.raises(RuntimeError, match="killed by signal 9"):
        restore_tree(enc_repo, "b1", tmp_path / "out", processes=2)
    _no_children_left(tiny_groups)


def test_stores_that_must_not_fork_restore_in_one_process(enc_repo, tmp_path, tiny_groups, monkeypatch):
    src = _tree(tmp_path)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    store = enc_repo.chunks.store
    monkeypatch.setattr(store, "capabilities", dataclasses.replace(store.capabilities, fork_safe=False))
    restore_tree(enc_repo, "b1", tmp_path / "out", processes=2)
    assert tiny_groups == []
    assert_same_tree(src, tmp_path / "out")


_ORPHAN_SCRIPT = r"""
import os, sys, time
from opencbr.engine import Repository
from opencbr.engine.tree.restore import parts
from opencbr.engine.tree.restore import restorer as r
from opencbr.storage import open_store

store_uri, out, pids = sys.argv[1:4]
parts.PARALLEL_MIN = 0

def hang(self, *a, **k):
    open(os.path.join(pids, str(os.getpid())), "w").close()
    time.sleep(120)

r.TreeRestore._restore_part = hang
repo = Repository.open(open_store(store_uri), "vaults/v1", bytes(range(32)))
r.restore_tree(repo, "b1", out, processes=2)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def test_parts_die_with_the_process_that_forked_them(enc_repo, tmp_path):
    """kill -9 of the restoring process (the service; it restores one part itself) leaves no part
    running on its own."""
    import subprocess
    import sys
    import time

    src = _tree(tmp_path)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, (tmp_path / "store").as_uri(),
                             str(tmp_path / "out"), str(pids)])
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(pids)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        parts = [int(p) for p in os.listdir(pids)]
        assert len(parts) == 2 and not any(_gone(p) for p in parts)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in parts) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in parts)


@pytest.mark.parametrize("who", ["race", "child"])
def test_parts_restore_a_subtree_over_existing_files(enc_repo, tmp_path, tiny_groups, monkeypatch, who):
    """A directory of the backup restored into a target that already holds some of it (the
    single-file/directory restore of the service): existing files are replaced, the rest added."""
    src = _tree(tmp_path)
    os.unlink(src / "zz-late-link-to-g05")  # (a link from outside the subtree would not come along)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    out = tmp_path / "out"
    (out / "many").mkdir(parents=True)
    (out / "many" / "g07.bin").write_bytes(b"stale")
    (out / "keep.txt").write_bytes(b"not in the backup")
    _claims(monkeypatch, who)
    restore_tree(enc_repo, "b1", out, subpath="/many", allow_nonempty=True, processes=2)
    assert len(tiny_groups) == 1
    _no_children_left(tiny_groups)
    assert_same_tree(src / "many", out / "many")
    assert (out / "keep.txt").read_bytes() == b"not in the backup"


@pytest.mark.parametrize("broken", ["semaphores", "fork"])
def test_without_semaphores_or_fork_one_process_restores(enc_repo, tmp_path, tiny_groups, monkeypatch, broken):
    """Where the claim lock cannot be made (no /dev/shm) or fork fails, the restore runs in this
    process alone, and says so."""
    import multiprocessing.context

    src = _tree(tmp_path)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)

    def refuse(*_a, **_k):
        raise OSError(38, "Function not implemented")

    if broken == "semaphores":
        monkeypatch.setattr(multiprocessing.context.ForkContext, "Lock", refuse)
    else:
        monkeypatch.setattr(restore_mod.os, "fork", refuse)
    res = restore_tree(enc_repo, "b1", tmp_path / "out", processes=2)
    assert res.processes == 1 and res.parts_peak_rss == []
    assert_same_tree(src, tmp_path / "out")
