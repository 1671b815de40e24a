"""A restore keeps the first failed files, counts them all (a damaged bundle can fail a million)."""

from __future__ import annotations

from opencbr.engine.tree.restore.tally import MAX_WARNINGS, Tally


def test_failed_files_are_counted_and_the_first_kept():
    t, other = Tally(), Tally()
    with t.lock:
        for i in range(MAX_WARNINGS + 500):
            t.error(b"f%d" % i, "chunk missing")
    with other.lock:
        other.error(b"g", "write error")
    t.add(other.result())
    assert t.error_count == MAX_WARNINGS + 501
    assert len(t.errors) == MAX_WARNINGS and t.errors[0] == (b"f0", "chunk missing")
