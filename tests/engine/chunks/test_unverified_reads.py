"""Readers of a vault holding agents' forged records (engine/chunks/unverified.py): a forged copy of a
chunk fails its check like a damaged one, but unlike damage it says nothing about whether the chunk's
other copies moved (GC repacked them): a reader whose index is older than the repack looks again."""

from __future__ import annotations

import os

from opencbr.engine import Repository
from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.chunks.session import WriteSession
from tests.support.unverified import write as _write


def test_a_reader_finds_repacked_chunks_past_forged_copies(local_store):
    """A restore that started before GC repacked the service's packs (twice) reads chunks whose checked
    copy moved and whose other copy is an agent's forged one: each is found at its new place."""
    repo = Repository.create(local_store, "v/", b"k" * 32, encrypted=True)
    codec = repo.chunks.codec
    datas = [os.urandom(5000) for _ in range(4)]
    x, y, z1, z2 = (codec.digest(b) for b in datas)
    good = {d: codec.encode(d, b) for d, b in zip((x, y, z1, z2), datas, strict=True)}
    _write(repo, None, "hx", {x: good[x], z1: good[z1]})
    _write(repo, None, "hy", {y: good[y], z2: good[z2]})
    _write(repo, None, "h", {x: good[x], y: good[y]})
    forged = {d: codec.encode(d, b"not the chunk " * 50) for d in (x, y)}
    own = os.urandom(100000)  # (and a chunk of its own, so that its pack stays)
    forged[codec.digest(own)] = codec.encode(codec.digest(own), own)
    _write(repo, "agent-a", "a1", forged, full=True)  # (newer copies, forged: AES-GCM accepts them)
    reader = Repository.open(local_store, "v/", b"k" * 32).chunks
    reader.reader_index()  # (a restore of "h" starts: its index is loaded)
    for name, d, data in (("hx", x, datas[0]), ("hy", y, datas[1])):
        repo.chunks.delete_manifest(name)
        assert run_gc(repo.chunks).packs_repacked == 1  # the pack of d is half dead: repacked, swept
        assert reader.get_chunk(d) == data


def test_a_pack_known_only_from_its_trailer_is_not_trusted_unhashed(local_store):
    """While an index object is damaged, readers recover the packs no readable object lists from their
    trailers: those include an agent's packs its running backup uploaded and has not marked (nor
    indexed) yet. A reader that does not hash what it reads must check their records."""
    repo = Repository.create(local_store, "v/", b"k" * 32, encrypted=True)
    codec = repo.chunks.codec
    data = os.urandom(5000)
    d = codec.digest(data)
    _write(repo, None, "h1", {d: codec.encode(d, data)})
    (damaged,) = repo.chunks.list_index_objects()
    running = WriteSession(repo.chunks, writer="agent-a", force_new=True)
    assert running.claim(d)
    running.put_record(d, (codec.encode(d, b"not the chunk " * 50),))
    running._drain()  # (its pack uploaded, as a full one is while the backup runs; not indexed yet)
    blob = bytearray(local_store.get("v/" + damaged))
    blob[100] ^= 0x40
    local_store.put("v/" + damaged, bytes(blob))
    reader = Repository.open(local_store, "v/", b"k" * 32).chunks
    reader._disk().discard()
    index = reader.reader_index(refresh=True)
    assert len(index.locations(d)) == 2 and index.recovered_packs
    assert not any(reader.trusted_pack(p) for p in index.recovered_packs)
    running.abort()
