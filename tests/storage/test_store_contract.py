"""One contract, run against every backend (local directory and S3 on moto_server)."""

from __future__ import annotations

import os
import threading

import pytest

from opencbr.storage import LocalStore, ObjectStore, open_store
from opencbr.storage.errors import BadStoreURL
from tests.support import pagecache


def test_put_get_roundtrip_and_range(store: ObjectStore):
    data = os.urandom(100_000)
    store.put("a/b/c", data)
    assert store.get("a/b/c") == data
    assert store.get("a/b/c", 10, 20) == data[10:20]
    assert store.get("a/b/c", 99_990) == data[99_990:]
    assert store.get("a/b/c", 0, 0) == b""
    assert store.head("a/b/c") == 100_000
    info = store.stat("a/b/c")
    assert info is not None and info.size == 100_000 and info.mtime > 0


def test_missing_objects(store: ObjectStore):
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store.get("nope", 0, 10)
    assert store.head("nope") is None
    assert store.stat("nope") is None
    store.delete("nope")  # idempotent


def test_put_if_absent_only_once(store: ObjectStore):
    assert store.put_if_absent("k/x", b"first") is True
    assert store.put_if_absent("k/x", b"second") is False
    assert store.get("k/x") == b"first"


def test_put_overwrites(store: ObjectStore):
    store.put("lock", b"1")
    store.put("lock", b"22")
    assert store.get("lock") == b"22"


def test_list_by_prefix(store: ObjectStore):
    for k in ["v/1/data/aa/x", "v/1/data/ab/y", "v/1/index/i1", "v/2/data/aa/z", "v/10/m"]:
        store.put(k, k.encode())
    assert sorted(store.list("v/1/")) == [
        ("v/1/data/aa/x", 13), ("v/1/data/ab/y", 13), ("v/1/index/i1", 12)]
    assert sorted(k for k, _ in store.list("v/1/data/a")) == ["v/1/data/aa/x", "v/1/data/ab/y"]
    assert sorted(k for k, _ in store.list("v/1")) == [
        "v/1/data/aa/x", "v/1/data/ab/y", "v/1/index/i1", "v/10/m"]
    assert list(store.list("nothing/")) == []


def test_delete(store: ObjectStore):
    store.put("d/x", b"1")
    store.delete("d/x")
    assert store.head("d/x") is None
    assert list(store.list("d/")) == []
    store.delete("d/x")


def test_concurrent_put_if_absent_has_one_winner(store: ObjectStore):
    wins = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        if store.put_if_absent("race/key", f"writer-{i}".encode()):
            wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("race/key") == f"writer-{wins[0]}".encode()


def test_unsynced_writes_visible_and_flush(store: ObjectStore):
    store.put("p/pack1", b"x" * 1000, sync=False)
    assert store.put_if_absent("p/pack2", b"y" * 10, sync=False)
    store.flush()
    assert store.get("p/pack1") == b"x" * 1000
    assert store.head("p/pack2") == 10


@pytest.mark.skipif(pagecache.unavailable_reason() is not None, reason=str(pagecache.unavailable_reason()))
def test_flush_writes_unsynced_local_data_to_disk(tmp_path):
    """Watched in the kernel's page cache: the pages ``sync=False`` writes leave dirty are clean after
    ``flush`` (a flush that does nothing leaves them dirty), and ``sync=True`` leaves none dirty."""
    s = LocalStore(tmp_path)
    s.put("p/pack1", os.urandom(1 << 20), sync=False)
    assert s.put_if_absent("p/pack2", os.urandom(100_000), sync=False)
    packs = [tmp_path / "p" / "pack1", tmp_path / "p" / "pack2"]
    assert all(pagecache.dirty_pages(p) > 0 for p in packs), "unsynced writes are still in memory only"
    s.flush()
    assert [pagecache.dirty_pages(p) for p in packs] == [0, 0]
    s.put("p/synced", os.urandom(1 << 20))
    assert pagecache.dirty_pages(tmp_path / "p" / "synced") == 0


def test_url_roundtrip(store: ObjectStore):
    store.put("u/x", b"hello")
    url = store.url()
    if isinstance(store, LocalStore):
        again = open_store(url)
    else:
        again = open_store(url + "&access_key=test&secret_key=test")
    assert again.get("u/x") == b"hello"


def test_local_store_rejects_escaping_keys(tmp_path):
    s = LocalStore(tmp_path)
    for bad in ["../x", "/abs", "a/../b", "a//b", ".tmp-x"]:
        with pytest.raises(ValueError):
            s.put(bad, b"")


def test_local_store_leaves_no_temp_files(tmp_path):
    s = LocalStore(tmp_path)
    s.put("a/b", b"1")
    s.put_if_absent("a/b", b"2")
    s.put_if_absent("a/c", b"3")
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == ["b", "c"]


def test_open_store_rejects_unknown_schemes():
    with pytest.raises(BadStoreURL):
        open_store("ftp://x/y")
    with pytest.raises(BadStoreURL):
        open_store("file://relative/path")
