"""A disk backup copied block for block into another vault over the remote chunk service (how a disk
replica is made): it restores bit-exact; the records are sealed again without a second compression
(what is stored is what a backup of the image would have stored); an incremental copy over the previous
one reads only the blocks whose source digest changed; a copy to another block size is refused."""

from __future__ import annotations

import threading

import pytest

from opencbr.agentlink.channel import channel_pair
from opencbr.engine.disk.copy import copy_disk_backup
from opencbr.engine.disk.restore import restore_disk
from opencbr.engine.errors import InvalidArgument
from opencbr.engine.remote import BackupScope, serve_backup
from opencbr.engine.remote.client import RemoteChunks
from tests.support.engine import BS, make_image, new_repo, sha256_file


def _copy(src, dst, source_id: str, name: str, previous=None):
    """The copy run where a replica's source runs it, into ``dst`` served over a channel pair."""
    svc, end = channel_pair(timeout=30)
    out: dict = {}

    def run() -> None:
        chunks = RemoteChunks(end, dst.chunks.keys, max_chunk=dst.chunks.codec.max_chunk)
        try:
            out["result"] = copy_disk_backup(src.chunks, source_id, chunks, backup_id=name, meta={},
                                             block_size=dst.block_size, previous=previous)
            chunks.close()
            end.send({"ok": True, "result": {}})
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
            chunks.close()
            end.send({"ok": False, "error": "failed", "message": str(e)})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    final = serve_backup(dst, svc, BackupScope(name, "disk", readable=(previous[1],) if previous else (), meta={}))
    t.join()
    assert final["ok"] and "error" not in out, (final, out.get("error"))
    return out["result"]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_a_copy_restores_bit_exact_and_an_incremental_copy_reads_only_changed_blocks(local_store, tmp_path,
                                                                                     encrypted):
    src = new_repo(local_store, encrypted, "vaults/a/")
    dst = new_repo(local_store, encrypted, "vaults/b/")
    img = make_image(tmp_path / "d.img", 200, seed=3, extra=1000)
    src.backup_disk(img, backup_id="s1", meta={})
    r1 = _copy(src, dst, "s1", "c1")
    out = tmp_path / "out.img"
    restore_disk(dst.chunks, "c1", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert r1.data_blocks == src.read_manifest("s1")["stats"]["data_blocks"]
    # the same bytes stored as a backup of the image in that vault would store (no second compression)
    plain = new_repo(local_store, encrypted, "vaults/c/")
    plain.backup_disk(img, backup_id="p1", meta={})
    assert abs(r1.added_bytes - plain.backup_added_bytes("p1")) <= 64 * r1.new_chunks  # (nonces, flags)

    with open(img, "r+b") as f:  # three blocks rewritten
        for blk in (5, 77, 150):
            f.seek(blk * BS)
            f.write(b"changed!" * (BS // 8))
    src.backup_disk(img, backup_id="s2", meta={}, parent_backup_id="s1")
    r2 = _copy(src, dst, "s2", "c2", previous=("s1", "c1"))
    assert r2.bytes_read == 3 * BS and r2.changed_blocks == 3, (r2.bytes_read, r2.changed_blocks)
    restore_disk(dst.chunks, "c2", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert dst.read_manifest("c2")["parent"] == "c1"


def test_a_copy_to_another_block_size_is_refused(local_store, tmp_path):
    src = new_repo(local_store, True, "vaults/a/")
    src.backup_disk(make_image(tmp_path / "d.img", 8, seed=1), backup_id="s1", meta={})
    dst = new_repo(local_store, True, "vaults/b/", block_size=2 * BS)
    with pytest.raises(InvalidArgument):
        copy_disk_backup(src.chunks, "s1", dst.chunks, backup_id="c1", meta={}, block_size=dst.block_size)


def test_a_copy_that_forgets_names_on_the_way_opens_them_again(local_store, tmp_path, monkeypatch):
    """(A big disk: the names of repeated blocks are remembered up to MAPPED_MAX; batches asked for ahead
    while a name was remembered open it again once it is forgotten.)"""
    from opencbr.engine.disk import copy as copy_module

    monkeypatch.setattr(copy_module, "MAPPED_MAX", 4)
    src = new_repo(local_store, True, "vaults/a/")
    dst = new_repo(local_store, True, "vaults/b/")
    block = {c: bytes([c]) * BS for c in b"ABCDEF"}
    batches = [b"AB", b"CDE", b"F", b"A"]  # A is remembered when batch 3 is asked for, forgotten after batch 1
    img = tmp_path / "d.img"
    img.write_bytes(b"".join(block[names[i % len(names)]] for names in batches for i in range(copy_module.BATCH)))
    src.backup_disk(img, backup_id="s1", meta={})
    _copy(src, dst, "s1", "c1")
    restore_disk(dst.chunks, "c1", str(tmp_path / "out.img"))
    assert sha256_file(tmp_path / "out.img") == sha256_file(img)
