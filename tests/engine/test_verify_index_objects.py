"""A backup's verify checks the store's copies of the index objects that list the packs it read (a
damaged one it depends on is reported, naming it), not every index object of the vault: another
backup's damaged index object is not read, so the time is linear in the backup, not in the vault."""

from __future__ import annotations

import pytest

from opencbr.engine.errors import Damaged
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
    with pytest.raises(Damaged) as e:
        repo.verify("b")
    assert of_b[0] in str(e.value)
