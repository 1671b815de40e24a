"""A backup's verify checks the store's copies of the index objects that list the packs it read (a
damaged one it depends on is reported, naming it), not every index object of the vault: another
backup's damaged index object is not read, so the time is linear in the backup, not in the vault. A
vault's verify (``verify_index``) reads them all."""

from __future__ import annotations

import pytest

from tests.support.engine import make_image, new_repo


def _flip(store, key: str, at: int) -> None:
    blob = bytearray(store.get(key))
    blob[at % len(blob)] ^= 0x40
    store.put(key, bytes(blob))


@pytest.mark.parametrize("encrypted", [True, False])
def test_verify_checks_the_index_objects_of_its_own_packs(local_store, tmp_path, encrypted):
    repo = new_repo(local_store, encrypted=encrypted)
    repo.backup_disk(make_image(tmp_path / "a.img", 60, seed=11), backup_id="a", meta={})
    of_a = set(repo.chunks.list_index_objects())
    repo.backup_disk(make_image(tmp_path / "b.img", 60, seed=12), backup_id="b", meta={})
    of_b = sorted(set(repo.chunks.list_index_objects()) - of_a)
    assert of_a and of_b
    assert repo.verify("a").ok and repo.verify("b").ok
    for rel in of_b:  # b's index objects damaged in the store (this process read them before)
        _flip(local_store, repo.prefix + rel, 100)
    assert repo.verify("a").ok  # none of its packs is listed there: not read
    report = repo.verify("b")
    assert not report.ok and not report.damaged and not report.missing  # (its chunks read intact)
    assert [d["object"] for d in report.index_damaged] == of_b
    assert of_b[0] in report.index_damaged[0]["reason"]
    # a vault's verify reads every index object: b's are named wherever the verify starts
    assert [d["object"] for d in repo.verify_index()] == of_b
