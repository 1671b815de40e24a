"""GC protocol, interleaving by interleaving: a chunk a running backup may reuse is never removed."""

from __future__ import annotations

import os
import time

import pytest

from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.errors import Conflict
from tests.support.engine import BS, assert_clean, make_image, new_repo, sha256_file


def _chunks(n: int, seed: int) -> list[bytes]:
    import random

    r = random.Random(seed)
    return [r.randbytes(BS) for _ in range(n)]


def _commit(repo, backup_id: str, data: list[bytes]) -> list[bytes]:
    """A finished backup ``backup_id`` of the chunks ``data``; their digests."""
    session = WriteSession(repo.chunks)
    digests = [session.put_chunk(c).digest for c in data]
    session.commit(backup_id, {"type": "test"}, refs=b"".join(digests))
    return digests


def _wait_for_packs(store, repo, at_least: int) -> None:
    deadline = time.monotonic() + 10
    while len(list(store.list(repo.prefix + "data/"))) < at_least:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_gc_keeps_the_unindexed_packs_of_a_running_backup(local_store):
    repo = new_repo(local_store, pack_size=16 << 10)
    data = _chunks(40, 1)
    s = WriteSession(repo.chunks)
    digests = [s.put_chunk(c).digest for c in data]
    _wait_for_packs(local_store, repo, 5)  # uploaded, but no index mentions them yet
    g = repo.gc()
    assert g.packs_deleted == 0 and g.orphan_packs >= 5 and g.packs_condemned_pending >= 5
    s.commit("w", {"type": "test"}, refs=b"".join(digests))
    g2 = repo.gc()  # the writer finished: its packs are indexed and referenced -> resurrected
    assert g2.packs_deleted == 0 and g2.packs_resurrected >= 5
    for d, c in zip(digests, data, strict=True):
        assert repo.chunks.get_chunk(d) == c
    assert_clean(repo)


def test_gc_never_removes_a_deleted_backups_chunks_that_a_running_backup_reuses(local_store):
    repo = new_repo(local_store, pack_size=16 << 10)
    data = _chunks(30, 2)
    ds = _commit(repo, "x", data)
    w = WriteSession(repo.chunks)  # loads the index: x's chunks are known
    repo.delete_backup("x")
    g = repo.gc()  # x's chunks are garbage now, but w may reuse them: condemned, not deleted
    assert g.packs_deleted == 0 and g.packs_condemned_pending > 0
    assert all(not w.put_chunk(c).new for c in data)  # w deduplicates against them
    w.commit("w", {"type": "test"}, refs=b"".join(ds))
    g2 = repo.gc()
    assert g2.packs_deleted == 0
    for d, c in zip(ds, data, strict=True):
        assert repo.chunks.get_chunk(d) == c
    assert_clean(repo)


def test_a_backup_that_saw_the_condemnation_stores_its_own_copy(local_store):
    repo = new_repo(local_store, pack_size=16 << 10)
    data = _chunks(30, 3)
    ds = _commit(repo, "x", data)
    old = WriteSession(repo.chunks)  # an older writer keeps the condemnation pending
    repo.delete_backup("x")
    assert repo.gc().packs_condemned_pending > 0
    new = WriteSession(repo.chunks)  # sees the condemned list
    assert all(new.put_chunk(c).new for c in data)  # so it stores its own copies
    new.commit("n", {"type": "test"}, refs=b"".join(ds))
    old.abort()
    g = repo.gc()
    assert g.packs_deleted > 0  # x's packs are gone now ...
    for d, c in zip(ds, data, strict=True):
        assert repo.chunks.get_chunk(d) == c  # ... and n reads its own copies
    assert_clean(repo)


def test_only_one_gc_at_a_time(local_store):
    repo = new_repo(local_store)
    local_store.put(repo.prefix + "locks/gc", b'{"kind": "gc"}')
    with pytest.raises(Conflict):
        repo.gc()


def test_a_stalled_backup_that_lost_its_lock_publishes_nothing(local_store, tmp_path):
    repo = new_repo(local_store)
    s = WriteSession(repo.chunks)
    d = s.put_chunk(b"x" * 100).digest
    s.lock._stop.set()  # simulate a process frozen longer than the stale timeout
    time.sleep(repo.chunks.lock_timing.stale_after + 0.3)
    repo.gc()  # removes the stale lock
    with pytest.raises(Conflict):
        s.commit("late", {"type": "test"}, refs=d)
    assert "late" not in repo.list_manifests()


def test_gc_repacks_partly_dead_packs_and_usage_drops_exactly(local_store, tmp_path):
    repo = new_repo(local_store, pack_size=64 << 10)
    a = make_image(tmp_path / "a.img", 400, seed=31, zero_frac=0.0)
    repo.backup_disk(a, backup_id="a", meta={})
    with open(a, "r+b") as f:  # b shares the first half with a
        f.seek(200 * BS)
        f.write(os.urandom(200 * BS))
    repo.backup_disk(a, backup_id="b", meta={})
    h_b = sha256_file(a)
    u_before = repo.usage()
    repo.delete_backup("a")
    g = repo.gc()
    assert g.bytes_freed > 0 and repo.usage() < u_before
    idx = repo.chunks.reader_index(refresh=True)
    refs = repo.manifest("b").ref_set()
    assert repo.usage() == sum(idx.stored_size(d) for d in refs)
    # physical bytes are close to usage: dead data does not linger in half-empty packs
    assert repo.stored_bytes() < repo.usage() * 1.3 + 20_000
    out = tmp_path / "o.img"
    repo.restore_disk("b", str(out))
    assert sha256_file(out) == h_b
    assert_clean(repo)


def test_two_condemned_copies_of_a_needed_chunk_keep_one(local_store):
    """Regression (found by the randomized S3 run): two pending condemned lists each hold a copy of a
    chunk that a finished backup needs; sweeping both in one GC must keep one copy."""
    repo = new_repo(local_store, pack_size=16 << 10)
    cs = repo.chunks
    data = _chunks(3, 7)
    s1 = WriteSession(cs)
    ds = [s1.put_chunk(c).digest for c in data]
    s1.commit("x", {"type": "test"}, refs=b"".join(ds))
    old = WriteSession(cs)  # knows x's copies; keeps every condemnation pending while it runs
    repo.delete_backup("x")
    assert repo.gc().packs_condemned_pending > 0  # list A: x's pack
    s2 = WriteSession(cs)  # saw list A, so it stores second copies
    assert all(s2.put_chunk(c).new for c in data)
    s2.commit("y", {"type": "test"}, refs=b"".join(ds))
    repo.delete_backup("y")
    assert repo.gc().packs_condemned_pending > 1  # list B: y's pack
    assert all(not old.put_chunk(c).new for c in data)  # old reuses x's copies ...
    old.commit("z", {"type": "test"}, refs=b"".join(ds))  # ... and finishes
    repo.gc()  # sweeps A and B: one copy of each chunk must survive
    for d, c in zip(ds, data, strict=True):
        assert repo.chunks.get_chunk(d) == c
    assert_clean(repo)
