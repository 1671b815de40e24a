"""The walker's two listings of a directory -- the C extension's one call (``_listing.list_dir``) and the
Python fallback used where it is not built -- give the same entries, ``stat`` fields, metadata and
warnings, on trees with what real trees hold (symlinks, hard links, names that are not UTF-8, special
files) and what goes wrong (directories that cannot be opened or whose entries cannot be stat'ed,
directories swapped or removed during the walk)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig

import pytest

from opencbr.engine.tree import walker
from opencbr.engine.tree.walker import ListingTally, TreeWalker

NATIVE = walker.native_listing()
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C listing is not built here")
IS_ROOT = os.geteuid() == 0
STAT_FIELDS = sorted(f for f in dir(os.lstat(".")) if f.startswith("st_"))


def _odd_tree(root):
    """Names that are not UTF-8, symlinks of every kind, hard links, a fifo, empty and deep directories."""
    root.mkdir()
    top = os.fsencode(root)
    for d in (b"a/b/c", b"caf\xe9/\xff\xfe", b"empty", b"zz"):
        os.makedirs(os.path.join(top, d))
    for i, f in enumerate((b"a/one", b"a/b/two", b"caf\xe9/\xff\xfe/\x80bad", b"zz/big", b"A", b"a b")):
        with open(os.path.join(top, f), "wb") as fh:
            fh.write(b"x" * (i * 1000 + (200_000 if f.endswith(b"big") else 0)))
    os.link(os.path.join(top, b"a/one"), os.path.join(top, b"zz/one-link"))
    os.symlink(b"a/one", os.path.join(top, b"to-file"))
    os.symlink(b"a", os.path.join(top, b"to-dir"))
    os.symlink(b"nowhere", os.path.join(top, b"dangling"))
    os.symlink(b"/etc", os.path.join(top, b"a/out-of-tree"))
    os.symlink(b"\xe9\xe9", os.path.join(top, b"caf\xe9/odd-target"))
    os.mkfifo(os.path.join(top, b"a/fifo"))
    os.setxattr(os.path.join(top, b"a/b"), "user.note", b"kept")
    return root


def _walk(root, native: bool, **kw) -> tuple[list, list, int]:
    warnings, tally = [], ListingTally()
    w = TreeWalker(root, lambda *a: warnings.append(a), tally=tally, **kw)
    if not native:
        w.native = None
    assert (w.native is not None) is native
    # (never the access time: the first walk's listings and reads move it, and the second walk sees that)
    items = [(it.path, it.abspath, {f: getattr(it.st, f) for f in STAT_FIELDS if f not in ("st_atime", "st_atime_ns")},
              tuple(v for i, v in enumerate(it.st) if i != stat.ST_ATIME), None if it.meta is None else vars(it.meta))
             for it in w]
    return items, warnings, tally.total


@needs_native
@pytest.mark.parametrize("kw", [{"prefetch": 0}, {"prefetch": 2, "node_meta": True, "readahead_below": 1 << 20},
                                {"prefetch": 0, "exclude": frozenset({b"a/b", b"zz/big", b"caf\xe9/\xff\xfe/\x80bad"})},
                                # an incremental walk's: the C listing takes its listings from an Ahead
                                {"prefetch": 4, "adaptive": True, "warm": True},
                                {"prefetch": 4, "adaptive": True, "warm": True, "exclude": frozenset({b"a/b", b"zz/big"})}])
def test_both_listings_walk_the_same(tmp_path, kw):
    root = _odd_tree(tmp_path / "t")
    native, python = _walk(root, True, **kw), _walk(root, False, **kw)
    assert native == python
    items, warnings, total = native
    paths = [p for p, *_ in items]
    assert b"caf\xe9/\xff\xfe/\x80bad" in paths or "exclude" in kw
    assert warnings == [] and total == sum(st["st_size"] for _p, _a, st, _t, _m in items if stat.S_ISREG(st["st_mode"]))
    for path, abspath, st, _t, _m in items[1:]:  # every field as os.lstat gives it (atime: read meanwhile)
        assert {f: getattr(os.lstat(abspath), f) for f in st} == st and abspath == os.path.join(os.fsencode(root), path)


def _walk_changing(root, outside, native: bool) -> tuple[list, list]:
    for d in ("a/b", "c", "d/e"):
        (root / d).mkdir(parents=True)
    (root / "a" / "b" / "mine").write_bytes(b"mine")
    swaps = {b"a": lambda: ((root / "a").rename(root / "a.orig"), (root / "a").symlink_to(outside)),
             b"c": lambda: ((root / "c2").mkdir(), os.rmdir(root / "c"), (root / "c2").rename(root / "c")),
             b"d/e": lambda: os.rmdir(root / "d" / "e")}
    warnings, seen = [], []
    w = TreeWalker(root, lambda *a: warnings.append(a), prefetch=0)
    w.native = NATIVE if native else None
    for item in w:
        seen.append(item.path)
        if item.path in swaps:
            swaps[item.path]()
    return seen, warnings


@needs_native
def test_both_listings_warn_alike_when_directories_change_during_the_walk(tmp_path):
    """A directory swapped for a symlink out of the tree, one swapped for another directory, one removed:
    neither listing lists what is there now, and both say so in the same words."""
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "shadow").write_bytes(b"SECRET")
    native, python = (_walk_changing(tmp_path / f"t{n}", outside, n) for n in (True, False))
    assert native == python
    seen, warnings = native
    assert seen == [b"", b"a", b"c", b"d", b"d/e"]  # (nothing of what a symlink "a" leads to)
    assert warnings == [
        (b"a", "replaced during the backup (a symbolic link or a file is there now, or in place of a directory "
               "above it): not listed", True),
        (b"c", "replaced by another directory during the backup: not listed", True),
        (b"d/e", "cannot list directory: No such file or directory", True)]


_WALK_BOTH = """
import json, sys
from opencbr.engine.tree import walker
out = []
for native in (True, False):
    warnings = []
    w = walker.TreeWalker(sys.argv[1], lambda *a: warnings.append([a[0].decode(), a[1], a[2]]), prefetch=0)
    if not native:
        w.native = None
    out.append([[it.path.decode() for it in w], warnings])
print(json.dumps(out))
"""


@needs_native
@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root and setpriv (util-linux)")
def test_both_listings_warn_alike_without_permission(tmp_path):
    """As a process without the capabilities that bypass file permissions: a directory it cannot open,
    and one it can list but whose entries it cannot stat (read without search permission)."""
    root = tmp_path / "t"
    for d in ("closed", "no-search", "open"):
        (root / d).mkdir(parents=True)
        (root / d / "f").write_bytes(b"f")
    os.chmod(root / "closed", 0o000)
    os.chmod(root / "no-search", 0o644)
    drop = "-dac_override,-dac_read_search"
    try:
        proc = subprocess.run(["setpriv", "--bounding-set", drop, "--inh-caps", drop, sys.executable, "-c", _WALK_BOTH,
                               str(root)], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    finally:
        os.chmod(root / "closed", 0o755)
        os.chmod(root / "no-search", 0o755)
    assert proc.returncode == 0, proc.stderr
    native, python = json.loads(proc.stdout)
    assert native == python
    assert native[0] == ["", "closed", "no-search", "open", "open/f"]
    assert native[1] == [["closed", "cannot list directory: Permission denied", True],
                         ["no-search/f", "cannot stat: Permission denied", True]]


def test_a_listing_that_is_not_the_expected_build_is_not_used(monkeypatch):
    """A .so of another version of _listing.c (left by an older install), or one whose stat results
    differ from os.lstat's, is not used: the walker lists in Python."""
    import types

    monkeypatch.setitem(sys.modules, "opencbr.engine.tree._listing", types.SimpleNamespace(ABI=0))
    assert walker._load_native_listing() is None
    wrong = types.SimpleNamespace(ABI=walker._LISTING_ABI, lstat=lambda p: os.lstat(b"/"))
    monkeypatch.setitem(sys.modules, "opencbr.engine.tree._listing", wrong)
    assert walker._load_native_listing() is None
    monkeypatch.setenv("OPENCBR_LISTING", "python")
    monkeypatch.delitem(sys.modules, "opencbr.engine.tree._listing")
    assert walker._load_native_listing() is None


def test_without_the_extension_a_backup_runs_with_the_python_listing(tmp_path):
    """A clean clone without the .so (or a machine without a compiler): importing it fails, the walker
    lists in Python and a backup of the tree works."""
    root = _odd_tree(tmp_path / "t")
    code = ("import sys; sys.modules['opencbr.engine.tree._listing'] = None\n"
            "from opencbr.engine.tree import walker\n"
            "assert walker.native_listing() is None\n"
            "from tests.support.engine_tree import new_repo\n"
            "from opencbr.engine.tree import backup_tree\n"
            "import pathlib\n"
            "res = backup_tree(new_repo(pathlib.Path(sys.argv[2]), True), sys.argv[1], backup_id='b1', meta={})\n"
            "print(res.partial, len(res.warnings))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "0"]


@pytest.mark.skipif(not (shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
                         and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))),
                    reason="no C compiler or Python headers here: the optional extension is not built")
def test_the_extension_is_built_where_it_can_be():
    """`make venv` (pip install -e) builds it in place next to walker.py where a compiler and the Python
    headers are: the tests and `make run` then use it (unless ruled out)."""
    assert NATIVE is not None or os.environ.get("OPENCBR_LISTING") == "python"


@needs_native
def test_the_warmers_walk_in_c_is_the_walks_order(tmp_path):
    """MetadataWarmer's walk in C lists the directories in the order the walk enters them (never through
    a symlink, not into another device's) and lstat's every entry."""
    root = _odd_tree(tmp_path / "t")
    walk = list(TreeWalker(root, lambda *a: None, prefetch=0))
    dirs = [it.path for it in walk if stat.S_ISDIR(it.st.st_mode)]
    entries, visited = NATIVE.warm(os.fsencode(root), os.lstat(root).st_dev, True)
    assert visited == dirs and entries == len(walk) - 1
    assert NATIVE.warm(os.fsencode(root), os.lstat(root).st_dev + 1, True) == (len(os.listdir(root)), [b""])


@needs_native
@pytest.mark.parametrize("threads", [2, 8])
def test_the_warmers_threads_list_every_directory_once_and_no_other(tmp_path, threads):
    """With threads, the warmer lists each directory of the walk exactly once (the order is the walk's
    only as far as the threads keep pace), lstat's every entry, and enters no symlink and no other device."""
    root = _odd_tree(tmp_path / "t")
    for i in range(40):  # (wide and deep enough that the threads overlap)
        os.makedirs(root / f"w{i:02d}" / "x" / "y")
        (root / f"w{i:02d}" / "x" / "f").write_bytes(b"f")
    walk = list(TreeWalker(root, lambda *a: None, prefetch=0))
    dirs = [it.path for it in walk if stat.S_ISDIR(it.st.st_mode)]
    entries, visited = NATIVE.warm(os.fsencode(root), os.lstat(root).st_dev, True, threads)
    assert sorted(visited) == sorted(dirs) and len(visited) == len(set(visited)) and entries == len(walk) - 1
    assert visited[0] == b""
    assert NATIVE.warm(os.fsencode(root), os.lstat(root).st_dev + 1, True, threads) == (len(os.listdir(root)), [b""])


def _ahead_walk(root, **kw) -> tuple[list, TreeWalker]:
    """An incremental walk (warm: an Ahead) whose threads have kept a listing before the walk asks for
    its first: at nice 19 on a busy machine they may otherwise start after a small tree's walk is over."""
    import time

    w = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True, warm=True, **kw)
    it = iter(w)
    items = [next(it)]  # (the root: the Ahead runs from here)
    deadline = time.monotonic() + 10
    while w._ahead.stats()[3] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    items += list(it)
    return [(i.path, i.abspath, tuple(v for n, v in enumerate(i.st) if n != stat.ST_ATIME)) for i in items], w


@needs_native
@pytest.mark.parametrize("threads,held", [(1, 16384), (8, 16384), (3, 2)])
def test_an_incremental_walk_takes_its_listings_from_its_ahead(tmp_path, monkeypatch, threads, held):
    """The listings an Ahead makes on its threads are the walk's own (the same walk as without it), taken
    by the walk, each directory once; with room for only a couple of entries kept, what is kept stays
    bounded (the threads go on listing for the caches only, and the walk lists those directories itself)."""
    root = _odd_tree(tmp_path / "t")
    for i in range(30):
        os.makedirs(root / f"w{i:02d}" / "x" / "y")
        (root / f"w{i:02d}" / "x" / "f").write_bytes(b"f" * i)
    monkeypatch.setattr(TreeWalker, "AHEAD_THREADS", threads)
    monkeypatch.setattr(TreeWalker, "MAX_PREFETCH_ENTRIES", held)
    plain = [(it.path, it.abspath, tuple(v for i, v in enumerate(it.st) if i != stat.ST_ATIME))
             for it in TreeWalker(root, lambda *a: None, prefetch=0)]
    got, w = _ahead_walk(root)
    assert got == plain
    dirs = sum(1 for _p, a, st in plain if stat.S_ISDIR(st[stat.ST_MODE]))
    hits, misses, dropped, peak = w.ahead_stats
    assert hits + misses == dirs and hits > 0
    largest = max(len(os.listdir(os.path.join(root, os.fsdecode(p)))) for p, a, st in plain if stat.S_ISDIR(st[stat.ST_MODE]))
    # (a listing is kept while fewer than `held` entries are, and only one of `held` entries at most: a
    # bigger directory is listed for the caches only, the walk lists it again itself)
    assert peak < 2 * held
    if held < largest:
        assert misses > 0


def _kept(ahead, entries: int) -> None:
    """Wait until ``ahead`` has kept ``entries`` entries' listings (its threads list a small tree at once)."""
    import time

    deadline = time.monotonic() + 10
    while ahead.stats()[3] < entries and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ahead.stats()[3] >= entries


@needs_native
def test_a_listing_kept_ahead_serves_only_the_directory_the_walk_checked(tmp_path):
    """A directory swapped for another one after the Ahead listed it: asked for the new one (its device
    and inode, as the parent's listing now says), the walk does not get the old listing but lists it
    itself; asked for the one listed, it gets that listing (of a directory that is still in the tree)."""
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "old").write_bytes(b"old")
    (root / "b").mkdir()

    def names(want, ahead):
        status, got, _problems, _n = NATIVE.list_dir(os.fsencode(root / "a"), False, (want.st_dev, want.st_ino),
                                                     b"a/", os.fsencode(root / "a") + b"/", (), 0, 0, ahead)
        return status, [p for p, *_ in got or []]

    ahead = NATIVE.Ahead(os.fsencode(root), os.lstat(root).st_dev, 2, 100)
    try:
        _kept(ahead, 3)  # (root: a, b; a: old)
        (root / "a").rename(root / "a.orig")
        (root / "a").mkdir()
        (root / "a" / "new").write_bytes(b"new")
        assert names(os.lstat(root / "a"), ahead) == (0, [b"a/new"])
        assert ahead.stats()[:2] == (0, 1)  # (a miss: the kept listing was of another directory)
    finally:
        ahead.close()
    ahead = NATIVE.Ahead(os.fsencode(root), os.lstat(root).st_dev, 2, 100)
    try:
        _kept(ahead, 5)  # (root: a, a.orig, b; a: new; a.orig: old)
        listed = os.lstat(root / "a")
        (root / "a").rename(root / "a.new")
        (root / "a").symlink_to(root / "a.orig")
        assert names(listed, ahead) == (0, [b"a/new"])  # (the one listed, which is a.new in the tree now)
        assert ahead.stats()[:2] == (1, 0)
    finally:
        ahead.close()
    with pytest.raises(TypeError):
        NATIVE.list_dir(os.fsencode(root), True, None, b"", os.fsencode(root) + b"/", (), 0, 0, object())


@needs_native
def test_an_ahead_never_lists_through_a_symlink_or_out_of_the_tree(tmp_path):
    """Directories swapped for symlinks out of the tree while an incremental walk runs: nothing out of the
    tree is ever listed (the Ahead opens directories beneath the root without following symlinks), and a
    symlink to a directory in the tree is not entered either."""
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "shadow").write_bytes(b"SECRET")
    (outside / "shadow").write_bytes(b"SECRET")
    root = tmp_path / "t"
    for d in ("a/b", "c/d", "e"):
        (root / d).mkdir(parents=True)
    (root / "a" / "b" / "mine").write_bytes(b"mine")
    (root / "e" / "to-outside").symlink_to(outside)
    (root / "to-a").symlink_to("a")
    seen = []
    w = TreeWalker(root, lambda *a: None, prefetch=4, adaptive=True, warm=True)
    for item in w:
        seen.append(item.path)
        if item.path == b"":  # (its threads have kept a listing: see _ahead_walk)
            _kept(w._ahead, 1)
        if item.path == b"a":  # (the Ahead may have listed a and a/b already, or not)
            (root / "a").rename(root / "a.orig")
            (root / "a").symlink_to(outside)
    assert not [p for p in seen if b"shadow" in p or p.startswith(b"to-a/") or p.startswith(b"e/to-outside/")]
    assert {b"", b"a", b"c", b"c/d", b"e", b"e/to-outside", b"to-a"} <= set(seen)
    assert w.ahead_stats is not None and w.ahead_stats[0] > 0


@needs_native
def test_an_aheads_threads_run_behind_the_backup(tmp_path):
    """As the warmer they replace, an Ahead's threads run at nice 19 (only on a core the backup leaves
    idle), and close() ends them."""
    import time

    def nice_19_threads() -> int:
        n = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    n += f.read().rsplit(")", 1)[1].split()[16] == "19"  # (field 19: nice)
            except FileNotFoundError:
                pass
        return n

    root = _odd_tree(tmp_path / "t")
    before = nice_19_threads()
    ahead = NATIVE.Ahead(os.fsencode(root), None, 3)
    try:
        deadline = time.monotonic() + 10
        while nice_19_threads() < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nice_19_threads() == before + 3
    finally:
        ahead.close()
    assert nice_19_threads() == before


@needs_native
def test_an_ahead_closed_while_it_is_asked_gives_way_to_the_walks_own_listings(tmp_path):
    """close() while another thread takes listings from it: that thread's listings are then its own
    (nothing freed under it), and a closed Ahead can be closed again."""
    import threading

    root = _odd_tree(tmp_path / "t")
    top = os.fsencode(root)
    expect = NATIVE.list_dir(top, True, None, b"", top + b"/", (), 0, 0)
    ahead = NATIVE.Ahead(top, None, 4)
    got, stop = [], threading.Event()

    def ask():
        while not stop.is_set():
            got.append(NATIVE.list_dir(top, True, None, b"", top + b"/", (), 0, 0, ahead))

    t = threading.Thread(target=ask)
    t.start()
    try:
        while len(got) < 50:
            os.sched_yield()
        ahead.close()
        n = len(got)
        while len(got) < n + 50:
            os.sched_yield()
    finally:
        stop.set()
        t.join()
    ahead.close()
    strip = lambda r: (r[0], [(p, a, tuple(v for i, v in enumerate(st) if i != stat.ST_ATIME)) for p, a, st, _m in r[1]], r[2], r[3])  # noqa: E731
    assert {repr(strip(r)) for r in got} == {repr(strip(expect))}
