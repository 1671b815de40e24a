"""A disk backup's refs (one digest per block) in segment objects the manifest lists, written before it
and read one at a time: restore, verify, export, copy, the views and an incremental's parent read them
segment by segment; a damaged, swapped, truncated or missing segment is damage naming it; a writer
killed between its segments and its manifest leaves orphans that GC removes once the writer is gone;
manifests with inline refs (every one written before segments) still read."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from opencbr.engine import Repository
from opencbr.engine.chunks.manifests import MANIFESTS_DIR
from opencbr.engine.disk.copy import copy_disk_backup
from opencbr.engine.diskfs.view import DiskBackupView
from opencbr.engine.errors import Conflict, Damaged, Missing
from tests.support.engine import BS, FAST_LOCKS, child_env, make_image, new_repo, sha256_file

SEGMENT = 32 * 32  # refs bytes per segment: 32 blocks


def _repo(store, **kw) -> Repository:
    repo = new_repo(store, **kw)
    repo.chunks.refs_segment_size = SEGMENT
    return repo


def _segments(repo: Repository, name: str) -> list[str]:
    prefix = f"{repo.prefix}refs/{name}/"
    return sorted(k for k, _ in repo.chunks.store.list(prefix))


def test_refs_in_many_segments_restore_verify_export_copy_and_view_bit_exact(local_store, tmp_path):
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 300, seed=3, extra=100)  # 301 blocks: 10 segments
    repo.backup_disk(img, backup_id="b1", meta={})
    assert len(_segments(repo, "b1")) == 10
    manifest = local_store.get(repo.prefix + MANIFESTS_DIR + "b1")
    assert len(manifest) < 301 * 32 // 4  # (the refs are not in it)
    out = tmp_path / "out.img"
    repo.restore_disk("b1", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert repo.verify("b1").ok
    repo.export_disk("b1", str(tmp_path / "exp.img"))
    assert sha256_file(tmp_path / "exp.img") == sha256_file(img)
    view = DiskBackupView(repo.chunks, "b1")
    assert view.pread(3 * BS + 7, 5000) == Path(img).read_bytes()[3 * BS + 7:3 * BS + 5007]
    dst = _repo(local_store, prefix="vaults/copy/")
    copy_disk_backup(repo.chunks, "b1", dst.chunks, backup_id="c1", meta={}, block_size=BS)
    assert len(_segments(dst, "c1")) == 10
    dst.restore_disk("c1", str(tmp_path / "copy.img"))
    assert sha256_file(tmp_path / "copy.img") == sha256_file(img)
    assert len(repo.chunks.manifest_refs("b1")) == repo.chunks.read_manifest("b1").ref_set().__len__() > 0


def test_an_incremental_reads_its_parent_by_segments(local_store, tmp_path):
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 256, seed=4, zero_frac=0.0)
    repo.backup_disk(img, backup_id="b1", meta={})
    header, pieces = repo.chunks.manifest_refs_streamed("b1")
    assert header["type"] == "disk" and [len(p) for p in pieces] == [SEGMENT] * 8  # one segment at a time
    data = bytearray(Path(img).read_bytes())
    for block in (3, 100, 200):
        data[block * BS] ^= 1
    Path(img).write_bytes(data)
    res = repo.backup_disk(img, backup_id="b2", meta={}, parent_backup_id="b1")
    assert res.changed_blocks == 3
    repo.restore_disk("b2", str(tmp_path / "out.img"))
    assert sha256_file(tmp_path / "out.img") == sha256_file(img)
    repo.delete_backup("b1")
    assert _segments(repo, "b1") == [] and len(_segments(repo, "b2")) == 8


@pytest.mark.parametrize("harm", ["flipped", "swapped", "truncated", "missing"])
def test_a_harmed_segment_is_damage_naming_it(local_store, tmp_path, harm):
    repo = _repo(local_store, encrypted=harm != "swapped")  # (unencrypted: a swap is caught by the digest alone)
    img = make_image(tmp_path / "d.img", 200, seed=5)
    repo.backup_disk(img, backup_id="b1", meta={})
    segs = _segments(repo, "b1")
    target = segs[3]
    blob = local_store.get(target)
    if harm == "flipped":
        local_store.put(target, blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    elif harm == "swapped":
        local_store.put(target, local_store.get(segs[4]))
    elif harm == "truncated":
        local_store.put(target, blob[:-5])
    else:
        local_store.delete(target)
    for read in (lambda: repo.verify("b1"), lambda: repo.restore_disk("b1", str(tmp_path / "o.img")),
                 lambda: repo.export_disk("b1", str(tmp_path / "e.img")),
                 lambda: b"".join(repo.chunks.manifest_refs_streamed("b1")[1])):
        with pytest.raises(Damaged, match="refs segment 3"):
            read()


def _old_manifest(repo: Repository, name: str, header: dict, refs: bytes) -> bytes:
    """A manifest as written before segments: magic, lengths, header, refs and payload inline."""
    hdr = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw = b"OCBRMAN1" + struct.pack("<IQQ", len(hdr), len(refs), 0) + hdr + refs
    return repo.chunks.sealer.seal(zstandard.ZstdCompressor().compress(raw), b"opencbr-manifest:" + name.encode())


def test_a_manifest_with_inline_refs_still_reads(local_store, tmp_path):
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 150, seed=6)
    repo.backup_disk(img, backup_id="new", meta={"m": 1})
    m = repo.chunks.read_manifest("new")
    local_store.put(repo.prefix + MANIFESTS_DIR + "old", _old_manifest(repo, "old", m.header, m.refs))
    repo.restore_disk("old", str(tmp_path / "out.img"))
    assert sha256_file(tmp_path / "out.img") == sha256_file(img)
    assert repo.verify("old").ok and repo.read_manifest("old")["meta"] == {"m": 1}
    assert repo.chunks.manifest_refs("old") == repo.chunks.manifest_refs("new")
    res = repo.backup_disk(img, backup_id="incr", meta={}, parent_backup_id="old")
    assert res.changed_blocks == 0
    repo.delete_backup("new")
    assert repo.gc().orphan_refs_segments_removed == 0
    repo.restore_disk("old", str(tmp_path / "again.img"))
    assert sha256_file(tmp_path / "again.img") == sha256_file(img)


_KILLED_WRITER = """
import sys, time
from opencbr.engine import Repository
from opencbr.engine.chunks.session import WriteSession
from opencbr.storage import open_store
from tests.support.engine import FAST_LOCKS, MASTER_KEY
repo = Repository.open(open_store(sys.argv[1]), sys.argv[2], MASTER_KEY, lock_timing=FAST_LOCKS)
repo.chunks.refs_segment_size = 1024
session = WriteSession(repo.chunks)  # (its lock: a running writer)
repo.chunks._put_refs_segments("killed", bytes(range(32)) * 200)  # what put_manifest writes first
print("segments written", flush=True)
time.sleep(600)
"""


def test_segments_of_a_writer_killed_before_its_manifest_are_collected_once_it_is_gone(local_store, tmp_path):
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 100, seed=7)
    repo.backup_disk(img, backup_id="kept", meta={})
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, local_store.url(), repo.prefix],
                             stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert child.stdout.readline().strip() == "segments written"
        assert len(_segments(repo, "killed")) == 7
        assert repo.gc().orphan_refs_segments_removed == 0  # its writer is (as far as GC knows) running
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert repo.gc().orphan_refs_segments_removed == 0  # its lock is not stale yet
    time.sleep(FAST_LOCKS.stale_after + 0.5)
    res = repo.gc()
    assert res.stale_locks_removed == 1 and res.orphan_refs_segments_removed == 7
    assert _segments(repo, "killed") == [] and len(_segments(repo, "kept")) == 4
    repo.restore_disk("kept", str(tmp_path / "out.img"))
    assert sha256_file(tmp_path / "out.img") == sha256_file(img)


def test_verify_in_windows_names_every_block_of_a_bad_chunk(local_store, tmp_path, monkeypatch):
    from opencbr.engine.disk import restore as restore_module

    monkeypatch.setattr(restore_module, "VERIFY_WINDOW_BLOCKS", 16)  # (the windows of a 16 GiB disk, small)
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 200, seed=8, pool=20)  # repeated blocks, across windows
    repo.backup_disk(img, backup_id="b1", meta={})
    seen = []
    report = repo.verify("b1", progress=lambda done, total: seen.append((done, total)))
    assert report.ok and report.chunks_checked == len(repo.chunks.manifest_refs("b1"))  # each chunk once
    assert seen[-1] == (200, 200) and seen == sorted(seen)
    index = repo.chunks.read_manifest("b1").refs
    where: dict[bytes, list[int]] = {}
    for k in range(200):
        where.setdefault(index[k * 32:(k + 1) * 32], []).append(k)
    victim, blocks = max(((d, ks) for d, ks in where.items() if d != bytes(32)), key=lambda dk: len(dk[1]))
    assert len({k // 16 for k in blocks}) >= 3  # (in several windows)
    for pack_key, _ in list(local_store.list(repo.prefix + "data/")):
        local_store.delete(pack_key)
    report = repo.verify("b1")
    bad = {c.digest: c for c in report.missing}
    assert bad[victim.hex()].offsets == [k * BS for k in blocks]
    unreadable = {c.digest: c for c in repo.disk_image("b1").unreadable_chunks()}
    assert unreadable.keys() == bad.keys() and unreadable[victim.hex()].offsets == [k * BS for k in blocks]


def test_restore_in_windows_writes_only_differences_bit_exact(local_store, tmp_path, monkeypatch):
    from opencbr.engine.disk import restore as restore_module

    monkeypatch.setattr(restore_module, "RESTORE_WINDOW_BLOCKS", 16)  # (the windows of a 16 GiB disk, small)
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 200, seed=9, pool=20)  # repeated blocks, across windows
    repo.backup_disk(img, backup_id="b1", meta={})
    out = tmp_path / "out.img"
    res = repo.restore_disk("b1", str(out))
    assert sha256_file(out) == sha256_file(img)
    data = bytearray(out.read_bytes())
    for block in (1, 40, 150):
        data[block * BS + 9] ^= 0xFF
    out.write_bytes(data)
    seen = []
    res = repo.restore_disk("b1", str(out), progress=lambda done, total: seen.append(done))
    assert sha256_file(out) == sha256_file(img)
    assert res.blocks_written + res.blocks_zeroed == 3 and seen == sorted(seen) and seen[-1] == 200 * BS


def test_a_backup_deleted_while_its_refs_are_read_is_missing_not_damaged(local_store, tmp_path):
    repo = _repo(local_store)
    repo.backup_disk(make_image(tmp_path / "d.img", 100, seed=10), backup_id="b1", meta={})
    repo.backup_disk(make_image(tmp_path / "e.img", 100, seed=11), backup_id="b2", meta={})
    _header, pieces = repo.chunks.manifest_refs_streamed("b1")
    next(pieces)
    repo.delete_backup("b1")
    with pytest.raises(Missing):
        list(pieces)
    referenced = repo.chunks.referenced()  # (a DigestSet: on disk past the memory bound)
    try:
        assert set(referenced) == repo.chunks.manifest_refs("b2")
    finally:
        referenced.close()


def test_a_second_backup_under_the_same_name_leaves_the_first_and_no_segments_of_its_own(local_store, tmp_path):
    repo = _repo(local_store)
    img = make_image(tmp_path / "d.img", 100, seed=12)
    repo.backup_disk(img, backup_id="b1", meta={})
    before = _segments(repo, "b1")
    assert len(before) == 4
    with pytest.raises(Conflict):
        repo.backup_disk(make_image(tmp_path / "e.img", 100, seed=13), backup_id="b1", meta={})
    assert _segments(repo, "b1") == before
    repo.restore_disk("b1", str(tmp_path / "out.img"))
    assert sha256_file(tmp_path / "out.img") == sha256_file(img)
