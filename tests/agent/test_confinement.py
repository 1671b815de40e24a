"""What the agent may open: below its roots without following symlinks, and the devices its policy names."""

from __future__ import annotations

import os
import stat
import threading

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


def _open_soon(c: Confinement, path: str, flags: int = os.O_RDONLY, seconds: float = 5.0):
    """``c.open(path, flags)`` in a thread: what it returned or raised, or ``"hung"`` (a fifo opened for
    reading waits for a writer: the agent's task would hang there for good)."""
    out: list = []

    def run():
        try:
            out.append(c.open(path, flags))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else "hung"


def test_below_a_root_only_regular_files_open_not_fifos_or_device_nodes(tree, loop_device):
    """A fifo put where an image was (any user who can write there) held the agent's task (probe, backup)
    forever in open(); a block device node below a root (restored from a tenant's tree backup, the unit
    has CAP_MKNOD) was opened as an image: the whole disk read -- or written, without O_EXCL, mounted --
    whatever the device patterns say."""
    root, _ = tree
    with open(loop_device, "r+b") as f:
        f.write(b"the host's disk")
    c = Confinement([str(root)], [])
    os.mkfifo(root / "fifo.img")
    os.mknod(root / "disk.img", 0o600 | stat.S_IFBLK, os.stat(loop_device).st_rdev)
    os.mknod(root / "null.img", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    try:
        for name, flags in (("fifo.img", os.O_RDONLY), ("fifo.img", os.O_RDWR), ("disk.img", os.O_RDONLY),
                            ("disk.img", os.O_RDWR), ("null.img", os.O_RDWR)):
            got = _open_soon(c, f"{root}/{name}", flags)
            if isinstance(got, int):
                os.close(got)
            assert isinstance(got, PathSwapped), (name, got)
            assert "not a regular file" in str(got)
        with pytest.raises(PathSwapped):  # the device patterns name /dev paths, never a node below a root
            Confinement([str(root)], ["/dev/*", f"{root}/*"]).open(f"{root}/disk.img")
    finally:
        fd = os.open(root / "fifo.img", os.O_RDWR | os.O_NONBLOCK)  # (lets a hung open go)
        os.close(fd)
    # regular files still open as asked, for reading and writing; a new one is made exclusively
    fd = c.open(f"{root}/a/b/f", os.O_RDWR)
    try:
        os.pwrite(fd, b"I", 0)
        assert os.pread(fd, 6, 0) == b"Inside"
    finally:
        os.close(fd)
    fd = c.open(f"{root}/new.img", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    os.close(fd)
    with pytest.raises(FileExistsError):
        c.open(f"{root}/new.img", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    with pytest.raises(PathSwapped, match="symbolic link"):
        c.open(f"{root}/a/file_link", os.O_RDWR)


def test_a_file_with_other_names_is_not_opened_for_writing(tree):
    """A hard link below a root to a file outside it (``fs.protected_hardlinks`` off, or made by its owner)
    is the same file: a restore onto that "image" wrote the outside file (truncated to the backup's size)."""
    root, outside = tree
    os.link(outside / "secret", root / "a" / "disk.img")
    c = Confinement([str(root)], [])
    with pytest.raises(PathSwapped, match="hard links"):
        c.open(f"{root}/a/disk.img", os.O_RDWR)
    with pytest.raises(PathSwapped, match="hard links"):
        c.open(f"{root}/a/disk.img", os.O_WRONLY)
    assert (outside / "secret").read_bytes() == b"secret"
    assert _read(c.open(f"{root}/a/disk.img")) == b"secret"  # (read: a backup of what the root holds)
