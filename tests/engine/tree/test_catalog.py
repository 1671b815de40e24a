"""CatalogWriter: records added in runs (an incremental backup's records reused from the parent) are cut
into the same catalog chunks as records added one by one. CatalogReader: the keyed records read in C are
the Python reader's."""

from __future__ import annotations

import hashlib
import random

import pytest

from opencbr.engine.errors import Damaged
from opencbr.engine.tree import backup_tree, catalog, walker
from opencbr.engine.tree.catalog import CatalogReader, CatalogWriter
from opencbr.engine.tree.common import chunkstore_of, load_index
from opencbr.engine.tree.cutting import ChunkingSecret
from opencbr.engine.tree.entry import DIR, FILE, Entry, encode, iter_records, path_key, record_path
from tests.support.engine_tree import SMALL_CHUNKS, build_tree, forge_tree_backup


def _records(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        path = b"d%03d/f%06d" % (i // 500, i) + b"x" * rnd.randrange(0, 40)
        e = Entry(path, FILE, 0o100644, size=rnd.randrange(1 << 20), mtime_ns=rnd.randrange(1 << 60),
                  chunks=[(rnd.randbytes(32), 100, 0)] * rnd.choice((1, 1, 1, 3, 400)))
        out.append((path, encode(e)))
    return out


def _write(records, runs: bool, secret, seed: int):
    stored = {}

    def put(data: bytes) -> bytes:
        d = hashlib.sha256(data).digest()
        stored[d] = data
        return d

    w = CatalogWriter(put, secret)
    rnd = random.Random(seed)
    i = 0
    while i < len(records):
        if runs and rnd.random() < 0.7:
            n = rnd.choice((1, 2, 7, 60, 900, 5000))
            w.add_run([(p, r, None, 0) for p, r in records[i:i + n]])  # (what the backup passes)
            i += n
        else:
            w.add(records[i][1], records[i][0])
            i += 1
    return w.finish(), w.entries, w.raw_bytes, stored


@pytest.mark.parametrize("in_c", [True, False])
@pytest.mark.parametrize("keyed", [False, True])
def test_records_added_in_runs_are_cut_like_records_added_one_by_one(keyed, in_c, monkeypatch):
    """Runs are cut in C (``_listing.run_cuts``) where the extension is built, else in Python: either way
    exactly where records added one by one are."""
    if in_c and walker.native_listing() is None:
        pytest.skip("the C listing is not built here")
    if not in_c:
        monkeypatch.setattr(walker, "_native_listing", None)
    monkeypatch.setattr(catalog, "MIN_CHUNK", 4 << 10)  # (many cuts: both the content test and MAX_CHUNK)
    monkeypatch.setattr(catalog, "MAX_CHUNK", 32 << 10)
    secret = ChunkingSecret(tuple(range(256)), random.Random(7).randbytes(1 << 16)) if keyed else None
    records = _records(12_000, seed=3)
    one = _write(records, False, secret, 0)
    assert len(one[0]) > 50 and any(c.raw_len >= 32 << 10 for c in one[0])  # (both kinds of cut happened)
    for seed in range(3):
        assert _write(records, True, secret, seed) == one


def _keyed(repo, backup_id: str, start_key: bytes = b"") -> list:
    cs = chunkstore_of(repo)
    return [(k, bytes(r)) for k, r in CatalogReader(cs, load_index(cs, backup_id)).records(start_key, keyed=True)]


@pytest.mark.skipif(walker.native_listing() is None, reason="the C listing is not built here")
def test_keyed_records_in_c_are_the_python_readers(enc_repo, tmp_path, monkeypatch):
    """An incremental backup reads its parent's records through ``_listing.keyed_records`` where it is built:
    the same (key, record) pairs, from any start key, and the same refusal of a catalog out of order."""
    backup_tree(enc_repo, build_tree(tmp_path / "src"), backup_id="b1", meta={}, params=SMALL_CHUNKS)
    forge_tree_backup(enc_repo, "bad", [Entry(b"", DIR, 0o40755), Entry(b"b", FILE, 0o100644), Entry(b"a", FILE, 0o100644)])
    starts = (b"", b"docs", b"many\0f020.txt", b"zzz")
    native = [_keyed(enc_repo, "b1", s) for s in starts]
    with pytest.raises(Damaged) as in_c:
        _keyed(enc_repo, "bad")
    monkeypatch.setattr(walker, "_native_listing", None)
    assert native == [_keyed(enc_repo, "b1", s) for s in starts]
    assert len(native[0]) > 60 and native[0] == sorted(native[0]) and native[3] == []
    with pytest.raises(Damaged) as in_python:
        _keyed(enc_repo, "bad")
    assert str(in_c.value) == str(in_python.value) and "out of order at b'a'" in str(in_c.value)


def test_keyed_records_in_c_say_where_a_chunk_stops_parsing():
    native = walker.native_listing()
    if native is None:
        pytest.skip("the C listing is not built here")
    recs = [r for _p, r in _records(50, 3)]
    data = b"".join(recs)
    pairs, problem, _at = native.keyed_records(data, None)
    assert problem is None and [(k, bytes(r)) for k, r in pairs] == [
        (path_key(record_path(r)), bytes(r)) for r in iter_records(data)]
    assert native.keyed_records(data, pairs[3][0])[1:] == ("order", 0)
    assert native.keyed_records(data + b"\1\0", None)[1] == "truncated"
    assert native.keyed_records(data[:-1], None)[1] == "length"


@pytest.mark.skipif(walker.native_listing() is None, reason="the C listing is not built here")
def test_a_reused_runs_refs_in_c_are_the_python_loops():
    """``_listing.run_refs`` (backup._write_reused in C): each file's digests in order, one left out where it
    repeats the one before (across files and from the run before), directories and links (None) skipped."""
    rnd = random.Random(5)
    pool = [rnd.randbytes(32) for _ in range(6)]
    runs = [[(b"p", b"r", None if rnd.random() < 0.2 else [rnd.choice(pool) for _ in range(rnd.choice((0, 1, 1, 3)))],
              rnd.randrange(1 << 30)) for _ in range(rnd.choice((1, 5, 200)))] for _ in range(50)]

    def in_python(run, last):
        refs, files, size = bytearray(), 0, 0
        for _p, _r, digests, sz in run:
            if digests is not None:
                files, size = files + 1, size + sz
                for d in digests:
                    if d != last:
                        refs += d
                        last = d
        return bytes(refs), last, files, size

    last_c = last_py = b""
    for run in runs:
        got = walker.native_listing().run_refs(run, last_c)
        want = in_python(run, last_py)
        assert got == want
        last_c, last_py = got[1], want[1]
    with pytest.raises(TypeError):
        walker.native_listing().run_refs([(b"p", b"r", [b"short"], 1)], b"")
