"""What the agent may open: below its roots without following symlinks, and the devices its policy names."""

from __future__ import annotations

import os
import stat

import pytest

from opencbr.agent.confinement import Confinement, PathSwapped


@pytest.fixture
def tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "b" / "f").write_bytes(b"inside")
    (outside / "secret").write_bytes(b"secret")
    (root / "link_out").symlink_to(outside)
    (root / "a" / "file_link").symlink_to(outside / "secret")
    (root / "a" / "link_in").symlink_to(root / "a" / "b")  # even a link that stays inside is not followed
    return root, outside


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_files_below_a_root_open_and_nothing_else(tree):
    root, outside = tree
    c = Confinement([str(root)], [])
    assert _read(c.open(f"{root}/a/b/f")) == b"inside"
    for path in (f"{outside}/secret", f"{root}/link_out/secret", f"{root}/a/file_link", f"{root}/a/link_in/f",
                 f"{root}/a/../../outside/secret", "relative/path", f"{root}x/f"):
        with pytest.raises(PathSwapped):
            c.open(path)
    with pytest.raises(FileNotFoundError):
        c.open(f"{root}/a/missing")


def test_a_directory_swapped_for_a_symlink_after_a_check_is_refused_on_the_next_open(tree):
    root, outside = tree
    c = Confinement([str(root)], [])
    os.close(c.open_dir(f"{root}/a/b"))
    os.rename(root / "a" / "b", root / "a" / "b.old")
    (root / "a" / "b").symlink_to(outside)
    with pytest.raises(PathSwapped):
        c.open_dir(f"{root}/a/b")


def test_makedirs_creates_below_the_root_only(tree):
    root, _ = tree
    c = Confinement([str(root)], [])
    fd = c.makedirs(f"{root}/new/deep/dir")
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode) and (root / "new" / "deep" / "dir").is_dir()
    finally:
        os.close(fd)
    with pytest.raises(PathSwapped):
        c.makedirs(f"{root}/link_out/made")
    assert not (tree[1] / "made").exists()
    with pytest.raises(PathSwapped):
        c.makedirs("/tmp/not-a-root")


def test_devices_follow_the_policy_and_must_be_block_devices(tree, loop_device):
    root, _ = tree
    nothing = Confinement([str(root)], [])
    with pytest.raises(PathSwapped, match="outside"):
        nothing.open("/dev/null")
    anything = Confinement([], ["/dev/*"])
    with pytest.raises(PathSwapped, match="not a block device"):
        anything.open("/dev/null")  # a character device, though the pattern matches
    fd = Confinement([], [loop_device]).open(loop_device)
    try:
        assert stat.S_ISBLK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    with pytest.raises(PathSwapped):
        Confinement([], ["/dev/sdz*"]).open(loop_device)
    link = root / "dev-link"
    link.symlink_to(loop_device)  # a device reached through a link below a root: a file path, refused
    with pytest.raises(PathSwapped):
        Confinement([str(root)], ["/dev/*"]).open(str(link))


def test_granted_snapshots_are_allowed_for_the_block_only():
    c = Confinement([], ["/dev/vg0/data"])
    assert not c.device_allowed("/dev/vg0/opencbr-snap-1")
    with c.granted(["/dev/vg0/opencbr-snap-1"]):
        assert c.device_allowed("/dev/vg0/opencbr-snap-1")
    assert not c.device_allowed("/dev/vg0/opencbr-snap-1")


def test_makedirs_names_the_component_that_stopped_it_by_its_whole_path(tree):
    """A refusal deeper than the root's first level named the component as if it were right below the
    root (``ROOT/f is not a directory`` for ``ROOT/a/b/f/x``): the path the user gave, cut short."""
    root, _ = tree
    c = Confinement([str(root)], [])
    with pytest.raises(PathSwapped) as e:
        c.makedirs(f"{root}/a/b/f/x")
    assert str(e.value) == f"{root}/a/b/f is not a directory"
    with pytest.raises(PathSwapped) as e:
        c.makedirs(f"{root}/a/link_in/made")
    assert str(e.value).startswith(f"{root}/a/link_in is a symbolic link")
