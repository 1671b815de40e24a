"""TreeWalker: the walk order is the catalog order (depth-first, siblings by name bytes) whatever
the listing threads do ahead of it, including when the prefetch window is full."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys

import pytest

from opencbr.engine.tree.entry import path_key
from opencbr.engine.tree.walker import TreeWalker
from opencbr.system import beneath
from tests.support.engine_tree import opens_seen


def _deep_tree(root, seed=3):
    rnd = random.Random(seed)
    dirs = [root]
    root.mkdir()
    for i in range(120):
        parent = rnd.choice(dirs)
        d = parent / f"d{rnd.randrange(1000):03d}-{i}"
        d.mkdir()
        dirs.append(d)
        for j in range(rnd.randrange(4)):
            (d / f"f{j}\xe9.txt").write_bytes(b"x" * j)
    (root / "a-link").symlink_to("d")
    return root


@pytest.mark.parametrize("prefetch,window,readahead", [(0, 512, 0), (4, 512, 0), (3, 2, 0), (2, 1, 0), (2, 512, 1 << 20)])
def test_walk_order_is_catalog_order(tmp_path, monkeypatch, prefetch, window, readahead):
    root = _deep_tree(tmp_path / "t")
    monkeypatch.setattr(TreeWalker, "MAX_PREFETCH", window)
    warnings = []
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")  # never opened by the readahead (regular files only): no hang
    paths = [it.path for it in TreeWalker(root, lambda *a: warnings.append(a), prefetch=prefetch,
                                          readahead_below=readahead)]
    assert warnings == []
    assert paths[0] == b"" and len(paths) == len(set(paths))
    keys = [path_key(p) for p in paths]
    assert keys == sorted(keys)
    expect = {b""} | {os.path.relpath(os.path.join(d, n), root).encode()
                      for d, ds, fs in os.walk(root) for n in ds + fs}
    assert set(paths) == expect


@pytest.mark.parametrize("slow", [False, True])
def test_adaptive_walk_lists_ahead_only_when_listings_wait(tmp_path, monkeypatch, slow):
    """adaptive: no listing threads while listings come back quickly; once the first PROBE_LISTINGS
    listings have waited on the "device" (here a sleep: wall time that is not this thread's CPU
    time) the threads start, and the walk order and contents stay the same either way."""
    import time

    root = _deep_tree(tmp_path / "t")
    real = TreeWalker._children

    def children(self, abspath, rel, *want):
        if slow:
            time.sleep(0.003)
        return real(self, abspath, rel, *want)

    monkeypatch.setattr(TreeWalker, "_children", children)
    monkeypatch.setattr(TreeWalker, "PROBE_LISTINGS", 8)
    plain = [it.path for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    w = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True)
    assert [it.path for it in w] == plain
    assert w.prefetching is slow


def test_queue_time_booked_late_does_not_cancel_the_waits_of_other_listings(tmp_path, monkeypatch):
    """On a busy CPU the run-queue time from before a listing can be booked during it: that listing then
    seems to have waited less than nothing. It counts as no wait, not as a negative one that hides the
    real waits of the others (a flaky failure of the test above in a loaded full suite)."""
    import time

    from opencbr.engine.tree import walker

    root = _deep_tree(tmp_path / "t")
    real_children, real_clock = TreeWalker._children, walker._on_cpu_or_runnable
    calls = [0]

    def children(self, abspath, rel, *want):
        time.sleep(0.003)
        return real_children(self, abspath, rel, *want)

    def clock():
        calls[0] += 1
        return real_clock() + (0.5 if calls[0] >= 4 else 0.0)  # half a second booked in the second listing

    monkeypatch.setattr(TreeWalker, "_children", children)
    monkeypatch.setattr(TreeWalker, "PROBE_LISTINGS", 8)
    monkeypatch.setattr(walker, "_on_cpu_or_runnable", clock)
    w = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True)
    list(w)
    assert calls[0] >= 16 and w.prefetching


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="needs Linux schedstat")
def test_adaptive_walk_does_not_take_a_busy_cpu_for_a_slow_device(tmp_path, monkeypatch):
    """Listings that wait for a CPU (the machine busy with other work) are not listings that wait on the
    device: on a CPU shared with busy processes of higher priority, the walk starts no listing threads."""
    import time

    root = _deep_tree(tmp_path / "t")
    real = TreeWalker._children

    busy, probed = [], []

    def children(self, abspath, rel, *want):
        probed.append(abspath)
        if len(probed) <= TreeWalker.PROBE_LISTINGS:  # the probe's listings take 2 ms of CPU: preempted
            until = time.thread_time() + 0.002
            while time.thread_time() < until:
                pass
        elif busy:  # (the rest of the walk need not crawl)
            _stop(busy)
        return real(self, abspath, rel, *want)

    monkeypatch.setattr(TreeWalker, "_children", children)
    monkeypatch.setattr(TreeWalker, "PROBE_LISTINGS", 8)
    cpu = min(os.sched_getaffinity(0))

    def on_our_cpu():
        os.sched_setaffinity(0, {cpu})

    busy += [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=on_our_cpu)
             for _ in range(2)]
    try:
        time.sleep(0.5)  # (they are past their start, spinning)
        assert _walk_forked(root, cpu) == (True, False)  # (walked the tree; no listing threads)
    finally:
        _stop(busy)


def _walk_forked(root, cpu: int) -> tuple[bool, bool]:
    """An adaptive walk of ``root`` at nice 19 on ``cpu``, in a forked child: (it listed more than 120
    entries, it started listing threads). Forked, because the threads of the process running the tests (a
    test runner's worker keeps some) do not come along: a listing that waited for the interpreter lock
    behind one of them would count as a listing that waited on the device."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.sched_setaffinity(0, {cpu})
            os.setpriority(os.PRIO_PROCESS, 0, 19)
            walker = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True)
            n = len(list(walker))
            os.write(w, f"{int(n > 120)} {int(walker.prefetching)}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().split()
    os.waitpid(pid, 0)
    assert len(got) == 2, "the walking child died"
    return got[0] == b"1", got[1] == b"1"


def _stop(processes: list) -> None:
    while processes:
        p = processes.pop()
        p.kill()
        p.wait()


def test_warmer_reads_the_tree_in_walk_order(tmp_path, monkeypatch):
    """The helper lists directories in the order the walk will enter them (so it stays ahead of
    the walk where the walk is about to go) and lstat's every entry -- each directory opened below the
    root with no symlink followed (open_at), never by a path a swapped directory would lead elsewhere."""
    from opencbr.engine.tree import walker as walker_mod

    root = _deep_tree(tmp_path / "t")
    listed, statted = [os.fsencode(root)], []
    real_open_at, real_stat = beneath.open_at, os.stat

    def open_at(dir_fd, rel, flags, *a, **kw):
        listed.append(os.path.join(os.fsencode(root), os.fsencode(rel)))
        return real_open_at(dir_fd, rel, flags, *a, **kw)

    def lstat_spy(name, *, dir_fd=None, follow_symlinks=True):
        if sys._getframe(1).f_code.co_filename == walker_mod.__file__:
            name = os.fsencode(name)
            assert dir_fd is not None and not follow_symlinks and b"/" not in name
            statted.append(name)
        return real_stat(name, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(beneath, "open_at", open_at)
    monkeypatch.setattr(walker_mod, "_native_listing", None)  # (the Python walk; the C one: test_listing.py)
    monkeypatch.setattr(walker_mod.os, "stat", lstat_spy)
    walker_mod.MetadataWarmer(os.fsencode(root), real_stat(root).st_dev)._run()
    monkeypatch.undo()
    walk = [it for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    dirs = [it.abspath for it in walk if os.path.isdir(it.abspath) and not os.path.islink(it.abspath)]
    assert listed == dirs
    assert sorted(statted) == sorted(os.path.basename(it.abspath) for it in walk[1:])


def test_the_warmer_never_lists_through_a_symlink(tmp_path, monkeypatch):
    """A directory of the tree swapped for a symlink out of it after its parent's listing: the Python
    warmer neither opens nor lists what it leads to."""
    from opencbr.engine.tree import walker as walker_mod

    root, outside = tmp_path / "t", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    (outside / "b").mkdir(parents=True)
    real_stat, swapped = os.stat, []

    def lstat_then_swap(name, *, dir_fd=None, follow_symlinks=True):
        st = real_stat(name, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        if name == "a" and not swapped:  # listed and lstat'ed as a directory: now a link out of the tree
            os.rename(root / "a", root / "a.moved")
            os.symlink(outside, root / "a")
            swapped.append(name)
        return st

    monkeypatch.setattr(walker_mod, "_native_listing", None)
    opened = opens_seen(os.fsencode(outside))
    monkeypatch.setattr(walker_mod.os, "stat", lstat_then_swap)
    walker_mod.MetadataWarmer(os.fsencode(root), None)._run()
    monkeypatch.undo()
    assert swapped == ["a"]
    assert not opened(), "a directory out of the tree was opened"


@pytest.mark.parametrize("native", [False, True])
def test_warm_walk_is_the_same_walk_and_its_helper_is_reaped(tmp_path, monkeypatch, native):
    """A warm walk: with the C listing, an Ahead's threads in this process list ahead (no helper process);
    without it, a forked MetadataWarmer does, and is reaped when the walk ends."""
    from opencbr.engine.tree import walker as walker_mod

    if native and walker_mod.native_listing() is None:
        pytest.skip("the C listing is not built here")
    if not native:
        monkeypatch.setattr(walker_mod, "_native_listing", None)
    root = _deep_tree(tmp_path / "t")
    started = []
    real_start = walker_mod.MetadataWarmer.start

    def start(self):
        out = real_start(self)
        started.append(self.pid)
        return out

    monkeypatch.setattr(walker_mod.MetadataWarmer, "start", start)
    plain = [it.path for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    assert started == []
    w = TreeWalker(root, lambda *a: None, prefetch=0, warm=True)
    warm = [it.path for it in w]
    assert warm == plain
    if native:  # (whether its threads listed anything before this small walk was over: test_listing.py)
        assert started == [] and w.ahead_stats is not None
        return
    assert len(started) == 1 and started[0] > 0 and w.ahead_stats is None
    with pytest.raises(ChildProcessError):
        os.waitpid(started[0], os.WNOHANG)


def _walk_swapping(root, when: bytes, swap, native: bool = True) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """Walk ``root`` (no listing threads; ``native``: with the C listing where it is built, else in Python),
    calling ``swap()`` once the walk has yielded ``when``."""
    warnings: list[tuple[bytes, str]] = []
    seen = []
    w = TreeWalker(str(root), lambda rel, msg, partial: warnings.append((rel, msg)), prefetch=0)
    if not native:
        w.native = None
    for item in w:
        seen.append(item.path)
        if item.path == when:
            swap()
    return seen, warnings


REPLACED = "replaced during the backup (a symbolic link or a file is there now, or in place of a directory above it): " \
           "not listed"


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_a_directory_swapped_during_the_walk_is_not_listed(tmp_path, native):
    """Between a directory's listing and its own, a directory of the tree (or one above it) is swapped
    for a symlink out of the tree: what it leads to is never listed (so never read), nor even opened."""
    root, outside = tmp_path / "tree", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "mine").write_bytes(b"mine")
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "shadow").write_bytes(b"SECRET")
    (outside / "shadow").write_bytes(b"SECRET")

    def swap_a() -> None:
        (root / "a").rename(root / "a.orig")
        (root / "a").symlink_to(outside)

    seen, warnings = _walk_swapping(root, b"a", swap_a, native)  # a itself
    assert seen == [b"", b"a"] and warnings == [(b"a", REPLACED)]
    (root / "a").unlink()
    (root / "a.orig").rename(root / "a")
    opened = opens_seen(os.fsencode(outside / "b"))
    seen, warnings = _walk_swapping(root, b"a/b", swap_a, native)  # the directory above a/b
    assert seen == [b"", b"a", b"a/b"] and warnings == [(b"a/b", REPLACED)]
    assert not opened(), "a directory out of the tree was opened"


@pytest.mark.parametrize("prefetch", [0, 2])
def test_node_meta_reads_xattrs_and_link_targets_of_everything_but_regular_files(tmp_path, prefetch):
    root = _deep_tree(tmp_path / "t")
    d = next(p for p in root.iterdir() if p.is_dir())
    os.setxattr(d, "user.note", b"on a directory")
    got = {it.path: it.meta for it in TreeWalker(root, lambda *a: None, prefetch=prefetch, node_meta=True)}
    name = os.fsencode(d.name)
    assert got[name].xattrs == [(b"user.note", b"on a directory")] and got[name].link is None
    assert got[b"a-link"].link == b"d" and got[b"a-link"].link_error is None
    files = [p for p in got if (root / os.fsdecode(p)).is_file() and not (root / os.fsdecode(p)).is_symlink()]
    assert files and all(got[p] is None for p in files)  # (read with the file, by its reader)
    assert all(m is None for m in (it.meta for it in TreeWalker(root, lambda *a: None, prefetch=prefetch)))


def _regular_bytes(root) -> int:
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _dirs, names in os.walk(root) for n in names
               if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n)))


@pytest.mark.parametrize("prefetch,entries", [(0, 16384), (2, 16384), (2, 3)])
def test_a_tally_adds_up_every_listed_regular_file_once_and_is_done_when_the_walk_ends(tmp_path, monkeypatch,
                                                                                     prefetch, entries):
    """A first backup's progress total with no size known: what the listings saw (with listing threads,
    and with their window so small that the walk lists most directories itself)."""
    from opencbr.engine.tree.walker import ListingTally

    root = _deep_tree(tmp_path / "t")
    (root / "big").write_bytes(b"z" * 100_000)
    os.link(root / "big", root / "big-link")
    monkeypatch.setattr(TreeWalker, "MAX_PREFETCH_ENTRIES", entries)
    tally = ListingTally()
    walk = TreeWalker(root, lambda *a: None, prefetch=prefetch, tally=tally)
    it = iter(walk)
    next(it)
    assert not tally.done.is_set()
    rest = list(it)
    assert tally.done.is_set()
    assert tally.total == sum(item.st.st_size for item in rest if stat.S_ISREG(item.st.st_mode))
    assert tally.total == _regular_bytes(root) > 200_000  # (each name of a hard link, as read)


def test_the_warmer_runs_behind_the_backup(tmp_path):
    """The warmer runs at the lowest priority, whatever the backup's and whoever runs it: it only takes a
    core the walking thread (an incremental backup's critical path) leaves idle."""
    from opencbr.engine.tree import walker as walker_mod

    def nice_of_warmer(as_user: bool) -> int:
        r, w = os.pipe()

        class Probe(walker_mod.MetadataWarmer):
            def _run(self):
                os.write(w, str(os.getpriority(os.PRIO_PROCESS, 0)).encode())

        pid = os.fork()
        if pid == 0:  # (a child process whose nice and privileges the test may change)
            try:
                os.setpriority(os.PRIO_PROCESS, 0, 10)
                if as_user and os.geteuid() == 0:
                    os.setgroups([])
                    os.setresgid(65534, 65534, 65534)
                    os.setresuid(65534, 65534, 65534)
                warmer = Probe(os.fsencode(tmp_path), None).start()
                os.waitpid(warmer.pid, 0)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            return int(f.read())

    assert nice_of_warmer(as_user=False) == 19
    assert nice_of_warmer(as_user=True) == 19


def test_node_meta_is_read_in_the_directory_listed_only(tmp_path):
    """A first backup's listings read the xattrs and link targets of what is not a regular file by name in
    the directory just listed, reopened below the root and checked: a directory swapped meanwhile (here
    between the listing and that read) gives an error, never what lies out of the tree."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    os.symlink("mine", root / "d" / "link")
    (outside / "d").mkdir(parents=True)
    os.symlink("/secret/target", outside / "d" / "link")
    w = TreeWalker(str(root), lambda *a: None, prefetch=0, node_meta=True)
    walk = iter(w)
    assert next(walk).path == b""  # (the walk has the root open)
    d_st = os.lstat(root / "d")
    listed = w._list_python(os.fsencode(root / "d"), b"d", d_st)
    kept = [tuple(k) for k in listed]
    w._node_metas(os.fsencode(root / "d"), b"d", d_st, kept)
    assert kept[0][3].link == b"mine"
    os.rename(root / "d", root / "d.moved")
    os.symlink(outside / "d", root / "d")
    swapped = [tuple(k) for k in listed]
    w._node_metas(os.fsencode(root / "d"), b"d", d_st, swapped)
    walk.close()
    meta = swapped[0][3]
    assert meta.link is None and isinstance(meta.link_error, OSError)
    assert meta.xattr_problems == ["cannot list xattrs: its directory was replaced during the backup"]


def test_a_scan_adds_up_the_regular_files_below_the_root_only(tmp_path):
    """TreeScanner (a first backup's progress total in the engine's own CLI): every regular file once,
    nothing a symlink leads to, and its threads close the root's descriptor when they end."""
    from opencbr.engine.tree.walker import TreeScanner

    root = _deep_tree(tmp_path / "t")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "big").write_bytes(b"x" * 100_000)
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "out-big").symlink_to(tmp_path / "outside" / "big")
    fds = len(os.listdir("/proc/self/fd"))
    scan = TreeScanner(os.fsencode(root), threads=3).start()
    assert scan.done.wait(30)
    for t in scan._threads:
        t.join(10)
    assert scan.total == _regular_bytes(root) > 0
    assert len(os.listdir("/proc/self/fd")) == fds
