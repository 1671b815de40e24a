"""What a write session counts as added (bytes the vault did not hold before) against written, for each
way a record reaches it: a new chunk, a chunk stored again by a full backup (``force_new``), a chunk
stored again because its only copy is recorded damaged -- through ``put_chunk`` (local backups) and
``claim`` + ``put_record`` (the remote chunk service)."""

from __future__ import annotations

from opencbr.engine import Repository
from opencbr.engine.chunks.damage import record_damaged
from opencbr.engine.chunks.session import WriteSession
from opencbr.storage import open_store


def _repo(tmp_path) -> Repository:
    return Repository.create(open_store((tmp_path / "store").as_uri()), "v/", b"k" * 32, encrypted=True)


def _stored(repo: Repository, chunks: list[bytes]) -> list[bytes]:
    s = WriteSession(repo.chunks)
    digests = [s.put_chunk(c).digest for c in chunks]
    s.commit("first", {"type": "generated"}, b"".join(digests))
    return digests


def _remote_put(session: WriteSession, repo: Repository, data: bytes) -> bool:
    codec = repo.chunks.codec
    d = codec.digest(data)
    if not session.claim(d):
        return False
    session.put_record(d, codec.encode_parts(d, data))
    return True


def test_added_and_written_bytes_for_each_way_a_record_is_stored(tmp_path):
    repo = _repo(tmp_path)
    old, damaged = b"o" * 20000, b"d" * 20000
    digests = _stored(repo, [old, damaged])
    record_damaged(repo.chunks, [digests[1]], {"by": "test"})
    for put in ("local", "remote"):
        s = WriteSession(repo.chunks)
        new = b"n%s" % put.encode() * 9000
        if put == "local":
            assert [s.put_chunk(c).new for c in (old, damaged, new)] == [False, True, True]
        else:
            assert [_remote_put(s, repo, c) for c in (old, damaged, new)] == [False, True, True]
        st = s.stats
        assert st.new_chunks == 2 and 0 < st.added_bytes < st.written_bytes  # the damaged one: written only
        s.abort()
        full = WriteSession(repo.chunks, force_new=True)
        if put == "local":
            assert all(full.put_chunk(c).new for c in (old, new))
        else:
            assert all(_remote_put(full, repo, c) for c in (old, new))
        st = full.stats
        assert st.new_chunks == 2 and 0 < st.added_bytes < st.written_bytes  # the old one: written only
        full.abort()
