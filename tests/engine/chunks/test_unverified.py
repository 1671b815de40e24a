"""Packs of unverified records (engine/chunks/unverified.py): a writer whose records nobody checked (an
agent) deduplicates against its own; every other writer checks a copy before it relies on it; readers
that do not hash what they read check such records; GC forgets the packs it swept.

The vault is encrypted, as agents' vaults are: AES-GCM authenticates a record, but the agent held the
key, so a record it sealed under a chunk's name may hold other data (a "forged" record here)."""

from __future__ import annotations

import os

from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.chunks.reader import read_span, spans_of
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.chunks.unverified import UNVERIFIED_DIR
from tests.support.unverified import HEADER
from tests.support.unverified import forged as _forged
from tests.support.unverified import new_vault as _repo
from tests.support.unverified import write as _write


def _chunks(repo, n=3, size=5000):
    codec = repo.chunks.codec
    datas = [os.urandom(size) for _ in range(n)]
    return codec, datas, [codec.digest(b) for b in datas]


def test_the_writer_deduplicates_against_its_own_unverified_packs(local_store):
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo)
    assert _write(repo, "agent-a", "a1", {d: codec.encode(d, b) for d, b in zip(ds, datas, strict=True)}) == ds
    packs = repo.chunks.unverified_packs()
    assert set(packs.values()) == {"agent-a"} and packs
    assert _write(repo, "agent-a", "a2", {d: codec.encode(d, b) for d, b in zip(ds, datas, strict=True)}) == []
    pack = repo.chunks.reader_index(refresh=True).lookup(ds[0]).pack_id
    assert repo.chunks.trusted_pack(pack, "agent-a") and not repo.chunks.trusted_pack(pack)
    assert not repo.chunks.trusted_pack(pack, "agent-b")


def test_another_writer_checks_a_copy_and_stores_its_own_when_it_is_forged(local_store):
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo)
    good = {d: codec.encode(d, b) for d, b in zip(ds, datas, strict=True)}
    _write(repo, "agent-a", "a1", {ds[0]: _forged(codec, ds[0]), ds[1]: good[ds[1]]})
    # another agent: the genuine chunk is checked and deduplicated, the forged one stored again
    assert _write(repo, "agent-b", "b1", {ds[0]: good[ds[0]], ds[1]: good[ds[1]]}) == [ds[0]]
    assert repo.chunks.get_chunk(ds[0]) == datas[0] and repo.chunks.get_chunk(ds[1]) == datas[1]
    # the service's own (checked) writer: neither agent's copy is taken unchecked; both are intact now
    assert _write(repo, None, "s1", {d: good[d] for d in ds}) == [ds[2]]
    # and an agent that wrote a forged copy still takes its own (its backups are its own word)
    assert _write(repo, "agent-a", "a2", {ds[0]: good[ds[0]]}) == []


def test_readers_prefer_a_checked_copy_and_unverified_ones_oldest_first(local_store):
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo, 1)
    d = ds[0]
    _write(repo, "agent-a", "a1", {d: codec.encode(d, datas[0])})
    first = repo.chunks.reader_index(refresh=True).lookup(d).pack_id
    _write(repo, "agent-a", "a2", {d: _forged(codec, d)}, full=True)  # a newer copy, forged
    assert repo.chunks.reader_index(refresh=True).lookup(d).pack_id == first
    _write(repo, None, "s1", {d: codec.encode(d, datas[0])}, full=True)
    checked = repo.chunks.reader_index(refresh=True).lookup(d).pack_id
    assert checked != first and repo.chunks.trusted_pack(checked)


def test_a_reader_that_does_not_hash_checks_records_of_unverified_packs(local_store):
    """A copy to another vault opens records without hashing them (``open_body``): a forged record of an
    agent's pack is caught there, and the chunk read from its checked copy instead."""
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo, 1)
    d = ds[0]
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)})
    _write(repo, "agent-b", "b1", {d: codec.encode(d, datas[0])})
    (span,) = spans_of(repo.chunks.reader_index(refresh=True), [d], lambda x: None)
    assert span[0] == repo.chunks.reader_index().locations(d)[0].pack_id  # agent-a's, the oldest
    (got,) = list(read_span(repo.chunks, codec, span, decode=codec.open_body, hashes=False))
    plain = got[1][2] if isinstance(got[1], tuple) else got[1]
    assert got[2] is None and bytes(plain) == datas[0]


def test_gc_forgets_the_packs_it_swept_and_folds_the_markers(local_store):
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo)
    for i, (d, b) in enumerate(zip(ds, datas, strict=True)):
        _write(repo, "agent-a", f"a{i}", {d: codec.encode(d, b)})
    markers = lambda: [k for k, _ in local_store.list("v/" + UNVERIFIED_DIR)]  # noqa: E731
    assert len(markers()) == 3 and len(repo.chunks.unverified_packs()) == 3
    repo.chunks.delete_manifest("a0")
    run_gc(repo.chunks)
    run_gc(repo.chunks)  # (the first condemns, the next sweeps what no writer can still use)
    run_gc(repo.chunks)  # (and deletes the marker objects a fold replaced, as this one does the last)
    left = repo.chunks.unverified_packs()
    assert len(markers()) == 1 and len(left) == 2 and set(left.values()) == {"agent-a"}
    index = repo.chunks.reader_index(refresh=True)
    assert set(left) == {index.lookup(d).pack_id for d in ds[1:]}


def test_a_marker_folded_by_gc_while_a_writer_reads_the_markers_is_not_missed(local_store, monkeypatch):
    """GC folds the markers (writes the new object, then deletes the old ones) between another writer's
    listing of them and its reading of them: the packs they named are still another writer's unverified
    ones to it, never taken for checked ones (it would deduplicate against a forged record unchecked)."""
    from opencbr.engine.chunks import unverified as unverified_mod

    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo, 2)
    _write(repo, "agent-a", "a1", {ds[0]: _forged(codec, ds[0])})
    _write(repo, "agent-a", "a2", {ds[1]: codec.encode(ds[1], datas[1])})
    store = repo.chunks.store
    listing = store.list

    def list_then_fold(prefix, *a, **kw):
        got = list(listing(prefix, *a, **kw))
        if prefix.endswith(UNVERIFIED_DIR):  # GC folds them now, as this writer reads them one by one
            monkeypatch.setattr(store, "list", listing)
            markers = unverified_mod.marker_objects(repo.chunks)
            assert unverified_mod.prune_unverified(repo.chunks, markers, lambda p: True) == 0  # (written)
            markers = unverified_mod.marker_objects(repo.chunks)  # (the next GC: the old ones deleted)
            assert unverified_mod.prune_unverified(repo.chunks, markers, lambda p: True) == 2
        return iter(got)

    monkeypatch.setattr(store, "list", list_then_fold)
    assert _write(repo, None, "s1", {d: codec.encode(d, b) for d, b in zip(ds, datas, strict=True)}) == [ds[0]]
    assert repo.chunks.get_chunk(ds[0]) == datas[0]


def test_another_writers_copies_are_checked_span_by_span_not_chunk_by_chunk(local_store, monkeypatch):
    """A batch of digests (a disk segment, a ``need`` message) is checked in ranged reads of the packs
    (one read on S3 per span, not one per chunk: 500 chunks took 2.75 s on the test S3 server, 0.13 s
    so); a forged copy among them is still refused, and stored again."""
    repo = _repo(local_store)
    codec, datas, ds = _chunks(repo, 40)
    records = {d: codec.encode(d, b) for d, b in zip(ds, datas, strict=True)}
    _write(repo, "agent-a", "a1", {**records, ds[7]: _forged(codec, ds[7])})
    s = WriteSession(repo.chunks, writer="agent-b")
    reads = []
    real_get = local_store.get
    monkeypatch.setattr(local_store, "get", lambda key, *a, **kw: reads.append(key) or real_get(key, *a, **kw))
    s.check_foreign(ds)
    assert len([k for k in reads if "/data/" in k]) == 1  # (the one pack: one span)
    assert [d for d in ds if s.claim(d)] == [ds[7]]
    s.put_record(ds[7], (records[ds[7]],))
    s.commit("b1", HEADER, refs=b"".join(ds))
    assert [repo.chunks.get_chunk(d) for d in ds] == datas
