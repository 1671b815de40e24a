"""Safety: encryption hides content and names, damage is detected, cancel publishes nothing, a catalog
cannot write outside the restore target, unreadable files make a partial backup, never a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opencbr.engine import BackupCancelled, RestoreCancelled
from opencbr.engine.errors import Conflict, Damaged, InvalidArgument
from opencbr.engine.tree import backup_tree, list_tree, restore_tree, verify_tree
from opencbr.engine.tree.entry import DIR, FILE, SYMLINK, Entry
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
