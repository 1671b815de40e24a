"""Directory trees for tests: build one with every kind of entry, and compare two trees entry by entry."""

from __future__ import annotations

import hashlib
import os
import random
import stat


def build_tree(root, seed: int = 1) -> str:
    """Regular files (text, random, empty, sparse), nested and empty directories, symlinks (relative,
    dangling), hard links, xattrs, a fifo, odd modes and times."""
    rng = random.Random(seed)
    root = str(root)
    os.makedirs(root, exist_ok=True)
    for d in ("docs", "src/pkg", "empty", "data/deep/er"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(30):
        d = rng.choice(["docs", "src/pkg", "data/deep/er", ""])
        p = os.path.join(root, d, f"f{i}.txt")
        with open(p, "wb") as f:
            f.write((f"line {i} " * rng.randint(1, 3000)).encode())
    with open(os.path.join(root, "data", "random.bin"), "wb") as f:
        f.write(rng.randbytes(3 * 1024 * 1024))
    open(os.path.join(root, "docs", "empty.txt"), "wb").close()
    with open(os.path.join(root, "data", "sparse.img"), "wb") as f:
        f.seek(8 * 1024 * 1024)
        f.write(b"end")
    os.link(os.path.join(root, "docs", "f1.txt") if os.path.exists(os.path.join(root, "docs", "f1.txt"))
            else os.path.join(root, "data", "random.bin"), os.path.join(root, "hardlink"))
    os.symlink("docs", os.path.join(root, "link-to-docs"))
    os.symlink("../missing/target", os.path.join(root, "dangling"))
    os.mkfifo(os.path.join(root, "pipe"))
    os.chmod(os.path.join(root, "data", "random.bin"), 0o600)
    os.chmod(os.path.join(root, "src", "pkg"), 0o700)
    try:
        os.setxattr(os.path.join(root, "docs"), "user.note", b"hello")
        os.setxattr(os.path.join(root, "data", "random.bin"), "user.kind", b"binary")
    except OSError:
        pass
    t = 1_600_000_000
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (t, t + rng.randrange(10**6)), follow_symlinks=False)
    return root


def snapshot(root) -> dict:
    """path -> what must survive a round trip: type, mode, owner, mtime, size, content hash, link target,
    xattrs, and hard-link grouping (as the sorted list of paths sharing an inode)."""
    root = str(root)
    out: dict = {}
    inodes: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            e = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if not stat.S_ISDIR(st.st_mode):
                e["mtime"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        h.update(b)
                e.update(size=st.st_size, sha256=h.hexdigest())
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            else:
                try:
                    e["xattrs"] = {k: os.getxattr(p, k) for k in sorted(os.listxattr(p))}
                except OSError:
                    e["xattrs"] = {}
            out[rel] = e
    for group in inodes.values():
        for rel in group:
            out[rel]["links"] = sorted(group)
    return out
