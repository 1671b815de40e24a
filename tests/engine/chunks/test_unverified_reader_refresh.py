"""Two threads refreshing the reader index at once (ChunkStore.reader_index: a restore's workers each
refresh when a chunk is not where expected) while an agent indexes a new pack: ``trusted_pack`` must
answer from markers at least as new as the view it looks the pack up in (engine/chunks/unverified.py)."""

from __future__ import annotations

import threading

from opencbr.engine import Repository
from opencbr.engine.chunks import store as store_mod
from tests.support.unverified import forged as _forged
from tests.support.unverified import random_chunk as _chunk
from tests.support.unverified import write as _write


def test_a_stale_refresh_finishing_last_does_not_pair_old_markers_with_the_new_view(local_store, monkeypatch):
    repo = Repository.create(local_store, "v/", b"k" * 32, encrypted=True)
    cs, codec = repo.chunks, repo.chunks.codec
    data, d = _chunk(repo)
    _write(repo, None, "s1", {d: codec.encode(d, data)})
    cs.reader_index(refresh=True)

    t1_read, t2_set_markers, t1_done = threading.Event(), threading.Event(), threading.Event()
    real_packs, real_view = cs.unverified_packs, store_mod.IndexView

    def unverified_packs():
        got = real_packs()
        if threading.current_thread().name == "t1":
            t1_read.set()  # (markers read before the agent's pack exists)
            assert t2_set_markers.wait(10)
        return got

    def index_view(*args, **kw):
        if len(args) + len(kw) >= 3 and threading.current_thread().name == "t2":
            t2_set_markers.set()  # (t2 assigned its markers; its view is not assigned yet)
            assert t1_done.wait(10)
        return real_view(*args, **kw)

    monkeypatch.setattr(cs, "unverified_packs", unverified_packs)
    monkeypatch.setattr(store_mod, "IndexView", index_view)
    t1 = threading.Thread(target=cs.reader_index, kwargs={"refresh": True}, name="t1")
    t1.start()
    assert t1_read.wait(10)
    _write(repo, "agent-a", "a1", {d: _forged(codec, d)}, full=True)  # a new pack, marker then index
    t2 = threading.Thread(target=cs.reader_index, kwargs={"refresh": True}, name="t2")
    t2.start()
    t1.join(10)
    t1_done.set()
    t2.join(10)
    assert not t1.is_alive() and not t2.is_alive()

    (agents,) = [p for p, w in real_packs().items() if w == "agent-a"]
    assert not cs.trusted_pack(agents)
