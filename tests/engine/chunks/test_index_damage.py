"""A damaged index object (a flipped byte, a truncation) no longer stops a vault: a process whose local
index meets it at its first sync skips it, remembers it, and recovers the locations of the packs no
readable object lists from the packs' own trailers. Backups, restores and verifies go on (verify names
the damaged object); GC never deletes a pack because the object that listed it is unreadable, and
rewrites a good index when every pack could be read (docs/verification.md, "Damaged index objects")."""

from __future__ import annotations

import os

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks.diskindex import DiskChunkIndex
from opencbr.engine.chunks.locations import decode_index
from opencbr.engine.chunks.packs import pack_key
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.chunks.store import UNLISTED_PACKS
from opencbr.engine.errors import Damaged
from tests.support.engine import MASTER_KEY, make_image, new_repo, sha256_file


def _flip(store, key: str, at: int) -> None:
    blob = bytearray(store.get(key))
    blob[at % len(blob)] ^= 0x40
    store.put(key, bytes(blob))


def _truncate(store, key: str, keep: int) -> None:
    store.put(key, store.get(key)[:keep])


DAMAGE = {"flip": lambda store, key: _flip(store, key, 100),
          "truncate": lambda store, key: _truncate(store, key, len(store.get(key)) // 2)}


def _two_backups(store, tmp_path, encrypted: bool = True):
    """Backups a and b of two different images; returns the repository, the images and b's index objects
    (which list every chunk b has and a lacks)."""
    repo = new_repo(store, encrypted=encrypted)
    img_a = make_image(tmp_path / "a.img", 200, seed=11)
    img_b = make_image(tmp_path / "b.img", 200, seed=12)
    repo.backup_disk(img_a, backup_id="a", meta={})
    before = set(repo.chunks.list_index_objects())
    repo.backup_disk(img_b, backup_id="b", meta={})
    of_b = sorted(set(repo.chunks.list_index_objects()) - before)
    assert of_b
    return repo, img_a, img_b, of_b


def _packs_listed(repo: Repository, rels: list[str]) -> set[str]:
    return {pid for rel in rels
            for pid, _ents in decode_index(repo.chunks.sealer, repo.store.get(repo.prefix + rel), rel)}


def _fresh(store) -> Repository:
    """Another process: its own local index, which has never read the vault's index objects."""
    return Repository.open(store, "vaults/v1/", MASTER_KEY)


def _restored(repo: Repository, backup_id: str, tmp_path, name: str) -> str:
    out = str(tmp_path / name)
    repo.restore_disk(backup_id, out)
    return sha256_file(out)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_fresh_process_backs_up_restores_and_verifies_beside_an_unused_damaged_object(local_store, tmp_path,
                                                                                        kind):
    repo, img_a, img_b, of_b = _two_backups(local_store, tmp_path)
    repo.delete_backup("b")  # its index object is now used by no backup (GC has not run)
    DAMAGE[kind](local_store, repo.prefix + of_b[0])
    fresh = _fresh(local_store)
    # backs up (b's data again: the chunks only the damaged object listed are stored anew)
    res = fresh.backup_disk(img_b, backup_id="c", meta={})
    assert res.new_chunks > 0
    assert _restored(fresh, "a", tmp_path, "a.out") == sha256_file(img_a)
    assert _restored(fresh, "c", tmp_path, "c.out") == sha256_file(img_b)
    report = fresh.verify("a")
    assert not report.damaged and not report.missing and report.chunks_checked > 0
    assert not report.ok  # the vault's index is damaged: verify says so, naming the object
    assert [d["object"] for d in report.index_damaged] == [of_b[0]]
    assert of_b[0] in report.index_damaged[0]["reason"]


@pytest.mark.parametrize("encrypted", [True, False])
def test_the_chunks_only_a_damaged_object_listed_are_found_from_the_pack_trailers(local_store, tmp_path, encrypted):
    repo, _img_a, img_b, of_b = _two_backups(local_store, tmp_path, encrypted)
    for rel in of_b:
        _flip(local_store, repo.prefix + rel, 100)
    fresh = _fresh(local_store)
    assert _restored(fresh, "b", tmp_path, "b.out") == sha256_file(img_b)
    report = fresh.verify("b")
    assert not report.damaged and not report.missing
    assert sorted(d["object"] for d in report.index_damaged) == of_b
    # a writer does not deduplicate against what was recovered (the store's index does not list it)
    assert not any(fresh.chunks.load_known_digests().view.has(d)
                   for d in list(fresh.chunks.manifest_refs("b"))[:50])


def test_a_chunk_in_a_pack_whose_trailer_is_unreadable_fails_naming_the_damaged_object(local_store, tmp_path):
    repo, _img_a, _img_b, of_b = _two_backups(local_store, tmp_path)
    packs = sorted(_packs_listed(repo, of_b))
    for rel in of_b:
        _flip(local_store, repo.prefix + rel, 100)
    for p in packs:  # every pack b added loses its footer: nothing to recover from
        _truncate(local_store, repo.prefix + pack_key(p), len(local_store.get(repo.prefix + pack_key(p))) - 4)
    fresh = _fresh(local_store)
    report = fresh.verify("b")
    assert report.missing
    assert of_b[0] in report.missing[0].reason
    assert of_b[0] in [d["object"] for d in report.index_damaged]


def test_gc_with_a_damaged_index_object_loses_nothing_and_rewrites_the_index(local_store, tmp_path):
    repo, img_a, img_b, of_b = _two_backups(local_store, tmp_path)
    packs = _packs_listed(repo, of_b)
    for rel in of_b:  # b's packs are listed only there, and b references them: deleting them loses b
        _flip(local_store, repo.prefix + rel, 100)
    result = _fresh(local_store).gc()
    assert sorted(result.index_objects_damaged) == of_b
    assert result.packs_recovered >= len(packs) > 0
    assert result.packs_unreadable == [] and result.packs_deleted == 0
    # the damaged objects were replaced by ones that list every pack: a later process sees no damage
    assert not set(of_b) & set(repo.chunks.list_index_objects())
    later = _fresh(local_store)
    assert _restored(later, "b", tmp_path, "b.out") == sha256_file(img_b)
    assert _restored(later, "a", tmp_path, "a.out") == sha256_file(img_a)
    for bid in ("a", "b"):
        assert later.verify(bid).ok


def test_gc_keeps_a_pack_it_cannot_read_while_an_index_object_is_damaged(local_store, tmp_path):
    repo, _img_a, _img_b, of_b = _two_backups(local_store, tmp_path)
    repo.delete_backup("b")  # nothing references b's packs: without a listing they look like garbage
    packs = sorted(_packs_listed(repo, of_b))
    for rel in of_b:
        _flip(local_store, repo.prefix + rel, 100)
    cut = packs[0]
    key = repo.prefix + pack_key(cut)
    _truncate(local_store, key, len(local_store.get(key)) - 4)  # its trailer cannot be read either
    result = _fresh(local_store).gc()
    assert result.packs_unreadable == [cut]
    assert result.packs_resurrected == 0  # (not even condemned)
    assert local_store.head(key) is not None  # kept: GC cannot tell what it holds
    assert set(of_b) <= set(repo.chunks.list_index_objects())  # and the damaged objects stay, reported
    assert _fresh(local_store).verify("a").index_damaged


def test_a_sync_skips_a_damaged_object_remembers_it_and_retries_it(tmp_path):
    idx = DiskChunkIndex(str(tmp_path / "idx"))
    good = [(os.urandom(16).hex(), os.urandom(32) + (0).to_bytes(4, "little") + (10).to_bytes(4, "little"))]
    lost = [(os.urandom(16).hex(), os.urandom(32) + (0).to_bytes(4, "little") + (20).to_bytes(4, "little"))]
    readable = {"index/1": good}
    reads: list[str] = []

    def read(name):
        reads.append(name)
        if name not in readable:
            raise Damaged(f"{name}: authentication failed")
        return readable[name]

    recovered: list[set] = []

    def recover(known):
        recovered.append(set(known))
        yield from lost

    snap = idx.sync_with(["index/1", "index/2"], read, recover)
    assert snap is not None and snap.damaged == {"index/2": "index/2: authentication failed"}
    assert set(snap.pack_no) == {good[0][0], lost[0][0]}  # lost's pack recovered from its trailer
    assert recovered == [{good[0][0]}]
    snap = idx.sync_with(["index/1", "index/2"], read, recover)
    assert reads.count("index/2") == 2 and len(recovered) == 1  # retried, recovered once
    readable["index/2"] = lost  # put back (an operator restored the object)
    snap = idx.sync_with(["index/1", "index/2"], read, recover)
    assert snap.damaged == {} and set(snap.pack_no) == {good[0][0], lost[0][0]}
    snap = idx.sync_with(["index/1"], read, recover)  # and once it is gone, its packs go with it
    assert set(snap.pack_no) == {good[0][0]}


def test_gc_repairs_the_index_only_while_no_writer_is_live(local_store, tmp_path):
    """The packs recovered from trailers may be a running writer's, not indexed yet (it deletes them if
    it aborts): GC lists them in the index only when no writer is live."""
    repo, _img_a, img_b, of_b = _two_backups(local_store, tmp_path)
    for rel in of_b:
        _flip(local_store, repo.prefix + rel, 100)
    writer = WriteSession(_fresh(local_store).chunks)
    try:
        result = _fresh(local_store).gc()
        assert sorted(result.index_objects_damaged) == of_b and result.packs_deleted == 0
        assert set(of_b) <= set(repo.chunks.list_index_objects())  # not replaced while the writer runs
        assert _restored(_fresh(local_store), "b", tmp_path, "b.out") == sha256_file(img_b)
    finally:
        writer.abort()
    _fresh(local_store).gc()
    assert not set(of_b) & set(repo.chunks.list_index_objects())
    assert _fresh(local_store).verify("b").ok


def _delete(store, repo: Repository, rels: list[str]) -> None:
    for rel in rels:
        store.delete(repo.prefix + rel)


def test_a_deleted_index_object_loses_nothing_readers_use_the_trailers_and_gc_lists_its_packs_again(
        local_store, tmp_path):
    """A deleted index object looks exactly like one GC replaced: its packs are listed nowhere, like a
    crashed writer's. Readers find its chunks from the packs' trailers (verify says the index lacks
    them), and GC keeps the packs backups need and lists them in the index again."""
    repo, img_a, img_b, of_b = _two_backups(local_store, tmp_path)
    packs = _packs_listed(repo, of_b)
    _delete(local_store, repo, of_b)
    fresh = _fresh(local_store)
    assert _restored(fresh, "b", tmp_path, "b.out") == sha256_file(img_b)
    report = fresh.verify("b")
    assert not report.damaged and not report.missing
    assert [d["object"] for d in report.index_damaged] == [UNLISTED_PACKS]  # the index lacks them: said
    result = _fresh(local_store).gc()
    assert result.packs_deleted == 0
    assert result.packs_unlisted_kept == result.packs_relisted == len(packs) > 0
    assert all(local_store.head(repo.prefix + pack_key(p)) is not None for p in packs)
    later = _fresh(local_store)
    assert packs <= set(later.chunks.reader_index().pack_ids)  # listed again: the index is whole
    for bid, img in (("a", img_a), ("b", img_b)):
        assert _restored(later, bid, tmp_path, f"{bid}.later") == sha256_file(img)
        assert later.verify(bid).ok
    assert _fresh(local_store).gc().packs_unlisted_kept == 0  # nothing left to repair


def test_gc_keeps_a_deleted_index_objects_packs_while_a_writer_is_live_and_lists_them_after(local_store, tmp_path):
    repo, _img_a, img_b, of_b = _two_backups(local_store, tmp_path)
    packs = _packs_listed(repo, of_b)
    _delete(local_store, repo, of_b)
    writer = WriteSession(_fresh(local_store).chunks)
    try:
        result = _fresh(local_store).gc()
        assert result.packs_deleted == 0 and result.packs_unlisted_kept == len(packs)
        assert result.packs_relisted == 0  # a running writer's unindexed packs look the same: not yet
        result = _fresh(local_store).gc()  # (and a second GC, the condemned lists swept, still keeps them)
        assert result.packs_deleted == 0
    finally:
        writer.abort()
    assert _fresh(local_store).gc().packs_relisted == len(packs)
    later = _fresh(local_store)
    assert _restored(later, "b", tmp_path, "b.out") == sha256_file(img_b)
    assert later.verify("b").ok


def test_gc_still_deletes_the_unlisted_packs_no_backup_needs(local_store, tmp_path):
    """What a deleted index object listed for a deleted backup is garbage like a crashed writer's packs."""
    repo, img_a, _img_b, of_b = _two_backups(local_store, tmp_path)
    packs = _packs_listed(repo, of_b)
    repo.delete_backup("b")
    _delete(local_store, repo, of_b)
    result = _fresh(local_store).gc()
    assert result.packs_unlisted_kept == 0 and result.packs_deleted >= len(packs)
    assert not any(local_store.head(repo.prefix + pack_key(p)) for p in packs)
    assert _restored(_fresh(local_store), "a", tmp_path, "a.out") == sha256_file(img_a)
