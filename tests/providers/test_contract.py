"""What every provider promises the services (opencbr.providers.base), checked on each provider of
conftest.KITS: what it declares it can do, it does; what it may not use, it refuses."""

from __future__ import annotations

import os

import pytest

from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter
from opencbr.providers.base import Opened, PathSwapped, Provider, ReadView

DISK_DATA = os.urandom(256 * 1024)


def _disk(kit, rel: str = "d/disk.img") -> str:
    kit.write(rel, DISK_DATA)
    return kit.path(rel)


def test_it_offers_the_whole_interface(kit):
    p = kit.provider
    assert isinstance(p, Provider) and p.name
    with p.open(R.DISK, _disk(kit)) as opened:
        assert isinstance(opened, Opened)
        view = p.read_view([opened], server_running=False)
        assert isinstance(view, ReadView)
        view.close()


# ---------------------------------------------------------------------------------------- inventory
def test_paths_are_made_normal_before_anything_is_looked_up(kit):
    p = kit.provider
    assert p.normal_path("//srv/./a/../a/fs/") == "/srv/a/fs"
    for wrong in ("relative/path", "", None, "/a\x00b"):
        with pytest.raises(InvalidParameter):
            p.normal_path(wrong)
    assert p.ancestors("/srv/a/fs") == ["/", "/srv", "/srv/a"]


def test_only_allowed_places_may_be_named(kit):
    kit.provider.check_allowed(kit.path("d/disk.img"))
    with pytest.raises(InvalidParameter, match="outside"):
        kit.provider.check_allowed(kit.outside_path("disk.img"))


def test_the_state_of_a_path_for_something_new(kit):
    p = kit.provider
    kit.mkdir("empty")
    _disk(kit, "full/disk.img")
    missing = p.path_state(kit.path("full/new.img"))
    assert (missing.exists, missing.parent_is_directory) == (False, True)
    assert not p.path_state(kit.path("nowhere/new.img")).parent_is_directory
    empty, full = p.path_state(kit.path("empty")), p.path_state(kit.path("full"))
    assert empty.exists and empty.is_directory and empty.empty_directory
    assert full.is_directory and not full.empty_directory
    disk = p.path_state(kit.path("full/disk.img"))
    assert disk.exists and not disk.is_directory


# ---------------------------------------------------------------------------------------- probe
def test_a_probe_finds_the_resource_and_says_what_it_is(kit):
    p = kit.provider
    disk = _disk(kit)
    kit.mkdir("fs")
    assert R.DISK in p.capabilities.resource_types and R.FILE_SYSTEM in p.capabilities.resource_types
    found = p.probe(R.DISK, disk)
    assert found.size == len(DISK_DATA) and found.identity
    tree = p.probe(R.FILE_SYSTEM, kit.path("fs"))
    assert tree.size == 0 and tree.identity and tree.identity != found.identity
    assert p.present(R.DISK, disk) and p.present(R.FILE_SYSTEM, kit.path("fs"))
    assert not p.present(R.DISK, kit.path("gone.img")) and not p.present(R.FILE_SYSTEM, kit.path("gone"))
    with pytest.raises(FileNotFoundError):
        p.probe(R.DISK, kit.path("gone.img"))
    with pytest.raises(PathSwapped):
        p.probe(R.FILE_SYSTEM, disk)  # the wrong kind


# ---------------------------------------------------------------------------------------- open
def test_an_open_is_the_registered_object_or_refused(kit):
    p = kit.provider
    disk = _disk(kit)
    identity = p.probe(R.DISK, disk).identity
    with p.open(R.DISK, disk, identity) as opened:
        assert opened.size() == len(DISK_DATA) and opened.identity() == identity
        assert os.pread(opened.fd, 16, 0) == DISK_DATA[:16]
    kit.replace("d/disk.img")
    with pytest.raises(PathSwapped, match="another"):
        p.open(R.DISK, disk, identity)
    with pytest.raises(PathSwapped):
        p.open(R.DISK, kit.outside_path("disk.img"))


def test_a_restore_writes_through_the_open(kit):
    p = kit.provider
    disk = _disk(kit)
    with p.open(R.DISK, disk, p.probe(R.DISK, disk).identity, write=True) as opened:
        os.pwrite(opened.fd, b"restored", 0)
        assert not opened.created
    assert kit.read("d/disk.img")[:8] == b"restored"


def test_a_read_view_holds_every_disk_at_one_point_in_time(kit):
    p = kit.provider
    disks = [_disk(kit, f"srv/disk{i}.img") for i in range(2)]
    for running in (False, True):
        with p.open(R.DISK, disks[0]) as first, p.open(R.DISK, disks[1]) as second:
            view = p.read_view([first, second], server_running=running)
            try:
                assert len(view.sources) == 2
                assert all(os.pread(fd, len(DISK_DATA), 0) == DISK_DATA for fd in view.sources)
                described = view.describe()
                assert described["method"] and described["note"]
                if not p.capabilities.freeze:  # nothing was quiesced: no claim beyond crash consistency
                    assert "application" not in described["note"]
            finally:
                view.close()


# ---------------------------------------------------------------------------------------- new resources
def test_a_new_disk_is_made_sized_and_removed_if_unfinished(kit):
    p = kit.provider
    if not p.capabilities.new_disks:
        pytest.skip(f"{p.name} makes no new disks")
    source = _disk(kit)
    os.chmod(source, 0o640)
    with p.open(R.DISK, kit.path("d/new.img"), create=True) as new:
        assert new.created
        new.set_size(1 << 20)
        assert new.size() == 1 << 20
        new.copy_permissions(source)
    assert os.stat(kit.path("d/new.img")).st_mode & 0o777 == 0o640
    with pytest.raises(FileExistsError):
        p.open(R.DISK, kit.path("d/new.img"), create=True)
    with p.open(R.DISK, kit.path("d/unfinished.img"), create=True) as unfinished:
        unfinished.remove_created()
    assert not kit.exists("d/unfinished.img")


def test_a_new_file_system_is_made_measured_and_removed_if_unfinished(kit):
    p = kit.provider
    if not p.capabilities.new_file_systems:
        pytest.skip(f"{p.name} makes no new file systems")
    with p.open(R.FILE_SYSTEM, kit.path("newfs"), create=True) as new:
        assert new.created and new.is_empty() and new.size() is None
        kit.write("newfs/a/file", b"x" * 1000)
        assert not new.is_empty()
        assert new.measure() == (1000, True)
        new.remove_created()
    assert not kit.exists("newfs")

