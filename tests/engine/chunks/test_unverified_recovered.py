"""An agent's pack that never got its marker (the worker killed between the pack's upload and the marker,
engine/chunks/unverified.py) is nobody's checked pack: when a damaged index object makes packs known
from their trailers and GC lists them in the index again, such a pack must not come out trusted."""

from __future__ import annotations

import pytest

from opencbr.engine import Repository
from opencbr.engine.chunks import packs
from opencbr.engine.chunks.gc import run_gc
from opencbr.engine.chunks.session import WriteSession
from opencbr.engine.errors import Damaged
from tests.support.unverified import HEADER
from tests.support.unverified import forged as _forged
from tests.support.unverified import random_chunk as _chunk


class Killed(BaseException):
    pass


def _pack_ids(monkeypatch, first: str):
    """Pack ids starting with ``first``: packs known from their trailers are numbered in the order their
    ids are listed, which decides the copy the index prefers (both orders are tried)."""
    n = iter(range(1 << 20))
    monkeypatch.setattr(packs, "new_pack_id", lambda: f"{first}{next(n):031x}")


@pytest.mark.parametrize("agent_first", ["0", "f"])
def test_an_agents_pack_without_marker_relisted_by_gc_is_not_trusted(local_store, monkeypatch, agent_first):
    _pack_ids(monkeypatch, "8")
    repo = Repository.create(local_store, "v/", b"k" * 32, encrypted=True)
    cs, codec = repo.chunks, repo.chunks.codec
    data, d = _chunk(repo)
    before = set(cs.list_index_objects())
    s = WriteSession(cs)
    assert s.claim(d)
    s.put_record(d, (codec.encode(d, data),))
    s.commit("s1", HEADER, refs=d)
    (listing_s1,) = set(cs.list_index_objects()) - before

    # agent-a's full backup: its forged pack is uploaded, then the worker dies before the marker
    _pack_ids(monkeypatch, agent_first)
    s = WriteSession(cs, writer="agent-a", force_new=True)
    assert s.claim(d)
    s.put_record(d, (_forged(codec, d),))

    def killed(*_a, **_kw):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(cs, "note_unverified", killed)
        with pytest.raises(Killed):
            s.commit("a1", HEADER, refs=d)

    # the index object listing the service's pack rots: both packs are known from their trailers only
    blob = bytearray(local_store.get("v/" + listing_s1))
    blob[100 % len(blob)] ^= 0x40
    local_store.put("v/" + listing_s1, bytes(blob))
    before_gc = Repository.open(local_store, "v/", b"k" * 32).chunks
    known = before_gc.reader_index(refresh=True).locations(d)
    assert len(known) == 2 and not any(before_gc.trusted_pack(loc.pack_id) for loc in known)
    gc_repo = Repository.open(local_store, "v/", b"k" * 32)
    run_gc(gc_repo.chunks)
    run_gc(gc_repo.chunks)

    reader = Repository.open(local_store, "v/", b"k" * 32).chunks
    assert reader.get_chunk(d) == data
    for loc in reader.reader_index(refresh=True).locations(d):  # what an unhashing reader would get
        try:
            plain = reader.codec.open_body(d, reader.read_record(loc), check=not reader.trusted_pack(loc.pack_id))[2]
        except Damaged:
            continue
        assert bytes(plain) == data
    # the pack GC listed again from its trailer is nobody's checked pack either
    assert not any(reader.trusted_pack(loc.pack_id) for loc in reader.reader_index().locations(d))
