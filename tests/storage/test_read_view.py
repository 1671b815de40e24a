"""The store's ``read_view`` (the bulk-read path of restores, direct I/O on local files) against ``get``."""

from __future__ import annotations

import os
import random

import pytest

from opencbr.storage import open_store


def test_local_read_view_matches_get(tmp_path):
    store = open_store(tmp_path.joinpath("s").as_uri())
    data = os.urandom(3 << 20) + b"tail"
    store.put("data/ab/pack", data)
    rnd = random.Random(1)
    for _ in range(50):
        a = rnd.randrange(0, len(data) + 10)
        b = a + rnd.randrange(0, 1 << 20)
        assert bytes(store.read_view("data/ab/pack", a, b)) == store.get("data/ab/pack", a, b) == data[a:b]
    big = bytes(store.read_view("data/ab/pack", 0, 12 << 20))  # grows the thread's buffer
    assert big == data
    with pytest.raises(KeyError):
        store.read_view("data/ab/missing", 0, 10)


def test_store_contract_read_view(store):
    store.put("k", b"0123456789")
    assert bytes(store.read_view("k", 2, 5)) == b"234"
    assert bytes(store.read_view("k", 8, 100)) == b"89"
    with pytest.raises(KeyError):
        store.read_view("nope", 0, 1)
