"""Trees deeper than a system call takes a path (PATH_MAX, 4096 bytes): backed up and restored whole,
with the C extensions and without them; and a path too long for a record is said, not a crash."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from opencbr.engine.tree import backup_tree, restore_tree, sources, walker
from opencbr.engine.tree.entry import MAX_PATH

NAME = "d" * 200
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _down(root: Path, levels: int) -> int:
    """``levels`` directories named NAME one in the other below ``root`` (made where missing); a
    descriptor of the deepest."""
    fd = os.open(root, _DIR)
    for _ in range(levels):
        try:
            os.mkdir(NAME, dir_fd=fd)
        except FileExistsError:
            pass
        sub = os.open(NAME, _DIR, dir_fd=fd)
        os.close(fd)
        fd = sub
    return fd


def _write(dfd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode, dir_fd=dfd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _state(root: Path) -> list:
    """Every entry below ``root`` (reached through descriptors, whatever the depth): path, type, mode,
    size, mtime, content digest or link target, xattrs, hard-link group."""
    out, groups = [], {}

    def visit(dfd: int, rel: str) -> None:
        for name in sorted(os.listdir(dfd)):
            st = os.lstat(name, dir_fd=dfd)
            path = f"{rel}/{name}"
            row = [path, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns]
            if stat.S_ISLNK(st.st_mode):
                out.append(row + [os.readlink(name, dir_fd=dfd)])
                continue
            fd = os.open(name, (_DIR if stat.S_ISDIR(st.st_mode) else os.O_RDONLY | os.O_NONBLOCK), dir_fd=dfd)
            try:
                row.append(sorted((k, os.getxattr(fd, k)) for k in os.listxattr(fd)))
                if stat.S_ISREG(st.st_mode):
                    row += [st.st_size, hashlib.sha256(os.read(fd, 1 << 20)).hexdigest(),
                            groups.setdefault(st.st_ino, path) if st.st_nlink > 1 else None]
                out.append(row)
                if stat.S_ISDIR(st.st_mode):
                    visit(fd, path)
            finally:
                os.close(fd)

    top = os.open(root, _DIR)
    try:
        visit(top, "")
    finally:
        os.close(top)
    return out


@pytest.fixture(params=["c", "python"])
def listing(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(walker, "_native_listing", None)
        monkeypatch.setattr(sources, "_native_reading", None)
    elif walker.native_listing() is None or sources.native_reading() is None:
        pytest.skip("the C extensions are not built")
    return request.param


def test_a_tree_deeper_than_path_max_is_backed_up_and_restored_whole(enc_repo, tmp_path, listing):
    src = tmp_path / "src"
    src.mkdir()
    deep = _down(src, 30)  # 30 x 201 bytes: a path of ~6 KB
    try:
        _write(deep, "leaf", b"deep data\n" * 1000)
        _write(deep, "small", b"x")
        os.link("small", "small-too", src_dir_fd=deep, dst_dir_fd=deep)
        os.symlink("../" * 3 + "elsewhere", "link", dir_fd=deep)
        os.mkfifo("fifo", 0o640, dir_fd=deep)
        os.setxattr(deep, "user.depth", b"30")
        os.fchmod(deep, 0o751)
    finally:
        os.close(deep)
    first = backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert not first.partial and first.warnings == []
    assert (first.files, first.dirs, first.symlinks, first.specials) == (3, 31, 1, 1)
    restore_tree(enc_repo, "b1", tmp_path / "out1")
    assert _state(tmp_path / "out1") == _state(src)

    deep = _down(src, 30)
    try:
        _write(deep, "leaf", b"changed\n" * 3000)
        _write(deep, "new", b"new file")
    finally:
        os.close(deep)
    second = backup_tree(enc_repo, src, backup_id="b2", meta={}, parent_backup_id="b1")
    assert not second.partial and second.warnings == [] and second.files == 4
    restore_tree(enc_repo, "b2", tmp_path / "out2")
    assert _state(tmp_path / "out2") == _state(src)


def test_a_path_too_long_for_a_record_is_a_warning(enc_repo, tmp_path):
    """A record holds a path of at most 65,535 bytes: a directory deeper than that is recorded, what it
    holds is not, and the backup says so (partial) instead of failing."""
    src = tmp_path / "src"
    src.mkdir()
    levels = MAX_PATH // (len(NAME) + 1) + 1
    deep = _down(src, levels)
    try:
        _write(deep, "lost", b"too deep to record")
    finally:
        os.close(deep)
    res = backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert res.partial and len(res.warnings) == 1 and "too deep" in res.warnings[0].message
    # the first directory whose children's paths might not fit is recorded, empty (and the root)
    cut = next(k for k in range(1, levels + 1) if k * (len(NAME) + 1) - 1 > MAX_PATH - 256)
    assert res.dirs == 1 + cut and res.files == 0 and len(res.warnings[0].path) == cut * (len(NAME) + 1)
    restore_tree(enc_repo, "b1", tmp_path / "out")
