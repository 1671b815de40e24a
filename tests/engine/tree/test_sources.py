"""A backup's two readers of small files -- the C extension's one call per batch (``_reading.read_small``)
and the Python reader used where it is not built -- give the same contents, CRC-32s, xattrs, warnings and
errors, on what trees hold (empty files, names that are not UTF-8, xattrs) and on what goes wrong between
the walk and the read (files that change, vanish, grow past the small-file limit, or are swapped for a
symlink, a fifo, a directory or another file; files the backup may not read)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from opencbr.engine import Repository
from opencbr.engine.tree import backup_tree, sources
from opencbr.engine.tree.bundle import SMALL_FILE
from opencbr.engine.tree.catalog import CatalogReader
from opencbr.engine.tree.chunker import DEFAULT_PARAMS, FileChunker, FileUnreadable
from opencbr.engine.tree.common import load_index
from opencbr.engine.tree.entry import DIR
from opencbr.engine.tree.sources import DirectorySource
from opencbr.engine.tree.walker import WalkItem
from opencbr.storage import open_store
from tests.support.engine import MASTER_KEY
from tests.support.engine_tree import new_repo, opens_seen

NATIVE = sources.native_reading()
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C reader is not built here")
LIMIT = 4096  # (a small-file limit the test files can grow past)


def _chunker() -> FileChunker:
    return FileChunker(DEFAULT_PARAMS, lambda data: hashlib.sha256(bytes(data)).digest())


def _item(root: bytes, name: bytes) -> WalkItem:
    ap = os.path.join(root, name)
    return WalkItem(name, ap, os.lstat(ap))


def _result(got) -> tuple:
    if isinstance(got, FileUnreadable):
        return ("unreadable", str(got), got.vanished)
    return ("read", dataclasses.asdict(got))


def _read_both(monkeypatch, root: bytes, items: list, limit: int = LIMIT) -> tuple[list, list]:
    source = DirectorySource(root)
    try:
        native = [_result(r) for r in source.read_small(_chunker(), items, limit)]
        with monkeypatch.context() as m:
            m.setattr(sources, "_native_reading", None)
            python = [_result(r) for r in source.read_small(_chunker(), items, limit)]
    finally:
        source.close()
    return native, python


def _set_xattrs(path: bytes, pairs: dict) -> bool:
    try:
        for k, v in pairs.items():
            os.setxattr(path, k, v)
    except OSError:
        return False
    return True


def _hostile(tmp_path) -> tuple[list, dict]:
    """Items walked (lstat'ed) before the files were changed under them; what each should read as."""
    root = os.fsencode(tmp_path)
    files = {b"plain": b"hello" * 100, b"empty": b"", b"caf\xe9-\xff": b"not UTF-8", b"xattrs": b"with xattrs",
             b"shrinks": b"x" * 3000, b"grows": b"y" * 100, b"emptied": b"z" * 50, b"outgrows": b"w" * 100,
             b"vanishes": b"v", b"to-symlink": b"s", b"to-fifo": b"f", b"to-dir": b"d", b"to-other": b"o"}
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    many = {f"user.{c * 60}": c.encode() * 10 for c in "abcdefgh"}  # (names longer than a first 256-byte list)
    has_xattrs = _set_xattrs(os.path.join(root, b"xattrs"), {"user.zeta": b"1", "user.alpha": b"", **many})
    items = [_item(root, name) for name in files]
    p = lambda n: os.path.join(root, n)  # noqa: E731
    with open(p(b"shrinks"), "r+b") as f:
        f.truncate(1000)
    with open(p(b"grows"), "ab") as f:
        f.write(b"more")
    with open(p(b"emptied"), "r+b") as f:
        f.truncate(0)
    with open(p(b"outgrows"), "ab") as f:
        f.write(b"W" * LIMIT)
    os.unlink(p(b"vanishes"))
    os.unlink(p(b"to-symlink"))
    os.symlink(b"plain", p(b"to-symlink"))
    os.unlink(p(b"to-fifo"))
    os.mkfifo(p(b"to-fifo"))
    os.unlink(p(b"to-dir"))
    os.mkdir(p(b"to-dir"))
    os.rename(p(b"plain"), p(b"to-other.tmp"))  # (keeps "plain"'s inode busy: "to-other" gets another)
    # (the old "to-other" is kept until the new one exists: unlinked first, its inode number could be the
    # new file's, and a file of the same inode, type and size is not one that was replaced -- seen once)
    os.rename(p(b"to-other"), p(b"to-other.old"))
    with open(p(b"to-other"), "wb") as f:
        f.write(b"o")
    os.unlink(p(b"to-other.old"))
    os.rename(p(b"to-other.tmp"), p(b"plain"))
    for name in (b"shrinks", b"grows", b"emptied", b"outgrows"):  # (whatever the clock's resolution)
        st = os.lstat(p(name))
        os.utime(p(name), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    return items, {"has_xattrs": has_xattrs, "many": many}


@needs_native
def test_both_readers_read_a_hostile_batch_alike(tmp_path, monkeypatch):
    items, info = _hostile(tmp_path)
    native, python = _read_both(monkeypatch, os.fsencode(tmp_path), items)
    assert native == python
    by_name = dict(zip([it.path for it in items], native, strict=True))
    changed = "changed while it was being read (stored as read)"

    def read(name):
        kind, d = by_name[name]
        assert kind == "read", (name, d)
        return d

    assert read(b"plain")["data"] == b"hello" * 100 and read(b"plain")["warning"] is None
    assert read(b"caf\xe9-\xff")["data"] == b"not UTF-8"
    assert read(b"empty")["data"] is None and read(b"empty")["size"] == 0 and read(b"empty")["crc"] is None
    assert read(b"shrinks")["data"] == b"x" * 1000 and read(b"shrinks")["warning"] == changed
    assert read(b"grows")["data"] == b"y" * 100 + b"more" and read(b"grows")["warning"] == changed
    assert read(b"emptied")["data"] is None and read(b"emptied")["warning"] == changed
    outgrown = read(b"outgrows")  # (stored on its own, as a file past the limit)
    assert outgrown["data"] is None and outgrown["size"] == 100 + LIMIT and len(outgrown["chunks"]) == 1
    if info["has_xattrs"]:
        want = sorted([(b"user.zeta", b"1"), (b"user.alpha", b""), *((k.encode(), v) for k, v in info["many"].items())])
        assert read(b"xattrs")["xattrs"] == want and read(b"xattrs")["xattr_problems"] == []
    assert by_name[b"vanishes"] == ("unreadable", "vanished during the backup", True)
    for name in (b"to-symlink", b"to-fifo", b"to-dir"):
        assert by_name[name] == ("unreadable", "replaced by another file during the backup", True)
    # another regular file renamed over it (a file saved anew): that one is read, with its own stat
    assert read(b"to-other")["data"] == b"o"
    assert read(b"to-other")["warning"] == "replaced by another file during the backup (the file there when it " \
                                           "was read is stored)"


@needs_native
@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"), reason="no such sysfs file")
def test_both_readers_warn_alike_when_a_read_is_short_of_the_size(monkeypatch):
    """A sysfs attribute says 4,096 bytes and reads as fewer: the short read's warning, the same from both."""
    item = WalkItem(b"enabled", b"/sys/kernel/mm/transparent_hugepage/enabled",
                    os.lstat("/sys/kernel/mm/transparent_hugepage/enabled"))
    native, python = _read_both(monkeypatch, b"/sys/kernel/mm/transparent_hugepage", [item], SMALL_FILE)
    assert native == python
    kind, d = native[0]
    assert kind == "read" and 0 < len(d["data"]) < 4096
    assert d["warning"] == "changed size while it was being read (stored as read)"


@pytest.mark.timeout(60)
def test_a_file_swapped_for_a_fifo_is_reported_not_waited_on(tmp_path):
    """Opening a fifo for reading waits for a writer: the reader opens without blocking, and the check
    that it is still the file the walk saw says it was replaced."""
    root = os.fsencode(tmp_path)
    with open(os.path.join(root, b"f"), "wb") as f:
        f.write(b"data")
    item = _item(root, b"f")
    os.unlink(item.abspath)
    os.mkfifo(item.abspath)
    with pytest.raises(FileUnreadable, match="replaced by another file"):
        _chunker().read_file(item.abspath, item.st, SMALL_FILE)


_UNREADABLE = """
import json, os, sys
from opencbr.engine.tree import sources
from opencbr.engine.tree.chunker import DEFAULT_PARAMS, FileChunker
from opencbr.engine.tree.entry import DIR
from opencbr.engine.tree.sources import DirectorySource
from opencbr.engine.tree.walker import WalkItem
items = [WalkItem(n.encode(), n.encode(), os.lstat(n)) for n in sys.argv[1:]]
out = {}
for name, native in (("c", sources.native_reading()), ("python", None)):
    sources._native_reading = native
    got = DirectorySource(b".").read_small(FileChunker(DEFAULT_PARAMS, lambda d: b""), items, 65536)
    out[name] = [str(g) if isinstance(g, Exception) else g.data.decode() for g in got]
print(json.dumps(out))
"""


@needs_native
def test_both_readers_report_files_they_may_not_read_alike(tmp_path):
    """As root without the capabilities that bypass file permissions (a subprocess under setpriv): a file
    it may not read is "cannot open: Permission denied" from both readers."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv")
    (tmp_path / "ok").write_text("readable")
    (tmp_path / "secret").write_text("not for you")
    os.chmod(tmp_path / "secret", 0o000)
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(["setpriv", "--bounding-set", drop, "--inh-caps", drop, sys.executable, "-c", _UNREADABLE,
                           "ok", "secret"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["c"] == out["python"] == ["readable", f"cannot open: {os.strerror(13)}"]  # EACCES


def _records_and_refs(repo, backup_id: str) -> tuple[list[bytes], bytes]:
    cs = repo.chunks
    return [bytes(r) for r in CatalogReader(cs, load_index(cs, backup_id)).records()], bytes(cs.read_manifest(backup_id).refs)


@needs_native
def test_a_backup_is_the_same_with_either_reader(tmp_path, monkeypatch):
    """The same tree backed up into two copies of one repository (same keys), once with each reader: the
    same catalog records and the same chunks."""
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 7}" / ("caf\xe9" if i % 11 == 0 else "sub")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(hashlib.sha256(b"%d" % i).digest() * (i * 7 % 400) + (b"tail" if i % 5 else b""))
    (src / "empty").write_bytes(b"")
    (src / "big").write_bytes(os.urandom(SMALL_FILE * 3))
    _set_xattrs(os.fsencode(src / "d0" / "sub" / "f7"), {"user.k": b"v"})
    repo = new_repo(tmp_path, True, "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    twin = Repository.open(open_store((tmp_path / "two").as_uri()), "vaults/v1", MASTER_KEY)
    res = backup_tree(repo, src, backup_id="b1", meta={})
    monkeypatch.setattr(sources, "_native_reading", None)
    res2 = backup_tree(twin, src, backup_id="b1", meta={})
    assert not res.partial and res.warnings == res2.warnings == [] and res.files == res2.files == 302
    assert _records_and_refs(repo, "b1") == _records_and_refs(twin, "b1")


def test_a_reader_that_is_not_the_expected_build_is_not_used(monkeypatch):
    """A .so of another version of _reading.c (left by an older install), or one that does not read as
    Python does, is not used: small files are read in Python."""
    import types

    monkeypatch.setitem(sys.modules, "opencbr.engine.tree._reading", types.SimpleNamespace(ABI=0))
    assert sources._load_native_reading() is None
    wrong = types.SimpleNamespace(ABI=sources._READING_ABI, read_small=lambda items, limit, root_fd: [(b"", 0, 0, None)])
    monkeypatch.setitem(sys.modules, "opencbr.engine.tree._reading", wrong)
    assert sources._load_native_reading() is None
    monkeypatch.setenv("OPENCBR_READING", "python")
    monkeypatch.delitem(sys.modules, "opencbr.engine.tree._reading")
    assert sources._load_native_reading() is None


@pytest.mark.skipif(not (shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
                         and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
                         and os.path.exists("/usr/include/zlib.h")),
                    reason="no C compiler, Python or zlib headers here: the optional extension is not built")
def test_the_extension_is_built_where_it_can_be():
    """`make venv` builds it in place next to sources.py where a compiler and the headers are (and it is
    used unless ruled out)."""
    assert NATIVE is not None or os.environ.get("OPENCBR_READING") == "python"


@pytest.mark.parametrize("reader", ["c", "python"])
def test_a_directory_swapped_for_a_symlink_after_the_listing_leads_no_open_out_of_the_tree(tmp_path, reader,
                                                                                          monkeypatch):
    """An open is itself an action (a device's driver acts on it): a file whose directory was swapped for a
    symlink after the walk listed it is not opened through that symlink, by either reader, small or big."""
    if reader == "c" and NATIVE is None:
        pytest.skip("the C reader is not built here")
    if reader == "python":
        monkeypatch.setattr(sources, "_native_reading", None)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    for name, size in ((b"small", 10), (b"big", 4 * SMALL_FILE)):
        (root / "d" / os.fsdecode(name)).write_bytes(b"x" * size)
        (outside / os.fsdecode(name)).write_bytes(b"y" * size)
    items = [_item(os.fsencode(root), b"d/small"), _item(os.fsencode(root), b"d/big")]
    os.rename(root / "d", root / "d.moved")
    os.symlink(outside, root / "d")
    seen = opens_seen(os.fsencode(outside))
    source = DirectorySource(os.fsencode(root))
    try:
        got = [_result(r) for r in source.read_small(_chunker(), items[:1], SMALL_FILE)]
        try:
            source.read_file(_chunker(), items[1], SMALL_FILE)
        except FileUnreadable as e:
            got.append(_result(e))
    finally:
        source.close()
    assert not seen(), "a file out of the tree was opened"
    assert got == [("unreadable", "replaced by another file during the backup", True)] * 2


def test_an_entry_whose_directory_was_swapped_has_nothing_read_out_of_the_tree(tmp_path):
    """An incremental walk reads a changed symlink's target and a directory's xattrs when it records
    them: by name in their directory reopened below the root, so a directory above swapped for a symlink
    since the listing gives an error, never the target or xattrs of what lies out of the tree."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    os.symlink("mine", root / "d" / "link")
    (root / "d" / "sub").mkdir()
    (outside / "sub").mkdir(parents=True)
    os.symlink("/secret/target", outside / "link")
    os.setxattr(outside / "sub", "user.secret", b"out of the tree")
    link, sub = _item(os.fsencode(root), b"d/link"), _item(os.fsencode(root), b"d/sub")
    source = DirectorySource(os.fsencode(root))
    try:
        assert source.readlink(link) == b"mine"
        os.rename(root / "d", root / "d.moved")
        os.symlink(outside, root / "d")
        with pytest.raises(OSError, match="replaced during the backup"):
            source.readlink(link)
        warnings = []
        e = source.entry(sub, DIR, lambda *w: warnings.append(w))
    finally:
        source.close()
    assert e.xattrs == [] and len(warnings) == 1 and "replaced during the backup" in warnings[0][1]


_DIR_XATTRS = """
import json, os, sys
from opencbr.engine.tree import sources
from opencbr.engine.tree.entry import DIR
from opencbr.engine.tree.sources import DirectorySource
from opencbr.engine.tree.walker import WalkItem
items = [WalkItem(n.encode(), n.encode(), os.lstat(n)) for n in sys.argv[1:]]
out = {}
for name, native in (("c", sources.native_reading()), ("python", None)):
    sources._native_reading = native
    source = DirectorySource(b".")
    got = []
    for item in items:
        warnings = []
        e = source.entry(item, DIR, lambda *w: warnings.append(w[1]))
        got.append([[k.decode(), v.hex()] for k, v in e.xattrs] + warnings)
    source.close()
    out[name] = got
print(json.dumps(out))
"""


def _dir_xattrs_both(cwd, names: list[str], drop_caps: bool = False) -> dict:
    """Each directory's record (its xattrs, then its warnings) as sources.entry makes it with each reader, in a
    fresh interpreter (``drop_caps``: root without the capabilities that bypass file permissions)."""
    cmd = [sys.executable, "-c", _DIR_XATTRS, *names]
    if drop_caps:
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", "--bounding-set", drop, "--inh-caps", drop, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_native
def test_a_changed_directorys_xattrs_are_read_alike_by_both_readers(tmp_path):
    """An incremental backup records a changed directory's xattrs anew: the C reader reads them in one call
    (through a descriptor of the directory), with the same names, values and order as Python."""
    (tmp_path / "d" / "deeper").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    if not _set_xattrs(os.fsencode(tmp_path / "d" / "deeper"), {"user.zeta": b"z", "user.alpha": b"", "user.b": b"\x00\xff"}):
        pytest.skip("no user xattrs on this file system")
    out = _dir_xattrs_both(tmp_path, ["d/deeper", "plain"])
    assert out["c"] == out["python"]
    assert out["c"][0] == [["user.alpha", ""], ["user.b", "00ff"], ["user.zeta", "7a"]]
    assert out["c"][1] == []


@needs_native
def test_a_directory_that_is_not_the_one_listed_has_no_xattrs_read(tmp_path, monkeypatch):
    """A directory replaced by another one, or by a symlink to one, after the listing: nothing of what is
    there now is recorded (the C reader checks the directory it opened is the one the walk saw)."""
    def by_path(*_a):
        raise AssertionError("a directory's xattrs read in Python where the C reader is built")

    monkeypatch.setattr(DirectorySource, "_xattrs_of", by_path)
    root = tmp_path / "root"
    for name in ("swapped", "linked"):
        (root / name).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    items = {n: _item(os.fsencode(root), n.encode()) for n in ("swapped", "linked")}
    os.rename(root / "swapped", root / "old")
    (root / "swapped").mkdir()
    os.rmdir(root / "linked")
    os.symlink(tmp_path / "elsewhere", root / "linked")
    for d in (root / "swapped", tmp_path / "elsewhere"):
        if not _set_xattrs(os.fsencode(d), {"user.secret": b"not the listed directory"}):
            pytest.skip("no user xattrs on this file system")
    source = DirectorySource(os.fsencode(root))
    try:
        for item in items.values():
            warnings: list = []
            e = source.entry(item, DIR, lambda *w, out=warnings: out.append(w))
            assert e.xattrs == [] and len(warnings) == 1 and "replaced during the backup" in warnings[0][1]
    finally:
        source.close()


@needs_native
def test_a_directory_that_may_be_searched_not_read_has_its_xattrs_read_as_in_python(tmp_path):
    """Without read permission on a directory (root without its capabilities, under setpriv) the C reader
    cannot open it to read its xattrs: it reads them by path as Python does, with the same outcome."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv")
    (tmp_path / "closed").mkdir()
    if not _set_xattrs(os.fsencode(tmp_path / "closed"), {"user.k": b"v"}):
        pytest.skip("no user xattrs on this file system")
    os.chmod(tmp_path / "closed", 0o311)
    out = _dir_xattrs_both(tmp_path, ["closed"], drop_caps=True)
    assert out["c"] == out["python"]
    assert out["c"][0] == [f"cannot read xattr user.k: {os.strerror(13)}"]  # listed, its value refused


def test_a_long_path_that_climbs_out_of_the_root_is_refused_by_both_readers(tmp_path, monkeypatch):
    """A path too long for openat2 is opened a component at a time: a ".." among them must not climb out
    of the root there either (the walk never makes one; the readers refuse it all the same)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    down = "d" * 200
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(21):
        os.mkdir(down, dir_fd=fd)
        fd, up = os.open(down, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(up)
    os.close(fd)
    outside.mkdir()
    (outside / "secret").write_bytes(b"not below the root")
    rel = "/".join([down] * 21 + [".."] * 22) + "/outside/secret"
    assert len(rel) > 4096
    item = WalkItem(os.fsencode(rel), os.fsencode(outside / "secret"), os.lstat(outside / "secret"))
    native, python = _read_both(monkeypatch, os.fsencode(root), [item])
    assert native == python == [("unreadable", "replaced by another file during the backup", True)]
