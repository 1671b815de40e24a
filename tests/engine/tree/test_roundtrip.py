"""Back up a tree with every kind of entry, restore it, compare file by file."""

from __future__ import annotations

import os
import stat

import pytest

from opencbr.engine.errors import InvalidArgument, Missing
from opencbr.engine.tree import backup_tree, list_tree, restore_tree, verify_tree
from tests.support.engine_tree import IS_ROOT, SMALL_CHUNKS, assert_same_tree, build_tree, snapshot


def test_roundtrip_every_entry_type(repo, tmp_path):
    src = build_tree(tmp_path / "src")
    res = backup_tree(repo, src, backup_id="b1", meta={"resource": "fs-1"}, params=SMALL_CHUNKS)
    assert not res.partial and res.warnings == []
    assert res.files >= 50 and res.dirs >= 10 and res.symlinks == 4 and res.specials >= 2
    assert res.total_bytes == sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(src) for f in fs
                                  if stat.S_ISREG(os.lstat(os.path.join(d, f)).st_mode))
    out = tmp_path / "restored"
    r = restore_tree(repo, "b1", out)
    assert r.hardlinks == 2 and r.files == res.files - 2
    assert_same_tree(src, out, atime=True)
    # the sparse file came back sparse, with the same holes
    st = os.stat(out / "sparse.img")
    assert st.st_size == 8 << 20 and st.st_blocks * 512 < 1 << 20
    assert verify_tree(repo, "b1").ok
    # the manifest is self-describing: meta kept verbatim, type tree
    hdr = repo.read_manifest("b1")
    assert hdr["type"] == "tree" and hdr["meta"] == {"resource": "fs-1"} and hdr["partial"] is False


def test_root_metadata_and_owners(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    os.chmod(src, 0o750)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    out = tmp_path / "out"
    restore_tree(enc_repo, "b1", out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o750
    if IS_ROOT:
        assert os.stat(out / "owned.txt").st_uid == 1234 and os.stat(out / "owned.txt").st_gid == 5678
        assert stat.S_IMODE(os.stat(out / "setuid-bin").st_mode) == 0o4755
        assert stat.S_ISCHR(os.lstat(out / "nulldev").st_mode)


def test_refuses_nonempty_target_unless_allowed(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "already-here").write_text("x")
    with pytest.raises(InvalidArgument):
        restore_tree(enc_repo, "b1", out)
    assert os.listdir(out) == ["already-here"]
    (out / "small.txt").write_text("stale content")
    restore_tree(enc_repo, "b1", out, allow_nonempty=True)
    assert (out / "small.txt").read_bytes() == b"hello world\n"
    assert (out / "already-here").read_text() == "x"


def test_subpath_restore_file_and_directory(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    restore_tree(enc_repo, "b1", tmp_path / "one", subpath="/docs/text.md")
    assert os.listdir(tmp_path / "one") == ["text.md"]
    assert (tmp_path / "one" / "text.md").read_bytes() == (src / "docs" / "text.md").read_bytes()
    restore_tree(enc_repo, "b1", tmp_path / "dir", subpath="deep/a")
    assert_same_tree(src / "deep" / "a", tmp_path / "dir" / "a")
    # a hard-link member restored alone carries its own content
    restore_tree(enc_repo, "b1", tmp_path / "hl", subpath="/docs/third-link.txt")
    assert (tmp_path / "hl" / "third-link.txt").read_bytes() == b"shared by three names\n" * 100
    with pytest.raises(Missing):
        restore_tree(enc_repo, "b1", tmp_path / "nope", subpath="/docs/missing.txt")
    with pytest.raises(Missing):
        restore_tree(enc_repo, "b1", tmp_path / "nope2", subpath="/doc")  # a prefix of a name is not a path
    with pytest.raises(Missing):
        restore_tree(enc_repo, "no-such-backup", tmp_path / "nope3")


def test_list_tree(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    root = list_tree(enc_repo, "b1", "/")
    assert [e.name for e in root] == sorted(os.fsdecode(n) for n in os.listdir(os.fsencode(src)))
    by = {e.name: e for e in root}
    assert by["docs"].type == "dir" and by["small.txt"].type == "file" and by["small.txt"].size == 12
    assert by["rel-link"].type == "symlink" and by["rel-link"].link_target == "docs/text.md"
    assert by["fifo"].type == "fifo" and by["sock"].type == "socket"
    assert stat.S_IMODE(by["bin"].mode) == stat.S_IMODE(os.stat(src / "bin").st_mode)
    assert by["small.txt"].mtime == pytest.approx(os.stat(src / "small.txt").st_mtime_ns / 1e9)
    assert [e.name for e in list_tree(enc_repo, "b1", "/deep/a/b")] == ["c"]
    assert list_tree(enc_repo, "b1", "emptydir/nested-empty") == []
    one = list_tree(enc_repo, "b1", "/docs/text.md")
    assert len(one) == 1 and one[0].path == "/docs/text.md" and one[0].size == 100_000
    with pytest.raises(Missing):
        list_tree(enc_repo, "b1", "/nope")
    with pytest.raises(InvalidArgument):
        list_tree(enc_repo, "b1", "/docs/../..")


def test_list_large_catalog_skips_chunks(enc_repo, tmp_path):
    """A catalog of many chunks: listings are right at every level (the chunk-skipping path)."""
    src = tmp_path / "src"
    for d in range(6):
        for s in range(10):
            p = src / f"dir{d}" / f"sub{s}"
            p.mkdir(parents=True)
            for f in range(80):  # ~0.85 MB of catalog: ~10 chunks, whatever the vault's keyed cut points
                (p / f"file-with-a-longish-name-{f:04d}.txt").write_bytes(b"%d" % f)
    (src / "zz-last.txt").write_text("z")
    res = backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert res.catalog_chunks > 5
    assert [e.name for e in list_tree(enc_repo, "b1")] == [f"dir{d}" for d in range(6)] + ["zz-last.txt"]
    assert len(list_tree(enc_repo, "b1", "/dir3/sub7")) == 80
    assert [e.name for e in list_tree(enc_repo, "b1", "/dir5")] == sorted(f"sub{s}" for s in range(10))


def test_progress_reports_bytes_up_to_the_total(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    (src / "big.bin").write_bytes(os.urandom(6 << 20))
    calls: list[tuple[int, int]] = []
    res = backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS,
                      progress=lambda d, t: calls.append((d, t)))
    assert calls and all(0 <= d <= t for d, t in calls)
    assert calls[-1] == (res.total_bytes, res.total_bytes)
    rcalls: list[tuple[int, int]] = []
    restore_tree(enc_repo, "b1", tmp_path / "out", progress=lambda d, t: rcalls.append((d, t)))
    assert rcalls and rcalls[-1] == (res.total_bytes, res.total_bytes)
    assert all(0 <= d <= t for d, t in rcalls)


@pytest.mark.parametrize("setgid_target", [False, True])
def test_modes_and_owners_whatever_the_umask_and_target(enc_repo, tmp_path, setgid_target):
    """Files may be created with their final mode (restore.py _create_mode): modes the umask would
    strip, special bits, other owners and a set-group-id target must still come back exactly."""
    src = tmp_path / "src"
    src.mkdir()
    # (under the umask 027 used below, 0640/0750/0600 are created final, the others fixed up later)
    modes = {"plain": 0o644, "group-write": 0o664, "world-write": 0o666, "setuid": 0o4755,
             "read-only": 0o444, "private": 0o600, "group-read": 0o640, "exec": 0o750, "mine": 0o600}
    for name, mode in modes.items():
        (src / name).write_bytes(name.encode() * 100)
        os.chmod(src / name, mode)
    # symlinks: lchown'ed only when creating them did not give their owner (MetadataWriter.finish_path)
    links = {"link-mine": None, "link-other": (1234, 5678)}
    for name, owner in links.items():
        os.symlink("plain", src / name)
        if IS_ROOT and owner:
            os.lchown(src / name, *owner)
    if IS_ROOT:
        os.chown(src / "private", 1234, 5678)
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    out = tmp_path / "out"
    out.mkdir()
    if setgid_target:
        os.chmod(out, 0o2775)
        if IS_ROOT:
            os.chown(out, 0, 4321)
    old = os.umask(0o027)
    try:
        restore_tree(enc_repo, "b1", out / "t")
    finally:
        os.umask(old)
    for name, mode in modes.items():
        st = os.lstat(out / "t" / name)
        assert stat.S_IMODE(st.st_mode) == mode, name
        assert (out / "t" / name).read_bytes() == name.encode() * 100
        if IS_ROOT:
            want = (1234, 5678) if name == "private" else (os.lstat(src / name).st_uid, os.lstat(src / name).st_gid)
            assert (st.st_uid, st.st_gid) == want, name
    for name in links:
        st, want = os.lstat(out / "t" / name), os.lstat(src / name)
        assert os.readlink(out / "t" / name) == "plain"
        if IS_ROOT:  # (in a set-group-id target a new symlink takes the directory's group: fixed up)
            assert (st.st_uid, st.st_gid) == (want.st_uid, want.st_gid), name


@pytest.mark.parametrize("direct", [True, False])
def test_big_files_restore_exactly_with_or_without_direct_writes(enc_repo, tmp_path, monkeypatch, direct):
    """Files of DIRECT_MIN and more get their whole blocks written through a second, O_DIRECT
    descriptor (chunk boundaries fall anywhere, so every piece also has partial blocks written
    buffered); where the file system refuses it, restore stops asking and writes everything
    buffered. Either way the tree comes back exact."""
    import random

    from opencbr.engine.tree.restore import fetch as fetch_mod

    src = build_tree(tmp_path / "src")
    r = random.Random(3)
    (src / "big").mkdir()
    for i, size in enumerate((fetch_mod.DIRECT_MIN, 700_001, 2_000_003)):
        (src / "big" / f"f{i}").write_bytes(r.randbytes(size // 2) + b"compressible " * (size // 26))
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    opened = []

    def reopen(fd):
        got = fetch_mod.reopen_direct.__wrapped__(fd) if direct else -1
        opened.append(got)
        return got

    reopen.__wrapped__ = fetch_mod.reopen_direct
    monkeypatch.setattr(fetch_mod, "reopen_direct", reopen)
    restore_tree(enc_repo, "b1", tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")
    if direct:
        assert len(opened) >= 4 and all(fd >= 0 for fd in opened)
    else:
        assert opened == [-1]  # refused once: no more attempts


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as its xattr holds it: version 2, then (tag u16, perm u16, id u32) per entry."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, qid) for tag, perm, qid in entries)


_ANY = 0xFFFFFFFF  # (no id: the owner's, the group's, the mask's and the others' entries)


def test_a_default_acl_above_the_target_changes_nothing_restored(repo, tmp_path):
    """Made below a directory with a default ACL, every restored entry inherited it (an ACL its source
    never had: another user's entry) and was created with a mode the default ACL, not the umask, had cut
    (0644 restored 0600): the restore now drops what was inherited and sets every mode itself. What
    the source records (its own ACLs) is kept."""
    src = build_tree(tmp_path / "src")
    (src / "docs" / "own-acl.txt").write_text("mine")
    own = _acl((0x01, 6, _ANY), (0x02, 4, 4321), (0x04, 4, _ANY), (0x10, 4, _ANY), (0x20, 4, _ANY))
    try:
        os.setxattr(src / "docs" / "own-acl.txt", "system.posix_acl_access", own)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {exc}")
    backup_tree(repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    above = tmp_path / "above"
    above.mkdir()
    # u::rwx, u:777:rwx, g::---, m::rwx, o::--- for everything made below
    os.setxattr(above, "system.posix_acl_default",
                _acl((0x01, 7, _ANY), (0x02, 7, 777), (0x04, 0, _ANY), (0x10, 7, _ANY), (0x20, 0, _ANY)))
    restore_tree(repo, "b1", above / "whole")
    assert_same_tree(src, above / "whole")
    restore_tree(repo, "b1", above / "one", subpath="/docs")

    def without_links(tree):  # (hard links of /docs to names outside it are not restored as links)
        return {k: {f: v for f, v in e.items() if f not in ("group", "nlink")} for k, e in snapshot(tree).items()}

    assert without_links(src / "docs") == without_links(above / "one" / "docs")
    assert os.getxattr(above / "one" / "docs" / "own-acl.txt", "system.posix_acl_access") == own
