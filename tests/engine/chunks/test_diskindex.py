"""The vault's chunk index on local disk (chunks/diskindex.py): shared between the processes of a
machine, synchronised with the store by index-object name, never trusted over the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.errors import Missing
from opencbr.storage import open_store


def _open(root: Path, scratch: Path) -> Repository:
    repo = Repository.open(open_store(root.as_uri()), "v/", None)
    repo.chunks.spill_dir = str(scratch)
    return repo


def _backup(repo: Repository, name: str, chunks: list[bytes]) -> list[bytes]:
    session = WriteSession(repo.chunks)
    digests = [session.put_chunk(c).digest for c in chunks]
    session.commit(name, {"type": "generated"}, b"".join(digests))
    return digests


@pytest.fixture()
def vault(tmp_path):
    root, scratch = tmp_path / "store", tmp_path / "scratch"
    scratch.mkdir()
    Repository.create(open_store(root.as_uri()), "v/", None, encrypted=False)
    return root, scratch


def _meta(scratch: Path) -> dict:
    (path,) = scratch.glob("chunk-index/*/meta.json")
    return json.loads(path.read_text())


def test_a_second_opener_reuses_the_index_and_follows_gc(vault):
    root, scratch = vault
    a = _open(root, scratch)
    kept = _backup(a, "kept", [b"kept %d" % i for i in range(9000)])
    gone = _backup(a, "gone", [b"gone %d" % i for i in range(9000)])
    b = _open(root, scratch)  # another worker on this machine: the objects a wrote are known already
    assert set(_meta(scratch)["objects"]) == set(b.chunks.list_index_objects())
    assert b.chunks.reader_index().has(gone[0])
    a.delete_backup("gone")
    a.gc()
    # GC replaced every index object: b, on its next refresh, drops what only the old ones listed
    idx = b.chunks.reader_index(refresh=True)
    assert set(_meta(scratch)["objects"]) == set(b.chunks.list_index_objects())
    assert not idx.has(gone[0]) and gone[0] not in idx and idx.lookup(gone[-1]) is None
    assert all(idx.has(d) for d in kept[::97])
    assert b.chunks.get_chunk(kept[1234]) == b"kept 1234"
    with pytest.raises(Missing):
        b.chunks.get_chunk(gone[5])


def test_an_update_cut_short_is_rebuilt_from_the_store(vault):
    root, scratch = vault
    a = _open(root, scratch)
    digests = _backup(a, "b1", [b"chunk %d" % i for i in range(3000)])
    (meta,) = scratch.glob("chunk-index/*/meta.json")
    state = json.loads(meta.read_text())
    state["dirty"] = True  # a process killed between its two writes of meta.json
    meta.write_text(json.dumps(state))
    table = meta.parent / f"table-{state['gen']}"
    with open(table, "r+b") as f:
        f.write(os.urandom(table.stat().st_size))  # and whatever it left in the table
    b = _open(root, scratch)
    idx = b.chunks.reader_index()
    assert all(idx.has(d) for d in digests) and not _meta(scratch)["dirty"]
    assert b.chunks.get_chunk(digests[17]) == b"chunk 17"


def test_a_wrong_location_in_the_index_never_returns_wrong_bytes(vault):
    root, scratch = vault
    a = _open(root, scratch)
    digests = _backup(a, "b1", [b"chunk %d" % i for i in range(3000)])
    state = _meta(scratch)
    # a damaged table that still parses: every slot's offset moved by one record's worth
    (table,) = scratch.glob(f"chunk-index/*/table-{state['gen']}")
    data = bytearray(table.read_bytes())
    for page in range(0, len(data), 4096):
        n = int.from_bytes(data[page:page + 4], "little")
        for i in range(1, n + 1):
            at = page + i * 48 + 36
            off = int.from_bytes(data[at:at + 4], "little")
            data[at:at + 4] = (off + 40 if off else 40).to_bytes(4, "little")
    table.write_bytes(bytes(data))
    b = _open(root, scratch)
    assert b.chunks.get_chunk(digests[100]) == b"chunk 100"  # (rebuilt from the store, once)
    assert b.chunks.get_chunk(digests[2000]) == b"chunk 2000"


def test_one_large_index_object_as_gc_wrote_it_before_is_read_and_split(vault):
    root, scratch = vault
    a = _open(root, scratch)
    digests = _backup(a, "b1", [b"old %d" % i for i in range(70_000)])
    cs = a.chunks
    # what GC's consolidation wrote before this change: one object listing every pack
    names = cs.list_index_objects()
    idx = cs.load_index()
    cs.write_index([(p, idx.entries(p)) for p in idx.pack_ids])
    for n in names:
        cs.store.delete(cs.k(n))
    b = _open(root, scratch)
    assert b.chunks.get_chunk(digests[65_000]) == b"old 65000"
    b.gc()  # rewrites it as objects a sync decodes one at a time (32,768 records each)
    assert len(b.chunks.list_index_objects()) == 3
    assert _open(root, scratch).chunks.get_chunk(digests[3]) == b"old 3"


def test_a_page_is_searched_in_its_filled_slots_only(vault):
    """A look-up searches the slots a page's count says are filled, not the rest of the page (which a
    look-up of an empty vault's pages scanned in full: a fifth of the remote service's index time)."""
    root, scratch = vault
    a = _open(root, scratch)
    digests = _backup(a, "b1", [b"chunk %d" % i for i in range(50)])
    state = _meta(scratch)
    (table,) = scratch.glob(f"chunk-index/*/table-{state['gen']}")
    data = bytearray(table.read_bytes())
    pages = len(data) // 4096
    stranger = next(d for d in (os.urandom(32) for _ in range(1000))
                    if int.from_bytes(data[(int.from_bytes(d[:8], "little") & (pages - 1)) * 4096:][:4], "little") < 84)
    page = (int.from_bytes(stranger[:8], "little") & (pages - 1)) * 4096
    n = int.from_bytes(data[page:page + 4], "little")
    # past the count, a slot naming pack 0 (alive): bytes the index never wrote there as a record
    data[page + (n + 1) * 48:page + (n + 2) * 48] = stranger + bytes(16)
    table.write_bytes(bytes(data))
    b = _open(root, scratch)
    index = b.chunks.reader_index()
    assert not index.has(stranger) and stranger not in index
    assert all(index.has(d) for d in digests)


def test_a_table_that_fits_the_page_cache_is_read_in_one_call(vault, monkeypatch):
    """A snapshot's look-ups read no page of their own when the table fits the page cache: the sync
    read it whole (an incremental tree backup checks every reused file's chunks on its walking thread,
    and each ``pread`` there was a random read when the index was cold, and a GIL hand-off always)."""
    from opencbr.engine.chunks import diskindex

    root, scratch = vault
    digests = _backup(_open(root, scratch), "b1", [b"chunk %d" % i for i in range(3000)])
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd, n, offset):
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(diskindex.os, "pread", counting_pread)
    index = _open(root, scratch).chunks.reader_index()
    at_sync = len(reads)
    assert all(index.has(d) for d in digests) and not index.has(os.urandom(32))
    assert at_sync >= 1 and len(reads) == at_sync, "look-ups read pages the sync had read"
    assert any(n >= 256 * 4096 for n in reads[:at_sync])  # (the whole table: 256 pages at first)
