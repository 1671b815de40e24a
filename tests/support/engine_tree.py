"""Helpers for the tree engine tests: repositories on a local store, a source tree with every kind of
entry the engine handles, and a file-by-file comparison of two trees."""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import socket
import stat
from pathlib import Path

from opencbr.engine import Repository
from opencbr.engine.chunks.packs import pack_key
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.tree import ChunkParams, stat_path
from opencbr.engine.tree.catalog import CatalogWriter
from opencbr.engine.tree.dynamic_index import FORMAT, DynamicIndex
from opencbr.engine.tree.entry import FILE, Entry, encode
from opencbr.storage import open_store
from tests.support.engine import FAST_LOCKS, MASTER_KEY

# Small chunks so that small test files still span several chunks (the CDC path, not just one-chunk files).
SMALL_CHUNKS = ChunkParams(avg=16 << 10, min=4 << 10, max=64 << 10)
IS_ROOT = os.geteuid() == 0


def new_repo(tmp_path: Path, encrypted: bool = True, name: str = "store") -> Repository:
    store = open_store((tmp_path / name).as_uri())
    return Repository.create(store, "vaults/v1", MASTER_KEY if encrypted else None, encrypted=encrypted,
                             pack_size=1 << 20, lock_timing=FAST_LOCKS)


def _write(p: Path, data: bytes, mode: int = 0o644, mtime_ns: int | None = None) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, mode)
    if mtime_ns is not None:
        os.utime(p, ns=(mtime_ns - 10**9, mtime_ns))


def build_tree(root: Path, seed: int = 1) -> Path:
    """A tree with regular files of many sizes (0 B .. 300 KiB, several chunks), duplicates, a sparse
    file, hard links, symlinks (relative, absolute, dangling, to a directory), empty directories, a
    non-UTF-8 name, user xattrs, odd modes, a fifo and a socket; as root also other owners, a setuid
    file and a character device."""
    r = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    t = 1_650_000_000_123_456_789
    text = b"".join(b"line %d of some text, %s\n" % (i, r.choice([b"alpha", b"beta", b"gamma"]))
                    for i in range(20000))
    _write(root / "empty.txt", b"", 0o600, t)
    _write(root / "small.txt", b"hello world\n", 0o644, t + 1)
    _write(root / "docs" / "text.md", text[:100_000], 0o644, t + 2)
    _write(root / "docs" / "copy-of-text.md", text[:100_000], 0o640, t + 3)  # duplicate content
    _write(root / "bin" / "random.bin", r.randbytes(300_000), 0o755, t + 4)
    _write(root / "bin" / "ro.dat", r.randbytes(5000), 0o444, t + 5)
    _write(root / "deep" / "a" / "b" / "c" / "d" / "leaf.txt", b"leaf\n", 0o600, t + 6)
    for i in range(40):
        _write(root / "many" / f"f{i:03d}.txt", text[i * 100:i * 100 + r.randint(0, 3000)], 0o644, t + 7 + i)
    (root / "emptydir" / "nested-empty").mkdir(parents=True)
    os.chmod(root / "emptydir" / "nested-empty", 0o700)
    # sparse: 1 MiB hole, 64 KiB data, 2 MiB hole, 4 KiB data, trailing hole
    sp = root / "sparse.img"
    with open(sp, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(r.randbytes(64 << 10))
        f.seek(3 << 20)
        f.write(b"x" * 4096)
    os.utime(sp, ns=(t, t + 100))
    # hard links (one group of three)
    _write(root / "links" / "orig.txt", b"shared by three names\n" * 100, 0o644, t + 200)
    os.link(root / "links" / "orig.txt", root / "links" / "second.txt")
    os.link(root / "links" / "orig.txt", root / "docs" / "third-link.txt")
    # symlinks
    os.symlink("docs/text.md", root / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("../nowhere/missing", root / "dangling")
    os.symlink("deep/a", root / "dir-link")
    os.utime(root / "rel-link", ns=(t, t + 300), follow_symlinks=False)
    # a name that is not UTF-8
    _write(root / os.fsdecode(b"caf\xe9-latin1.txt"), b"latin-1 name\n", 0o644, t + 400)
    # xattrs
    os.setxattr(root / "small.txt", "user.comment", b"a comment")
    os.setxattr(root / "small.txt", "user.bin", bytes(range(256)))
    os.setxattr(root / "docs", "user.dirattr", b"on a directory")
    # fifo and socket
    os.mkfifo(root / "fifo", 0o620)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    if IS_ROOT:
        _write(root / "owned.txt", b"owned by someone else\n", 0o640, t + 500)
        os.chown(root / "owned.txt", 1234, 5678)
        os.chown(root / "many", 4321, 8765)
        _write(root / "setuid-bin", b"#!/bin/sh\n", 0o4755, t + 501)
        os.mknod(root / "nulldev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    # directory times last (creating entries changed them)
    for d, _, _ in sorted(os.walk(root), key=lambda x: -x[0].count("/")):
        os.utime(d, ns=(t + 1000, t + 2000))
    return root


def file_digest(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def snapshot(root: Path, *, atime: bool = False) -> dict[bytes, dict]:
    """Everything the restore must reproduce, per relative path (bytes)."""
    out: dict[bytes, dict] = {}
    broot = os.fsencode(root)
    inode_group: dict[int, bytes] = {}
    for dp, dns, fns in os.walk(broot):
        dns.sort()
        for n in sorted(dns + fns) + ([b""] if dp == broot else []):
            p = os.path.join(dp, n) if n else dp
            rel = os.path.relpath(p, broot)
            st = os.lstat(p)
            d = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "xattrs": sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                 for k in os.listxattr(p, follow_symlinks=False)),
            }
            if not stat.S_ISLNK(st.st_mode):
                d["mtime_ns"] = st.st_mtime_ns
                if atime and not stat.S_ISDIR(st.st_mode):  # (directory and symlink atimes are not kept)
                    d["atime_ns"] = st.st_atime_ns
            else:
                d["target"] = os.readlink(p)
                d["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                d["size"] = st.st_size
                d["sha256"] = p  # hashed below, after every lstat (reading a file changes its atime)
                d["sparse"] = st.st_blocks * 512 < st.st_size
                if st.st_nlink > 1:
                    # hard-link grouping: the first path (in walk order) of the inode's group
                    d["group"] = inode_group.setdefault(st.st_ino, rel)
                    d["nlink"] = st.st_nlink
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = st.st_rdev
            out[rel] = d
    for d in out.values():
        if "sha256" in d:
            d["sha256"] = file_digest(d["sha256"])
    return out


def assert_same_tree(src: Path, dst: Path, *, atime: bool = False) -> None:
    a, b = snapshot(src, atime=atime), snapshot(dst, atime=atime)
    assert sorted(a) == sorted(b), f"paths differ: only in source {sorted(set(a) - set(b))[:10]}, " \
                                   f"only in restore {sorted(set(b) - set(a))[:10]}"
    for k in a:
        assert a[k] == b[k], f"{k!r}: source {a[k]} != restored {b[k]}"


def flip_byte_in_chunk_of(repo, path_in_backup: str, backup_id: str, store_root: Path) -> None:
    """Damage the pack holding the first chunk of ``path_in_backup`` in place (one bit, mid-chunk)."""
    e = stat_path(repo, backup_id, path_in_backup)
    loc = repo.chunks.reader_index(refresh=True).lookup(e.chunks[0][0])
    p = store_root / "vaults" / "v1" / pack_key(loc.pack_id)
    raw = bytearray(p.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x40
    p.write_bytes(bytes(raw))


def forge_tree_backup(repo, backup_id: str, entries: list[Entry]) -> None:
    """Write a tree backup whose catalog holds exactly ``entries`` (a hand-made hostile catalog)."""
    session = WriteSession(repo.chunks)
    codec = repo.chunks.codec.clone()

    def put(data: bytes) -> bytes:
        d = codec.digest(data)
        session.put_chunk(data, d, codec)
        return d

    refs = bytearray()
    for e in entries:
        if e.type == FILE and e.size:
            data = b"x" * e.size
            e.chunks = [(put(data), e.size, 0)]
            refs += e.chunks[0][0]
    w = CatalogWriter(put)
    for e in entries:
        w.add(encode(e), e.path)
    cat = w.finish()
    for c in cat:
        refs += c.digest
    header = {"type": "tree", "format": FORMAT, "backup_id": backup_id, "meta": {}, "stats": {"total_bytes": 0}}
    session.commit(backup_id, header, bytes(refs), DynamicIndex(backup_id, header, cat).encode_payload())


def record_tree_scans(monkeypatch) -> list[bytes]:
    """The roots every TreeScanner starts on in this process from now on (the test's monkeypatch undoes it)."""
    from opencbr.engine.tree import walker

    started: list[bytes] = []
    real_start = walker.TreeScanner.start

    def start(self):
        started.append(self.root)
        return real_start(self)

    monkeypatch.setattr(walker.TreeScanner, "start", start)
    return started


def opens_seen(directory: bytes):
    """An inotify watch on ``directory``'s entries being opened; calling the result says whether one was."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, directory, 0x20) >= 0  # IN_OPEN

    def seen() -> bool:
        try:
            return bool(os.read(fd, 4096))
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
    return seen
