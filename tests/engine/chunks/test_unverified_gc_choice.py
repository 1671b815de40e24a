"""Which copy of a chunk GC keeps when an agent's unverified copy (engine/chunks/unverified.py) is one of
several.

The vault is encrypted, as agents' vaults are: the agent held the key, so a record it sealed under a
chunk's name may hold other data ("forged"); bitrot in a pack is a flipped byte ("damaged")."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.chunks.damage import record_damaged
from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.errors import Damaged
from tests.support.unverified import forged as _forged
from tests.support.unverified import new_vault as _repo
from tests.support.unverified import random_chunk as _chunk
from tests.support.unverified import write as _write


def _gc_twice(repo):
    run_gc(repo.chunks)
    run_gc(repo.chunks)  # (the first condemns, the next sweeps)


# -- which copy GC keeps -------------------------------------------------------------------------------


def test_gc_keeps_the_checked_copy_over_a_newer_forged_one(local_store):
    """An agent's full backup stores a forged copy of a chunk the service stored (checked): GC kept the
    newest copy, the forged one, and deleted the only good one: the service's backup lost the chunk."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, d = _chunk(repo)
    _write(repo, None, "s1", {d: codec.encode(d, data)})
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)}, full=True)
    _gc_twice(repo)
    assert repo.chunks.get_chunk(d) == data


def test_gc_keeps_the_unverified_copy_another_writer_checked_over_a_newer_forged_one(local_store):
    """The service checked agent-a's copy and deduplicated against it; agent-a (compromised) then stores
    a forged copy in a full backup. GC must not keep the forged copy alone: a compromised agent would
    spoil the service's backup."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, d = _chunk(repo)
    _write(repo, "agent-a", "a1", {d: codec.encode(d, data)})
    assert _write(repo, None, "s1", {d: codec.encode(d, data)}) == []  # checked, deduplicated against
    _write(repo, "agent-a", "a2", {d: _forged(codec, d)}, full=True)
    _gc_twice(repo)
    assert repo.chunks.get_chunk(d) == data


def _flip_record(tmp_path, repo, d):
    loc = repo.chunks.reader_index(refresh=True).lookup(d)
    (path,) = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "store") for f in fs if loc.pack_id in f]
    with open(path, "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(loc.offset + loc.length // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    return loc.pack_id


@pytest.mark.parametrize("repairer", ["agent-a", "agent-b"])
def test_gc_keeps_an_agents_repaired_copy_over_its_damaged_older_one(tmp_path, local_store, repairer):
    """Repair from the live source (damage.py) when every copy is an agent's: the new copy is unverified
    and newer, the damaged one unverified and older (readers try it first). GC must keep the repair."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, d = _chunk(repo)
    _write(repo, "agent-a", "a1", {d: codec.encode(d, data)})
    _flip_record(tmp_path, repo, d)
    with pytest.raises(Damaged):
        codec.decode(d, repo.chunks.read_record(repo.chunks.reader_index(refresh=True).lookup(d)))
    record_damaged(repo.chunks, [d], {"by": "test"})
    assert _write(repo, repairer, "r1", {d: codec.encode(d, data)}) == [d]
    _gc_twice(repo)
    assert repo.chunks.get_chunk(d) == data


def test_gc_keeps_the_copy_others_checked_when_an_agent_forged_the_oldest(local_store):
    """A compromised agent stores forged copies first (of chunks it expects others to hold); the next
    agent's check fails, so it stores its own, which the service then checks and relies on. Readers try
    the oldest unverified copy first: GC kept that one, the forged one, and dropped the good one."""
    repo = _repo(local_store)
    codec = repo.chunks.codec
    data, d = _chunk(repo)
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)})
    assert _write(repo, "agent-b", "b1", {d: codec.encode(d, data)}) == [d]
    assert _write(repo, None, "s1", {d: codec.encode(d, data)}) == []
    _gc_twice(repo)
    assert repo.chunks.get_chunk(d) == data
