"""A write session past its memory bounds: the dedup sets on disk and index objects written as it goes
still give exact dedup, bit-exact restores, and leave GC a vault it can clean."""

from __future__ import annotations

from opencbr.engine.chunks import session as session_module
from opencbr.engine.chunks.store import INDEX_DIR
from tests.support.engine import make_image, new_repo, sha256_file


def test_backups_past_the_memory_bounds_dedup_exactly_and_restore(local_store, tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "INDEX_EVERY_RECORDS", 50)  # index objects as it goes
    repo = new_repo(local_store, pack_size=32 << 10)
    repo.chunks.memory_entries = 16  # both dedup sets on disk almost at once
    repo.chunks.spill_dir = str(tmp_path)
    img = make_image(tmp_path / "d.img", 1500, seed=3, pool=200)  # repeated blocks within the disk
    first = repo.backup_disk(img, backup_id="b1", meta={})
    assert len(repo.chunks.list_index_objects()) > 2
    assert first.new_chunks < first.data_blocks  # repeats stored once
    again = repo.backup_disk(img, backup_id="b2", meta={}, parent_backup_id="b1")
    assert again.new_chunks == 0 and again.changed_blocks == 0
    out = tmp_path / "out.img"
    repo.restore("b2", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("opencbr-")]  # spill files unlinked
    repo.delete_backup("b1")
    repo.delete_backup("b2")
    repo.gc()
    repo.gc()
    assert not list(local_store.list("vaults/v1/data/"))  # nothing referenced: everything collected
    assert len(list(local_store.list("vaults/v1/" + INDEX_DIR))) <= 1
