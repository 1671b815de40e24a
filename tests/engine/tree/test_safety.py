"""Safety: encryption hides content and names, damage is detected, cancel publishes nothing, a catalog
cannot write outside the restore target, unreadable files make a partial backup, never a crash."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opencbr.engine import BackupCancelled, RestoreCancelled
from opencbr.engine.errors import Conflict, Damaged, InvalidArgument
from opencbr.engine.tree import backup_tree, list_tree, restore_tree, verify_tree
from opencbr.engine.tree.entry import DIR, FILE, SYMLINK, Entry
from opencbr.engine.tree.restore.paths import link_restored
from tests.support.engine import MASTER_KEY
from tests.support.engine_tree import (
    IS_ROOT,
    SMALL_CHUNKS,
    build_tree,
    flip_byte_in_chunk_of,
    forge_tree_backup,
    new_repo,
)

MARKER = b"OPENCBR-MARKER-7f3a9c1e-do-not-leak"


def _store_bytes(root: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("encrypted", [True, False])
def test_marker_never_stored_in_clear_when_encrypted(tmp_path, encrypted):
    repo = new_repo(tmp_path, encrypted)
    src = tmp_path / "src"
    (src / os.fsdecode(MARKER)).mkdir(parents=True)
    (src / os.fsdecode(MARKER) / "file.txt").write_bytes(b"content " + MARKER + b" end" * 10)
    (src / "plain.txt").write_bytes(MARKER * 3)
    os.setxattr(src / "plain.txt", "user.tag", MARKER)
    os.symlink(os.fsdecode(MARKER), src / "link")
    backup_tree(repo, src, backup_id="b1", meta={"note": MARKER.decode()}, params=SMALL_CHUNKS)
    hits = [p for p, data in _store_bytes(tmp_path / "store") if MARKER in data]
    if encrypted:
        assert hits == []
    else:
        assert hits  # sanity: the scan does find it when nothing is encrypted


def test_flipped_byte_is_detected_on_restore_and_verify(repo, tmp_path):
    src = build_tree(tmp_path / "src")
    backup_tree(repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    flip_byte_in_chunk_of(repo, "/bin/random.bin", "b1", tmp_path / "store")
    with pytest.raises(Damaged) as ei:
        restore_tree(repo, "b1", tmp_path / "out")
    assert "/bin/random.bin" in str(ei.value)
    rep = verify_tree(repo, "b1")
    assert not rep.ok and rep.damaged and "/bin/random.bin" in rep.damaged[0].paths
    # the rest of the tree was restored
    assert (tmp_path / "out" / "docs" / "text.md").read_bytes() == (src / "docs" / "text.md").read_bytes()


def test_cancel_publishes_nothing(enc_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}.bin").write_bytes(os.urandom(4 << 20))
    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        cancel.set()

    with pytest.raises(BackupCancelled):
        backup_tree(enc_repo, src, backup_id="b1", meta={}, progress=progress, cancel=cancel)
    assert calls
    assert enc_repo.list_manifests() == []
    data = list((tmp_path / "store" / "vaults" / "v1").glob("data/*/*"))
    assert data == []  # the session's packs were deleted too
    assert not list((tmp_path / "store" / "vaults" / "v1").glob("locks/*"))
    # and the same id can be used again afterwards
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    with pytest.raises(Conflict):
        backup_tree(enc_repo, src, backup_id="b1", meta={})
    cancel2 = threading.Event()
    cancel2.set()
    with pytest.raises(RestoreCancelled):
        restore_tree(enc_repo, "b1", tmp_path / "out", cancel=cancel2)


def _d(path: bytes) -> Entry:
    return Entry(path, DIR, 0o40755)


def _f(path: bytes) -> Entry:
    return Entry(path, FILE, 0o100644, size=5)


@pytest.mark.parametrize("name,entries", [
    ("dotdot", [_d(b""), _f(b"../escaped")]),
    ("dotdot-inside", [_d(b""), _d(b"a"), _f(b"a/../../escaped")]),
    ("absolute", [_d(b""), _f(b"/escaped")]),
    ("through-symlink", [_d(b""), Entry(b"link", SYMLINK, 0o120777, link=b"OUTSIDE"), _f(b"link/escaped")]),
    ("no-parent", [_d(b""), _f(b"missing-dir/escaped")]),
])
def test_hostile_catalog_cannot_escape_target(enc_repo, tmp_path, name, entries):
    outside = tmp_path / "OUTSIDE"
    outside.mkdir()
    target = tmp_path / "box" / "target"
    target.parent.mkdir()
    # a symlink target relative to the restore target that points outside of it
    for e in entries:
        if e.type == SYMLINK:
            e.link = os.fsencode(outside)
    forge_tree_backup(enc_repo, "evil", entries)
    with pytest.raises(Damaged):
        restore_tree(enc_repo, "evil", target)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "box" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not Path("/escaped").exists()


def test_preexisting_symlink_in_target_is_not_followed(enc_repo, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("data")
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "sub")  # someone planted a symlink where a directory will go
    res = restore_tree(enc_repo, "b1", target, allow_nonempty=True)
    assert [w.path for w in res.warnings] == ["/sub"] and res.warnings[0].partial
    assert list(outside.iterdir()) == []


def _swap_for_symlink(target: Path, name: str, made: str, outside: Path, stop: threading.Event, swapped: list) -> None:
    """What a tenant who can write in a restore target may do: as soon as ``name/made`` was restored,
    move directory ``name`` away and put a symlink to ``outside`` in its place."""
    while not stop.is_set():
        if (target / name / made).exists() and not (target / name).is_symlink():
            os.rename(target / name, target / f"{name}.moved")
            os.symlink(outside, target / name)
            swapped.append(name)
            return
        stop.wait(0.0002)


def _restore_swapping(repo, target: Path, name: str, made: str, outside: Path):
    """Restore backup b1 into ``target`` (one process) while :func:`_swap_for_symlink` swaps ``name``."""
    stop, swapped = threading.Event(), []
    watcher = threading.Thread(target=_swap_for_symlink, args=(target, name, made, outside, stop, swapped))
    watcher.start()
    try:
        res = restore_tree(repo, "b1", target, processes=1)
    finally:
        stop.set()
        watcher.join()
    assert swapped == [name], "the swap came after the restore: nothing was tested"
    return res


def test_a_directory_swapped_for_a_symlink_during_the_restore_gets_no_metadata_outside(enc_repo, tmp_path):
    """Directories get their metadata last, by path: a directory swapped for a symlink meanwhile must not
    have the restore (often root) set a mode, owner or times on what the symlink names."""
    src = tmp_path / "src"
    (src / "x" / "victim").mkdir(parents=True)
    os.chmod(src / "x" / "victim", 0o777)
    (src / "z").mkdir()
    for i in range(2000):  # (time for the swap before the directories are finished)
        (src / "z" / f"f{i}").write_bytes(b"%d" % i * 100)
    (src / "z" / "big").write_bytes(os.urandom(32 << 20))
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    os.chmod(outside / "victim", 0o700)
    before = os.stat(outside / "victim")
    target = tmp_path / "target"
    res = _restore_swapping(enc_repo, target, "x", "victim", outside)
    after = os.stat(outside / "victim")
    assert (stat.S_IMODE(after.st_mode), after.st_mtime_ns) == (0o700, before.st_mtime_ns)
    assert {w.path for w in res.warnings} >= {"/x", "/x/victim"}
    assert (target / "x.moved" / "victim").is_dir() and (target / "z" / "f1999").read_bytes() == b"1999" * 100


def test_a_hard_link_group_split_by_a_swap_during_the_restore_links_nothing_outside(enc_repo, tmp_path):
    src = tmp_path / "src"
    for d in ("a", "m", "n"):
        (src / d).mkdir(parents=True)
    (src / "a" / "f").write_text("tenant data")
    for i in range(3000):  # (time for the swap between the group's first name and its second)
        (src / "m" / f"f{i}").write_bytes(b"%d" % i)
    os.link(src / "a" / "f", src / "n" / "g")
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("someone else's")
    target = tmp_path / "target"
    res = _restore_swapping(enc_repo, target, "a", "f", outside)
    assert os.stat(outside / "f").st_nlink == 1 and not (target / "n" / "g").exists()
    assert "/n/g" in {w.path for w in res.warnings}
    assert (target / "a.moved" / "f").read_text() == "tenant data"


def test_a_hard_link_is_made_to_the_file_the_restore_made_only(tmp_path):
    """The later names of a hard-link group are linked to the file restored for the first, reopened by
    path: a directory on that path swapped for a symlink, or the file swapped for another, or for a
    symlink, links nothing."""
    target, outside = tmp_path / "target", tmp_path / "outside"
    (target / "a").mkdir(parents=True)
    (target / "b").mkdir()
    outside.mkdir()
    (outside / "f").write_text("someone else's")
    (target / "a" / "f").write_text("restored")
    made = os.stat(target / "a" / "f")
    ident = (made.st_dev, made.st_ino)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(target / "b", os.O_RDONLY | os.O_DIRECTORY)
    try:
        link_restored(root_fd, b"a/f", ident, b"g", dfd)  # the file as made: linked
        assert os.stat(target / "b" / "g").st_ino == made.st_ino
        os.rename(target / "a", target / "a.moved")
        os.symlink(outside, target / "a")
        with pytest.raises(OSError) as ei:
            link_restored(root_fd, b"a/f", ident, b"h", dfd)
        assert ei.value.errno == errno.ELOOP
        os.unlink(target / "a")
        (target / "a").mkdir()
        (target / "a" / "f").write_text("another file")
        with pytest.raises(OSError) as ei:
            link_restored(root_fd, b"a/f", ident, b"h", dfd)
        assert ei.value.errno == errno.ESTALE
        os.unlink(target / "a" / "f")
        os.symlink(outside / "f", target / "a" / "f")
        with pytest.raises(OSError):
            link_restored(root_fd, b"a/f", ident, b"h", dfd)
        with pytest.raises(OSError):
            link_restored(root_fd, b"a/f", None, b"h", dfd)  # its first name could not be made
    finally:
        os.close(dfd)
        os.close(root_fd)
    assert sorted(os.listdir(target / "b")) == ["g"] and os.stat(outside / "f").st_nlink == 1


def test_user_paths_with_dotdot_are_refused(enc_repo, tmp_path):
    src = build_tree(tmp_path / "src")
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    for bad in ("../etc", "/docs/../../x", "docs/../.."):
        with pytest.raises(InvalidArgument):
            restore_tree(enc_repo, "b1", tmp_path / "o", subpath=bad)
        with pytest.raises(InvalidArgument):
            list_tree(enc_repo, "b1", bad)


@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root and setpriv (util-linux)")
def test_unreadable_files_make_a_partial_backup(tmp_path):
    """A real subprocess (the module CLI) running as root *without* the capabilities that bypass file
    permissions: a file and a directory it cannot read are reported, the backup is published as
    partial, and everything else is in it."""
    repo = new_repo(tmp_path, True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("readable")
    (src / "secret.txt").write_text("not for you")
    os.chmod(src / "secret.txt", 0o000)
    (src / "closed").mkdir()
    (src / "closed" / "inside.txt").write_text("hidden")
    os.chmod(src / "closed", 0o000)
    env = dict(os.environ, OPENCBR_MASTER_KEY=MASTER_KEY.hex())
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        ["setpriv", "--bounding-set", drop, "--inh-caps", drop, sys.executable, "-m", "opencbr.engine",
         "--store", (tmp_path / "store").as_uri(), "--prefix", "vaults/v1", "tree", "backup", str(src), "--id", "b1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    os.chmod(src / "closed", 0o755)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["partial"] is True
    bad = {w["path"] for w in out["warnings"] if w["partial"]}
    assert bad == {"/secret.txt", "/closed"}
    hdr = repo.read_manifest("b1")
    assert hdr["partial"] is True and hdr["warnings_total"] == 2
    names = [e.name for e in list_tree(repo, "b1")]
    assert names == ["closed", "ok.txt"]  # the unreadable file is not in the catalog; the dir is (empty)
    restore_tree(repo, "b1", tmp_path / "out")
    assert (tmp_path / "out" / "ok.txt").read_text() == "readable"


def test_special_files_never_crash(enc_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    res = backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert res.specials == 1 and not res.partial
    out = tmp_path / "out"
    restore_tree(enc_repo, "b1", out)
    assert os.path.exists(out / "pipe") and not (out / "pipe").is_file()
    shutil.rmtree(out)


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")
def test_other_file_systems_are_recorded_not_entered(enc_repo, tmp_path):
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "here.txt").write_text("on the backed-up file system")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "mnt")]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (src / "mnt" / "elsewhere.txt").write_text("on another file system")
        res = backup_tree(enc_repo, src, backup_id="b1", meta={})
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=False)
    assert not res.partial and [w.path for w in res.warnings] == ["/mnt"]
    assert list_tree(enc_repo, "b1", "/mnt") == []
    assert sorted(e.name for e in list_tree(enc_repo, "b1")) == ["here.txt", "mnt"]


@pytest.mark.parametrize("who", ["child", "parent"])
@pytest.mark.parametrize("name,bad", [
    ("dotdot", _f(b"d/f9/../../../escaped")),
    ("absolute", _f(b"/escaped")),
    ("empty-component", _f(b"d//escaped")),
    ("dot", _f(b"d/./escaped")),
    ("nul", _f(b"d/esc\0aped")),
    ("trailing-slash", _f(b"d/escaped/")),
    ("dotdot-dir", _d(b"d/..")),
])
def test_hostile_entry_is_refused_by_whichever_part_restores_it(enc_repo, tmp_path, monkeypatch, who, name, bad):
    """A restore in parts: the part that restores an entry checks it (the others pass it over unread),
    whether it is the lead or a forked part that makes its directories as it needs them."""
    from opencbr.engine.tree.entry import path_key
    from opencbr.engine.tree.restore import parts as parts_mod
    from opencbr.engine.tree.restore import restorer as restore_mod

    monkeypatch.setattr(parts_mod, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parts_mod, "GROUP_FILES", 2)
    monkeypatch.setattr(restore_mod.TreeRestore, "_claim", lambda self, g: self._in_child == (who == "child"))
    entries = [_d(b""), _d(b"d"), *(_f(b"d/f%d" % i) for i in range(6)), bad]
    forge_tree_backup(enc_repo, "evil", sorted(entries, key=lambda e: path_key(e.path)))
    target = tmp_path / "box" / "target"
    target.parent.mkdir()
    with pytest.raises(Damaged, match="escape the target|no parent directory"):
        restore_tree(enc_repo, "evil", target, processes=2)
    assert sorted(os.listdir(tmp_path / "box")) == ["target"]
    assert not (tmp_path / "escaped").exists() and not Path("/escaped").exists()
