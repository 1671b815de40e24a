"""A flipped byte in any stored object is detected and never restored silently."""

from __future__ import annotations

import pytest

from opencbr.engine import Repository
from opencbr.engine.errors import Damaged
from tests.support.engine import MASTER_KEY, make_image, new_repo, sha256_file


def _pack_keys(store, repo):
    return sorted(k for k, _ in store.list(repo.prefix + "data/"))


def _flip(store, key, offset):
    blob = bytearray(store.get(key))
    blob[offset] ^= 0x40
    store.put(key, bytes(blob))


@pytest.mark.parametrize("encrypted", [True, False])
def test_verify_reports_damaged_chunk_and_its_offsets_and_restore_refuses(local_store, tmp_path, encrypted):
    repo = new_repo(local_store, encrypted)
    img = make_image(tmp_path / "d.img", 200, seed=21, zero_frac=0.1)
    repo.backup_disk(img, backup_id="b1", meta={})
    assert repo.verify("b1").ok
    key = _pack_keys(local_store, repo)[0]
    _flip(local_store, key, 100)  # inside the first record of the first pack
    rep = repo.verify("b1")
    assert not rep.ok and len(rep.damaged) == 1 and not rep.missing
    assert rep.damaged[0].offsets and all(o % 4096 == 0 for o in rep.damaged[0].offsets)
    with pytest.raises(Damaged):
        repo.restore_disk("b1", str(tmp_path / "out.img"))


def test_verify_reports_missing_pack(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 200, seed=22, zero_frac=0.1)
    repo.backup_disk(img, backup_id="b1", meta={})
    local_store.delete(_pack_keys(local_store, repo)[0])
    rep = repo.verify("b1")
    assert rep.missing and not rep.ok


def test_damaged_copy_falls_back_to_a_full_backups_copy(local_store, tmp_path):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 100, seed=23, zero_frac=0.0)
    repo.backup_disk(img, backup_id="a", meta={})
    old_packs = _pack_keys(local_store, repo)
    repo.backup_disk(img, backup_id="b", meta={}, full=True)  # second copy of every chunk
    new_packs = [k for k in _pack_keys(local_store, repo) if k not in old_packs]
    for k in new_packs:
        _flip(local_store, k, 50)
    out = tmp_path / "o.img"
    Repository.open(local_store, repo.prefix, MASTER_KEY).restore_disk("a", str(out))
    assert sha256_file(out) == sha256_file(img)
    assert repo.verify("b").ok  # every chunk still has an intact copy


@pytest.mark.parametrize("what", ["index/", "manifests/", "config"])
def test_damaged_metadata_is_detected(local_store, tmp_path, what):
    repo = new_repo(local_store)
    img = make_image(tmp_path / "d.img", 50, seed=24)
    repo.backup_disk(img, backup_id="b1", meta={})
    key = next(k for k, _ in local_store.list(repo.prefix + what))
    if what == "config":
        cfg = local_store.get(key).replace(b'"ciphertext": "', b'"ciphertext": "00')
        local_store.put(key, cfg)
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; a silent open would not
            Repository.open(local_store, repo.prefix, MASTER_KEY)
        return
    _flip(local_store, key, 20)
    fresh = Repository.open(local_store, repo.prefix, MASTER_KEY)
    if what == "index/":  # the restore finds the chunks from the packs' trailers; verify names the object
        fresh.restore_disk("b1", str(tmp_path / "o.img"))
        assert sha256_file(tmp_path / "o.img") == sha256_file(img)
        assert [d["object"] for d in fresh.verify("b1").index_damaged] == [key[len(repo.prefix):]]
        return
    with pytest.raises(Damaged):
        fresh.read_manifest("b1")
