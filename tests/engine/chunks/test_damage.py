"""Repair from the live source (kopia#3492; engine/chunks/damage.py): a chunk recorded as damaged is not
deduplicated against, so the next backup stores it again -- a disk backup that reads every block, and an
incremental tree backup that would otherwise reuse the unchanged file's record from its parent -- and the
older backup that needed it reads whole again."""

from __future__ import annotations

import os

from opencbr.engine.chunks.damage import clear_damaged, damaged_digests, record_damaged
from tests.support.disks import MiB, flip_byte, make_image
from tests.support.engine_tree import new_repo


def _damage_one_pack(repo, tmp_path) -> None:
    packs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "store") for f in fs if "/data/" in os.path.join(d, f)]
    flip_byte(max(packs, key=os.path.getsize))


def _bad(report) -> set[bytes]:
    return {bytes.fromhex(c.digest) for c in report.damaged + report.missing}


def test_tree_backup_reads_an_unchanged_file_again_when_its_chunk_is_damaged(tmp_path):
    repo = new_repo(tmp_path, True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * MiB))
    repo.backup_tree(str(src), backup_id="b1", meta={})
    _damage_one_pack(repo, tmp_path)
    bad = _bad(repo.verify("b1"))
    assert bad
    repo.backup_tree(str(src), backup_id="b2", meta={}, parent_backup_id="b1")
    assert not repo.verify("b1").ok  # without the record the unchanged file's record was reused as is

    record_damaged(repo.chunks, bad, {"by": "test"})
    assert damaged_digests(repo.chunks) == bad
    repo.backup_tree(str(src), backup_id="b3", meta={}, parent_backup_id="b2")
    assert repo.verify("b3").ok and repo.verify("b1").ok  # the index prefers the new copy
    clear_damaged(repo.chunks, bad)
    assert damaged_digests(repo.chunks) == set()


def test_disk_backup_stores_a_damaged_chunk_again(tmp_path):
    repo = new_repo(tmp_path, True)
    img = make_image(tmp_path / "d.img", 2 * MiB, seed=4)
    repo.backup_disk(img, backup_id="d1", meta={})
    _damage_one_pack(repo, tmp_path)
    bad = _bad(repo.verify("d1"))
    record_damaged(repo.chunks, bad, {"by": "test"})
    repo.backup_disk(img, backup_id="d2", meta={}, parent_backup_id="d1")
    assert repo.verify("d1").ok and repo.verify("d2").ok
