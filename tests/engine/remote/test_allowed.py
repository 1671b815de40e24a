"""The on-disk set of the chunks a remote task may read: exact membership over many buckets, refs
listed again in later windows, and more digests than it was sized for (kept, past a bucket's room, in
memory)."""

from __future__ import annotations

import os

from opencbr.engine.remote.allowed import ROOM, AllowedRefs


def test_members_across_buckets_and_windows(tmp_path):
    digests = [os.urandom(32) for _ in range(20_000)]
    a = AllowedRefs(len(digests), str(tmp_path))
    assert a.buckets > 8
    for i in range(0, len(digests), 3000):
        a.add_many(digests[i:i + 3000] + digests[:50])  # the first 50 listed again in every window
    assert all(d in a for d in digests) and not any(os.urandom(32) in a for _ in range(2000))
    assert not a.overflow and sum(a.fill) == len(digests) + 50 * 6
    a.close()


def test_more_than_it_was_sized_for(tmp_path):
    a = AllowedRefs(10, str(tmp_path))
    digests = [os.urandom(32) for _ in range(ROOM + 500)]
    a.add_many(digests[:ROOM - 10])
    a.add_many(digests[:100] + digests[ROOM - 10:])  # (the 100 already in: not kept twice)
    assert a.fill[0] == ROOM and len(a.overflow) == 500
    assert all(d in a for d in digests) and os.urandom(32) not in a
    a.close()
