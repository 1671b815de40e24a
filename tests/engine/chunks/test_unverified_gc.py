"""GC and agents' unverified packs (engine/chunks/unverified.py): the copy of a chunk GC keeps is the one
readers prefer -- a checked copy over an unverified one, unverified ones oldest first -- so an agent that
stores a forged copy of a chunk again (a full backup) cannot make GC drop the copy other hosts rely on."""

from __future__ import annotations

import os

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.chunks.session import WriteSession
from tests.support.unverified import HEADER
from tests.support.unverified import forged as _forged
from tests.support.unverified import new_vault as _repo
from tests.support.unverified import write as _write


@pytest.mark.parametrize("honest", [None, "agent-b"])
def test_gc_keeps_the_copy_readers_prefer_not_a_newer_forged_one(local_store, honest):
    """The service (or another agent) stored chunk ``d`` with another one; then agent-a stores ``d`` again,
    forged, in a full backup. GC must keep the honest copy (it may repack it, checked), never leave only
    the forged one."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, other = os.urandom(5000), os.urandom(5000)
    d, o = codec.digest(data), codec.digest(other)
    _write(repo, honest, "h1", {d: codec.encode(d, data), o: codec.encode(o, other)})
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)}, full=True)
    repo.chunks.delete_manifest("h1")
    _write(repo, honest, "h2", {d: codec.encode(d, data)})  # (deduplicated: h1's copy)
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert repo.chunks.get_chunk(d) == data


def test_gc_keeps_an_honest_unverified_copy_when_an_older_one_is_forged(local_store):
    """agent-a stores a forged ``d`` first; agent-b's check of it fails, so b stores its own copy; the
    service checks b's copy and deduplicates against it. Readers prefer the oldest unverified copy (the
    forged one, then fall back): GC must not keep only that one."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, other = os.urandom(5000), os.urandom(5000)
    d, o = codec.digest(data), codec.digest(other)
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)})
    _write(repo, "agent-b", "b1", {d: codec.encode(d, data), o: codec.encode(o, other)})
    _write(repo, None, "h1", {d: codec.encode(d, data)})  # (b's copy checked, deduplicated)
    repo.chunks.delete_manifest("b1")  # (b's pack is mostly dead now: repacked, or dropped)
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert repo.chunks.get_chunk(d) == data
    # and a checked copy exists now (the repack checked b's record): the forged one goes next
    run_gc(repo.chunks)
    index = repo.chunks.reader_index(refresh=True)
    assert [repo.chunks.trusted_pack(loc.pack_id) for loc in index.locations(d)] == [True]


def test_a_condemned_checked_copy_a_running_backup_relies_on_outlives_a_forged_one(local_store):
    """The service's backup starts and deduplicates against chunk ``d`` in a pack GC then condemns (its
    backup was deleted); an agent, which may no longer deduplicate against that pack, stores ``d`` forged
    (no full backup needed). The sweep must resurrect the checked copy the running backup relied on: a
    copy in an unverified pack does not stand in for it."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data = os.urandom(5000)
    d = codec.digest(data)
    _write(repo, None, "h1", {d: codec.encode(d, data)})
    repo.chunks.delete_manifest("h1")
    running = WriteSession(repo.chunks)
    assert not running.claim(d)  # deduplicated against h1's copy
    run_gc(repo.chunks)  # condemns h1's pack; the running backup has not seen that: not swept
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)})
    running.commit("h2", HEADER, refs=d)
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert repo.chunks.get_chunk(d) == data


def test_a_condemned_unverified_copy_a_backup_relies_on_outlives_a_forged_one(local_store):
    """agent-a stored chunk ``d`` genuine, then forged again (a full backup, in a pack it keeps using);
    both its backups of ``d`` expire. agent-b's backup, running as GC condemns the genuine copy's pack,
    checked that copy and deduplicated against it. The sweep must keep it: the forged copy, unverified
    too, does not stand in for it."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, own = os.urandom(5000), os.urandom(100000)
    d, w = codec.digest(data), codec.digest(own)
    _write(repo, "agent-a", "a1", {d: codec.encode(d, data)})
    _write(repo, "agent-a", "a2", {d: _forged(codec, d), w: codec.encode(w, own)}, full=True)
    _write(repo, "agent-a", "a3", {w: codec.encode(w, own)})  # (keeps the forged copy's pack)
    repo.chunks.delete_manifest("a1")
    repo.chunks.delete_manifest("a2")
    running = WriteSession(repo.chunks, writer="agent-b")
    assert not running.claim(d)  # a1's copy checked, deduplicated against
    run_gc(repo.chunks)  # condemns a1's pack; the running backup has not seen that: not swept
    running.commit("b1", HEADER, refs=d)
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert repo.chunks.get_chunk(d) == data


def test_a_forged_record_a_repack_left_behind_is_not_kept_for_ever(local_store):
    """Only agent-a's own backup needs its forged ``d``: the repack of its pack skips that record (it
    fails its check), and the sweep does not resurrect the pack for it GC after GC."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data = os.urandom(5000)
    d, y = codec.digest(b"x"), codec.digest(data)
    _write(repo, "agent-a", "a1", {d: _forged(codec, d), y: codec.encode(y, data)})
    _write(repo, "agent-a", "a2", {d: _forged(codec, d)})  # (deduplicated: its own)
    repo.chunks.delete_manifest("a1")  # (half the pack dead: repacked)
    first = run_gc(repo.chunks)
    assert first.packs_repacked == 1 and first.damaged_chunks == [d.hex()]
    run_gc(repo.chunks)
    assert repo.chunks.reader_index(refresh=True).locations(d) == []
    assert not list(local_store.list("v/data/"))


def test_an_agents_full_backup_leaves_one_copy_of_each_chunk_after_gc(local_store):
    """An honest agent's full backup stores every chunk again: GC keeps one copy of each (one it checked,
    the agent's copies being unverified), as it did before agents' records went unchecked."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    datas = [os.urandom(5000) for _ in range(3)]
    good = {codec.digest(b): codec.encode(codec.digest(b), b) for b in datas}
    _write(repo, "agent-a", "a1", good)
    _write(repo, "agent-a", "a2", good, full=True)
    assert len(list(local_store.list("v/data/"))) == 2
    run_gc(repo.chunks)
    run_gc(repo.chunks)
    assert len(list(local_store.list("v/data/"))) == 1
    index = repo.chunks.reader_index(refresh=True)
    assert all(len(index.locations(d)) == 1 and repo.chunks.get_chunk(d) == b
               for d, b in zip(good, datas, strict=True))


def test_packs_gc_lists_again_are_not_taken_for_checked_ones(local_store):
    """GC lists an unlisted pack again when a backup needs a chunk only it holds (the repair of a deleted
    index object). Such a pack may be an agent's, left by a worker that died after uploading it and
    before marking it: listed again, it stays unverified (its writer unknown), so the service checks its
    copy before relying on it."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data = os.urandom(5000)
    d = codec.digest(data)
    dead = WriteSession(repo.chunks, writer="agent-a")
    assert dead.claim(d)
    dead.put_record(d, (_forged(codec, d),))
    dead._drain()  # (its pack uploaded)
    dead._finish()  # (and the worker gone: no marker, no index object, its lock released)
    s = WriteSession(repo.chunks)
    s.commit("h1", HEADER, refs=d)  # a backup whose copy of d was listed by an index object since lost
    result = run_gc(repo.chunks)
    assert result.packs_relisted == 1
    (pack,) = {loc.pack_id for loc in repo.chunks.reader_index(refresh=True).locations(d)}
    assert not repo.chunks.trusted_pack(pack)
    assert WriteSession(repo.chunks).claim(d)  # its copy checked, failed: stored again


def test_packs_the_index_repair_lists_are_not_taken_for_checked_ones(local_store):
    """A damaged index object: GC's repair lists every pack recovered from its trailer, an agent's pack a
    dead worker left unmarked among them. Listed, it stays unverified: the service checks its copy."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, other = os.urandom(5000), os.urandom(5000)
    d, o = codec.digest(data), codec.digest(other)
    _write(repo, None, "h1", {o: codec.encode(o, other)})
    (damaged,) = repo.chunks.list_index_objects()
    dead = WriteSession(repo.chunks, writer="agent-a")
    assert dead.claim(d)
    dead.put_record(d, (_forged(codec, d),))
    dead._drain()
    dead._finish()  # (the worker gone: its pack neither marked nor indexed)
    WriteSession(repo.chunks).commit("h2", HEADER, refs=d)  # (its copy of d listed by the damaged object)
    blob = bytearray(local_store.get("v/" + damaged))
    blob[100] ^= 0x40
    local_store.put("v/" + damaged, bytes(blob))
    gc_repo = Repository.open(local_store, "v/", b"k" * 32)
    gc_repo.chunks._disk().discard()
    run_gc(gc_repo.chunks)
    fresh = Repository.open(local_store, "v/", b"k" * 32).chunks
    fresh._disk().discard()
    locs = fresh.reader_index(refresh=True).locations(d)
    assert locs and not fresh.reader_index().damaged_objects  # (repaired)
    assert not any(fresh.trusted_pack(loc.pack_id) for loc in locs)
    assert WriteSession(fresh).claim(d)  # its copy checked, failed: stored again
