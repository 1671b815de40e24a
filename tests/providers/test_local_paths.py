"""The local provider opens a resource's path safely every time: below the roots, through no symlink
(openat2, and the component-wise fallback), only the kind and the object that was registered; and the
engines work on what was opened, whatever happens to the path afterwards."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.tree import backup_tree, list_tree, restore_tree
from opencbr.providers import beneath, local
from opencbr.providers.local import DIRECTORY, DISK, PathSwapped
from tests.engine.tree.conftest import new_repo


@pytest.fixture(params=["openat2", "openat-walk"])
def resolver(request, monkeypatch):
    """Both ways of resolving: the kernel's openat2, and one openat(O_NOFOLLOW) per component."""
    monkeypatch.setattr(beneath, "_openat2_missing", request.param == "openat-walk")
    return request.param


@pytest.fixture()
def place(tmp_path):
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    (roots / "a" / "fs").mkdir(parents=True)
    outside.mkdir()
    (roots / "a" / "bd.img").write_bytes(os.urandom(64 * 1024))
    (outside / "secret.img").write_bytes(b"SECRET" * 10000)
    (outside / "fs").mkdir()
    return roots, outside


def test_paths_compare_by_component_after_normalising():
    assert local.normal_path("//srv/./a/../a/fs/") == "/srv/a/fs"
    assert local.within("/srv/a/fs/sub", "/srv/a/fs") and local.within("/srv/a/fs", "/srv/a/fs")
    assert not local.within("/srv/a/fsx", "/srv/a/fs") and not local.overlaps("/srv/a/fsx", "/srv/a/fs")
    assert local.overlaps("/srv", "/srv/a/fs") and local.overlaps("/", "/srv")
    assert local.ancestors("/srv/a/fs") == ["/", "/srv", "/srv/a"]


def _refused(*args, **kw) -> str:
    with pytest.raises(PathSwapped) as e:
        local.open_resource_path(*args, **kw).close()
    return str(e.value)


def test_a_symlink_at_or_above_the_path_is_refused(place, resolver):
    roots, outside = place
    r = (str(roots),)
    with local.open_resource_path(str(roots / "a" / "bd.img"), DISK, r) as opened:
        assert local.size_of(opened.fd) == 64 * 1024
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
    local.open_resource_path(str(roots / "a" / "bd.img"), DISK, ()).close()


def test_the_wrong_kind_is_refused_and_a_fifo_does_not_block(place, resolver):
    roots, _ = place
    os.mkfifo(roots / "a" / "pipe")
    assert "neither a regular file" in _refused(str(roots / "a" / "pipe"), DISK, (str(roots),))
    assert "not a directory" in _refused(str(roots / "a" / "bd.img"), DIRECTORY, (str(roots),))


def test_another_object_at_the_path_is_refused_a_changed_one_is_not(place):
    roots, _ = place
    r = (str(roots),)
    img, fs = roots / "a" / "bd.img", roots / "a" / "fs"
    with local.open_resource_path(str(img), DISK, r) as opened:
        disk_id = local.identity_of(opened.fd)
    with local.open_resource_path(str(fs), DIRECTORY, r) as opened:
        dir_id = local.identity_of(opened.fd)
    with open(img, "r+b") as f:  # written in place, grown: the same disk
        f.write(b"new data")
        f.truncate(128 * 1024)
    local.open_resource_path(str(img), DISK, r, disk_id).close()
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
    new = local.open_resource_path(str(roots / "a" / "new.img"), DISK, r, create=True)
    assert new.created and (roots / "a" / "new.img").exists()
    new.remove_created()
    new.close()
    assert not (roots / "a" / "new.img").exists()
    with pytest.raises(FileExistsError):
        local.open_resource_path(str(roots / "a" / "bd.img"), DISK, r, create=True)
    made = local.open_resource_path(str(roots / "a" / "newdir"), DIRECTORY, r, create=True)
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
    with local.open_resource_path(str(fs), DIRECTORY, (str(roots),)) as opened:
        fs.rename(roots / "a" / "fs.orig")
        fs.symlink_to(outside / "fs")
        backup_tree(repo, str(fs), backup_id="b1", meta={}, root_fd=opened.fd)
    assert [e.name for e in list_tree(repo, "b1", "/")] == ["mine.txt"]
    target = roots / "a" / "target"
    target.mkdir()
    with local.open_resource_path(str(target), DIRECTORY, (str(roots),)) as opened:
        target.rename(roots / "a" / "target.orig")
        target.symlink_to(outside / "fs")
        restore_tree(repo, "b1", str(target), target_fd=opened.fd, allow_nonempty=True)
    assert sorted(os.listdir(outside / "fs")) == ["shadow"]
    assert (roots / "a" / "target.orig" / "mine.txt").read_bytes() == b"mine\n"


def test_point_in_time_views_read_the_opened_disks_and_leave_nothing_behind(place):
    roots, _ = place
    img = roots / "a" / "bd.img"
    with local.open_resource_path(str(img), DISK, (str(roots),)) as opened:
        views = local.point_in_time_views([opened], server_running=True)
        try:  # a clone where the file system can (XFS, btrfs), else the disk itself, read live
            assert views.method in ("reflink-snapshot", "live")
            assert os.pread(views.sources[0], 64 * 1024, 0) == img.read_bytes()
        finally:
            views.close()
    assert sorted(os.listdir(roots / "a")) == ["bd.img", "fs"]


def test_without_a_file_system_id_the_inode_alone_tells_objects_apart(place):
    """A network file system has no id and another device number on each machine that mounts it."""
    roots, _ = place
    img = roots / "a" / "bd.img"
    with local.open_resource_path(str(img), DISK, (str(roots),)) as opened:
        seen_elsewhere = {**local.identity_of(opened.fd), "fsid": "0"}
    seen_elsewhere["dev"] += 1
    local.open_resource_path(str(img), DISK, (str(roots),), seen_elsewhere).close()
    assert "another file" in _refused(str(img), DISK, (str(roots),), {**seen_elsewhere, "ino": -1})
