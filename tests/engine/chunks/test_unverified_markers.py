"""The marker objects of unverified packs (engine/chunks/unverified.py) GC folds while another process
reads them: a session start or a reader index refresh interleaved with GC's fold.

The vault is encrypted, as agents' vaults are: the agent held the key, so a record it sealed under a
chunk's name may hold other data ("forged")."""

from __future__ import annotations

import os

from opencbr.engine import Repository
from opencbr.engine.chunks import unverified
from opencbr.engine.chunks.session import WriteSession

HEADER = {"type": "disk", "disk_size": 65536, "block_size": 65536}


def _repo(store):
    return Repository.create(store, "v/", b"k" * 32, encrypted=True)


def _write(repo, writer, name, records, *, full=False):
    s = WriteSession(repo.chunks, writer=writer, force_new=full)
    stored = []
    for d, rec in records.items():
        if s.claim(d):
            s.put_record(d, (rec,))
            stored.append(d)
    s.commit(name, HEADER, refs=b"".join(records))
    return stored


def _forged(codec, d):
    return codec.encode(d, b"not the chunk " * 50)


def _chunk(repo, size=5000):
    data = os.urandom(size)
    return data, repo.chunks.codec.digest(data)


# -- markers folded while they are read ---------------------------------------------------------------


def _fold_during_first_read(monkeypatch, repo):
    """GC folds the markers (writes the new object, deletes the old) just after a reader listed them and
    before it reads the first: the interleaving of a session start (or reader index refresh) with GC."""
    cs = repo.chunks
    real_get = cs.store.get
    folded = []

    def get(key, *a, **kw):
        if unverified.UNVERIFIED_DIR in key and not folded:
            folded.append(key)
            monkeypatch.setattr(cs.store, "get", real_get)
            unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True)
            monkeypatch.setattr(cs.store, "get", get)
        return real_get(key, *a, **kw)

    monkeypatch.setattr(cs.store, "get", get)
    return folded


def test_markers_folded_by_gc_while_they_are_read_are_not_lost(any_store, monkeypatch):
    repo = _repo(any_store)
    codec = repo.chunks.codec
    (a, da), (b, db) = _chunk(repo), _chunk(repo)
    _write(repo, "agent-a", "a1", {da: codec.encode(da, a)})
    _write(repo, "agent-a", "a2", {db: codec.encode(db, b)})
    before = repo.chunks.unverified_packs()
    assert len(before) == 2
    folded = _fold_during_first_read(monkeypatch, repo)
    assert repo.chunks.unverified_packs() == before
    assert folded


def test_a_session_started_while_gc_folds_markers_still_checks_a_forged_copy(any_store, monkeypatch):
    """Without the markers, the service's own session took agent-a's forged copy as a checked one and
    deduplicated against it: its backup then referenced a chunk whose only copy is not that chunk."""
    repo = _repo(any_store)
    codec = repo.chunks.codec
    (a, da), (b, db) = _chunk(repo), _chunk(repo)
    _write(repo, "agent-a", "a1", {da: _forged(codec, da)})
    _write(repo, "agent-a", "a2", {db: codec.encode(db, b)})
    _fold_during_first_read(monkeypatch, repo)
    assert _write(repo, None, "s1", {da: codec.encode(da, a)}) == [da]
    monkeypatch.undo()
    assert repo.chunks.get_chunk(da) == a


def test_reader_index_refreshed_while_gc_folds_markers_does_not_trust_an_agents_pack(any_store, monkeypatch):
    repo = _repo(any_store)
    codec = repo.chunks.codec
    (_a, da), (b, db) = _chunk(repo), _chunk(repo)
    _write(repo, "agent-a", "a1", {da: _forged(codec, da)})
    _write(repo, "agent-a", "a2", {db: codec.encode(db, b)})
    _fold_during_first_read(monkeypatch, repo)
    pack = repo.chunks.reader_index(refresh=True).lookup(da).pack_id
    assert not repo.chunks.trusted_pack(pack)


