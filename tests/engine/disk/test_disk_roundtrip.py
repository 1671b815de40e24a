"""Disk backups end to end on real files: every backup restores bit-exact, incrementals store only
what changed, zero blocks are never stored, holes are never read, restore writes only differences."""

from __future__ import annotations

import json
import os
import threading

import pytest

from opencbr.engine import BackupCancelled, FileDiskSource, Repository
from opencbr.engine.chunks.crypto import ZERO_DIGEST
from opencbr.engine.chunks.packs import read_trailer
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.errors import Conflict, InvalidArgument, Missing
from tests.support.engine import BS, MASTER_KEY, all_objects, make_image, new_repo, sha256_file


def test_create_open_and_keys(local_store):
    repo = new_repo(local_store)
    assert repo.encrypted
    with pytest.raises(Conflict):
        new_repo(local_store)
    again = Repository.open(local_store, "vaults/v1", MASTER_KEY)
    assert again.id == repo.id and again.block_size == BS
    with pytest.raises(InvalidArgument):
        Repository.open(local_store, "vaults/v1/", os.urandom(32))
    with pytest.raises(Missing):
        Repository.open(local_store, "vaults/none/", MASTER_KEY)
    plain = new_repo(local_store, encrypted=False, prefix="vaults/v2/")
    assert not Repository.open(local_store, "vaults/v2/", None).encrypted
    assert not plain.encrypted


@pytest.mark.parametrize("encrypted", [True, False])
def test_backup_restore_bit_exact_on_both_backends(any_store, tmp_path, encrypted):
    repo = new_repo(any_store, encrypted)
    img = make_image(tmp_path / "d.img", 300, seed=1, extra=1234)  # partial last block
    meta = {"name": "manualbk_ab12", "resource_id": "r1", "layout": [{"disk": "sda", "size": 1}]}
    res = repo.backup_disk(img, backup_id="b1", meta=meta)
    assert res.disk_size == os.path.getsize(img)
    assert res.zero_blocks > 0 and res.new_chunks > 0 and res.added_bytes > 0
    assert repo.read_manifest("b1")["meta"] == meta
    assert repo.list_manifests() == ["b1"]
    out = tmp_path / "out.img"
    repo.restore_disk("b1", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert repo.verify("b1").ok
    assert repo.usage() == res.added_bytes


def test_encrypted_store_holds_no_plaintext(local_store, tmp_path):
    repo = new_repo(local_store, True)
    marker = b"SECRET-MARKER-7f3a9c"
    img = make_image(tmp_path / "d.img", 64, seed=2, marker=marker, zero_frac=0.0)
    text = b"line 40 of text 2"
    assert marker in open(img, "rb").read() and text in open(img, "rb").read()
    repo.backup_disk(img, backup_id="b1", meta={"note": "meta is sealed too: SECRET-MARKER-7f3a9c"})
    objects = all_objects(local_store)
    assert len(objects) >= 4
    for key, blob in objects.items():
        assert marker not in blob, key
        assert text not in blob, key  # compressible text does not leak either


def test_zero_blocks_are_not_stored_and_holes_not_read(local_store, tmp_path):
    repo = new_repo(local_store)
    img = tmp_path / "sparse.img"
    with open(img, "wb") as f:
        f.write(os.urandom(BS * 3))
        f.write(bytes(BS * 5))  # real zeros
        f.truncate(BS * 1000)  # a 992-block hole
    res = repo.backup_disk(str(img), backup_id="b1", meta={})
    assert res.data_blocks == 3 and res.zero_blocks == 997
    assert res.bytes_read <= BS * 8  # the hole was skipped without reading
    m = repo.manifest("b1")
    assert m.refs[3 * 32:4 * 32] == ZERO_DIGEST
    out = tmp_path / "out.img"
    repo.restore_disk("b1", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert os.stat(out).st_blocks * 512 < BS * 100  # restored sparse


def test_incremental_stores_only_changes_and_survives_deleting_the_full(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 512, seed=3, zero_frac=0.2)
    full = repo.backup_disk(img, backup_id="full", meta={})
    h_full = sha256_file(img)
    changed = [5, 77] + list(range(200, 400))
    with open(img, "r+b") as f:
        for blk in changed:
            f.seek(blk * BS)
            f.write(os.urandom(BS))
    h_incr = sha256_file(img)
    incr = repo.backup_disk(img, backup_id="incr", meta={}, parent_backup_id="full")
    assert incr.new_chunks == len(changed) and incr.changed_blocks == len(changed)
    assert incr.bytes_read == full.bytes_read  # no CBT on files: everything is read and hashed
    assert repo.usage() == full.added_bytes + incr.added_bytes
    assert repo.backup_added_bytes("incr") == incr.added_bytes
    # guide 13.2.11: deleting the full does not break the incremental
    repo.delete_backup("full")
    repo.delete_backup("full")  # idempotent
    g = repo.gc()
    assert g.bytes_freed > 0
    out = tmp_path / "o.img"
    repo.restore_disk("incr", str(out))
    assert sha256_file(out) == h_incr != h_full
    assert repo.usage() == _independent_usage(local_store, repo, ["incr"])


def _independent_usage(store, repo, backups) -> int:
    """Usage computed from the pack trailers themselves, not from the index."""
    sizes = {}
    for key, size in store.list(repo.prefix + "data/"):
        blob = store.get(key)
        for e in read_trailer(repo.chunks.sealer, blob[-65536:] if len(blob) > 65536 else blob, size, key):
            sizes[e.digest] = e.length
    refs = set()
    for b in backups:
        refs |= repo.manifest(b).ref_set()
    return sum(sizes[d] for d in refs)


def test_full_option_restores_every_chunk_again(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 200, seed=4)
    a = repo.backup_disk(img, backup_id="a", meta={})
    b = repo.backup_disk(img, backup_id="b", meta={}, parent_backup_id="a", full=True)
    c = repo.backup_disk(img, backup_id="c", meta={}, parent_backup_id="a")
    assert b.new_chunks == a.new_chunks and b.written_bytes == a.written_bytes and b.added_bytes == 0
    assert c.new_chunks == 0 and c.written_bytes == 0
    assert repo.usage() == a.added_bytes
    before = repo.stored_bytes()
    repo.gc()  # the older copies are superseded duplicates
    assert repo.stored_bytes() < before
    for bid in "abc":
        out = tmp_path / f"{bid}.img"
        repo.restore_disk(bid, str(out))
        assert sha256_file(out) == sha256_file(img)


def test_restore_writes_only_differences_and_punches_holes(local_store, tmp_path):
    repo = new_repo(local_store)
    img = tmp_path / "d.img"
    blocks = [os.urandom(BS) for _ in range(256)]
    for z in [11] + list(range(20, 30)):
        blocks[z] = bytes(BS)
    img.write_bytes(b"".join(blocks))
    repo.backup_disk(str(img), backup_id="b1", meta={})
    target = tmp_path / "t.img"
    first = repo.restore_disk("b1", str(target))
    assert first.blocks_written == 245 and first.bytes_read_target == 0  # new file: all holes, nothing read
    with open(target, "r+b") as f:
        f.seek(10 * BS)
        f.write(b"\xff" * BS)  # changed data block
        f.seek(255 * BS + 7)
        f.write(b"x")  # one byte in the last block
        f.seek(11 * BS)
        f.write(os.urandom(BS))  # data where the backup has a zero block
    blocks_before = os.stat(target).st_blocks
    again = repo.restore_disk("b1", str(target))
    assert (again.blocks_written, again.blocks_zeroed, again.blocks_unchanged) == (2, 1, 253)
    assert os.stat(target).st_blocks < blocks_before  # the zero block became a hole
    assert sha256_file(target) == sha256_file(img)


def test_restore_target_size_rules(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 64, seed=6)
    repo.backup_disk(img, backup_id="b1", meta={})
    small = tmp_path / "small.img"
    small.write_bytes(b"\0" * (BS * 10))
    with pytest.raises(InvalidArgument):
        repo.restore_disk("b1", str(small))
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(BS * 100)
    repo.restore_disk("b1", str(big), truncate=False)
    assert os.path.getsize(big) == BS * 100
    assert sha256_file(big, BS * 64) == sha256_file(img)
    repo.restore_disk("b1", str(big))  # guide 13.4.5: back to the backup's capacity
    assert os.path.getsize(big) == BS * 64
    assert sha256_file(big) == sha256_file(img)
    with pytest.raises(Missing):
        repo.restore_disk("nope", str(big))


def test_export_writes_sparse_raw_image(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 128, seed=7, sparse_tail=64)
    repo.backup_disk(img, backup_id="b1", meta={})
    out = tmp_path / "exp.raw"
    out.write_bytes(b"old content")
    repo.export_disk("b1", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert os.stat(out).st_blocks * 512 <= 64 * BS + 65536


def test_duplicate_backup_id_is_refused(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 16, seed=8)
    repo.backup_disk(img, backup_id="b1", meta={})
    with pytest.raises(Conflict):
        repo.backup_disk(img, backup_id="b1", meta={})
    with pytest.raises(InvalidArgument):
        repo.backup_disk(img, backup_id="../evil", meta={})


class CancellingSource(FileDiskSource):
    """A real image file that sets the cancel event once ``after`` bytes have been read."""

    def __init__(self, path, ev, after):
        super().__init__(path)
        self.ev, self.after, self.got = ev, after, 0

    def read(self, offset, length):
        self.got += length
        if self.got >= self.after:
            self.ev.set()
        return super().read(offset, length)


def test_cancel_publishes_nothing_and_leaves_no_packs(local_store, tmp_path):
    repo = new_repo(local_store, pack_size=32 << 10)
    img = make_image(tmp_path / "d.img", 8192, seed=9, zero_frac=0.0)
    ev = threading.Event()
    src = CancellingSource(img, ev, after=12 << 20)
    with pytest.raises(BackupCancelled):
        repo.backup_disk(src, backup_id="b1", meta={}, cancel=ev)
    src.close()
    assert src.got < os.path.getsize(img)  # stopped promptly
    assert repo.list_manifests() == []
    keys = [k for k, _ in local_store.list(repo.prefix)]
    assert [k for k in keys if "/data/" in k or "/locks/" in k or "/index/" in k] == []
    repo.backup_disk(img, backup_id="b1", meta={})  # the id is free again
    assert repo.verify("b1").ok


def test_progress_is_reported_and_monotonic(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 1024, seed=10)
    calls = []
    repo.backup_disk(img, backup_id="b1", meta={}, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (os.path.getsize(img), os.path.getsize(img))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    rcalls = []
    repo.restore_disk("b1", str(tmp_path / "o.img"), progress=lambda d, t: rcalls.append(d))
    assert rcalls[-1] == os.path.getsize(img)


def test_chunk_store_generic_api_for_other_index_formats(local_store):
    repo = new_repo(local_store)
    cs = repo.chunks
    s = WriteSession(cs)
    r1 = s.put_chunk(b"file content one")
    r2 = s.put_chunk(b"file content one")
    r3 = s.put_chunk(b"another file")
    assert r1.new and not r2.new and r1.digest == r2.digest and r3.new and r1.stored_size > 0
    catalog = json.dumps({"files": {"/a": [r1.digest.hex()], "/b": [r3.digest.hex()]}}).encode()
    s.commit("tree-1", {"type": "tree", "meta": {"x": 1}}, refs=r1.digest + r3.digest, payload=catalog)
    assert cs.has_chunk(r1.digest)
    assert cs.get_chunk(r3.digest) == b"another file"
    m = cs.read_manifest("tree-1")
    assert m.header["type"] == "tree" and m.payload == catalog
    s2 = WriteSession(cs)
    assert not s2.put_chunk(b"another file").new  # dedup against the repository
    s2.abort()
    assert repo.usage() == r1.stored_size + r3.stored_size
    assert repo.gc().packs_deleted == 0
    assert cs.get_chunk(r1.digest) == b"file content one"


def test_destroy_removes_everything(local_store, tmp_path):
    repo = new_repo(local_store)
    other = new_repo(local_store, prefix="vaults/v2/")
    img = make_image(tmp_path / "d.img", 32, seed=11)
    repo.backup_disk(img, backup_id="b1", meta={})
    other.backup_disk(img, backup_id="b1", meta={})
    repo.destroy()
    assert list(local_store.list("vaults/v1/")) == []
    assert other.list_manifests() == ["b1"]


def test_zeros_written_on_a_target_report_progress_as_they_go(local_store, tmp_path, monkeypatch):
    """Where holes cannot be punched (a block device) zeros are written, up to a window of 16 GiB of them,
    and nothing was reported meanwhile: through an agent, a restore that says nothing for 10 minutes fails
    (engine/remote/service.py STALL_TIMEOUT). Progress now grows while they are written, and stays
    monotonic across the passes."""
    from opencbr.engine.disk import restore as disk_restore

    repo = new_repo(local_store)
    img = tmp_path / "d.img"
    blocks = [bytes(BS)] * 6144 + [os.urandom(BS) for _ in range(4)]  # 24 MiB of zeros (3 writes), then data
    img.write_bytes(b"".join(blocks))
    repo.backup_disk(str(img), backup_id="b1", meta={})
    target = tmp_path / "t.img"
    target.write_bytes(os.urandom(len(blocks) * BS))  # data where the backup has zeros: zeroed on restore
    monkeypatch.setattr(disk_restore, "_punch_hole", lambda fd, off, ln: False)  # as on a block device
    clock = iter(range(10**6))
    monkeypatch.setattr(disk_restore.time, "monotonic", lambda: float(next(clock)))  # every report passes
    zeroing = []
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if len(data) == 8 << 20 and not any(data):  # a write of zeros (the data blocks are 4 KiB)
            zeroing.append(len(calls))  # how many reports had been made before it
        return real_pwrite(fd, data, offset)

    calls: list[int] = []
    monkeypatch.setattr(disk_restore.os, "pwrite", pwrite)
    r = repo.restore_disk("b1", str(target), progress=lambda d, t: calls.append(d))
    assert r.blocks_zeroed == 6144 and sha256_file(target) == sha256_file(img)
    assert calls == sorted(calls) and calls[-1] == len(blocks) * BS
    assert len(zeroing) == 3 and len(set(zeroing)) == 3, ("a report after each zero write", zeroing)
