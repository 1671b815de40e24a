"""Catalog records (``entry.encode`` / ``entry.decode``): every kind of entry and field survives the
round trip; a truncated or padded record is a RecordError, never a wrong entry."""

from __future__ import annotations

import pytest

from opencbr.engine.tree.entry import DIR, FIFO, FILE, SYMLINK, Entry, RecordError, decode, encode, record_header

D1, D2, D3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32

ENTRIES = [
    Entry(b"", DIR, 0o40755, uid=0, gid=0, mtime_ns=1, atime_ns=2, ino=2, nlink=5),
    Entry(b"etc/\xff\xfename", FILE, 0o100644, uid=1000, gid=100, size=0, user=b"alice", group=b"users"),
    Entry(b"a/one-slice", FILE, 0o100640, size=7, mtime_ns=-5, chunks=[(D1, 7, 4096)]),
    Entry(b"a/slices", FILE, 0o100600, size=10, chunks=[(D1, 3, 0), (D2, 7, 12)]),
    Entry(b"a/whole-chunks", FILE, 0o104755, size=300, ino=77, nlink=2, rdev=2049,
          chunks=[(D1, 100, 0), (D2, 200, 0)]),
    Entry(b"a/sparse", FILE, 0o100644, size=1 << 30, extents=[(0, 4096), (1 << 29, 8192)],
          chunks=[(D3, 12288, 0)], xattrs=[(b"user.k", b"v" * 300), (b"security.x", b"")]),
    Entry(b"a/link", SYMLINK, 0o120777, link=b"../etc/\xff\xfename", xattrs=[(b"user.l", b"1")]),
    Entry(b"a/fifo", FIFO, 0o10600, rdev=0),
]


@pytest.mark.parametrize("e", ENTRIES, ids=[repr(e.path) for e in ENTRIES])
def test_records_round_trip(e):
    rec = encode(e)
    assert decode(rec) == e
    assert decode(memoryview(rec)) == e  # (a catalog reader hands out views)
    assert record_header(rec)[0] == e.type and record_header(rec)[6] == e.size


@pytest.mark.parametrize("e", ENTRIES, ids=[repr(e.path) for e in ENTRIES])
def test_truncated_or_padded_records_are_refused(e):
    rec = encode(e)
    for cut in (1, 3, len(rec) // 2, len(rec) - 1):
        short = rec[:cut] if cut < 4 else len(rec[:cut]).to_bytes(4, "little") + rec[4:cut]
        with pytest.raises(RecordError):
            decode(short)
    padded = (len(rec) + 1).to_bytes(4, "little") + rec[4:] + b"\0"
    with pytest.raises(RecordError):
        decode(padded)
    with pytest.raises(RecordError):
        decode(rec + b"\0")  # (the length word no longer matches)
