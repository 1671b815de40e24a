"""The marker objects of unverified packs (engine/chunks/unverified.py) GC folds while another process
reads them: a session start or a reader index refresh interleaved with GC's fold.

The vault is encrypted, as agents' vaults are: the agent held the key, so a record it sealed under a
chunk's name may hold other data ("forged")."""

from __future__ import annotations

from opencbr.engine import Repository
from opencbr.engine.chunks import unverified
from tests.support.unverified import forged as _forged
from tests.support.unverified import new_vault as _repo
from tests.support.unverified import random_chunk as _chunk
from tests.support.unverified import write as _write

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
            unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True)  # (written)
            unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True)  # (old deleted)
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
    repo.chunks.marker_cache = {}  # (another process: nothing read yet)
    folded = _fold_during_first_read(monkeypatch, repo)
    assert repo.chunks.unverified_packs() == before
    assert folded


def _forged_then_folding(store, monkeypatch):
    """agent-a's forged record of a chunk (the chunk returned) and another marker; GC then folds the
    markers during the next process's first read of them."""
    repo = _repo(store)
    codec = repo.chunks.codec
    (a, da), (b, db) = _chunk(repo), _chunk(repo)
    _write(repo, "agent-a", "a1", {da: _forged(codec, da)})
    _write(repo, "agent-a", "a2", {db: codec.encode(db, b)})
    _fold_during_first_read(monkeypatch, repo)
    return repo, codec, (a, da)


def test_a_session_started_while_gc_folds_markers_still_checks_a_forged_copy(any_store, monkeypatch):
    """Without the markers, the service's own session took agent-a's forged copy as a checked one and
    deduplicated against it: its backup then referenced a chunk whose only copy is not that chunk."""
    repo, codec, (a, da) = _forged_then_folding(any_store, monkeypatch)
    assert _write(repo, None, "s1", {da: codec.encode(da, a)}) == [da]
    monkeypatch.undo()
    assert repo.chunks.get_chunk(da) == a


def test_reader_index_refreshed_while_gc_folds_markers_does_not_trust_an_agents_pack(any_store, monkeypatch):
    repo, _codec, (_a, da) = _forged_then_folding(any_store, monkeypatch)
    pack = repo.chunks.reader_index(refresh=True).lookup(da).pack_id
    assert not repo.chunks.trusted_pack(pack)


def _marker_gets(monkeypatch, cs):
    gets = []
    real_get = cs.store.get

    def get(key, *a, **kw):
        if unverified.UNVERIFIED_DIR in key:
            gets.append(key)
        return real_get(key, *a, **kw)

    monkeypatch.setattr(cs.store, "get", get)
    return gets


def test_markers_read_once_are_not_read_again_by_the_next_session_or_refresh(any_store, tmp_path, monkeypatch):
    """Each session start and reader index refresh read every marker (one GET each: ~7 ms on S3, so
    5,000 markers of a vault GC has not folded took ~35 s per start); a marker never changes, so a
    process reads only those written since (the copy is kept beside the vault's local chunk index)."""
    repo = _repo(any_store)
    codec = repo.chunks.codec
    for i in range(3):
        data, d = _chunk(repo)
        _write(repo, "agent-a", f"a{i}", {d: codec.encode(d, data)})

    def fresh():
        cs = Repository.open(any_store, "v/", b"k" * 32).chunks
        cs.spill_dir = str(tmp_path / "spill")  # (the service's scratch directory, shared by its processes)
        return cs

    first = fresh()
    gets = _marker_gets(monkeypatch, first)
    want = first.unverified_packs()
    assert len(want) == 3 and len(gets) == 3
    second = fresh()
    gets = _marker_gets(monkeypatch, second)
    assert second.unverified_packs() == want and gets == []
    data, d = _chunk(repo)
    _write(repo, "agent-b", "b1", {d: codec.encode(d, data)})
    gets.clear()  # (the store is shared: the writer's reads count too)
    got = second.unverified_packs()
    assert len(got) == 4 and len(gets) == 1
    # folded by GC (one object per writer, the old ones deleted by the next GC): the deleted markers
    # drop out of the copy, the new one is read once
    unverified.prune_unverified(second, unverified.marker_objects(second), lambda p: True)
    unverified.prune_unverified(second, unverified.marker_objects(second), lambda p: True)
    assert fresh().unverified_packs() == got and len(gets) == 2
    assert fresh().unverified_packs() == got and len(gets) == 2
    assert len(unverified._load_cache(second)) == 2


# -- markers folded while a listing of them runs ------------------------------------------------------


def test_markers_folded_by_gc_during_a_writers_listing_of_them_are_not_missed(local_store, monkeypatch):
    """A listing is no snapshot: a directory read (or an S3 listing past a key's name) need not show an
    object created while it runs, and does not show one deleted before it got there. GC folding agent-a's
    markers during the service's session start (the new object written, the old ones deleted) must not
    leave that session with neither: it would take agent-a's packs for checked ones and deduplicate
    against a forged record unchecked (its backup then unrestorable)."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    (c, dc), (a, da), (b, db) = _chunk(repo), _chunk(repo), _chunk(repo)
    _write(repo, "agent-c", "c1", {dc: codec.encode(dc, c)})
    _write(repo, "agent-a", "a1", {da: _forged(codec, da)})
    _write(repo, "agent-a", "a2", {db: codec.encode(db, b)})
    service = Repository.open(local_store, "v/", b"k" * 32)  # (another process: no markers read yet)
    gc = Repository.open(local_store, "v/", b"k" * 32).chunks
    store = service.chunks.store
    listing = store.list
    raced = []

    def racing(prefix, *args, **kwargs):
        if not prefix.endswith(unverified.UNVERIFIED_DIR) or raced:
            yield from listing(prefix, *args, **kwargs)
            return
        raced.append(prefix)
        keys = sorted(listing(prefix, *args, **kwargs))
        yield keys[0]  # (agent-c's, the oldest: read at once)
        monkeypatch.setattr(store, "list", listing)
        unverified.prune_unverified(gc, unverified.marker_objects(gc), lambda p: True)  # GC folds now
        now = set(listing(prefix, *args, **kwargs))
        yield from (k for k in keys[1:] if k in now)  # (those deleted meanwhile are not shown)

    monkeypatch.setattr(store, "list", racing)
    assert _write(service, None, "s1", {da: codec.encode(da, a)}) == [da]
    assert raced
    assert Repository.open(local_store, "v/", b"k" * 32).chunks.get_chunk(da) == a


def test_a_fold_deletes_the_objects_it_replaced_at_the_next_gc(local_store):
    """The fold's two steps: one object per writer written (the old ones kept), then, once it was read
    with the markers, the objects it stands for deleted; a pack gone since drops out in turn."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    chunks = [_chunk(repo) for _ in range(3)]
    for i, (data, d) in enumerate(chunks):
        _write(repo, "agent-a", f"a{i}", {d: codec.encode(d, data)})
    cs = repo.chunks
    want = cs.unverified_packs()
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True) == 0
    assert len(unverified.marker_objects(cs)) == 4 and cs.unverified_packs() == want
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True) == 3
    assert len(unverified.marker_objects(cs)) == 1 and cs.unverified_packs() == want
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: True) == 0
    gone = sorted(want)[0]
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: p != gone) == 0
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: p != gone) == 1
    assert set(cs.unverified_packs()) == set(want) - {gone} and len(unverified.marker_objects(cs)) == 1
    # a backup between two GCs (a marker newer than the fold) does not keep the replaced objects
    data, d = _chunk(repo)
    _write(repo, "agent-a", "a3", {d: codec.encode(d, data)})
    want = cs.unverified_packs()
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: p != gone) == 0
    data, d = _chunk(repo)
    _write(repo, "agent-a", "a4", {d: codec.encode(d, data)})
    want = cs.unverified_packs()
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: p != gone) == 2
    assert cs.unverified_packs() == want and len(unverified.marker_objects(cs)) == 3
    # every pack of a writer gone: its objects go at once (they name nothing to take for checked)
    assert unverified.prune_unverified(cs, unverified.marker_objects(cs), lambda p: False) == 3
    assert unverified.marker_objects(cs) == {}
