"""Opening below a directory without following symlinks: paths longer than PATH_MAX, and a mode set on
an entry itself, never through a symlink swapped in for it."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from opencbr.system.beneath import PathSwapped, chmod_entry, open_at, walk_below

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


def _deep(root_fd: int, levels: int, name: str) -> str:
    """``levels`` directories named ``name`` one in the other below ``root_fd``; their relative path."""
    fd = os.dup(root_fd)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return "/".join([name] * levels)


def test_a_path_longer_than_path_max_is_opened_one_component_at_a_time(tmp_path):
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rel = _deep(root, 30, "d" * 200)
        assert len(rel) > PATH_MAX
        fd = open_at(root, rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert os.listdir(fd) == ["leaf"]
        finally:
            os.close(fd)
        os.close(open_at(root, rel + "/leaf", os.O_RDONLY))
        with pytest.raises(FileNotFoundError):
            open_at(root, rel + "/missing", os.O_RDONLY)
    finally:
        os.close(root)


def test_a_symlink_deep_in_a_long_path_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "leaf").write_text("not below the root")
    root_dir = tmp_path / "root"
    root_dir.mkdir()
    root = os.open(root_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rel = _deep(root, 30, "d" * 200)
        parent, _, last = rel.rpartition("/")
        pfd = open_at(root, parent, os.O_RDONLY | os.O_DIRECTORY)
        try:  # the last directory swapped for a symlink out of the root
            os.rename(last, last + ".moved", src_dir_fd=pfd, dst_dir_fd=pfd)
            os.symlink(tmp_path / "outside", last, dir_fd=pfd)
        finally:
            os.close(pfd)
        with pytest.raises(PathSwapped):
            open_at(root, rel + "/leaf", os.O_RDONLY)
    finally:
        os.close(root)


def test_chmod_entry_sets_the_mode_of_the_entry(tmp_path):
    os.mkfifo(tmp_path / "fifo", 0o600)
    (tmp_path / "file").write_text("x")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        chmod_entry(b"fifo", 0o4751, dfd)
        chmod_entry("file", 0o640, dfd)
    finally:
        os.close(dfd)
    assert stat.S_IMODE(os.lstat(tmp_path / "fifo").st_mode) == 0o4751
    assert stat.S_IMODE(os.lstat(tmp_path / "file").st_mode) == 0o640


def test_chmod_entry_never_sets_a_mode_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("someone else's")
    os.chmod(victim, 0o600)
    os.symlink(victim, tmp_path / "made")  # what was made here was swapped for a symlink
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as ei:
            chmod_entry(b"made", 0o666, dfd)
    finally:
        os.close(dfd)
    assert ei.value.errno == errno.ELOOP
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600


def test_walk_below_walks_as_fwalk_does(tmp_path):
    for d in ("a/b/c", "a/d", "e"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("a/f1", "a/b/c/f2", "e/f3", "f4"):
        (tmp_path / f).write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ours = sorted((top, sorted(dirs), sorted(files)) for top, dirs, files, _fd in walk_below(root))
        theirs = sorted((top, sorted(d for d in dirs if d != "link"), sorted(files + ["link"] * ("link" in dirs)))
                        for top, dirs, files, _fd in os.fwalk(".", dir_fd=root))
        assert ours == theirs and ("./a/b/c", [], ["f2"]) in ours  # (a link is not a subdirectory here)
        pruned = []
        for top, dirs, _files, _fd in walk_below(root):
            pruned.append(top)
            dirs[:] = [d for d in dirs if d != "a"]
        assert sorted(pruned) == [".", "./e"]
    finally:
        os.close(root)


def test_walk_below_opens_nothing_through_a_directory_swapped_for_a_symlink(tmp_path):
    from tests.support.engine_tree import opens_seen

    root_dir, outside = tmp_path / "root", tmp_path / "outside"
    (root_dir / "a").mkdir(parents=True)
    (outside / "secret").mkdir(parents=True)
    root = os.open(root_dir, os.O_RDONLY | os.O_DIRECTORY)
    seen = []
    try:
        for top, dirs, _files, _fd in walk_below(root):
            seen.append((top, list(dirs)))
            if top == ".":  # listed: now "a" becomes a link out of the tree
                os.rename(root_dir / "a", root_dir / "a.moved")
                os.symlink(outside, root_dir / "a")
                opened = opens_seen(os.fsencode(outside))
    finally:
        os.close(root)
    assert seen == [(".", ["a"])] and not opened(), "a directory out of the tree was opened"
