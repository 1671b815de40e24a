"""The local provider opens a resource's path safely every time: below the roots, through no symlink
(openat2, and the component-wise fallback), only the kind and the object that was registered; and the
engines work on what was opened, whatever happens to the path afterwards."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.tree import backup_tree, list_tree, restore_tree
from opencbr.providers.base import PathSwapped
from opencbr.providers.local.opened import DIRECTORY, DISK, identity_of, open_resource_path, size_of
from tests.support.engine_tree import new_repo


def _refused(*args, **kw) -> str:
    with pytest.raises(PathSwapped) as e:
        open_resource_path(*args, **kw).close()
    return str(e.value)


def test_a_symlink_at_or_above_the_path_is_refused(place, resolver):
    roots, outside = place
    r = (str(roots),)
    with open_resource_path(str(roots / "a" / "bd.img"), DISK, r) as opened:
        assert size_of(opened.fd) == 64 * 1024
    (roots / "a" / "bd.img").unlink()
    (roots / "a" / "bd.img").symlink_to(outside / "secret.img")
    assert "bd.img is a symbolic link" in _refused(str(roots / "a" / "bd.img"), DISK, r)
    (roots / "a" / "fs").rename(roots / "a" / "fs.orig")
    (roots / "a" / "fs").symlink_to(outside / "fs")
    assert "fs is a symbolic link" in _refused(str(roots / "a" / "fs"), DIRECTORY, r)
    (roots / "a").rename(roots / "a.orig")
    (roots / "a").symlink_to(outside)
    assert "a is a symbolic link" in _refused(str(roots / "a" / "fs"), DIRECTORY, r)
    assert "outside" in _refused(str(outside / "fs"), DIRECTORY, r)


def test_without_roots_no_component_may_be_a_symlink(place, resolver):
    roots, outside = place
    (roots / "link").symlink_to(roots / "a")
    assert "link is a symbolic link" in _refused(str(roots / "link" / "bd.img"), DISK, ())
    open_resource_path(str(roots / "a" / "bd.img"), DISK, ()).close()


def test_the_wrong_kind_is_refused_and_a_fifo_does_not_block(place, resolver):
    roots, _ = place
    os.mkfifo(roots / "a" / "pipe")
    assert "neither a regular file" in _refused(str(roots / "a" / "pipe"), DISK, (str(roots),))
    assert "not a directory" in _refused(str(roots / "a" / "bd.img"), DIRECTORY, (str(roots),))


def test_another_object_at_the_path_is_refused_a_changed_one_is_not(place):
    roots, _ = place
    r = (str(roots),)
    img, fs = roots / "a" / "bd.img", roots / "a" / "fs"
    with open_resource_path(str(img), DISK, r) as opened:
        disk_id = identity_of(opened.fd)
    with open_resource_path(str(fs), DIRECTORY, r) as opened:
        dir_id = identity_of(opened.fd)
    with open(img, "r+b") as f:  # written in place, grown: the same disk
        f.write(b"new data")
        f.truncate(128 * 1024)
    open_resource_path(str(img), DISK, r, disk_id).close()
    copy = roots / "a" / "copy.img"
    copy.write_bytes(img.read_bytes())
    os.replace(copy, img)
    assert "another file" in _refused(str(img), DISK, r, disk_id)
    fs.rename(roots / "a" / "fs.old")
    fs.mkdir()
    assert "another directory" in _refused(str(fs), DIRECTORY, r, dir_id)
    assert "now a directory" in _refused(str(fs), DIRECTORY, r, disk_id)


def test_created_objects_are_made_in_place_and_removed_only_if_still_ours(place, resolver):
    roots, _ = place
    r = (str(roots),)
    new = open_resource_path(str(roots / "a" / "new.img"), DISK, r, create=True)
    assert new.created and (roots / "a" / "new.img").exists()
    new.remove_created()
    new.close()
    assert not (roots / "a" / "new.img").exists()
    with pytest.raises(FileExistsError):
        open_resource_path(str(roots / "a" / "bd.img"), DISK, r, create=True)
    made = open_resource_path(str(roots / "a" / "newdir"), DIRECTORY, r, create=True)
    (roots / "a" / "newdir").rename(roots / "a" / "moved")
    (roots / "a" / "newdir").mkdir()  # someone else's now
    made.remove_created()
    made.close()
    assert (roots / "a" / "newdir").is_dir() and (roots / "a" / "moved").is_dir()


def test_the_tree_engine_reads_and_writes_what_was_opened(place, tmp_path):
    """A directory swapped after it was opened: backup and restore go on with the opened one."""
    roots, outside = place
    fs = roots / "a" / "fs"
    (fs / "mine.txt").write_bytes(b"mine\n")
    (outside / "fs" / "shadow").write_bytes(b"SECRET\n")
    repo = new_repo(tmp_path)
    with open_resource_path(str(fs), DIRECTORY, (str(roots),)) as opened:
        fs.rename(roots / "a" / "fs.orig")
        fs.symlink_to(outside / "fs")
        backup_tree(repo, str(fs), backup_id="b1", meta={}, root_fd=opened.fd)
    assert [e.name for e in list_tree(repo, "b1", "/")] == ["mine.txt"]
    target = roots / "a" / "target"
    target.mkdir()
    with open_resource_path(str(target), DIRECTORY, (str(roots),)) as opened:
        target.rename(roots / "a" / "target.orig")
        target.symlink_to(outside / "fs")
        restore_tree(repo, "b1", str(target), target_fd=opened.fd, allow_nonempty=True)
    assert sorted(os.listdir(outside / "fs")) == ["shadow"]
    assert (roots / "a" / "target.orig" / "mine.txt").read_bytes() == b"mine\n"


def test_without_a_file_system_id_the_inode_alone_tells_objects_apart(place):
    """A network file system has no id and another device number on each machine that mounts it."""
    roots, _ = place
    img = roots / "a" / "bd.img"
    with open_resource_path(str(img), DISK, (str(roots),)) as opened:
        seen_elsewhere = {**identity_of(opened.fd), "fsid": "0"}
    seen_elsewhere["dev"] += 1
    open_resource_path(str(img), DISK, (str(roots),), seen_elsewhere).close()
    assert "another file" in _refused(str(img), DISK, (str(roots),), {**seen_elsewhere, "ino": -1})
